// rtdefer/detail/task_work_state.hpp: the per-thread part of task_work, embedded in thread_ctx
// (the kernel's task_struct::task_works). The protocol that moves these words lives in
// rtdefer/task_work.hpp; this header only lays them out and owns the cancel lock's lifetime.
// Kept light: thread.hpp includes it into every translation unit.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/pi_mutex.hpp>

#include <atomic>
#include <cstdint>

namespace rtdefer {

struct callback_head;

namespace detail {

/// Per-thread task_work state.
///
/// Layout: everything the owner touches on each task_work_run pass shares one cache line with
/// the list head. Producers own that line only for their CAS; the owner's exchange brings it in
/// and the loads that follow (cancel_seq, deferred, the notify flags) then hit. The PI lock, used
/// only by cancellers and the exit path, sits on its own line.
struct task_work_state {
    /// LIFO stack of queued items (newest first), nullptr when empty, or the exited sentinel.
    alignas(cacheline_size) std::atomic<callback_head*> works{nullptr};
    /// Canceller generation: odd while a canceller walks `works` (see task_work.hpp, "cancel").
    std::atomic<std::uint32_t> cancel_seq{0};
    /// A chain the owner detached while a canceller was walking: it runs once cancel_seq moves on.
    /// Written by the owner only; atomic because cancellers and task_work_pending() read it.
    std::atomic<callback_head*> deferred{nullptr};
    /// The cancel_seq value that blocked `deferred`. Written by the owner before `deferred`.
    std::atomic<std::uint32_t> deferred_seq{0};
    /// Owner-only: task_work_run is on the stack (nested runs would break FIFO order).
    bool running = false;
    /// notify::resume/signal: the owner was unparked and has not started a run pass since
    /// (TIF_NOTIFY_RESUME): later adds ride on that wake instead of unparking again.
    std::atomic<bool> resume_pending{false};
    /// notify::signal already sent and not yet consumed by a run pass (TIF_NOTIFY_SIGNAL).
    std::atomic<bool> signal_pending{false};

    /// Serialises cancellers (and the exit path against them). PTHREAD_PRIO_INHERIT: a canceller
    /// that blocks behind another boosts it; the owner takes it only in blocking paths
    /// (wait_for_work_until, thread exit), never in task_work_run.
    alignas(cacheline_size) pi_mutex cancel_lock;

    task_work_state() noexcept {
        RTDEFER_ASSERT(cancel_lock.init_status() == status::ok, "task_work: pthread_mutex_init failed");
    }
    task_work_state(const task_work_state&) = delete;
    task_work_state& operator=(const task_work_state&) = delete;
};

} // namespace detail
} // namespace rtdefer
