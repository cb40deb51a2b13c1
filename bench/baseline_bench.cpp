// baseline_bench: this machine's limits, the figures every other bench is set beside.
//
//   baseline_bench [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N] [--repeat N]
//
// --repeat N runs everything N times (a few seconds each) and adds the medians of the runs' figures.
//
// Prints, for each of cache-line round trip, futex wake-to-run (rtdefer::unpark -> park returns),
// the unpark() syscall itself, and interrupt-signal delivery to a busy thread (rtdefer::send_ipi):
// p50 / p99 / p99.9 / max, the scheduling actually in force, and writes JSON with the per-µs
// histograms. Exit status: 0, or 1 if a baseline could not be measured where it should have been.
#include "harness/alloc_counter.hpp"
#include "harness/baseline.hpp"
#include "harness/report.hpp"

#include <cstdio>

namespace {

/// The harness checks itself: percentiles on data with known answers, the clock against
/// steady_clock. A broken harness would otherwise print plausible nonsense.
void self_check(rtdefer_bench::report& rep) {
    using namespace rtdefer_bench;
    histogram h;
    for (std::uint64_t v = 1; v <= 100; ++v) h.record(v);  // exact region: exact answers
    rep.check(h.percentile(0.5) == 50 && h.percentile(0.99) == 99 && h.max() == 100 && h.min() == 1 && h.count() == 100,
              "histogram: exact percentiles of 1..100");
    histogram g;
    for (std::uint64_t v = 1; v <= 1000000; ++v) g.record(v * 10);  // 10 ns .. 10 ms
    const double p50 = g.percentile(0.5), p999 = g.percentile(0.999);
    rep.check(p50 > 5e6 * 0.99 && p50 < 5e6 * 1.01 && p999 > 9.99e6 * 0.99 && p999 < 9.99e6 * 1.01,
              "histogram: log-linear percentiles within 1 %");
    rep.check(g.us_bucket(0) == 99 && g.us_overflow() == 1, "histogram: per-µs view");
    // 10 ms of the bench clock against steady_clock. A preemption between the paired reads skews
    // one attempt on a loaded machine; a calibration error skews all of them.
    bool clock_ok = false;
    double ratio = 0;
    for (int attempt = 0; attempt < 5 && !clock_ok; ++attempt) {
        const std::uint64_t s0 = bench_clock::steady_ns(), c0 = bench_clock::now();
        spin_for_ns(10e6);
        const std::uint64_t s1 = bench_clock::steady_ns(), c1 = bench_clock::now_end();
        ratio = rtdefer_bench::clock().to_ns(c1 - c0) / static_cast<double>(s1 - s0);
        clock_ok = ratio > 0.98 && ratio < 1.02;
    }
    rep.check(clock_ok, "clock: calibration off by more than 2 % against steady_clock (ratio " + std::to_string(ratio) + ")");
}

}  // namespace

int main(int argc, char** argv) {
    using namespace rtdefer_bench;
    options opts = parse_args(argc, argv, "baseline_bench");
    report rep(opts);
    lock_memory_once();
    rep.print_header();
    self_check(rep);
    std::printf("\n");

    baselines b = measure_baselines(opts, &rep);
    if (opts.repeat > 1) {
        std::vector<baselines> runs{b};
        for (std::size_t i = 1; i < opts.repeat; ++i) {
            std::printf("\nrun %zu of %zu:\n", i + 1, opts.repeat);
            runs.push_back(measure_baselines(opts, &rep));
        }
        auto med = [&](latency_result baselines::*f) {
            std::vector<latency_result> v;
            for (const auto& r : runs) v.push_back(r.*f);
            return median_of_runs(v);
        };
        b = {med(&baselines::clock), med(&baselines::cacheline_rtt), med(&baselines::futex_wake),
             med(&baselines::unpark_call), med(&baselines::ipi)};
        std::printf("\nmedians of %zu runs (load now %s):\n", opts.repeat, machine_info::loadavg().c_str());
        for (auto* r : {&b.clock, &b.cacheline_rtt, &b.futex_wake, &b.unpark_call, &b.ipi}) rep.add(*r);
    }

    // The derived figures people ask for, as ratios to the cheapest event (the cache line).
    if (b.cacheline_rtt.valid) {
        const double line = b.cacheline_rtt.s.p50;
        rep.compare("cache-line one-way (rtt/2)", "p50", line / 2, unit::ns, "cache-line round trip", "p50", line);
        if (b.futex_wake.valid)
            rep.compare("futex wake-to-run", "p50", b.futex_wake.s.p50, unit::ns, "cache-line round trip", "p50", line);
        if (b.unpark_call.valid)
            rep.compare("unpark() syscall (waker)", "p50", b.unpark_call.s.p50, unit::ns, "cache-line round trip", "p50", line);
        if (b.ipi.valid) {
            rep.compare("signal IPI to busy thread", "p50", b.ipi.s.p50, unit::ns, "cache-line round trip", "p50", line);
            if (b.futex_wake.valid)
                rep.compare("signal IPI to busy thread", "p50", b.ipi.s.p50, unit::ns, "futex wake-to-run", "p50",
                            b.futex_wake.s.p50);
        }
    }
    rep.print_table();

    // Correctness: on a machine with two usable CPUs every baseline must have been measured, with
    // a sane ordering of magnitudes (a syscall-based wake cannot beat a cache-line round trip).
    const bool two_cpus = usable_cpus() >= 2;
    for (const auto* r : {&b.cacheline_rtt, &b.futex_wake, &b.unpark_call, &b.ipi}) {
        if (two_cpus) rep.check(r->valid, r->name + " not measured: " + r->note);
        if (r->valid) rep.check(r->s.count > 0, r->name + ": no samples");
    }
    if (b.cacheline_rtt.valid && b.futex_wake.valid)
        rep.check(b.futex_wake.s.p50 > b.cacheline_rtt.s.p50 / 2,
                  "futex wake-to-run p50 below half a cache-line round trip: the measurement is broken");
    if (!two_cpus) rep.note("fewer than 2 usable CPUs: cross-CPU baselines skipped");
    return rep.finish();
}
