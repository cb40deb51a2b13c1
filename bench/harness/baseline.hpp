// rtdefer benchmark harness: this machine's limits, measured in the same run as the figure they
// are set beside.
//
//   auto opts = rtdefer_bench::parse_args(argc, argv, "x_bench");
//   rtdefer_bench::report rep(opts);
//   rtdefer_bench::baselines base = rtdefer_bench::measure_baselines(opts, &rep);  // prints + records
//   rep.compare("irq_work_queue_on", "p50", mine.s.p50, unit::ns, "signal IPI", "p50", base.ipi.s.p50);
//
// Figures (all distributions in ns, one sample per event):
//   clock          - now() immediately followed by now_end(): the floor of any single-op figure.
//   cacheline_rtt  - ROUND TRIP of one cache line between two CPUs: thread A (cpu_a) writes, thread B
//                    (cpu_b, spinning) answers on the same line, A sees the answer. One-way ≈ rtt/2.
//                    Includes one clock read pair.
//   futex_wake     - wake-to-run: from just before rtdefer::unpark() on cpu_a to the parked owner on
//                    cpu_b running again (its first timestamp after park() returns). Only samples
//                    where unpark() actually issued FUTEX_WAKE count (the owner was parked).
//   unpark_call    - the waker's side of the same event: the unpark() call itself (the syscall).
//   ipi            - interrupt-signal delivery to a BUSY thread: from just before rtdefer::send_ipi()
//                    on cpu_a to the interrupt hook running on the spinning target on cpu_b.
// The measured threads run SCHED_FIFO (priority 80) when permitted, are pinned, and the process is
// mlockall'ed when permitted; every result carries what was actually in force (rt_outcome).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include "handoff.hpp"
#include "latency.hpp"
#include "report.hpp"

namespace rtdefer_bench {

struct baseline_config {
    std::size_t rtt_samples = 200000;
    std::size_t wake_samples = 10000;
    std::size_t ipi_samples = 10000;
    int cpu_a = -1;  ///< waker / sender / pinger
    int cpu_b = -1;  ///< woken / interrupted / ponger
    int priority = 80;
    /// Gap between wake/IPI samples, so the target is really asleep in futex_wait (wake) and the
    /// runs do not monopolise a shared machine.
    std::chrono::microseconds gap{50};

