// Showcase scene: priority inversion on one CPU. A SCHED_FIFO 20 thread cancels a timer whose 1 ms
// callback is running on a SCHED_FIFO 10 expiry thread on the same CPU. With pi_block it blocks on
// the expirer's priority-inheritance expiry lock: the expirer runs boosted and the cancel takes the
// callback's remaining ~1 ms. With spin it busy-waits: the expirer never runs again, and only a
// watchdog (this scene's main thread, on the other CPU) ends it. Full figures: bench/cancel_sync_bench.
#include "scene.hpp"

#include "harness/latency.hpp"
#include "harness/report.hpp"

#include <rtdefer/baseline/spin_wait.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/timer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

namespace {

using rtdefer::sched_policy;
using rtdefer::status;
using rtdefer::thread_ctx;
using steady = std::chrono::steady_clock;

std::int64_t ns_of(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Pins the calling (main) thread to one CPU for the scene and restores its mask afterwards.
class pin_main_thread {
public:
    explicit pin_main_thread(int cpu) {
        ok_ = pthread_getaffinity_np(pthread_self(), sizeof saved_, &saved_) == 0;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        ok_ = ok_ && pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
    }
    ~pin_main_thread() {
        if (ok_)
            pthread_setaffinity_np(pthread_self(), sizeof saved_, &saved_);
    }
    pin_main_thread(const pin_main_thread&) = delete;
    pin_main_thread& operator=(const pin_main_thread&) = delete;

private:
    cpu_set_t saved_{};
    bool ok_ = false;
};

struct row {
    bool finished = true;
    status result = status::ok;
    double worst_ns = 0, cpu_ns = 0, wall_ns = 0;
    std::vector<double> walls;
    int runs = 0;
    double median() const {
        std::vector<double> w = walls;
        std::sort(w.begin(), w.end());
        return w.empty() ? 0 : w[w.size() / 2];
    }
};

struct scene_cb {
    std::atomic<bool> started{false};
    thread_ctx* canceller = nullptr;
};

// Runs `rounds` cancels of a running 1 ms callback with wait policy P; `give_up` is P's stop flag.
template <class P>
row inversion(int cpu, int rounds, std::int64_t budget_ns, std::atomic<bool>& give_up) {
    P policy{};
    if constexpr (!std::is_same_v<P, rtdefer::pi_block>)
        policy.give_up = &give_up;
    rtdefer::timer_service_options o;
    o.capacity = 2;
    o.thread = {.name = "scene-expirer", .policy = sched_policy::fifo, .priority = 10, .cpu = cpu};
    rtdefer::timer_service<P> svc(o, policy);
    scene_cb cb;
    rtdefer::timer t;
    row r;
    std::atomic<std::int64_t> wait_start{0};
    std::atomic<bool> done{false};
    rtdefer::rt_thread canceller({.name = "scene-cancel", .policy = sched_policy::fifo, .priority = 20, .cpu = cpu},
                                 [&](thread_ctx& me) {
                                     cb.canceller = &me;
                                     for (int i = 0; i < rounds && r.finished; ++i) {
                                         cb.started.store(false, std::memory_order_relaxed);
                                         (void)svc.arm(t, steady::now(), [](rtdefer::timer&, void* a) noexcept {
                                             auto* c = static_cast<scene_cb*>(a);
                                             c->started.store(true, std::memory_order_release);
                                             (void)rtdefer::unpark(*c->canceller); // preempts us
                                             const std::int64_t s = ns_of(CLOCK_THREAD_CPUTIME_ID);
                                             while (ns_of(CLOCK_THREAD_CPUTIME_ID) - s < 1'000'000) {
                                             }
                                         }, &cb);
                                         while (!cb.started.load(std::memory_order_acquire))
                                             (void)rtdefer::park(me);
                                         const std::int64_t w0 = ns_of(CLOCK_MONOTONIC), c0 = ns_of(CLOCK_THREAD_CPUTIME_ID);
                                         wait_start.store(w0, std::memory_order_release);
                                         r.result = svc.cancel_sync(t, me);
                                         const double wall = static_cast<double>(ns_of(CLOCK_MONOTONIC) - w0);
                                         wait_start.store(0, std::memory_order_release);
                                         r.cpu_ns += static_cast<double>(ns_of(CLOCK_THREAD_CPUTIME_ID) - c0);
                                         r.wall_ns += wall;
                                         r.worst_ns = std::max(r.worst_ns, wall);
                                         r.walls.push_back(wall);
                                         ++r.runs;
                                         if (r.result == status::timed_out) {
                                             r.finished = false; // clean up: now wait properly
                                             (void)rtdefer::wait_running<rtdefer::pi_block>(t.expiry(), me);
                                         }
                                     }
                                     done.store(true, std::memory_order_release);
                                 });
    // Watchdog: this (main) thread, on another CPU, gives a spinning canceller `budget_ns`.
    while (!done.load(std::memory_order_acquire)) {
        const std::int64_t w0 = wait_start.load(std::memory_order_acquire);
        if (w0 != 0 && ns_of(CLOCK_MONOTONIC) - w0 > budget_ns)
            give_up.store(true, std::memory_order_relaxed); // relaxed: a stop request
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    canceller.join();
    give_up.store(false, std::memory_order_relaxed);
    return r;
}

int run_expiry_lock_scene(const scene_args& args) {
    using namespace rtdefer_bench;
    std::printf("== expiry_lock: cancel a running timer callback under priority inversion (one CPU) ==\n");
    if (!rtdefer::rt_scheduling_permitted())
        return showcase::skip("SCHED_FIFO is refused here, and priority inversion needs real-time priorities");
    if (usable_cpus() < 2)
        return showcase::skip("one usable CPU; the scene needs a second CPU for its watchdog");
    const int cpu = nth_usable_cpu(0);
    pin_main_thread pin(nth_usable_cpu(1)); // the watchdog (this thread) must not share the spinner's CPU
    const int rounds = args.quick ? 3 : 20;
    const std::int64_t budget = args.quick ? 200'000'000 : 500'000'000;
    std::atomic<bool> give_up{false};

    const row pi = inversion<rtdefer::pi_block>(cpu, rounds, budget, give_up);
    const row sp = inversion<rtdefer::baseline::spin>(cpu, 1, budget, give_up);

    auto cancel_cell = [&](const row& r) {
        if (!r.finished)
            return "DID NOT FINISH (watchdog stopped it after " + fmt_ns(r.worst_ns) + ")";
        return "median " + fmt_ns(r.median()) + ", worst " + fmt_ns(r.worst_ns) + " of " + std::to_string(r.runs) + " (" +
               rtdefer::to_string(r.result) + ")";
    };
    auto cpu_cell = [](const row& r) {
        return fmt_ns(r.cpu_ns / std::max(1, r.runs)) + " per cancel (" +
               std::to_string(static_cast<int>(100.0 * r.cpu_ns / std::max(1.0, r.wall_ns) + 0.5)) + "% of the wait)";
    };
    std::printf("  CPU %d: canceller SCHED_FIFO 20 cancels a timer whose 1 ms callback runs on the expiry thread,\n"
                "  SCHED_FIFO 10, same CPU.\n\n",
                cpu);
    std::printf("  %-22s | %-52s | %s\n", "", "rtdefer pi_block (PI expiry lock)", "baseline: spin-wait");
    std::printf("  %-22s | %s | %s\n", "cancel_sync", pad(cancel_cell(pi), 52).c_str(), cancel_cell(sp).c_str());
    std::printf("  %-22s | %s | %s\n", "canceller CPU", pad(cpu_cell(pi), 52).c_str(), cpu_cell(sp).c_str());
    std::printf("\n  Blocking on the expirer's priority-inheritance lock runs the callback at the canceller's\n"
                "  priority, so the cancel costs the callback's remaining time. A spinning canceller keeps the\n"
                "  lower-priority expirer off its CPU: it never finishes.\n\n");
    if (!pi.finished || pi.result != status::waited) {
        std::printf("FAILED: pi_block cancel_sync did not return waited\n");
        return 1;
    }
    return 0;
}

} // namespace

RTDEFER_SCENE("expiry_lock", 40, run_expiry_lock_scene);
