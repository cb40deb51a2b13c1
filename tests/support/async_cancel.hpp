// tests/support/async_cancel.hpp: a rig for run loops whose host cancels their thread asynchronously
// (jack2's jack_deactivate() does: PTHREAD_CANCEL_ASYNCHRONOUS on its real-time thread).
//
//   rtdefer_test::async_cancel_unsupported()  why this build cannot run such a test (TSan), or null
//   rtdefer_test::cancel_and_join(host, delay)  cancels and joins a host's own thread after `delay`
//   rtdefer_test::async_cancel_victim   a thread that runs `setup` with cancellation off, then
//                                       `loop` with asynchronous cancellation on; cancel() lands at
//                                       a random point of the loop; join() reports PTHREAD_CANCELED
//
// Use per round: start a victim whose loop drains some queue (task_work_run, irq_work_run, a
// deferred-word flush), let another thread add items and record each verdict in a ledger
// (ledger.hpp: expect(i) for an accepted add, refuse(i) for a refused one; the callbacks call
// record(i)), cancel, join both, then count: every accepted add ran exactly once (in the loop, or in
// the thread's exit hooks), nothing refused ran.
//
// The loop function must be async-cancel-clean: a plain function whose frame has no C++ cleanups
// (no std::string, no RAII locals, no try). Asynchronous cancellation unwinds from whatever
// instruction the signal interrupted; a frame with an exception table covers only its call sites,
// so the unwinder finds no entry for an arbitrary instruction and calls std::terminate. Frames
// without a table (C-like code, and rtdefer's run loops, whose calls are all nothrow) are passed
// through. The victim's start routine below is such a frame too.
#pragma once

#include "test_util.hpp"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

namespace rtdefer_test {

/// Returns: why asynchronous cancellation cannot be tested in this build, or nullptr if it can.
/// ThreadSanitizer's runtime is not async-cancel-safe: the victim's instrumented code runs inside
/// the runtime (every atomic, every call), a cancellation landing there unwinds past a runtime lock,
/// and the next thread start blocks on it forever (seen: a hang in TraceSwitch). Under
/// RealtimeSanitizer __rtsan_disable/__rtsan_enable (rtsan_trust) are not declared nothrow, so
/// rtdefer's noexcept frames carry terminate regions and a forced unwind through them terminates.
/// ASan and UBSan run it.
inline const char* async_cancel_unsupported() noexcept {
    if (tsan_build)
        return "ThreadSanitizer's runtime is not async-cancel-safe (a cancel inside it leaves a runtime lock held)";
    if (RTDEFER_HAS_RTSAN)
        return "RTSan build: the rtsan interface is not nothrow, a cancel unwind would terminate";
    return nullptr;
}

/// What cancel_and_join() saw.
struct cancel_outcome {
    int cancel_rc = -1; ///< pthread_cancel's result
    int join_rc = -1;   ///< pthread_join's result
    void* result = nullptr;
    /// Returns: whether the thread was cancelled and joined (its result is PTHREAD_CANCELED).
    [[nodiscard]] bool cancelled() const noexcept { return cancel_rc == 0 && join_rc == 0 && result == PTHREAD_CANCELED; }
};

/// Effects: sleeps `delay`, then cancels `host` (a host's own thread, as jack2 cancels its
/// real-time thread) and joins it. Returns: what each step returned.
inline cancel_outcome cancel_and_join(pthread_t host, std::chrono::microseconds delay) {
    std::this_thread::sleep_for(delay);
    cancel_outcome o;
    o.cancel_rc = ::pthread_cancel(host);
    o.join_rc = ::pthread_join(host, &o.result);
    return o;
}

/// A thread to be cancelled asynchronously at a random point of its loop.
class async_cancel_victim {
public:
    using fn = void (*)(void* arg);

    /// Effects: starts the thread and waits until it is in `loop`. `setup(arg)` runs first with
    /// cancellation disabled (it may allocate, attach, publish a thread_ref); then the thread turns
    /// on PTHREAD_CANCEL_ASYNCHRONOUS and calls `loop(arg)`, which must not return (cancellation is
    /// its only exit) and must be async-cancel-clean (see the top of this file).
    /// Returns: started() false if pthread_create failed.
    async_cancel_victim(fn setup, fn loop, void* arg) : setup_(setup), loop_(loop), arg_(arg) {
        started_ = ::pthread_create(&thread_, nullptr, &start, this) == 0;
        if (started_)
            while (!in_loop_.load(std::memory_order_acquire))
                std::this_thread::yield();
    }
    async_cancel_victim(const async_cancel_victim&) = delete;
    async_cancel_victim& operator=(const async_cancel_victim&) = delete;
    ~async_cancel_victim() {
        if (started_ && !joined_) {
            cancel_now();
            (void)join();
        }
    }

    [[nodiscard]] bool started() const noexcept { return started_; }

    /// Effects: waits a random time drawn from `rng` (mostly a short spin, sometimes a sleep of up
    /// to 200 µs, so the request lands anywhere in the loop), then pthread_cancel.
    template <class Rng> void cancel_at_random_point(Rng& rng) {
        const std::uint32_t r = static_cast<std::uint32_t>(rng());
        if (r % 4 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(r / 4 % 200));
        } else {
            for (std::uint32_t i = r % 20000; i > 0; --i)
                cpu_relax();
        }
        cancel_now();
    }
    void cancel_now() noexcept { (void)::pthread_cancel(thread_); }

    /// Effects: joins the thread. Returns: whether it ended by cancellation, i.e. not by returning
    /// (start()'s marker). Not `result == PTHREAD_CANCELED`: glibc 2.36 leaves the result unset
    /// (nullptr) when it acts on a request inside pthread_setcancelstate.
    bool join() noexcept {
        void* ret = nullptr;
        join_rc_ = ::pthread_join(thread_, &ret);
        joined_ = join_rc_ == 0;
        ret_ = ret;
        return joined_ && ret != static_cast<void*>(&returned_marker);
    }
    /// Returns: pthread_join's result and the thread's return value (diagnostics after join()).
    [[nodiscard]] int join_rc() const noexcept { return join_rc_; }
    [[nodiscard]] void* returned() const noexcept { return ret_; }

private:
    // No cleanups and not noexcept: this frame has no exception table, so the forced unwind
    // passes through it whatever it interrupted (see the top of the file).
    static void* start(void* p) {
        auto* v = static_cast<async_cancel_victim*>(p);
        (void)::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
        v->setup_(v->arg_);
        (void)::pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, nullptr);
        // release: publishes setup's effects to the constructor's acquire.
        v->in_loop_.store(true, std::memory_order_release);
        (void)::pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, nullptr);
        v->loop_(v->arg_);
        return &returned_marker; // not reached: loop() never returns
    }
    static inline int returned_marker = 0;

    fn setup_, loop_;
    void* arg_;
    pthread_t thread_{};
    bool started_ = false, joined_ = false;
    int join_rc_ = 0;
    void* ret_ = nullptr;
    std::atomic<bool> in_loop_{false};
};

} // namespace rtdefer_test
