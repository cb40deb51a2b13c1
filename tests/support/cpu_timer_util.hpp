// tests/support/cpu_timer_util.hpp: what the cpu_timer and process_cpu_timer tests share.
//
//   rtdefer_test::burn_cpu_until(now, limit, done, step)  burns CPU until done() or `limit` ns of
//                                                         the clock now() passed; step() each round
//   rtdefer_test::pi_scene                                priority inversion for real on one CPU:
//                                                         a hog and a canceller beside the expirer
#pragma once

#include <rtdefer/detail/cpu_clock.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <time.h>

namespace rtdefer_test {

/// Returns: true once `done()`, false when `limit_ns` of the clock `now()` passed first. Calls
/// `step()` (e.g. the owner's task_work_run) before each look at the clock.
template <class Now, class Done, class Step>
bool burn_cpu_until(Now now, std::uint64_t limit_ns, Done done, Step step) {
    const std::uint64_t t0 = now();
    while (!done()) {
        step();
        if (now() - t0 > limit_ns)
            return false;
    }
    return true;
}

/// Priority inversion for real: the expirer (FIFO 10, started by the test) runs a timer callback
/// that calls on_callback(): it wakes the canceller (FIFO 20), which preempts it and blocks in
/// cancel_sync on the expirer's PI lock, and the hog (FIFO 15), then burns 2 ms of CPU. With
/// priority inheritance the expirer runs at 20 until the callback returns, so the hog's first look
/// finds cancel_sync already returned; without it the hog starves the expirer. Judged by event
/// order, not time. All three threads on `cpu`; the hog and the canceller wait parked until then.
class pi_scene {
public:
    /// Effects: starts the hog (`prefix`-hog) and the canceller (`prefix`-cancel), which will run
    /// `cancel(its ctx)` (a cancel_sync of the timer) and keep its status; waits until both run.
    template <class Cancel>
    pi_scene(const std::string& prefix, int cpu, Cancel cancel) {
        hog_ = rtdefer::rt_thread({.name = prefix + "-hog", .policy = rtdefer::sched_policy::fifo, .priority = 15,
                                   .cpu = cpu, .require_rt = true},
                                  [this](rtdefer::thread_ctx& me) {
                                      wait_started(me);
                                      hog_ran_first_ = !cancel_done_.load(std::memory_order_acquire);
                                      const std::uint64_t t0 = thread_cpu_ns();
                                      while (!cancel_done_.load(std::memory_order_acquire) &&
                                             thread_cpu_ns() - t0 < 400'000'000) {
                                      }
                                  });
        canceller_ = rtdefer::rt_thread({.name = prefix + "-cancel", .policy = rtdefer::sched_policy::fifo,
                                         .priority = 20, .cpu = cpu, .require_rt = true},
                                        [this, cancel](rtdefer::thread_ctx& me) {
                                            wait_started(me);
                                            result_ = cancel(me);
                                            cb_returned_before_cancel_ = cb_returned_.load(std::memory_order_acquire);
                                            cancel_done_.store(true, std::memory_order_release);
                                        });
        hog_ctx_ = &hog_.ctx();
        canceller_ctx_ = &canceller_.ctx();
        REQUIRE(eventually([&] { return ready_.load(std::memory_order_acquire) == 2; }));
    }
    pi_scene(const pi_scene&) = delete;
    pi_scene& operator=(const pi_scene&) = delete;

    /// Effects: the callback's part (`scene` is the pi_scene): see the top. Async-signal-safe (an
    /// urgent cpu_timer runs it in the interrupt hook).
    static void on_callback(void* scene) noexcept {
        auto* s = static_cast<pi_scene*>(scene);
        s->started_.store(true, std::memory_order_release);
        (void)rtdefer::unpark(*s->canceller_ctx_); // preempts us, blocks on our PI lock
        (void)rtdefer::unpark(*s->hog_ctx_);
        const std::uint64_t t0 = thread_cpu_ns();
        while (thread_cpu_ns() - t0 < 2'000'000) {
        }
        s->cb_returned_.store(true, std::memory_order_release);
    }
    /// Returns: whether the canceller's cancel_sync returned (the expirer's loop ends on it).
    [[nodiscard]] bool cancel_done() const noexcept { return cancel_done_.load(std::memory_order_acquire); }
    /// Effects: joins the canceller and the hog, then checks the event order (see the top).
    void join_and_check() {
        canceller_.join();
        hog_.join();
        CHECK(result_ == rtdefer::status::waited);
        CHECK(cb_returned_before_cancel_);
        CHECK_FALSE(hog_ran_first_); // without priority inheritance the hog starves the expirer
    }

private:
    static std::uint64_t thread_cpu_ns() noexcept { return rtdefer::detail::clock_ns(CLOCK_THREAD_CPUTIME_ID); }
    void wait_started(rtdefer::thread_ctx& me) {
        ready_.fetch_add(1, std::memory_order_release);
        while (!started_.load(std::memory_order_acquire))
            (void)rtdefer::park(me);
    }

    std::atomic<bool> started_{false}, cancel_done_{false}, cb_returned_{false};
    std::atomic<int> ready_{0};
    bool hog_ran_first_ = false;              // written by the hog, read after join
    bool cb_returned_before_cancel_ = false;  // written by the canceller, read after join
    rtdefer::status result_ = rtdefer::status::ok;
    rtdefer::thread_ctx* canceller_ctx_ = nullptr;
    rtdefer::thread_ctx* hog_ctx_ = nullptr;
    rtdefer::rt_thread hog_;       // last: joined (by join_and_check or the destructor) before the
    rtdefer::rt_thread canceller_; // members they use are destroyed
};

} // namespace rtdefer_test
