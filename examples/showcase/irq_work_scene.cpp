// Showcase scene: a periodic real-time thread (SCHED_FIFO 50, 1 ms period, pinned) that retires
// large buffers every period. Freeing them inline puts munmap (and its TLB shootdown) inside the
// real-time loop; retiring them through a lazy irq_work item hands the frees to the CPU's irq_work/N
// worker (SCHED_FIFO 1), which runs in the real-time thread's slack. Deadline misses and response
// times side by side, every buffer accounted for. Full figures: bench/irq_work_bench.
#include "scene.hpp"

#include "harness/latency.hpp"
#include "harness/report.hpp"

#include <rtdefer/irq_work.hpp>
#include <rtdefer/rt_thread.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t buffer_bytes = 1u << 20; // above malloc's mmap threshold: free() is munmap
constexpr std::size_t per_period = 4;          // buffers retired per period
constexpr auto period = 1ms;
constexpr auto compute = 250us;                // the loop's own work per period
constexpr auto deadline = 500us;               // response time budget within the period

struct buffer {
    rtdefer::llist_node link;
    char* data = nullptr;
};

/// Non-real-time feeder on the other CPU: allocates and touches buffers, hands them over on an llist.
struct feeder {
    rtdefer::llist_head fresh;
    std::atomic<std::int64_t> outstanding{0};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> allocated{0};
    std::thread th;

    explicit feeder(int cpu) {
        th = std::thread([this, cpu] {
            cpu_set_t s;
            CPU_ZERO(&s);
            CPU_SET(cpu, &s);
            pthread_setaffinity_np(pthread_self(), sizeof s, &s);
            while (!stop.load(std::memory_order_acquire)) {
                if (outstanding.load(std::memory_order_relaxed) >= static_cast<std::int64_t>(4 * per_period)) {
                    std::this_thread::sleep_for(50us);
                    continue;
                }
                auto* b = new buffer;
                b->data = new char[buffer_bytes];
                std::memset(b->data, 1, buffer_bytes); // touch every page: freeing really unmaps
                outstanding.fetch_add(1, std::memory_order_relaxed);
                allocated.fetch_add(1, std::memory_order_relaxed);
                (void)fresh.add(b->link);
            }
        });
    }
    ~feeder() { finish(); }
    void finish() {
        stop.store(true, std::memory_order_release);
        if (th.joinable())
            th.join();
    }
};

void free_buffer(buffer* b) {
    delete[] b->data;
    delete b;
}

struct variant_result {
    std::string name;
    std::shared_ptr<rtdefer_bench::histogram> response = std::make_shared<rtdefer_bench::histogram>();
    std::size_t misses = 0;
    std::size_t periods = 0;
    std::uint64_t retired = 0;
    std::uint64_t freed_in_rt = 0;
    rtdefer::sched_report sched;
};

/// The real-time loop: `retire(buffer*)` is the only difference between the two variants.
template <class Retire>
void run_loop(variant_result& r, feeder& f, int cpu, std::size_t periods, Retire&& retire) {
    rtdefer::rt_thread_options o;
    o.name = "rt-loop";
    o.priority = 50;
    o.cpu = cpu;
    std::atomic<std::uint32_t> go{0};
    rtdefer::rt_thread t(o, [&] {
        while (go.load(std::memory_order_acquire) == 0)
            go.wait(0, std::memory_order_acquire);
        steady::time_point start = steady::now() + period;
        for (std::size_t k = 0; k < periods; ++k, start += period) {
            std::this_thread::sleep_until(start);
            const steady::time_point woke = steady::now();
            // The loop's own work.
            while (steady::now() - woke < compute) {
            }
            // Retire this period's buffers (whatever the feeder handed over, at most per_period).
            rtdefer::llist_node* n = f.fresh.del_all();
            std::size_t taken = 0;
            while (n != nullptr) {
                rtdefer::llist_node* next = n->next;
                if (taken < per_period) {
                    retire(rtdefer::llist_entry<buffer, &buffer::link>(n));
                    ++taken;
                } else {
                    (void)f.fresh.add(*n); // keep the rest for the next period
                }
                n = next;
            }
            f.outstanding.fetch_sub(static_cast<std::int64_t>(taken), std::memory_order_relaxed);
            r.retired += taken;
            const auto resp = steady::now() - start;
            r.response->record(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(resp).count()));
            if (resp > deadline)
                ++r.misses;
            ++r.periods;
        }
    });
    r.sched = t.sched_status();
    go.store(1, std::memory_order_release);
    go.notify_all();
    t.join();
}

