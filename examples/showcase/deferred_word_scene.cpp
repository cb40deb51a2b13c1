// Showcase scene: a busy-polling thread (SCHED_FIFO, its own CPU, isolated between safe points)
// receives 10k housekeeping requests per second, once through the deferred work word
// (ct_set_work_or_ipi: deferred to the loop's next safe point, an interrupt only if it is not
// isolated) and once as a signal per request. The loop's iteration gaps are shown as two histograms
// side by side. The full measurement: bench/deferred_word_bench.cpp, docs/deferred_word.md.
#include "scene.hpp"

#include "harness/baseline.hpp"
#include "harness/housekeeping_job.hpp"
#include "harness/report.hpp"

#include <rtdefer/deferred_word.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

#include <pthread.h>

namespace {

using namespace rtdefer_bench;
using rtdefer::status;
using rtdefer::thread_ctx;

constexpr unsigned scene_bit = 1;

using job = housekeeping_job; // the same job as deferred_word_bench's

struct run_result {
    histogram gaps;
    std::uint64_t requests = 0, jobs = 0, irqs = 0, irqs_in_sections = 0;
    bool complete = false;
    std::string sched;
};

/// One run: the polling loop on cpu_b, the sender on cpu_a; `by_signal` picks the request path.
void poll_and_request(bool by_signal, double seconds, int cpu_a, int cpu_b, run_result& r) {
    published_ctx target;
    std::atomic<bool> stop{false};
    job::reset();
    bench_thread poller({.fifo = true, .priority = 80, .cpu = cpu_b}, [&] {
        thread_ctx& self = target.attach_and_publish();
        if (by_signal)
            job::signal_target.store(&self);
        const std::uint64_t irq0 = rtdefer::interrupts_received(self);
        std::uint64_t inside = 0, irq_at_enter = 0;
        bool iso = rtdefer::ct_isolation_enter(self) == status::ok;
        irq_at_enter = rtdefer::interrupts_received(self);
        std::uint64_t prev = bench_clock::now();
        for (std::uint64_t i = 1;; ++i) {
            const std::uint64_t now = bench_clock::now();
            r.gaps.record(rtdefer_bench::clock().delta_ns(prev, now));
            prev = now;
            if ((i & 4095) != 0)
                continue;
            // Safe point: leave the section (deferred work runs here), then re-enter.
            if (iso) {
                inside += rtdefer::interrupts_received(self) - irq_at_enter;
                rtdefer::ct_isolation_exit(self);
            }
            if (stop.load(std::memory_order_relaxed)) // relaxed: a stop flag
                break;
            iso = rtdefer::ct_isolation_enter(self) == status::ok;
            irq_at_enter = rtdefer::interrupts_received(self);
            prev = bench_clock::now();
        }
        r.irqs = rtdefer::interrupts_received(self) - irq0;
        r.irqs_in_sections = inside;
        job::signal_target.store(nullptr);
    });
    r.sched = poller.outcome().describe();
    thread_ctx& tgt = target.wait();
    run_measured({.fifo = true, .priority = 80, .cpu = cpu_a}, [&] {
        const auto period = std::chrono::microseconds(100); // 10k requests/s
        auto next = std::chrono::steady_clock::now();
        const auto end = next + std::chrono::duration<double>(seconds);
        const int signo = rtdefer::interrupt_signal();
        while ((next += period) < end) {
            std::this_thread::sleep_until(next);
            job::posted.store(++r.requests, std::memory_order_relaxed);
            if (by_signal)
                pthread_kill(tgt.handle, signo);
            else
                (void)rtdefer::ct_set_work_or_ipi(tgt, 1u << scene_bit);
        }
    });
    stop.store(true);
    poller.join();
    r.jobs = job::runs.load();
    r.complete = job::covered.load() == job::posted.load();
}

int run_deferred_word_scene(const scene_args& args) {
    switches().allow_mlock = false; // one process for all scenes
    (void)rtdefer_bench::clock();  // calibrate before the first timestamp
    std::printf("== deferred_word: housekeeping for an isolated busy-polling thread, deferred vs interrupted ==\n");
    if (rtdefer::ct_work_setup() != status::ok || rtdefer::ct_register_work(scene_bit, &job::word_callback) != status::ok ||
        rtdefer::interrupt_register_hook(&job::signal_hook) != status::ok) {
        std::printf("setup failed\n");
        return 1;
    }
    const int cpu_a = nth_usable_cpu(0);
    const int cpu_b = usable_cpus() >= 2 ? nth_usable_cpu(1) : cpu_a;
    const double secs = args.quick ? 0.2 : 0.6; // < 0.95 s: no SCHED_FIFO throttling inside a run
    run_result word, sig;
    poll_and_request(false, secs, cpu_a, cpu_b, word);
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // stay clear of SCHED_FIFO throttling
    poll_and_request(true, secs, cpu_a, cpu_b, sig);

    std::printf("poll loop: %s; 10k requests/s for %.1f s from CPU %d; safe point every 4096 iterations\n\n",
                word.sched.c_str(), secs, cpu_a);
    std::printf("  loop gap        | deferred word (ct_set_work_or_ipi) | signal per request\n");
    const double edges[] = {0, 1e3, 2e3, 5e3, 10e3, 20e3, 50e3, 100e3, 1e18};
    const char* labels[] = {"< 1 µs", "1-2 µs", "2-5 µs", "5-10 µs", "10-20 µs", "20-50 µs", "50-100 µs", ">= 100 µs"};
    auto count_in = [](const histogram& h, double lo, double hi) {
        std::uint64_t n = 0;
        const std::size_t b0 = static_cast<std::size_t>(lo / 1e3);
        for (std::size_t b = b0; b < h.us_buckets() && static_cast<double>(b) * 1e3 < hi; ++b)
            n += h.us_bucket(b);
        if (hi > 1e17)
            n += h.us_overflow();
        return n;
    };
    for (int i = 0; i < 8; ++i)
        std::printf("  %s | %34llu | %llu\n", pad(labels[i], 15).c_str(), (unsigned long long)count_in(word.gaps, edges[i], edges[i + 1]),
                    (unsigned long long)count_in(sig.gaps, edges[i], edges[i + 1]));
    auto line = [&](const char* what, double a, double b) {
        std::printf("  %-15s | %s | %s\n", what, pad_left(fmt_ns(a), 34).c_str(), fmt_ns(b).c_str());
    };
    line("p50", word.gaps.percentile(0.5), sig.gaps.percentile(0.5));
    line("p99.9", word.gaps.percentile(0.999), sig.gaps.percentile(0.999));
    line("p99.99", word.gaps.percentile(0.9999), sig.gaps.percentile(0.9999));
    line("max", static_cast<double>(word.gaps.max()), static_cast<double>(sig.gaps.max()));
    std::printf("  %-15s | %34llu | %llu\n", "interrupts", (unsigned long long)word.irqs, (unsigned long long)sig.irqs);
    std::printf("  %-15s | %34llu | %llu\n", "  in sections", (unsigned long long)word.irqs_in_sections,
                (unsigned long long)sig.irqs_in_sections);
    std::printf("  %-15s | %23llu / %-8llu | %llu / %llu\n", "jobs / requests", (unsigned long long)word.jobs,
                (unsigned long long)word.requests, (unsigned long long)sig.jobs, (unsigned long long)sig.requests);
    std::printf("  (deferred requests coalesce: one job at the safe point covers every request since the last one)\n\n");
    const bool ok = word.complete && sig.complete && word.irqs_in_sections == 0;
    if (!ok)
        std::printf("FAILED: %s\n", !word.complete || !sig.complete ? "a request was lost" : "an interrupt reached an isolated section");
    (void)rtdefer::ct_unregister_work(scene_bit);
    return ok ? 0 : 1;
}

} // namespace

RTDEFER_SCENE("deferred_word", 50, run_deferred_word_scene);
