// Unit tests for rtdefer/detail/wait_var.hpp (wait_var_event / wake_up_var on the hashed futex
// table): a true condition never registers or sleeps; a wake in the window between a waiter's check
// and its futex_wait is not lost; variables sharing a bucket wake each other spuriously and each
// re-checks; a wake with no waiter makes no syscall; poll re-checks without a wake; deadlines.
// No timed assertions: every wait is for an event, bounded only to turn a hang into a failure.
#include <rtdefer/detail/wait_var.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <thread>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

using rtdefer_test::eventually;
using detail::var_waitqueue;
using detail::wait_var_bucket;
using detail::wake_up_var;

constexpr auto forever = std::chrono::steady_clock::time_point::max();

std::uint64_t futex_wakes(const void* var) { return var_waitqueue(var).futex_wakes.load(std::memory_order_relaxed); }
std::uint32_t waiters(const void* var) { return var_waitqueue(var).waiters.load(std::memory_order_seq_cst); }

/// A variable with a flag its waiters wait for, and a count of their condition checks.
struct var_flag {
    std::atomic<std::uint32_t> flag{0};
    std::atomic<int> checks{0};
    bool check() noexcept {
        checks.fetch_add(1, std::memory_order_relaxed);
        return flag.load(std::memory_order_seq_cst) != 0; // the condition's seq_cst load
    }
    void set() noexcept { flag.store(1, std::memory_order_seq_cst); } // the waker's seq_cst store
};

/// A waiter on its own thread, so a lost wake is a failed check instead of a hung test.
struct waiter_thread {
    std::atomic<bool> done{false};
    status result = status::invalid_argument;
    std::thread t;
    template <class F> explicit waiter_thread(F body) : t([this, body]() mutable {
        result = body();
        done.store(true, std::memory_order_release);
    }) {}
    /// Unsticks a waiter that missed a wake (after a failed check) and joins it.
    void finish(var_flag& v) {
        v.set();
        while (!done.load(std::memory_order_acquire)) {
            wake_up_var(&v);
            std::this_thread::sleep_for(1ms);
        }
        t.join();
    }
};

// Variables in one array: a second address that hashes to the bucket of the first.
var_flag vars[512];

} // namespace