int run_irq_work_scene(const scene_args& args) {
    using namespace rtdefer_bench;
    const std::size_t periods = args.quick ? 150 : 1500;
    const int cpu_a = nth_usable_cpu(0);
    const int cpu_b = usable_cpus() >= 2 ? nth_usable_cpu(1) : cpu_a;

    int failed = 0;
    variant_result inline_r, lazy_r;
    inline_r.name = "free() inline in the RT loop";
    lazy_r.name = "retire via lazy irq_work";
    std::uint64_t allocated = 0, freed = 0;
    rtdefer::irq_work_stats st{};
    {
        feeder f(cpu_b);
        // 1. Inline: the RT thread frees (munmap) itself.
        run_loop(inline_r, f, cpu_a, periods, [&](buffer* b) {
            free_buffer(b);
            ++inline_r.freed_in_rt;
            ++freed;
        });
        // The header says what the loop thread got (sched_status()), so it is printed after this run.
        std::printf("== irq_work: a periodic thread (%s, 1 ms period, CPU %d) retires %zu x 1 MiB buffers per period ==\n",
                    inline_r.sched.describe().c_str(), cpu_a, per_period);
        std::printf("   work %lld us + retire; deadline %lld us after the period starts; a feeder on CPU %d allocates\n",
                    static_cast<long long>(compute.count()), static_cast<long long>(std::chrono::microseconds(deadline).count()),
                    cpu_b);

        // 2. Deferred: push on a retire list, queue one long-lived lazy item on this CPU; the
        //    irq_work/N worker (SCHED_FIFO 1, below the RT thread) frees in the RT thread's slack.
        rtdefer::irq_work_domain_options dopt;
        dopt.tick = 0ns; // normal (non-LAZY) item: the worker is woken on empty→non-empty
        rtdefer::irq_work_domain dom(dopt);
        rtdefer::llist_head retired;
        std::atomic<std::uint64_t> freed_by_worker{0};
        rtdefer::irq_work_fn reclaim{[&] {
            rtdefer::llist_node* n = retired.del_all();
            while (n != nullptr) {
                rtdefer::llist_node* next = n->next;
                free_buffer(rtdefer::llist_entry<buffer, &buffer::link>(n));
                freed_by_worker.fetch_add(1, std::memory_order_relaxed);
                n = next;
            }
        }};
        run_loop(lazy_r, f, cpu_a, periods, [&](buffer* b) {
            (void)retired.add(b->link);
            // false: a reclaim run is pending and will see this buffer (the claim's ordering).
            (void)rtdefer::irq_work_queue(dom, reclaim);
        });
        if (rtdefer::irq_work_sync(reclaim) != rtdefer::status::ok)
            failed = 1;
        freed += freed_by_worker.load();
        st = dom.total_stats();
        f.finish();
        // Buffers the feeder made that the loops never took.
        rtdefer::llist_node* n = f.fresh.del_all();
        while (n != nullptr) {
            rtdefer::llist_node* next = n->next;
            free_buffer(rtdefer::llist_entry<buffer, &buffer::link>(n));
            ++freed;
            n = next;
        }
        allocated = f.allocated.load();
    }

    std::vector<comparison_row> rows;
    std::printf("\n  %-30s | %-9s | %-9s | %-9s | %-16s | %s\n", "variant", "resp p50", "resp p99", "resp max",
                "deadline misses", "frees in RT loop");
    for (const variant_result* r : {&inline_r, &lazy_r}) {
        const summary s = summary::of(*r->response);
        char misses[48];
        std::snprintf(misses, sizeof misses, "%zu / %zu", r->misses, r->periods);
        std::printf("  %-30s | %s | %s | %s | %-16s | %llu\n", r->name.c_str(), pad(fmt_ns(s.p50), 9).c_str(),
                    pad(fmt_ns(s.p99), 9).c_str(), pad(fmt_ns(s.max), 9).c_str(), misses,
                    static_cast<unsigned long long>(r->freed_in_rt));
    }
    const summary si = summary::of(*inline_r.response), sl = summary::of(*lazy_r.response);
    rows.push_back({"lazy irq_work: response", "p99", sl.p99, unit::ns, "free inline", "p99", si.p99});
    rows.push_back({"lazy irq_work: response", "max", sl.max, unit::ns, "free inline", "max", si.max});
    rows.push_back({"lazy irq_work: deadline misses", "", static_cast<double>(lazy_r.misses), unit::count, "free inline",
                    "", static_cast<double>(inline_r.misses)});
    print_table(rows, stdout, "side by side (same run; ratio = irq_work / inline):");
    std::printf("  RT loop: %s; worker wakes: %llu futex wakes for %llu retired buffers (%llu empty->non-empty raises)\n",
                lazy_r.sched.describe().c_str(),
                static_cast<unsigned long long>(st.futex_wakes), static_cast<unsigned long long>(lazy_r.retired),
                static_cast<unsigned long long>(st.lazy_raises));
    const bool accounted = allocated == freed;
    std::printf("  buffers: %llu allocated, %llu freed: %s\n\n", static_cast<unsigned long long>(allocated),
                static_cast<unsigned long long>(freed), accounted ? "all accounted for" : "MISMATCH");
    if (!accounted)
        failed = 1;
    if (lazy_r.freed_in_rt != 0)
        failed = 1;
    return failed;
}

} // namespace

RTDEFER_SCENE("irq_work", 50, run_irq_work_scene);
