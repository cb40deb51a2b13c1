// rtdefer/detail/exit_hooks.hpp: per-subsystem work done on a thread's exit, the analogue of the
// calls do_exit() makes (exit_task_work() and friends) before the task is gone.
//
// A concept header registers its hook from an inline variable initialiser, so the hook exists as soon
// as the header is part of the program:
//   inline const bool task_work_exit_registered =
//       detail::register_exit_hook(&detail::task_work_exit, detail::exit_order::task_work);
// Hooks run on the exiting thread, in ascending exit_order, before the thread is marked exited. The
// order of the library's hooks is decided here, in one place (exit_order below).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/setup_lock.hpp>

#include <array>
#include <cstddef>

namespace rtdefer {

struct thread_ctx;

namespace detail {

using exit_hook = void (*)(thread_ctx&) noexcept;

/// When a hook runs on a thread's exit, ascending (do_exit() calls its exit_*() in a fixed order too).
/// Each hook may still produce work for the ones after it, never for the ones before:
///   deferred_word  closes the work word (later requests fail) and runs the work still pending. Its
///                  callbacks may queue task_work on their own thread: task_work's drain runs it.
///   cpu_timer      disarms every CPU-time timer and deletes the kernel timer, so no expiry pass is
///                  queued after this and a pass already queued finds nothing to run.
///   process_cpu_timer  on the designated expirer only: disarms the process-wide timers and deletes
///                  the process kernel timer; a pass already queued finds `retired` in task_work's
///                  drain and frees the expirer's state.
///   task_work      runs everything queued (deferred_word's and cpu_timer's leftovers included) and
///                  closes the list: a later add returns status::exited (exit_task_work()).
///   expiry_lock    waits until no waiter is between reading an expiry `handling` that named this
///                  thread and taking its thread_ref. Expiry passes run by the hooks above (cpu_timer's,
///                  in task_work) publish `handling`, so it runs after all of them.
/// first / last bracket the library's hooks (a hook that must see every subsystem's state, tests).
/// Equal orders run in registration order.
enum class exit_order : int {
    first = -90,
    deferred_word = 5,
    cpu_timer = 8,
    process_cpu_timer = 9,
    task_work = 10,
    expiry_lock = 50,
    last = 90,
};
static_assert(exit_order::first < exit_order::deferred_word &&
                  exit_order::deferred_word < exit_order::cpu_timer &&
                  exit_order::cpu_timer < exit_order::process_cpu_timer &&
                  exit_order::process_cpu_timer < exit_order::task_work &&
                  exit_order::task_work < exit_order::expiry_lock &&
                  exit_order::expiry_lock < exit_order::last,
              "exit_order must follow the order documented above");

struct exit_hook_table {
    struct entry {
        exit_hook fn;
        exit_order order;
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

/// Effects: registers `fn` to run on every attached thread's exit, at `order` (see exit_order).
/// Registering the same function twice is a no-op.
/// Returns: true (so it can initialise an inline variable). Aborts if the fixed table is full,
/// which is a build-time property of the program, not a run-time condition.
inline bool register_exit_hook(exit_hook fn, exit_order order) noexcept {
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