TEST_SUITE("unit") {

TEST_CASE("wait_var_event: a condition already true returns at once, unregistered and without sleeping") {
    var_flag v;
    v.set();
    wait_var_bucket& b = var_waitqueue(&v);
    const std::uint32_t seq = b.seq.load(std::memory_order_relaxed);
    std::uint32_t registered_at_check = ~0u;
    int rounds = 0;
    const status s = detail::wait_var_event_until(
        &v,
        [&]() noexcept {
            registered_at_check = b.waiters.load(std::memory_order_seq_cst);
            return v.check();
        },
        forever, [&]() noexcept { ++rounds; });
    CHECK(s == status::ok);
    CHECK(v.checks.load() == 1);
    CHECK(registered_at_check == 0); // checked before registering: nothing to wake, nothing to sleep on
    CHECK(rounds == 0);
    CHECK(b.waiters.load(std::memory_order_relaxed) == 0);
    CHECK(b.seq.load(std::memory_order_relaxed) == seq);
}

TEST_CASE("wait_var_event: a wake between the waiter's check and its futex_wait is not lost") {
    // The condition's second call (the first after registering and taking the futex snapshot) sets
    // the flag and wakes from inside, then reports the value it "read" before: exactly a waker that
    // runs after the waiter's load and before its futex_wait. The wait must fail (EAGAIN), re-check
    // and return; sleeping there would be a lost wake.
    var_flag v;
    const std::uint64_t wakes = futex_wakes(&v);
    waiter_thread w([&] {
        return detail::wait_var_event_until(
            &v,
            [&]() noexcept {
                const bool seen = v.check();
                if (v.checks.load(std::memory_order_relaxed) == 2) {
                    v.set();
                    wake_up_var(&v);
                    return false; // read before the store
                }
                return seen;
            },
            forever);
    });
    const bool returned = eventually([&] { return w.done.load(std::memory_order_acquire); });
    CHECK_MESSAGE(returned, "the waiter slept through a wake made after its check");
    w.finish(v);
    CHECK(w.result == status::ok);
    CHECK(v.checks.load() == 3); // initial check, the check that missed, the re-check after EAGAIN
    CHECK(futex_wakes(&v) - wakes >= 1); // the wake saw the registration
    CHECK(waiters(&v) == 0);
}

TEST_CASE("wait_var_event: two variables in one bucket wake each other spuriously; each re-checks") {
    var_flag& a = vars[0];
    var_flag* pb = nullptr;
    for (std::size_t i = 1; i < std::size(vars) && pb == nullptr; ++i)
        if (&var_waitqueue(&vars[i]) == &var_waitqueue(&a))
            pb = &vars[i];
    REQUIRE_MESSAGE(pb != nullptr, "no second address in the first one's bucket among 512");
    var_flag& b = *pb;
    CHECK(&var_waitqueue(&b) == &var_waitqueue(&a));
    std::atomic<bool> a_early{false};
    waiter_thread wa([&] {
        const status s = detail::wait_var_event_until(&a, [&]() noexcept { return a.check(); }, forever);
        a_early.store(a.flag.load(std::memory_order_seq_cst) == 0);
        return s;
    });
    waiter_thread wb([&] { return detail::wait_var_event_until(&b, [&]() noexcept { return b.check(); }, forever); });
    // Two checks each: both are registered and have taken their futex snapshot, so any later wake
    // of the bucket reaches them.
    REQUIRE(eventually([&] { return a.checks.load() >= 2 && b.checks.load() >= 2; }));
    CHECK(waiters(&a) == 2);
    const int a_before = a.checks.load();
    b.set();
    wake_up_var(&b);
    CHECK(eventually([&] { return wb.done.load(std::memory_order_acquire); }));
    // a's waiter was woken too (one bucket), re-checked, found its flag clear and went on waiting.
    CHECK(eventually([&] { return a.checks.load() > a_before; }));
    CHECK_FALSE(wa.done.load(std::memory_order_acquire));
    CHECK(waiters(&a) == 1);
    a.set();
    wake_up_var(&a);
    CHECK(eventually([&] { return wa.done.load(std::memory_order_acquire); }));
    wb.finish(b);
    wa.finish(a);
    CHECK(wa.result == status::ok);
    CHECK(wb.result == status::ok);
    CHECK_FALSE(a_early.load()); // returned only once its own flag was set
    CHECK(waiters(&a) == 0);
}

TEST_CASE("wake_up_var: with no waiter in the bucket, no futex_wake and no sequence bump") {
    var_flag v;
    wait_var_bucket& b = var_waitqueue(&v);
    REQUIRE(b.waiters.load(std::memory_order_seq_cst) == 0);
    const std::uint64_t wakes = b.futex_wakes.load(std::memory_order_relaxed);
    const std::uint32_t seq = b.seq.load(std::memory_order_relaxed);
    for (int i = 0; i < 100; ++i)
        wake_up_var(&v);
    CHECK(b.futex_wakes.load(std::memory_order_relaxed) == wakes);
    CHECK(b.seq.load(std::memory_order_relaxed) == seq);
    // The counter does count: a registered waiter makes the same call wake.
    b.waiters.fetch_add(1, std::memory_order_seq_cst);
    wake_up_var(&v);
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    CHECK(b.futex_wakes.load(std::memory_order_relaxed) == wakes + 1);
    CHECK(b.seq.load(std::memory_order_relaxed) == seq + 1);
}

TEST_CASE("wait_var_event: poll re-checks without any wake, calling round before each check") {
    var_flag v;
    std::atomic<int> rounds{0};
    waiter_thread w([&] {
        return detail::wait_var_event_until(
            &v, [&]() noexcept { return rounds.load() >= 3 || v.flag.load(std::memory_order_seq_cst) != 0; }, forever, [&]() noexcept { rounds.fetch_add(1); },
            std::chrono::nanoseconds(1ms));
    });
    const bool returned = eventually([&] { return w.done.load(std::memory_order_acquire); });
    CHECK_MESSAGE(returned, "with a poll period the waiter must re-check without a wake");
    w.finish(v);
    CHECK(w.result == status::ok);
    CHECK(rounds.load() == 3);
}

TEST_CASE("wait_var_event_until: times out when the condition never holds, and deregisters") {
    var_flag v;
    const status s = detail::wait_var_event_until(&v, [&]() noexcept { return v.check(); },
                                                  std::chrono::steady_clock::now() + 5ms);
    CHECK(s == status::timed_out);
    CHECK(v.checks.load() >= 3); // before registering, after the snapshot, the last look
    CHECK(waiters(&v) == 0);
    // A deadline already past still gives the condition its look: true means ok.
    v.set();
    CHECK(detail::wait_var_event_until(&v, [&]() noexcept { return v.check(); }, std::chrono::steady_clock::now()) ==
          status::ok);
}

} // TEST_SUITE
