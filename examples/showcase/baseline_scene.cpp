// Showcase scene 0: the machine's own limits, which every later scene is compared with, and the
// lock-free list (the building block of task_work and irq_work) beside its usual peers.
// The full figures and their method: bench/baseline_bench.cpp, bench/llist_bench.cpp, docs/benchmarks.md.
#include "scene.hpp"

#include "harness/baseline.hpp"
#include "harness/mpsc.hpp"
#include "harness/report.hpp"

#include <cstdio>

namespace {

using namespace rtdefer_bench;

int run_baseline_scene(const scene_args& args) {
    options o;
    o.quick = args.quick;
    o.bench_name = "baseline";
    // The showcase is one process for all scenes: no process-wide mlockall on their behalf.
    switches().allow_mlock = false;
    machine_info m = machine_info::probe();

    std::printf("== baseline: this machine's limits, and the lock-free list beside its peers ==\n");
    std::printf("machine: %s\n", m.one_line().c_str());
    std::printf("clock: %s, read overhead %.0f ns\n\n", m.clock_source.c_str(), m.clock_overhead_ns);

    baseline_config c = baseline_defaults(o);
    c.rtt_samples = o.pick<std::size_t>(50000, 5000);
    c.wake_samples = o.pick<std::size_t>(2000, 200);
    c.ipi_samples = o.pick<std::size_t>(2000, 200);
    latency_result rtt = measure_cacheline_roundtrip(c);
    auto [wake, unpark_call] = measure_futex_wake(c);
    latency_result ipi = measure_ipi_delivery(c);
    std::printf("machine limits (measured now; SCHED_FIFO where permitted):\n");
    for (const auto* r : {&rtt, &wake, &unpark_call, &ipi}) print_latency(*r);

    int failed = 0;
    const bool two_cpus = usable_cpus() >= 2;
    for (const auto* r : {&rtt, &wake, &ipi})
        if (two_cpus && !r->valid) {
            std::printf("FAILED: %s not measured: %s\n", r->name.c_str(), r->note.c_str());
            failed = 1;
        }

    // The list hand-off: N producers push, one consumer drains concurrently; every item counted.
    const double secs = o.pick(0.25, 0.04);
    const bool fifo = switches().allow_rt;  // pinned + SCHED_FIFO when permitted: see mpsc_rig
    std::vector<comparison_row> rows;
    for (int p : {1, 2}) {
        mpsc_counts cl, cb, cm;
        const double mine = mpsc_throughput<llist_peer>(p, 4096, secs, cl, fifo);
        const double mutex = mpsc_throughput<mutex_deque_peer>(p, 4096, secs, cm, fifo);
        std::string label = "llist add+del_all, " + std::to_string(p) + " producer" + (p > 1 ? "s" : "") + " + consumer";
#if RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
        const double boost = mpsc_throughput<boost_peer>(p, 4096, secs, cb, fifo);
        rows.push_back({label, "items/s", mine, unit::per_second, "boost::lockfree::queue (bounded)", "", boost});
#endif
        rows.push_back({label, "items/s", mine, unit::per_second, "std::mutex+std::deque", "", mutex});
        for (const auto* k : {&cl, &cb, &cm})
            if (!k->ok()) {
                std::printf("FAILED: item accounting with %d producer(s): %s\n", p, k->describe().c_str());
                failed = 1;
            }
    }
    print_table(rows, stdout, "lock-free list hand-off (items/s, same run; ratio = rtdefer / peer):");
    std::printf("  every item counted: %s. Figures on a shared machine are noisy; see docs/benchmarks.md.\n\n",
                failed ? "MISMATCH" : "0 lost, 0 duplicated");
    return failed;
}

}  // namespace

RTDEFER_SCENE("baseline", 0, run_baseline_scene);
