// tests/support/observed_policy.hpp: a wait-policy wrapper shared by the expiry_lock and timer tests.
//
// observed<P> counts entries into P::wait(). wait_running/cancel_sync call wait() only after they
// saw the callback running, so a callback that lasts until `*entered` moves makes `waited` certain,
// with no timing assumption.
#pragma once

#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <utility>

namespace rtdefer_test {

template <class P> struct observed : P {
    static constexpr const char* name = P::name;
    std::atomic<int>* entered = nullptr;
    template <class Running>
    rtdefer::status wait(rtdefer::thread_ctx& e, Running&& still_running) const noexcept {
        // release: the test thread that sees the count also sees everything the waiter did before.
        entered->fetch_add(1, std::memory_order_release);
        return P::wait(e, std::forward<Running>(still_running));
    }
};

} // namespace rtdefer_test
