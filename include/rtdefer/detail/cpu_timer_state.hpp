// rtdefer/detail/cpu_timer_state.hpp: the per-thread part of cpu_timer, embedded in thread_ctx (the
// kernel's task_struct::posix_cputimers and posix_cputimers_work). The protocol lives in
// rtdefer/cpu_timer.hpp; this header lays out the words the interrupt hook reads without a lock and
// owns the queue's lifetime (freed with the ctx, so a cpu_timer holding a thread_ref may always
// reach it). Kept light: thread.hpp includes it into every translation unit.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>

namespace rtdefer {

class cpu_timer;

namespace detail {

struct cpu_timer_queue; // cpu_timer.hpp: heaps, queue lock, kernel timer, task_work item

inline constexpr std::uint64_t cpu_never = std::numeric_limits<std::uint64_t>::max();

/// Per-thread cpu_timer state. All deadlines are the owner's CPU time in ns (cpu_never: none).
struct cpu_timer_state {
    /// Set once by cpu_timer_setup() on the owner; freed by the destructor (the ctx's last put).
    cpu_timer_queue* queue = nullptr;
    void (*destroy)(cpu_timer_queue*) noexcept = nullptr;

    /// Earliest armed deadline of either model (the kernel's nextevt): the hook's one-load check.
    std::atomic<std::uint64_t> next_ns{cpu_never};
    /// Earliest urgent deadline and its timer (the hook fires it in interrupt context).
    std::atomic<std::uint64_t> urgent_ns{cpu_never};
    std::atomic<cpu_timer*> urgent{nullptr};
    /// Owner-only (owner and its hook): what the kernel timer is armed for, cpu_never when not
    /// armed; armed_wall_ns is its CLOCK_MONOTONIC expiry under the hybrid policy.
    std::atomic<std::uint64_t> armed_cpu_ns{cpu_never};
    std::atomic<std::uint64_t> armed_wall_ns{cpu_never};
    /// CPUTIMERS_WORK_SCHEDULED: the expiry task_work is queued and has not finished its pass.
    std::atomic<bool> scheduled{false};
    /// The hard-context lock (a raw PI futex word: 0 or the holder's tid): held by the hook while
    /// it reads `urgent` and runs an urgent callback; a canceller blocks on it (FUTEX_LOCK_PI).
    std::atomic<std::uint32_t> hard{0};

    cpu_timer_state() noexcept = default;
    ~cpu_timer_state() {
        if (queue != nullptr)
            destroy(queue);
    }
    cpu_timer_state(const cpu_timer_state&) = delete;
    cpu_timer_state& operator=(const cpu_timer_state&) = delete;
};

} // namespace detail
} // namespace rtdefer
