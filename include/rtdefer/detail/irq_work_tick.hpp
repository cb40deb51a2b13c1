// rtdefer/detail/irq_work_tick.hpp: the periodic tick of one irq_work worker, which runs its LAZY
// list, and its nohz state machine (tick_nohz_tick_stopped()): after `stop_after` periods without
// LAZY work the tick stops and the worker sleeps until woken; a LAZY add that makes the tick list
// non-empty while it is stopped wakes the worker, which restarts it. Internals of irq_work.hpp.
//
//   state     worker sees                          → next
//   off       (period zero: LAZY items go on the lazy list and wake the worker instead)
//   ticking   now >= next: run the list; idle++    → ticking, or stopping after stop_after idle ones
//   stopping  word := 1 (IQT1), list re-checked    → stopped if still empty, else ticking
//   stopped   park without deadline; woken with    → ticking, next = now + period (the item runs
//             the list non-empty                     one period after its add, as if never stopped)
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/llist.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace rtdefer::detail {

class irq_work_tick {
public:
    using clock = std::chrono::steady_clock;

    /// Effects: sets the period (zero: off) and the idle periods before the tick stops (0: never).
    /// Setup only: before the worker starts; the domain's construction publishes it to producers.
    void configure(std::chrono::nanoseconds period, std::uint32_t stop_after) noexcept {
        period_ = period;
        stop_after_ = stop_after;
        on_ = period.count() > 0;
    }

    /// Returns: whether the tick runs at all (constant after configure()). Wait-free.
    [[nodiscard]] bool on() const noexcept RTDEFER_NONBLOCKING { return on_; }

    /// Producer side, after the LAZY add that made the tick list non-empty.
    /// Returns: true if the worker's tick is stopped, so the caller must wake the worker.
    /// Progress: wait-free (one RMW). Async-signal-safe.
    [[nodiscard]] bool stopped_at_add() noexcept RTDEFER_NONBLOCKING {
        // (IQT2) acq_rel RMW on the word, paired with the worker's RMW (IQT1). RMWs on one word are
        //        totally ordered and each reads the latest value: if (IQT1) came first we read 1 and
        //        wake the worker; if ours came first, (IQT1) reads from our release, so the worker's
        //        emptiness re-check after (IQT1) sees our add and it keeps ticking. (A fence pair
        //        would do too, but RMWs are what ThreadSanitizer understands.)
        return word_.fetch_or(0, std::memory_order_acq_rel) != 0;
    }

    /// Returns: whether the tick is stopped now (statistics snapshot). Wait-free.
    [[nodiscard]] bool stopped_snapshot() const noexcept RTDEFER_NONBLOCKING {
        // relaxed: a statistics snapshot, ordered with nothing.
        return word_.load(std::memory_order_relaxed) != 0;
    }

    /// Worker: starts the first period at `now`.
    void start(clock::time_point now) noexcept { next_ = on_ ? now + period_ : clock::time_point::max(); }

    /// Worker: one pass of the state machine (reads the clock only when the tick is on).
    /// `run_list()` runs the tick list and returns the number of items it ran; `list` is that list
    /// (for the restart and stop checks).
    template <class RunList> void poll(const llist_head& list, RunList&& run_list) noexcept {
        if (!on_)
            return;
        const clock::time_point now = clock::now();
        if (stopped_) {
            if (!list.empty()) {
                // A LAZY add woke us (or raced with the stop): restart the tick; the item runs one
                // period from now, as if the tick had been running.
                stopped_ = false;
                // acq_rel RMW, like every write of the word, so producers' (IQT2) chains stay
                // release sequences; a producer that still reads 1 makes one spurious wake.
                (void)word_.exchange(0, std::memory_order_acq_rel);
                idle_ = 0;
                next_ = now + period_;
            }
            return;
        }
        if (now < next_)
            return;
        idle_ = run_list() != 0 ? 0 : idle_ + 1;
        do
            next_ += period_;
        while (next_ <= now);
        if (stop_after_ != 0 && idle_ >= stop_after_) {
            // nohz: stop the tick. (IQT1) acq_rel RMW, then re-check the list: pairs with (IQT2)
            // (either the producer sees 1, or we see its item).
            (void)word_.exchange(1, std::memory_order_acq_rel);
            if (list.empty()) {
                stopped_ = true;
            } else {
                (void)word_.exchange(0, std::memory_order_acq_rel);
                idle_ = 0;
            }
        }
    }

    /// Worker: when to wake for the next period (max: stopped or off, sleep until woken).
    [[nodiscard]] clock::time_point deadline() const noexcept {
        return stopped_ ? clock::time_point::max() : next_;
    }

private:
    // Configuration (constant once the worker runs).
    std::chrono::nanoseconds period_{};
    std::uint32_t stop_after_ = 0;
    bool on_ = false;
    // Worker-private.
    clock::time_point next_ = clock::time_point::max();
    std::uint32_t idle_ = 0;
    bool stopped_ = false; ///< mirrors word_ (only the worker writes either)
    // Shared with producers: 1 while stopped; every write is an RMW (see stopped_at_add).
    std::atomic<std::uint32_t> word_{0};
};

} // namespace rtdefer::detail
