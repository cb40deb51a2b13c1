// rt_client_bench: a real-time client's period loop (128 frames at 48 kHz: 2.667 ms, SCHED_FIFO 80,
// pinned) that receives parameter updates and retires buffers, built with rtdefer (task_work in, lazy
// irq_work out) beside the usual way (a mutex-protected parameter queue, free() inline), under a
// competing allocation load. The client is bench/harness/rt_client.hpp, the same one the JACK example
// runs inside a real jackd (examples/jack); here the loop is our own, so it runs everywhere.
//
//   rt_client_bench [--quick] [--seconds S] [--json FILE] [--no-rt]
//
// Per mode: missed periods (a cycle that ended after the next period began), the loop's response
// time (wake-up lateness + cycle) p50/p99/max, and the cycle alone; every update applied exactly once
// and every buffer freed exactly once (a failed check makes the run fail).
#include "harness/args.hpp"
#include "harness/latency.hpp"
#include "harness/report.hpp"
#include "harness/rt_client.hpp"

#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rtdefer_bench;
namespace rc = rtdefer_bench::rt_client;
using namespace std::chrono_literals;

constexpr std::size_t frames = 128;
constexpr std::int64_t period_ns = 1'000'000'000LL * frames / 48'000; // 2.667 ms
constexpr int updates_per_second = 500;
constexpr std::size_t table_floats = 64 * 1024; // 256 KiB: every free() is a munmap
constexpr int storm_threads = 2;

struct mode_result {
    std::shared_ptr<histogram> response = std::make_shared<histogram>(20000);
    std::shared_ptr<histogram> cycle = std::make_shared<histogram>(20000);
    std::uint64_t periods = 0, missed = 0;
    rc::ledger::counts counts;
    std::uint32_t sent = 0;
    rt_outcome rt;
};

std::int64_t now_ns() noexcept RTDEFER_NONBLOCKING {
    timespec ts{};
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &ts));
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

mode_result run_mode(rc::mode m, double seconds) {
    mode_result r;
    rc::client client(m, table_floats);
    std::atomic<rtdefer::thread_ctx*> loop_ctx{nullptr};
    std::atomic<bool> stop{false};
    const int cpu = nth_usable_cpu(1) >= 0 ? nth_usable_cpu(1) : nth_usable_cpu(0);
    std::thread loop([&] {
        r.rt = apply_rt_to_this_thread({.fifo = true, .priority = 80, .cpu = cpu});
        rtdefer::thread_ctx& self = rtdefer::attach_this_thread();
        loop_ctx.store(&self, std::memory_order_release); // the UI's ref is taken while we run
        std::vector<float> out(frames);
        std::int64_t next = now_ns() + period_ns;
        // relaxed: a stop flag; the loop's data is joined before it is read.
        while (!stop.load(std::memory_order_relaxed)) {
            timespec ts{static_cast<time_t>(next / 1'000'000'000LL), static_cast<long>(next % 1'000'000'000LL)};
            while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
            }
            const std::int64_t woke = now_ns();
            if (m == rc::mode::rtdefer)
                client.cycle_rtdefer(self, out.data(), frames);
            else
                client.cycle_baseline(out.data(), frames);
            const std::int64_t done = now_ns();
            r.cycle->record(static_cast<std::uint64_t>(done - woke));
            r.response->record(static_cast<std::uint64_t>(done > next ? done - next : 0));
            ++r.periods;
            next += period_ns;
            if (done > next) { // the next period has begun: this one was missed
                ++r.missed;
                while (next < done) // skip the periods that are gone, as an audio driver would (an xrun)
                    next += period_ns;
            }
        }
        rtdefer::detach_this_thread();
    });
    rtdefer::thread_ctx* raw = nullptr;
    while ((raw = loop_ctx.load(std::memory_order_acquire)) == nullptr)
        std::this_thread::sleep_for(1ms);
    rtdefer::thread_ref rt(*raw); // the loop runs until we stop it: taking the ref here is safe
    {
        rc::alloc_storm storm(storm_threads);
        const auto interval = std::chrono::nanoseconds(1'000'000'000LL / updates_per_second);
        const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        for (auto next = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < end; next += interval) {
            std::this_thread::sleep_until(next);
            (void)client.send(rt.get());
        }
        const auto drain_until = std::chrono::steady_clock::now() + 5s;
        while (client.applied() != client.sent() && std::chrono::steady_clock::now() < drain_until)
            std::this_thread::sleep_for(1ms);
    }
    stop.store(true, std::memory_order_relaxed);
    loop.join();
    client.finish();
    client.stop_workers();
    r.counts = client.check();
    r.sent = client.sent();
    return r;
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "rt_client_bench");
    report rep(opts);
    rep.print_header();
    const double seconds = opts.pick(10.0, 1.0);
    std::printf("\nperiod loop: %zu frames at 48 kHz (%.3f ms), %d updates/s of %zu KiB tables, %d threads "
                "allocating 0.25-4 MiB blocks meanwhile, %.0f s per mode\n",
                frames, period_ns / 1e6, updates_per_second, table_floats * sizeof(float) / 1024, storm_threads, seconds);

    mode_result mr[2];
    const rc::mode modes[2] = {rc::mode::rtdefer, rc::mode::baseline};
    const char* labels[2] = {"rtdefer: task_work in, lazy irq_work out", "mutex + free() in the loop"};
    for (int i = 0; i < 2; ++i) {
        mr[i] = run_mode(modes[i], seconds);
        const auto& r = mr[i];
        rep.check(r.counts.ok() && r.sent > 0,
                  std::string(rc::to_string(modes[i])) + ": every update applied once and freed once (lost " +
                      std::to_string(r.counts.lost) + ", applied twice " + std::to_string(r.counts.applied_twice) +
                      ", not freed " + std::to_string(r.counts.not_freed) + ", freed twice " +
                      std::to_string(r.counts.freed_twice) + ")");
        rep.add(latency_result::from(std::string("response: ") + labels[i],
                                     "from the period's start to the end of its cycle", r.response, r.rt));
        rep.add(latency_result::from(std::string("cycle: ") + labels[i], "the cycle alone", r.cycle, r.rt));
        std::printf("  %-42s %llu periods, %llu missed, %u updates\n", labels[i],
                    static_cast<unsigned long long>(r.periods), static_cast<unsigned long long>(r.missed), r.sent);
    }
    const auto sr = summary::of(*mr[0].response), sb = summary::of(*mr[1].response);
    rep.compare("missed periods per 10^4: rtdefer", "count",
                mr[0].periods ? 1e4 * static_cast<double>(mr[0].missed) / static_cast<double>(mr[0].periods) : 0,
                unit::count, "mutex + free()", "count",
                mr[1].periods ? 1e4 * static_cast<double>(mr[1].missed) / static_cast<double>(mr[1].periods) : 0);
    rep.compare("loop response: rtdefer", "p99", sr.p99, unit::ns, "mutex + free()", "p99", sb.p99);
    rep.compare("loop response: rtdefer", "max", sr.max, unit::ns, "mutex + free()", "max", sb.max);
    rep.print_table("side by side (same run; ratio = rtdefer / baseline, lower is better):");
    return rep.finish();
}
