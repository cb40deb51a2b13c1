// tests/support/timer_util.hpp: helpers shared by the timer unit and stress tests.
//
//   rtdefer_test::ordered_timers<Clock>  n timers whose callback counts each timer's runs and checks
//                                        that expiries come in deadline order:
//     arm(svc, i, when)                  arms timer i (one-shot) with that callback
//     timer(i), runs(i)                  timer i and how often it ran
//     runs()                             callbacks run so far, all timers (acquire: a reader that
//                                        sees k also sees the first k runs' counts)
//     out_of_order()                     expiries whose deadline came before the previous one's.
//                                        Expirer-only while callbacks may run: read it after the
//                                        expirer's last pass (run_expired returned, or cancel_sync
//                                        of every timer).
#pragma once

#include <rtdefer/status.hpp>
#include <rtdefer/timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace rtdefer_test {

template <class Clock = std::chrono::steady_clock>
class ordered_timers {
public:
    using timer_type = rtdefer::basic_timer<Clock>;
    using time_point = typename Clock::time_point;

    explicit ordered_timers(std::size_t n) : items_(std::make_unique<item[]>(n)) {
        for (std::size_t i = 0; i < n; ++i)
            items_[i].owner = this;
    }

    template <class Service>
    [[nodiscard]] rtdefer::status arm(Service& svc, std::size_t i, time_point when) noexcept {
        return svc.arm(items_[i].t, when, &expired, &items_[i]);
    }
    timer_type& timer(std::size_t i) noexcept { return items_[i].t; }
    int runs(std::size_t i) const noexcept {
        // relaxed: read after runs() (acquire) or after the expirer's last pass, which order it.
        return items_[i].runs.load(std::memory_order_relaxed);
    }
    std::uint64_t runs() const noexcept {
        // acquire: pairs with the callback's release increment.
        return total_.load(std::memory_order_acquire);
    }
    std::uint64_t out_of_order() const noexcept { return out_of_order_; }

private:
    struct item {
        timer_type t;
        std::atomic<int> runs{0};
        ordered_timers* owner = nullptr;
    };

    static void expired(timer_type& t, void* arg) noexcept {
        auto* it = static_cast<item*>(arg);
        ordered_timers& o = *it->owner;
        if (t.expires() < o.last_)
            ++o.out_of_order_;
        o.last_ = t.expires();
        it->runs.fetch_add(1, std::memory_order_relaxed); // relaxed: published by the release below
        // release: pairs with the acquire in runs(); this timer's count is visible with the total.
        o.total_.fetch_add(1, std::memory_order_release);
    }

    std::unique_ptr<item[]> items_;
    time_point last_{};                     // expirer-only
    std::uint64_t out_of_order_ = 0;        // expirer-only
    std::atomic<std::uint64_t> total_{0};
};

} // namespace rtdefer_test
