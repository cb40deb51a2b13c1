// rtdefer/detail/exit_hooks.hpp: per-subsystem work done on a thread's exit, the analogue of the
// calls do_exit() makes (exit_task_work() and friends) before the task is gone.
//
// A concept header registers its hook from an inline variable initialiser, so the hook exists as soon
// as the header is part of the program:
//   inline const bool task_work_exit_registered =
//       detail::register_exit_hook(&detail::task_work_exit, 10);
// Hooks run on the exiting thread, in ascending `order`, before the thread is marked exited.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/setup_lock.hpp>

#include <array>
#include <cstddef>

namespace rtdefer {

struct thread_ctx;

namespace detail {

using exit_hook = void (*)(thread_ctx&) noexcept;

struct exit_hook_table {
    struct entry {
        exit_hook fn;
        int order;
    };
    static constexpr std::size_t capacity = 16;
    // Registration and the exit path are both setup-time: a mutex is fine and keeps this simple.
    setup_mutex lock;
    std::array<entry, capacity> entries{};
    std::size_t count = 0;
};

inline exit_hook_table& exit_hooks() noexcept {
    static exit_hook_table table; // constant-initialised (constexpr mutex and array): no guard
    return table;
}

/// Effects: registers `fn` to run on every attached thread's exit, ordered by `order` (ascending).
/// Registering the same function twice is a no-op.
/// Returns: true (so it can initialise an inline variable). Aborts if the fixed table is full,
/// which is a build-time property of the program, not a run-time condition.
inline bool register_exit_hook(exit_hook fn, int order) noexcept {
    auto& t = exit_hooks();
    setup_guard guard(t.lock);
    for (std::size_t i = 0; i < t.count; ++i)
        if (t.entries[i].fn == fn)
            return true;
    RTDEFER_ASSERT(t.count < exit_hook_table::capacity, "exit hook table full");
    // Insertion keeps the table sorted by order; equal orders keep registration order.
    std::size_t i = t.count++;
    for (; i > 0 && t.entries[i - 1].order > order; --i)
        t.entries[i] = t.entries[i - 1];
    t.entries[i] = {fn, order};
    return true;
}

/// Effects: runs every registered hook for `ctx`, in order. Called once per thread by the detach path.
inline void run_exit_hooks(thread_ctx& ctx) noexcept {
    auto& t = exit_hooks();
    std::array<exit_hook_table::entry, exit_hook_table::capacity> snapshot;
    std::size_t n;
    {
        setup_guard guard(t.lock);
        snapshot = t.entries;
        n = t.count;
    }
    // Run outside the lock: a hook may run user callbacks, which may register nothing but may block.
    for (std::size_t i = 0; i < n; ++i)
        snapshot[i].fn(ctx);
}

} // namespace detail
} // namespace rtdefer
