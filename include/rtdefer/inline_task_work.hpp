// rtdefer/inline_task_work.hpp: a task_work item that stores its callable inline (no allocation)
// and says when it is done: neither queued nor running, so that it may be re-emplaced, reused from
// a pool, or destroyed. Part of the task_work contract; rtdefer/task_work.hpp includes it.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>

#include <atomic>
#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace rtdefer {

/// A callback_head that stores a callable inline: no allocation, fixed capacity checked at compile
/// time. The callable runs with no arguments each time the item runs; the item may be re-queued,
/// also from its own callable.
///
/// "Not queued" is not "done": the runner releases an item (R6) before its callable runs, so that
/// a raw callback may re-queue or free its own callback_head. An inline item is also counted as
/// running from before (R6) until its callable has returned, and done() is the one test that the
/// item and its callable are finished with: re-emplace, reuse or destroy it only when done() is true.
///
///   next       running   done()   state                      left by
///   DEQUEUED   0         true     idle: the caller's         add (A1): → queued
///   link       any       false    queued                     run: running += 1 (IW1), then
///                                                            → DEQUEUED (R6); cancel (C6): → idle
///   DEQUEUED   >= 1      false    running (callable on the   the callable returns: running -= 1
///                                 owner's stack)             (IW2) → idle, or queued if re-added
///
/// emplace() and the destructor assert done(); try_emplace() returns status::busy instead. So an
/// inline item cannot be re-emplaced or destroyed from inside its own callable (it is running
/// then); a self-freeing item is a raw callback_head, whose callback may free it as in the kernel.
///
///   rtdefer::inline_task_work<> item([&]() noexcept { gain = new_gain; });
///   (void)rtdefer::task_work_add(loop_ctx, item);
///   ...
///   if (item.try_emplace([&]() noexcept { gain = newer_gain; }) == rtdefer::status::ok)
///       (void)rtdefer::task_work_add(loop_ctx, item);
template <std::size_t Capacity = 6 * sizeof(void*)>
class inline_task_work : public detail::inline_task_work_base {
public:
    inline_task_work() noexcept = default;

    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, inline_task_work>>>
    explicit inline_task_work(F&& f) noexcept {
        store(std::forward<F>(f));
    }
    inline_task_work(const inline_task_work&) = delete;
    inline_task_work& operator=(const inline_task_work&) = delete;
    /// Precondition: done() (asserted): not queued, and its callable not running.
    ~inline_task_work() {
        RTDEFER_ASSERT(done(), "inline_task_work destroyed while queued or running (wait for done())");
        reset();
    }

    /// Returns: true when the item is neither queued nor running: the library and the callable are
    /// finished with it, and the callable's effects are visible to the caller. Exact for the thread
    /// that queues the item; racy (by nature) if another thread may queue it concurrently.
    /// Progress: wait-free. Real-time safety: yes; async-signal-safe.
    [[nodiscard]] bool done() const noexcept RTDEFER_NONBLOCKING {
        // acquire: pairs with (R6)/(C6)/(A4); seeing (R6) also shows the count raised by (IW1).
        if (task_work_queued(*this))
            return false;
        // (ITW1) acquire: pairs with (IW2) of every run counted so far (an RMW release sequence).
        return running_.load(std::memory_order_acquire) == 0;
    }

    /// Effects: replaces the stored callable. Precondition: done() (asserted; see try_emplace).
    /// Progress: wait-free. Real-time safety: no allocation (F's move/copy constructor permitting).
    template <class F> void emplace(F&& f) noexcept {
        RTDEFER_ASSERT(done(), "inline_task_work::emplace on an item that is queued or running (use try_emplace)");
        store(std::forward<F>(f));
    }

    /// Effects: replaces the stored callable if done(); otherwise changes nothing.
    /// Returns: ok; busy while the item is queued or its callable runs.
    /// Progress: wait-free. Real-time safety: as emplace; async-signal-safe if F's constructor is.
    template <class F> [[nodiscard]] status try_emplace(F&& f) noexcept {
        if (!done())
            return status::busy;
        store(std::forward<F>(f));
        return status::ok;
    }

    /// Returns: whether a callable is stored.
    [[nodiscard]] bool has_value() const noexcept RTDEFER_NONBLOCKING { return invoke_ != nullptr; }

    static constexpr std::size_t capacity = Capacity;

private:
    template <class F> void store(F&& f) noexcept {
        using Fn = std::decay_t<F>;
        static_assert(sizeof(Fn) <= Capacity, "callable too large for inline_task_work<Capacity>: raise Capacity");
        static_assert(alignof(Fn) <= alignof(std::max_align_t), "over-aligned callable");
        static_assert(std::is_invocable_v<Fn&>, "inline_task_work callables take no arguments");
        static_assert(std::is_nothrow_constructible_v<Fn, F&&>, "the callable must construct without throwing");
        reset();
        ::new (static_cast<void*>(storage_)) Fn(std::forward<F>(f));
        invoke_ = [](detail::inline_task_work_base* b) noexcept {
            (*std::launder(static_cast<Fn*>(static_cast<void*>(static_cast<inline_task_work*>(b)->storage_))))();
        };
        destroy_ = [](void* p) noexcept { std::launder(static_cast<Fn*>(p))->~Fn(); };
        func = &trampoline;
    }
    void reset() noexcept {
        if (destroy_ != nullptr)
            destroy_(storage_);
        invoke_ = nullptr;
        destroy_ = nullptr;
    }

    alignas(std::max_align_t) unsigned char storage_[Capacity];
    void (*destroy_)(void*) noexcept = nullptr;
};

} // namespace rtdefer
