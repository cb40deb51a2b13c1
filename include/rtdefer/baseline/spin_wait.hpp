// rtdefer/baseline/spin_wait.hpp: the spin-wait policies, kept ONLY as baselines to measure against.
//
// Both busy-wait until a running callback has returned. A SCHED_FIFO waiter that out-prioritises
// the expirer on the expirer's CPU never lets it run again, so these never finish there (the
// pre-RT hrtimer_cancel loop); the library's answer is pi_block (rtdefer/expiry_lock.hpp). They
// satisfy rtdefer::wait_policy, so wait_running<baseline::spin> and timer_service<baseline::spin>
// compile the very same code path that is measured with pi_block. `give_up`, set by another thread
// (a watchdog), makes the wait return timed_out; the callback may then still run.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>

#include <sched.h>

namespace rtdefer::baseline {

/// Busy-wait with cpu_relax(). FOR MEASUREMENT ONLY: burns its CPU and never finishes if it
/// out-prioritises the expirer on the expirer's CPU.
/// Progress: unbounded under inversion. Real-time safety: no syscall, no allocation; spins.
struct spin {
    static constexpr const char* name = "spin";
    const std::atomic<bool>* give_up = nullptr;
    template <class Running>
    status wait(thread_ctx& /*expirer*/, Running&& still_running) const noexcept RTDEFER_NONBLOCKING {
        return detail::poll_until_done(still_running, give_up, []() noexcept RTDEFER_NONBLOCKING { detail::cpu_relax(); });
    }
};

/// Busy-wait with sched_yield(). FOR MEASUREMENT ONLY: under SCHED_FIFO, sched_yield only lets
/// threads of the same priority run, so a lower-priority expirer on the same CPU still starves.
/// Progress: unbounded under inversion. Real-time safety: a syscall per round; spins.
struct spin_yield {
    static constexpr const char* name = "spin_yield";
    const std::atomic<bool>* give_up = nullptr;
    template <class Running>
    status wait(thread_ctx& /*expirer*/, Running&& still_running) const noexcept RTDEFER_BLOCKING {
        return detail::poll_until_done(still_running, give_up, []() noexcept { ::sched_yield(); });
    }
};

static_assert(wait_policy<spin> && wait_policy<spin_yield>);

} // namespace rtdefer::baseline