    /// Two distinct usable CPUs: what every cross-CPU figure needs.
    bool two_cpus() const { return cpu_a >= 0 && cpu_b >= 0 && cpu_a != cpu_b; }
};

/// Defaults for a full or --quick run (quick: about 0.3 s for all baselines).
inline baseline_config baseline_defaults(const options& o) {
    baseline_config c;
    c.rtt_samples = o.sample_count(200000, 20000);
    c.wake_samples = o.sample_count(10000, 1000);
    c.ipi_samples = o.sample_count(10000, 1000);
    c.cpu_a = nth_usable_cpu(0);
    c.cpu_b = nth_usable_cpu(1);
    return c;
}

namespace baseline_detail {

inline latency_result invalid(std::string name, std::string what, std::string why) {
    return latency_result::unavailable(std::move(name), std::move(what), std::move(why));
}

// The IPI hook state: the hook is process-global and permanent (there is no unregister), so it is
// armed only while measure_ipi_delivery runs, and only for its target.
inline std::atomic<rtdefer::thread_ctx*> ipi_target{nullptr};
inline event_stamp ipi_event;

inline void ipi_hook(rtdefer::thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    // relaxed: compared by identity only; the target was published before the first send_ipi.
    if (self == nullptr || self != ipi_target.load(std::memory_order_relaxed)) return;
    // A TSC read (steady_clock where the TSC is not trusted: a vDSO call, still async-signal-safe).
    ipi_event.mark();
}

}  // namespace baseline_detail

/// Clock read overhead: back-to-back now()/now_end() on the calling thread.
inline latency_result measure_clock_overhead(std::size_t samples = 100000) {
    auto h = std::make_shared<histogram>();
    for (std::size_t i = 0; i < samples; ++i) {
        std::uint64_t a = bench_clock::now();
        std::uint64_t b = bench_clock::now_end();
        h->record(clock().delta_ns(a, b));
    }
    return latency_result::from(std::string("clock read pair (") + clock().source() + ")",
                                "now() then now_end() back to back: included once in every single-event figure", h);
}

/// Cache-line round trip between cpu_a and cpu_b (two spinning threads, one atomic).
inline latency_result measure_cacheline_roundtrip(const baseline_config& c) {
    const char* what = "round trip: A writes the line, B (other CPU) answers on it, A sees the answer; one-way ~ rtt/2";
    if (!c.two_cpus())
        return baseline_detail::invalid("cache-line round trip", what, "needs two usable CPUs");
    lock_memory_once();
    struct alignas(64) line {
        std::atomic<std::uint64_t> v{0};
    };
    auto shared = std::make_unique<line>();
    std::atomic<bool> partner_ok{true};
    auto h = std::make_shared<histogram>();
    const std::size_t warm = std::min<std::size_t>(1000, c.rtt_samples / 10);
    const std::size_t total = c.rtt_samples + warm;
    constexpr std::uint64_t stop = ~0ull;

    bench_thread partner({.fifo = true, .priority = c.priority, .cpu = c.cpu_b}, [&] {
        for (std::uint64_t k = 0;; ++k) {
            std::uint64_t want = 2 * k + 1, got = 0;
            // acquire/release on the ping-pong line: each side's write is what the other waits for.
            if (!spin_until([&] {
                    got = shared->v.load(std::memory_order_acquire);
                    return got == want || got == stop;
                })) {
                partner_ok.store(false, std::memory_order_relaxed);  // relaxed: read after join
                return;
            }
            if (got == stop) return;
            shared->v.store(want + 1, std::memory_order_release);
        }
    });
    (void)partner.outcome();
    bool ok = true;
    rt_outcome o = run_measured({.fifo = true, .priority = c.priority, .cpu = c.cpu_a}, [&] {
        for (std::size_t i = 0; i < total && ok; ++i) {
            const std::uint64_t ping = 2 * i + 1;
            std::uint64_t t0 = bench_clock::now();
            shared->v.store(ping, std::memory_order_release);
            ok = spin_until([&] { return shared->v.load(std::memory_order_acquire) == ping + 1; });
            std::uint64_t t1 = bench_clock::now_end();
            if (i >= warm) h->record(clock().delta_ns(t0, t1));
        }
        shared->v.store(stop, std::memory_order_release);
    });
    partner.join();
    if (!ok || !partner_ok.load(std::memory_order_relaxed))
        return baseline_detail::invalid("cache-line round trip", what, "partner did not answer within 2 s");
    char b[160];
    std::snprintf(b, sizeof b, "CPU %d <-> CPU %d; one-way p50 ~ %s; partner %s", c.cpu_a, c.cpu_b,
                  fmt_ns(h->percentile(0.5) / 2).c_str(), partner.outcome().describe().c_str());
    return latency_result::from("cache-line round trip", what, h, o, b);
}

/// The hand-off rig's placement for the two CPUs of `c`, `samples` rounds after the warm-up.
inline handoff_config handoff_for(const baseline_config& c, std::size_t samples) {
    handoff_config h;
    h.cpu_a = c.cpu_a;
    h.cpu_b = c.cpu_b;
    h.priority = c.priority;
    h.gap = c.gap;
    h.samples = samples;
    return h;
}

/// Futex wake-to-run via rtdefer::unpark (and the unpark() call cost when it makes the syscall), on
/// the hand-off rig: the owner parks; it marks its arrival when park() returns.
/// Returns {wake_to_run, unpark_call}.
inline std::pair<latency_result, latency_result> measure_futex_wake(const baseline_config& c) {
    const char* what = "from just before unpark() (CPU a) to the parked owner running again (CPU b)";
    const char* what_call = "the unpark() call that issues FUTEX_WAKE to a parked owner (waker side)";
    if (!c.two_cpus())
        return {baseline_detail::invalid("futex wake-to-run", what, "needs two usable CPUs"),
                baseline_detail::invalid("unpark() syscall (waker)", what_call, "needs two usable CPUs")};
    handoff_rig rig(handoff_for(c, c.wake_samples));
    handoff_result r = rig.run(parked_owner{rig.arrived}, unpark_waker{});
    if (r.timeouts)
        return {baseline_detail::invalid("futex wake-to-run", what, "owner did not respond within 2 s"),
                baseline_detail::invalid("unpark() syscall (waker)", what_call, "owner did not respond within 2 s")};
    char b[200];
    std::snprintf(b, sizeof b, "CPU %d -> CPU %d; owner %s; %llu rounds skipped (owner not yet parked)", c.cpu_a,
                  c.cpu_b, r.owner.describe().c_str(), static_cast<unsigned long long>(r.not_woken));
    return {latency_result::from("futex wake-to-run", what, r.handed, r.producer, b),
            latency_result::from("unpark() syscall (waker)", what_call, r.fire, r.producer)};
}

/// Interrupt-signal delivery (rtdefer::send_ipi) to a busy, spinning thread on another CPU.
inline latency_result measure_ipi_delivery(const baseline_config& c) {
    const char* what = "from just before send_ipi() (CPU a) to the interrupt hook running on the busy target (CPU b)";
    if (!c.two_cpus())
        return baseline_detail::invalid("signal IPI to busy thread", what, "needs two usable CPUs");
    rtdefer::status st = rtdefer::interrupt_install();
    if (st != rtdefer::status::ok)
        return baseline_detail::invalid("signal IPI to busy thread", what,
                                        std::string("interrupt_install: ") + rtdefer::to_string(st));
    st = rtdefer::interrupt_register_hook(&baseline_detail::ipi_hook);
    if (st != rtdefer::status::ok)
        return baseline_detail::invalid("signal IPI to busy thread", what,
                                        std::string("interrupt_register_hook: ") + rtdefer::to_string(st));
    lock_memory_once();
    published_ctx target;  // declared before the threads: outlives them
    std::atomic<bool> stop{false};
    auto h = std::make_shared<histogram>();
    std::size_t timeouts = 0;
    const std::size_t warm = std::min<std::size_t>(50, c.ipi_samples / 10);
    const std::size_t total = c.ipi_samples + warm;

    bench_thread busy({.fifo = true, .priority = c.priority, .cpu = c.cpu_b}, [&] {
        (void)target.attach_and_publish();
        // Busy: user-space spinning, no syscalls, so delivery needs the kernel to kick this CPU.
        while (!stop.load(std::memory_order_relaxed)) cpu_relax();  // relaxed: a stop flag
    });
    (void)busy.outcome();
    rt_outcome o = run_measured({.fifo = true, .priority = c.priority, .cpu = c.cpu_a}, [&] {
        rtdefer::thread_ctx& t = target.wait();
        baseline_detail::ipi_target.store(&t, std::memory_order_relaxed);  // relaxed: see ipi_hook
        for (std::size_t i = 0; i < total; ++i) {
            std::this_thread::sleep_for(c.gap);
            const std::uint64_t armed = baseline_detail::ipi_event.arm();
            std::uint64_t t0 = bench_clock::now(), t1 = 0;
            if (rtdefer::send_ipi(t) != rtdefer::status::ok || !baseline_detail::ipi_event.wait(armed, t1)) {
                ++timeouts;
                break;
            }
            if (i >= warm) h->record(clock().delta_ns(t0, t1));
        }
        baseline_detail::ipi_target.store(nullptr, std::memory_order_relaxed);
        stop.store(true, std::memory_order_relaxed);
    });
    busy.join();
    if (timeouts)
        return baseline_detail::invalid("signal IPI to busy thread", what, "send_ipi failed or the hook did not run within 2 s");
    return latency_result::from("signal IPI to busy thread", what, h, o,
                                "CPU " + std::to_string(c.cpu_a) + " -> CPU " + std::to_string(c.cpu_b) + "; target " +
                                    busy.outcome().describe() + "; signal SIGRTMIN+" +
                                    std::to_string(rtdefer::interrupt_signal() - SIGRTMIN));
}

/// All of the machine's limits, measured now.
struct baselines {
    latency_result clock, cacheline_rtt, futex_wake, unpark_call, ipi;
};

/// Measure every baseline (quick: ~0.3 s; full: ~2 s); print each line and add it to `rep` if given.
inline baselines measure_baselines(const options& o, report* rep = nullptr) {
    baseline_config c = baseline_defaults(o);
    baselines b;
    b.clock = measure_clock_overhead(o.pick<std::size_t>(100000, 10000));
    b.cacheline_rtt = measure_cacheline_roundtrip(c);
    auto fw = measure_futex_wake(c);
    b.futex_wake = fw.first;
    b.unpark_call = fw.second;
    b.ipi = measure_ipi_delivery(c);
    if (rep) {
        std::printf("machine limits (this run):\n");
        for (auto* r : {&b.clock, &b.cacheline_rtt, &b.futex_wake, &b.unpark_call, &b.ipi}) rep->add(*r);
    }
    return b;
}

}  // namespace rtdefer_bench
