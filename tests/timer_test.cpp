// Unit tests for rtdefer/timer.hpp: arm/cancel/cancel_sync results, periodic timers, re-arm from a
// callback, self-cancel, 10^5 armed timers, the expiry thread, cancel racing expiry (free right after
// cancel_sync: ASan/TSan), and priority inversion for real under SCHED_FIFO.
#include <rtdefer/baseline/spin_wait.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/timer.hpp>

#include "lock_waiter.hpp"
#include "observed_policy.hpp"
#include "test_util.hpp"
#include "timer_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

timer_service_options manual(std::size_t capacity = 64) {
    timer_service_options o;
    o.capacity = capacity;
    o.start_thread = false;
    return o;
}

// The simple cases: one timer on a service without a thread, a run count, a start time.
struct one_manual_timer {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc{manual()};
    std::atomic<int> runs{0};
    timer t;
    const clk::time_point t0 = clk::now();
};

// An expiry thread under SCHED_OTHER (the spin policies are only harmless there).
timer_service_options threaded_other(std::size_t capacity = 64) {
    timer_service_options o;
    o.capacity = capacity;
    o.thread.policy = sched_policy::other;
    return o;
}

using rtdefer_test::eventually;

struct log_entry {
    int id;
    clk::time_point expires;
};

struct recorder {
    std::vector<log_entry> log;
};

struct tagged {
    timer t;
    int id = 0;
    recorder* rec = nullptr;
};

void record_cb(timer& t, void* arg) noexcept {
    auto* self = static_cast<tagged*>(arg);
    self->rec->log.push_back({self->id, t.expires()});
}

void count_cb(timer&, void* arg) noexcept { static_cast<std::atomic<int>*>(arg)->fetch_add(1, std::memory_order_relaxed); }

using rtdefer_test::burn_cpu; // thread CPU time: a preempted callback still has work left
using rtdefer_test::observed;

} // namespace

TEST_SUITE("unit") {

TEST_CASE("timer: run_expired runs due timers in deadline order, FIFO among equal deadlines") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(manual());
    recorder rec;
    tagged a, b, c, d;
    const auto t0 = clk::now();
    a.id = 1, b.id = 2, c.id = 3, d.id = 4;
    for (tagged* x : {&a, &b, &c, &d})
        x->rec = &rec;
    REQUIRE(svc.arm(c.t, t0 + 30ms, record_cb, &c) == status::ok);
    REQUIRE(svc.arm(a.t, t0 + 10ms, record_cb, &a) == status::ok);
    REQUIRE(svc.arm(b.t, t0 + 20ms, record_cb, &b) == status::ok);
    REQUIRE(svc.arm(d.t, t0 + 20ms, record_cb, &d) == status::ok);
    CHECK(svc.size() == 4);
    REQUIRE(svc.next_expiry().has_value());
    CHECK(*svc.next_expiry() == t0 + 10ms);
    CHECK(svc.run_expired(t0 + 9ms, self) == 0);
    CHECK(svc.run_expired(t0 + 20ms, self) == 3);
    REQUIRE(rec.log.size() == 3);
    CHECK(rec.log[0].id == 1);
    CHECK(rec.log[1].id == 2); // armed before d with the same deadline
    CHECK(rec.log[2].id == 4);
    CHECK(svc.pending(c.t));
    CHECK_FALSE(svc.pending(a.t));
    CHECK(svc.run_expired(t0 + 1s, self) == 1);
    CHECK(rec.log.back().id == 3);
    CHECK(svc.size() == 0);
    CHECK_FALSE(svc.next_expiry().has_value());
}

TEST_CASE_FIXTURE(one_manual_timer, "timer: arm of a pending timer moves it (returns removed), it runs once") {
    CHECK(svc.arm(t, t0 + 10ms, count_cb, &runs) == status::ok);
    CHECK(svc.arm(t, t0 + 50ms, count_cb, &runs) == status::moved);
    CHECK(svc.size() == 1);
    CHECK(svc.run_expired(t0 + 20ms, self) == 0);
    CHECK(svc.run_expired(t0 + 50ms, self) == 1);
    CHECK(runs.load() == 1);
    CHECK(svc.run_expired(t0 + 1s, self) == 0);
}

TEST_CASE("timer: argument and capacity errors") {
    timer_service<> svc(manual(2));
    timer a, b, c;
    std::atomic<int> runs{0};
    const auto t0 = clk::now();
    CHECK(svc.arm(a, t0, nullptr) == status::invalid_argument);
    CHECK(svc.arm(a, t0, count_cb, &runs, -1ms) == status::invalid_argument);
    CHECK(svc.arm(a, t0, count_cb, &runs) == status::ok);
    CHECK(svc.arm(b, t0, count_cb, &runs) == status::ok);
    CHECK(svc.arm(c, t0, count_cb, &runs) == status::no_space);
    CHECK(svc.arm(b, t0 + 1ms, count_cb, &runs) == status::moved); // moving needs no new slot
    CHECK(svc.cancel(a));
    CHECK(svc.arm(c, t0, count_cb, &runs) == status::ok);
    CHECK(svc.cancel(b));
    CHECK(svc.cancel(c));
}

TEST_CASE("timer: a timer pending on one service used with another: an assertion, not heap corruption") {
    using rtdefer_test::aborted;
    for (int op = 0; op < 3; ++op) {
        CHECK(aborted(rtdefer_test::in_child([op] {
            thread_ctx& self = attach_this_thread();
            timer_service<> a(manual()), b(manual());
            std::atomic<int> runs{0};
            timer t, other;
            (void)b.arm(other, clk::now() + 1h, count_cb, &runs);
            (void)a.arm(t, clk::now() + 1h, count_cb, &runs);
            if (op == 0)
                (void)b.arm(t, clk::now(), count_cb, &runs);
            else if (op == 1)
                (void)b.cancel(t);
            else
                (void)b.cancel_sync(t, self);
            ::_exit(0); // not aborted: skip the destructors (they would assert on the pending timers)
            return 0;
        }, /*quiet=*/true)));
    }
    // After cancel_sync on its service, it may move to another.
    thread_ctx& self = attach_this_thread();
    timer_service<> a(manual()), b(manual());
    std::atomic<int> runs{0};
    timer t;
    const auto t0 = clk::now();
    REQUIRE(a.arm(t, t0 + 1h, count_cb, &runs) == status::ok);
    CHECK(a.cancel_sync(t, self) == status::removed);
    REQUIRE(b.arm(t, t0, count_cb, &runs) == status::ok);
    CHECK(b.run_expired(t0, self) == 1);
    CHECK(runs.load() == 1);
}

TEST_CASE_FIXTURE(one_manual_timer, "timer: cancel returns whether it was pending") {
    CHECK_FALSE(svc.cancel(t));
    REQUIRE(svc.arm(t, t0, count_cb, &runs) == status::ok);
    CHECK(svc.cancel(t));
    CHECK_FALSE(svc.cancel(t));
    CHECK(svc.run_expired(t0 + 1s, self) == 0);
    CHECK(runs.load() == 0);
}

TEST_CASE_FIXTURE(one_manual_timer, "timer: cancel_sync returns removed for a pending timer and idle for an idle one") {
    CHECK(svc.cancel_sync(t, self) == status::idle);
    REQUIRE(svc.arm(t, t0 + 1ms, count_cb, &runs) == status::ok);
    CHECK(svc.cancel_sync(t, self) == status::removed);
    CHECK(svc.cancel_sync(t, self) == status::idle);
    CHECK(svc.run_expired(t0 + 1s, self) == 0);
    REQUIRE(svc.arm(t, t0 + 1ms, count_cb, &runs) == status::ok);
    CHECK(svc.run_expired(t0 + 1s, self) == 1);
    CHECK(svc.cancel_sync(t, self) == status::idle); // it ran before: nothing to do
    CHECK(runs.load() == 1);
}

namespace {
struct self_cancel_ctx {
    timer_service<>* svc = nullptr;
    int runs = 0;
    status cancel_sync_result = status::ok;
    bool try_cancel_result = true;
};
void self_cancel_cb(timer& t, void* arg) noexcept {
    auto* c = static_cast<self_cancel_ctx*>(arg);
    ++c->runs;
    c->try_cancel_result = c->svc->cancel(t); // running, not pending: false
    c->cancel_sync_result = c->svc->cancel_sync(t, *current_thread_ctx());
}
} // namespace

TEST_CASE_FIXTURE(one_manual_timer, "timer: cancel_sync from its own callback returns would_deadlock and disarms a periodic timer") {
    self_cancel_ctx c;
    c.svc = &svc;
    REQUIRE(svc.arm(t, t0, self_cancel_cb, &c, 10ms) == status::ok);
    CHECK(svc.run_expired(t0, self) == 1);
    CHECK(c.runs == 1);
    CHECK(c.cancel_sync_result == status::would_deadlock);
    CHECK_FALSE(c.try_cancel_result);
    CHECK_FALSE(svc.pending(t)); // the periodic re-arm did not happen
    CHECK(svc.run_expired(t0 + 1s, self) == 0);
    CHECK(c.runs == 1);
    CHECK(svc.cancel_sync(t, self) == status::idle);
}

namespace {
struct rearm_then_cancel_ctx {
    timer_service<>* svc = nullptr;
    status rearm = status::ok, cancel_sync_result = status::ok;
    bool pending_after = true;
};
void rearm_then_cancel_cb(timer& t, void* arg) noexcept {
    auto* c = static_cast<rearm_then_cancel_ctx*>(arg);
    c->rearm = c->svc->arm(t, t.expires(), rearm_then_cancel_cb, c); // running + pending, due
    c->cancel_sync_result = c->svc->cancel_sync(t, *current_thread_ctx());
    c->pending_after = c->svc->pending(t);
}
} // namespace

TEST_CASE_FIXTURE(one_manual_timer, "timer: cancel_sync from its own callback after re-arming it: would_deadlock, and the re-arm is dequeued") {
    rearm_then_cancel_ctx c;
    c.svc = &svc;
    REQUIRE(svc.arm(t, t0, rearm_then_cancel_cb, &c) == status::ok);
    CHECK(svc.run_expired(t0, self) == 1);
    CHECK(c.rearm == status::ok);
    CHECK(c.cancel_sync_result == status::would_deadlock);
    CHECK_FALSE(c.pending_after); // disarmed although the callback is still running
    CHECK(svc.run_expired(t0 + 1s, self) == 0);
    CHECK(svc.cancel_sync(t, self) == status::idle);
}

TEST_CASE("timer: periodic timers re-arm at the next period after now and count overruns") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(manual());
    struct state {
        std::vector<clk::time_point> at;
        std::vector<std::uint64_t> overruns;
    } st;
    timer t;
    auto cb = [](timer& tm, void* arg) noexcept {
        auto* s = static_cast<state*>(arg);
        s->at.push_back(tm.expires());
        s->overruns.push_back(tm.overruns());
    };
    const auto t0 = clk::now();
    const auto p = 10ms;
    REQUIRE(svc.arm(t, t0, cb, &st, p) == status::ok);
    CHECK(svc.run_expired(t0, self) == 1);
    CHECK(svc.run_expired(t0 + p, self) == 1);
    CHECK(svc.run_expired(t0 + 5 * p + p / 2, self) == 1); // late: runs once, skips 3p, 4p, 5p
    CHECK(svc.run_expired(t0 + 6 * p, self) == 1);
    REQUIRE(st.at.size() == 4);
    CHECK(st.at[0] == t0);
    CHECK(st.at[1] == t0 + p);
    CHECK(st.at[2] == t0 + 2 * p);
    CHECK(st.at[3] == t0 + 6 * p);
    CHECK(st.overruns[3] == 3);
    CHECK(svc.cancel_sync(t, self) == status::removed);
}

namespace {
struct rearm_state {
    timer_service<>* svc;
    int runs = 0;
    status rearm = status::ok;
};
void rearm_second_cb(timer&, void* arg) noexcept { ++static_cast<rearm_state*>(arg)->runs; }
void rearm_first_cb(timer& t, void* arg) noexcept {
    auto* s = static_cast<rearm_state*>(arg);
    ++s->runs;
    s->rearm = s->svc->arm(t, t.expires() + 5ms, rearm_second_cb, s); // one-shot, new callback
}
} // namespace

TEST_CASE("timer: a callback may re-arm its own timer (the explicit arm replaces the periodic re-arm)") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(manual());
    rearm_state st{&svc};
    timer t;
    const auto t0 = clk::now();
    REQUIRE(svc.arm(t, t0, rearm_first_cb, &st, 1ms) == status::ok);
    CHECK(svc.run_expired(t0, self) == 1);
    CHECK(st.rearm == status::ok);
    REQUIRE(svc.next_expiry().has_value());
    CHECK(*svc.next_expiry() == t0 + 5ms); // not t0 + 1ms: no periodic re-arm on top
    CHECK(svc.size() == 1);
    CHECK(svc.run_expired(t0 + 1s, self) == 1); // the one-shot replacement, no period any more
    CHECK(st.runs == 2);
    CHECK_FALSE(svc.pending(t));
}

namespace {
struct again_state {
    timer_service<>* svc = nullptr;
    std::atomic<int> runs{0};
};
void again_cb(timer& t, void* arg) noexcept {
    auto* s = static_cast<again_state*>(arg);
    s->runs.fetch_add(1, std::memory_order_relaxed);
    (void)s->svc->arm(t, clk::time_point::min(), again_cb, s); // due again at once, forever
}
} // namespace

TEST_CASE("timer: a callback re-arming itself in the past runs once per pass; the pass ends, the service stops") {
    thread_ctx& self = attach_this_thread();
    {
        timer_service<> svc(manual());
        again_state st;
        st.svc = &svc;
        timer t, other;
        std::atomic<int> other_runs{0};
        const auto t0 = clk::now();
        REQUIRE(svc.arm(t, t0 - 1s, again_cb, &st) == status::ok);
        REQUIRE(svc.arm(other, t0, count_cb, &other_runs) == status::ok);
        CHECK(svc.run_expired(t0, self) == 1); // t; its re-arm (due, on top) ends the pass
        CHECK(svc.run_expired(t0, self) == 1); // t again (other is still behind it)
        CHECK(other_runs.load() == 0);
        CHECK(svc.cancel_sync(t, self) == status::removed);
        CHECK(svc.run_expired(t0, self) == 1); // other
        CHECK(other_runs.load() == 1);
        CHECK(st.runs.load() == 2);
    }
    // With the expiry thread: it runs the timer pass after pass; the destructor must still return
    // (an endless pass would never look at the stop flag: this test would hang).
    again_state st;
    timer t;
    {
        timer_service<> svc(threaded_other());
        st.svc = &svc;
        REQUIRE(svc.arm(t, clk::now(), again_cb, &st) == status::ok);
        REQUIRE(eventually([&] { return st.runs.load() > 100; }, 60s));
    }
    CHECK_FALSE(t.running()); // the destructor unlinked it: idle, destructible
}

TEST_CASE("timer: 10^5 armed timers, random deadlines, a third cancelled: order and count hold") {
    thread_ctx& self = attach_this_thread();
    constexpr std::size_t n = 100'000;
    timer_service<> svc(manual(n));
    rtdefer_test::ordered_timers<> timers(n);
    std::vector<bool> cancelled(n, false);
    std::mt19937_64 rng(42);
    const auto t0 = clk::now();
    for (std::size_t i = 0; i < n; ++i)
        REQUIRE(timers.arm(svc, i, t0 + std::chrono::microseconds(rng() % 1'000'000)) == status::ok);
    CHECK(svc.size() == n);
    std::size_t ncancelled = 0;
    for (std::size_t i = 0; i < n; i += 3) {
        CHECK(svc.cancel(timers.timer(i)));
        cancelled[i] = true;
        ++ncancelled;
    }
    CHECK(svc.size() == n - ncancelled);
    for (int step = 1; step <= 10; ++step)
        (void)svc.run_expired(t0 + std::chrono::milliseconds(100 * step), self);
    CHECK(timers.out_of_order() == 0);
    CHECK(timers.runs() == n - ncancelled);
    CHECK(svc.size() == 0);
    for (std::size_t i = 0; i < n; ++i)
        REQUIRE(timers.runs(i) == (cancelled[i] ? 0 : 1));
}

TEST_CASE("timer: the expiry thread sleeps until the earliest deadline and wakes for an earlier arm") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(threaded_other());
    REQUIRE(svc.expirer() != nullptr);
    REQUIRE(svc.sched_status() != nullptr);
    std::atomic<int> late{0}, early{0};
    timer far, near;
    REQUIRE(svc.arm(far, clk::now() + 1h, count_cb, &late) == status::ok);
    // The thread now sleeps until +1h; this earlier arm must wake it (a lost wake-up hangs here and
    // the test times out).
    REQUIRE(svc.arm(near, clk::now() + 2ms, count_cb, &early) == status::ok);
    REQUIRE(eventually([&] { return early.load() == 1; }, 60s));
    CHECK(late.load() == 0);
    CHECK(svc.cancel_sync(far, self) == status::removed);
    CHECK(svc.cancel_sync(near, self) == status::idle);
}

TEST_CASE("timer: other clocks work (system_clock deadlines)") {
    thread_ctx& self = attach_this_thread();
    timer_service<pi_block, std::chrono::system_clock> svc(threaded_other());
    std::atomic<int> runs{0};
    basic_timer<std::chrono::system_clock> t;
    REQUIRE(svc.arm(t, std::chrono::system_clock::now() + 1ms,
                    [](basic_timer<std::chrono::system_clock>&, void* a) noexcept {
                        static_cast<std::atomic<int>*>(a)->fetch_add(1);
                    },
                    &runs) == status::ok);
    REQUIRE(eventually([&] { return runs.load() == 1; }, 60s));
    CHECK(svc.cancel_sync(t, self) == status::idle);
}

TEST_CASE("timer: deadlines at the ends of time_point: no overflow, no endless pass") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(manual());
    std::atomic<int> runs{0};
    const auto t0 = clk::now();
    const auto p = 10ms;
    timer past, never, huge, last;
    // Periodic, first deadline time_point::min(): `now - next` overflowed the clock's rep.
    REQUIRE(svc.arm(past, clk::time_point::min(), count_cb, &runs, p) == status::ok);
    // One-shot at max(): never due before max() itself.
    REQUIRE(svc.arm(never, clk::time_point::max(), count_cb, &runs) == status::ok);
    // A period so long that the next expiry does not fit: the timer stops after one run.
    REQUIRE(svc.arm(huge, t0, count_cb, &runs, clk::duration::max()) == status::ok);
    CHECK(svc.run_expired(t0, self) == 2);
    CHECK(runs.load() == 2);
    REQUIRE(svc.pending(past));
    CHECK(past.expires() > t0); // the first multiple of p after t0 (expires() is stable: no expirer runs)
    CHECK(past.expires() <= t0 + p);
    CHECK(past.overruns() > 1'000'000);
    CHECK_FALSE(svc.pending(huge));
    CHECK(svc.pending(never));
    CHECK(svc.run_expired(t0 + p, self) == 1); // past, once more
    // Periodic, due at max(): a pass at max() runs it once and returns (its next expiry does not fit).
    REQUIRE(svc.arm(last, clk::time_point::max(), count_cb, &runs, p) == status::ok);
    CHECK(svc.cancel_sync(past, self) == status::removed);
    CHECK(svc.run_expired(clk::time_point::max(), self) == 2); // never and last
    CHECK_FALSE(svc.pending(last));
    CHECK(svc.size() == 0);
}

namespace {
// A wall-like clock that tests can step: CLOCK_MONOTONIC plus an adjustable offset.
struct stepped_clock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<stepped_clock>;
    [[maybe_unused]] static constexpr bool is_steady = false;
    inline static std::atomic<std::int64_t> offset_ns{0};
    static time_point now() noexcept {
        return time_point(clk::now().time_since_epoch() + duration(offset_ns.load(std::memory_order_relaxed)));
    }
};
} // namespace

TEST_CASE("timer: a Clock other than steady_clock: a far deadline does not fire, a clock step forward is seen") {
    thread_ctx& self = attach_this_thread();
    timer_service_options o = threaded_other();
    o.clock_recheck = 20ms;
    timer_service<pi_block, stepped_clock> svc(o);
    std::atomic<int> runs{0}, far_runs{0};
    auto cb = [](basic_timer<stepped_clock>&, void* a) noexcept {
        static_cast<std::atomic<int>*>(a)->fetch_add(1, std::memory_order_relaxed);
    };
    basic_timer<stepped_clock> min_t, far_t, stepped_t;
    REQUIRE(svc.arm(far_t, stepped_clock::time_point::max() - 1ns, cb, &far_runs) == status::ok);
    REQUIRE(svc.arm(min_t, stepped_clock::time_point::min(), cb, &runs) == status::ok); // due at once
    REQUIRE(eventually([&] { return runs.load() == 1; }, 60s));
    REQUIRE(svc.arm(stepped_t, stepped_clock::now() + 1h, cb, &runs) == status::ok);
    std::this_thread::sleep_for(50ms); // let the expiry thread go to sleep for "an hour"
    stepped_clock::offset_ns.fetch_add(std::chrono::nanoseconds(2h).count(), std::memory_order_relaxed);
    // Sleeping on CLOCK_MONOTONIC until the converted deadline would take an hour here.
    CHECK(eventually([&] { return runs.load() == 2; }, 60s));
    stepped_clock::offset_ns.store(0, std::memory_order_relaxed);
    CHECK(far_runs.load() == 0);
    CHECK(svc.cancel_sync(far_t, self) == status::removed);
    CHECK(svc.cancel_sync(stepped_t, self) == status::idle);
}

TEST_CASE("timer: the destructor begins no new pass: a timer due while the thread sleeps does not run") {
    stepped_clock::offset_ns.store(0, std::memory_order_relaxed);
    std::atomic<int> runs{0};
    basic_timer<stepped_clock> t; // outlives the service: its destructor unlinks it
    {
        timer_service_options o = threaded_other();
        o.clock_recheck = 2h; // the thread sleeps until the deadline, an hour away
        timer_service<pi_block, stepped_clock> svc(o);
        REQUIRE(svc.arm(t, stepped_clock::now() + 1h, [](basic_timer<stepped_clock>&, void* a) noexcept {
            static_cast<std::atomic<int>*>(a)->fetch_add(1, std::memory_order_relaxed);
        }, &runs) == status::ok);
        // arm() left a token (NOTIFIED): PARKED again means the thread has read the new deadline.
        REQUIRE(eventually([&] { return detail::ctx_access::park(*svc.expirer()).word.load() == detail::park_parked; },
                           60s));
        // Due now, but the sleeping thread does not look before its hour is up; the destructor's
        // wake-up must not start a pass that runs it.
        stepped_clock::offset_ns.fetch_add(std::chrono::nanoseconds(2h).count(), std::memory_order_relaxed);
    }
    stepped_clock::offset_ns.store(0, std::memory_order_relaxed);
    CHECK(runs.load() == 0);
}

namespace {
struct blocking_cb_state {
    std::atomic<bool> started{false};
    std::atomic<int> entered{0}; // the canceller's entries into its wait policy
    bool finished = false;       // published by the expirer's clear of `handling` / its lock
    timer_service<observed<pi_block>>* rearm_on = nullptr; // set: re-arm far away before blocking
    status rearm = status::ok;
};
template <class Timer>
void blocking_cb(Timer& t, void* arg) noexcept {
    auto* s = static_cast<blocking_cb_state*>(arg);
    if (s->rearm_on != nullptr)
        s->rearm = s->rearm_on->arm(t, clk::now() + 1h, &blocking_cb<Timer>, s); // running + pending
    s->started.store(true, std::memory_order_release);
    // Last until the canceller is in its wait (60 s at most: then cancel_sync sees it finished and
    // returns idle, and the test fails instead of hanging).
    (void)eventually([&] { return s->entered.load(std::memory_order_acquire) > 0; }, 60s);
    std::this_thread::sleep_for(1ms); // let pi_block get onto the lock, spin get spinning
    s->finished = true;
}
} // namespace

TEST_CASE_TEMPLATE("timer: cancel_sync of a running callback waits for it (waited)", Policy, pi_block, baseline::spin,
                   baseline::spin_yield, sleep_poll) {
    thread_ctx& self = attach_this_thread();
    blocking_cb_state st;
    observed<Policy> pol;
    pol.entered = &st.entered;
    timer_service<observed<Policy>> svc(threaded_other(), pol);
    timer t;
    REQUIRE(svc.arm(t, clk::now(), blocking_cb<timer>, &st) == status::ok);
    REQUIRE(eventually([&] { return st.started.load(std::memory_order_acquire); }, 60s));
    CHECK(t.running());
    CHECK_FALSE(svc.cancel(t)); // running, not pending
    CHECK(svc.cancel_sync(t, self) == status::waited);
    CHECK(st.entered.load() == 1);
    CHECK(st.finished);
    CHECK_FALSE(t.running());
    CHECK_FALSE(svc.pending(t));
}

TEST_CASE("timer: cancel_sync of a running and re-armed (pending) timer: removed, after the callback returned") {
    thread_ctx& self = attach_this_thread();
    blocking_cb_state st;
    observed<pi_block> pol;
    pol.entered = &st.entered;
    timer_service<observed<pi_block>> svc(threaded_other(), pol);
    st.rearm_on = &svc;
    timer t;
    REQUIRE(svc.arm(t, clk::now(), blocking_cb<timer>, &st) == status::ok);
    REQUIRE(eventually([&] { return st.started.load(std::memory_order_acquire); }, 60s));
    CHECK(st.rearm == status::ok); // the callback re-armed its timer before it blocked
    CHECK(svc.pending(t));
    CHECK(svc.cancel_sync(t, self) == status::removed); // dequeued, and the running callback waited for
    CHECK(st.entered.load() == 1);
    CHECK(st.finished);
    CHECK_FALSE(t.running());
    CHECK_FALSE(svc.pending(t));
}

TEST_CASE("timer: cancel_sync with a spin policy told to give up: timed_out, disarmed") {
    thread_ctx& self = attach_this_thread();
    std::atomic<bool> give_up{true};
    baseline::spin pol;
    pol.give_up = &give_up;
    timer_service<baseline::spin> svc(threaded_other(), pol);
    struct state {
        std::atomic<bool> started{false}, release{false};
    } st;
    timer t;
    REQUIRE(svc.arm(t, clk::now(),
                    [](timer&, void* a) noexcept {
                        auto* x = static_cast<state*>(a);
                        x->started.store(true, std::memory_order_release);
                        (void)eventually([&] { return x->release.load(std::memory_order_acquire); }, 60s);
                    },
                    &st, 1ms) == status::ok); // periodic: a re-arm would show as pending below
    REQUIRE(eventually([&] { return st.started.load(std::memory_order_acquire); }, 60s));
    CHECK(svc.cancel_sync(t, self) == status::timed_out);
    CHECK(t.running()); // it gave up: the callback still runs
    st.release.store(true, std::memory_order_release);
    give_up.store(false);
    CHECK(svc.cancel_sync(t, self) != status::timed_out); // waited or idle
    CHECK_FALSE(t.running());
    CHECK_FALSE(svc.pending(t)); // the first cancel_sync disarmed it: no periodic re-arm
}

TEST_CASE("timer: arm is refused while a cancel_sync of that timer waits (a self-re-arming callback cannot outrun it)") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(threaded_other());
    struct state {
        timer_service<>* svc;
        std::atomic<bool> started{false};
        status rearm = status::ok;
        int runs = 0;
    } st{&svc};
    timer t;
    auto cb = [](timer& tm, void* arg) noexcept {
        auto* s = static_cast<state*>(arg);
        ++s->runs;
        s->started.store(true, std::memory_order_release);
        thread_ctx& me = *current_thread_ctx();
        // Wait until the canceller blocks on our expiry lock, then try to re-arm.
        (void)eventually([&] { return detail::ctx_access::expiry(me).waiters.load(std::memory_order_relaxed) > 0; }, 60s);
        s->rearm = s->svc->arm(tm, clk::now(), +[](timer&, void*) noexcept {}, s);
    };
    REQUIRE(svc.arm(t, clk::now(), cb, &st, 1ms) == status::ok);
    REQUIRE(eventually([&] { return st.started.load(std::memory_order_acquire); }, 60s));
    CHECK(svc.cancel_sync(t, self) == status::waited);
    CHECK(st.rearm == status::cancelling);
    CHECK_FALSE(svc.pending(t));
    CHECK(st.runs == 1);
    // After cancel_sync the timer is usable again.
    std::atomic<int> runs{0};
    CHECK(svc.arm(t, clk::now() + 1h, count_cb, &runs) == status::ok);
    CHECK(svc.cancel_sync(t, self) == status::removed);
}

namespace {
struct batch_state {
    timer_service<>* svc = nullptr;
    timer* a = nullptr;
    timer* b = nullptr;
    status arm_a = status::invalid_argument, arm_b = status::invalid_argument; // the gate's arms
    std::atomic<bool> a_started{false};
    std::atomic<pid_t> canceller{0}; // its tid, published before it calls cancel_sync
    bool a_saw_queued = false;       // written by A's callback, read after b_done
    std::atomic<bool> canceller_returned{false};
    bool b_saw_return = false; // written by B's callback, read after b_done
    std::atomic<bool> b_done{false};
};
void batch_a_cb(timer&, void* arg) noexcept {
    auto* s = static_cast<batch_state*>(arg);
    s->a_started.store(true, std::memory_order_release);
    thread_ctx& me = *current_thread_ctx();
    // Return only once the canceller sleeps on our expiry lock in the kernel. Its waiter count is
    // not enough: it is raised before pthread_mutex_lock, and a drop and retake in that window
    // lets nobody through (the canceller then waits for B as well; see lock_waiter.hpp).
    s->a_saw_queued = eventually(
        [&] {
            const pid_t c = s->canceller.load(std::memory_order_acquire);
            return c != 0 && rtdefer_test::blocked_on_lock(c, detail::ctx_access::expiry(me).lock) ==
                                 rtdefer_test::lock_wait::queued;
        },
        60s);
}
void batch_b_cb(timer&, void* arg) noexcept {
    auto* s = static_cast<batch_state*>(arg);
    // Without the drop and retake between callbacks the canceller of A stays blocked until this
    // pass ends; then this gives up after 10 s and records the failure instead of hanging.
    s->b_saw_return = eventually([&] { return s->canceller_returned.load(std::memory_order_acquire); });
    s->b_done.store(true, std::memory_order_release);
}
// Arms A, then B, both due: a pass stops at timers armed during it, so the next pass runs both, A
// first. (Armed from the test thread, a stall between the two arms could give A a pass alone,
// and the test would pass without a second callback to drop the lock before.)
void batch_gate_cb(timer&, void* arg) noexcept {
    auto* s = static_cast<batch_state*>(arg);
    const auto when = clk::now();
    s->arm_a = s->svc->arm(*s->a, when, batch_a_cb, s);
    s->arm_b = s->svc->arm(*s->b, when, batch_b_cb, s);
}
} // namespace

TEST_CASE("timer: the expiry thread lets a higher-priority canceller go between callbacks of one pass") {
    // Expiry thread SCHED_FIFO 10, canceller SCHED_FIFO 20 (see the expiry_lock test of the same
    // mechanism for why priorities matter). Nothing here spins.
    RTDEFER_REQUIRE_RT_OR_SKIP();
    if (!rtdefer_test::lock_waits_observable()) {
        rtdefer_test::skip_test("/proc/self/task/<tid>/syscall unreadable: cannot see the canceller queued on the lock");
        return;
    }
    timer_service_options o;
    o.capacity = 4;
    o.thread = {.name = "batch-expirer", .policy = sched_policy::fifo, .priority = 10, .require_rt = true};
    timer_service<> svc(o);
    timer gate, a, b;
    batch_state st;
    st.svc = &svc;
    st.a = &a;
    st.b = &b;
    REQUIRE(svc.arm(gate, clk::now(), batch_gate_cb, &st) == status::ok);
    REQUIRE(eventually([&] { return st.a_started.load(std::memory_order_acquire); }, 60s));
    CHECK(st.arm_a == status::ok); // the gate's callback wrote them before A's pass, on the same thread
    CHECK(st.arm_b == status::ok);
    status ra = status::ok;
    {
        rt_thread canceller({.name = "batch-cancel", .policy = sched_policy::fifo, .priority = 20, .require_rt = true},
                            [&](thread_ctx& me) {
                                st.canceller.store(me.tid, std::memory_order_release);
                                ra = svc.cancel_sync(a, me);
                                st.canceller_returned.store(true, std::memory_order_release);
                            });
    }
    CHECK(ra == status::waited);
    REQUIRE(eventually([&] { return st.b_done.load(std::memory_order_acquire); }, 60s));
    CHECK(st.a_saw_queued);
    CHECK(st.b_saw_return);
    thread_ctx& self = attach_this_thread();
    CHECK(svc.cancel_sync(b, self) == status::idle);
}

TEST_CASE("timer: cancel_sync racing expiry, timer freed right after (no callback after return; ASan/TSan)") {
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(threaded_other(16));
    struct victim {
        timer t;
        std::atomic<int> in_callback{0};
        int runs = 0; // written by the callback; read after cancel_sync (ordered by it)
        std::chrono::microseconds work{0};
    };
    std::atomic<int> violations{0};
    auto cb = [](timer&, void* arg) noexcept {
        auto* v = static_cast<victim*>(arg);
        v->in_callback.store(1, std::memory_order_relaxed);
        ++v->runs;
        if (v->work.count() != 0)
            burn_cpu(v->work); // widen the running window so cancel_sync sees it running
        v->in_callback.store(0, std::memory_order_relaxed);
    };
    std::mt19937 rng(7);
    const std::size_t rounds = rtdefer_test::scaled(3000, 200);
    std::size_t removed = 0, ran = 0, waited = 0, periodic_rounds = 0;
    for (std::size_t i = 0; i < rounds; ++i) {
        auto v = std::make_unique<victim>();
        const bool periodic = (i % 4) == 0;
        v->work = std::chrono::microseconds((i % 3) == 0 ? 100 : 0);
        periodic_rounds += periodic;
        REQUIRE(svc.arm(v->t, clk::now() + std::chrono::microseconds(rng() % 200), cb, v.get(),
                        periodic ? std::chrono::microseconds(50) : clk::duration::zero()) == status::ok);
        if (rng() % 2)
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        const status s = svc.cancel_sync(v->t, self);
        REQUIRE((s == status::removed || s == status::waited || s == status::idle));
        if (v->in_callback.load(std::memory_order_relaxed) != 0)
            violations.fetch_add(1);
        const int runs_at_return = v->runs;
        if (!periodic) {
            // One arm = exactly one outcome: removed before running, or ran (waited/idle).
            CHECK(runs_at_return == (s == status::removed ? 0 : 1));
        }
        removed += s == status::removed;
        waited += s == status::waited;
        ran += runs_at_return > 0;
        // A stray callback after this point would write freed memory: ASan reports it.
        v.reset();
    }
    CHECK(violations.load() == 0);
    MESSAGE("rounds " << rounds << " (periodic " << periodic_rounds << "): removed " << removed << ", waited "
                      << waited << ", ran " << ran);
}

TEST_CASE("timer: wait_running on t.expiry() with a polling policy, then free: the clear is the expirer's last access (TSan/ASan)") {
    // A poller returns as soon as it reads handling == null. If the expirer still read the timer
    // after that store (its periodic re-arm check), freeing the timer here would race with that
    // read: TSan reports it on every round (no happens-before), ASan when the read comes late.
    thread_ctx& self = attach_this_thread();
    timer_service<> svc(threaded_other(4));
    struct victim {
        timer t;
        std::atomic<bool> started{false};
        std::atomic<bool> polling{false}; // set just before wait_running: the callback outlasts it a bit
    };
    const std::size_t rounds = rtdefer_test::scaled(500, 50);
    std::size_t waited = 0;
    for (std::size_t i = 0; i < rounds; ++i) {
        auto v = std::make_unique<victim>();
        REQUIRE(svc.arm(v->t, clk::now(),
                        [](timer&, void* a) noexcept {
                            auto* x = static_cast<victim*>(a);
                            x->started.store(true, std::memory_order_release);
                            (void)eventually([&] { return x->polling.load(std::memory_order_acquire); }, 1s);
                            burn_cpu(50us);
                        },
                        v.get()) == status::ok);
        REQUIRE(eventually([&] { return v->started.load(std::memory_order_acquire); }, 60s));
        v->polling.store(true, std::memory_order_release);
        const status s = wait_running<baseline::spin>(v->t.expiry(), self);
        REQUIRE((s == status::waited || s == status::idle));
        waited += s == status::waited;
        // No svc call here: taking the queue lock would order us after the expirer's section.
        v.reset(); // a later expirer access is a use after free
    }
    MESSAGE("wait_running<spin> then free: " << waited << " of " << rounds << " rounds waited");
}

TEST_CASE("timer: priority inversion for real: pi_block cancel_sync boosts a low-priority expirer on one CPU") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    thread_ctx& self = attach_this_thread();
    (void)self;
    const int cpu = rtdefer_test::first_allowed_cpu();
    REQUIRE(cpu >= 0);

    // Expirer SCHED_FIFO 10, a medium-priority hog SCHED_FIFO 15, canceller SCHED_FIFO 20, all on
    // `cpu`. The callback burns 1 ms of CPU and wakes the canceller and the hog at its start. With
    // priority inheritance the expirer runs at 20 (above the hog) and the canceller waits ~1 ms;
    // without it the hog (bounded: it stops when the canceller returns, or after 400 ms of CPU)
    // starves the expirer. The hog is bounded work, not a spin-wait.
    // The assertion is about order, not time (a shared machine can stall any thread): on one CPU
    // under SCHED_FIFO the hog (15) gets the CPU only when neither the canceller (20) nor a boosted
    // expirer is runnable, so with priority inheritance it first runs after cancel_sync returned.
    // How long cancel_sync takes is measured by bench/cancel_sync_bench.
    timer_service_options o;
    o.capacity = 4;
    o.thread = {.name = "pi-expirer", .policy = sched_policy::fifo, .priority = 10, .cpu = cpu, .require_rt = true};
    timer_service<pi_block> svc(o);

    struct shared {
        std::atomic<bool> started{false};
        std::atomic<bool> cancel_done{false};
        bool hog_ran_first = false; // the hog's first look found cancel_sync still waiting
        thread_ctx* canceller = nullptr;
        thread_ctx* hog = nullptr;
        clk::time_point cb_start{}, cb_end{};
    } sh;
    std::atomic<int> ready{0};
    status result = status::ok;
    clk::duration cancel_latency{};
    clk::time_point cancel_return{};
    timer t;

    rt_thread hog({.name = "pi-hog", .policy = sched_policy::fifo, .priority = 15, .cpu = cpu, .require_rt = true},
                  [&](thread_ctx& me) {
                      ready.fetch_add(1, std::memory_order_release);
                      while (!sh.started.load(std::memory_order_acquire))
                          (void)park(me);
                      timespec s0{};
                      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &s0);
                      sh.hog_ran_first = !sh.cancel_done.load(std::memory_order_acquire);
                      for (;;) {
                          if (sh.cancel_done.load(std::memory_order_acquire))
                              break;
                          timespec n{};
                          clock_gettime(CLOCK_THREAD_CPUTIME_ID, &n);
                          if ((n.tv_sec - s0.tv_sec) * 1'000'000'000LL + (n.tv_nsec - s0.tv_nsec) > 400'000'000LL)
                              break;
                      }
                  });
    rt_thread canceller({.name = "pi-cancel", .policy = sched_policy::fifo, .priority = 20, .cpu = cpu, .require_rt = true},
                        [&](thread_ctx& me) {
                            ready.fetch_add(1, std::memory_order_release);
                            while (!sh.started.load(std::memory_order_acquire))
                                (void)park(me);
                            const auto c0 = clk::now();
                            result = svc.cancel_sync(t, me);
                            cancel_return = clk::now();
                            cancel_latency = cancel_return - c0;
                            sh.cancel_done.store(true, std::memory_order_release);
                        });
    sh.canceller = &canceller.ctx();
    sh.hog = &hog.ctx();
    REQUIRE(eventually([&] { return ready.load(std::memory_order_acquire) == 2; }));
    REQUIRE(svc.arm(t, clk::now(),
                    [](timer&, void* a) noexcept {
                        auto* s = static_cast<shared*>(a);
                        s->cb_start = clk::now();
                        s->started.store(true, std::memory_order_release);
                        // The canceller preempts us at once (same CPU, higher priority) and blocks
                        // on our expiry lock; only then is the hog woken, while we run boosted.
                        (void)unpark(*s->canceller);
                        (void)unpark(*s->hog);
                        burn_cpu(1ms);
                        s->cb_end = clk::now();
                    },
                    &sh) == status::ok);
    canceller.join();
    hog.join();
    const double ms = std::chrono::duration<double, std::milli>(cancel_latency).count();
    MESSAGE("pi_block cancel_sync on CPU " << cpu << ": " << ms << " ms for a 1 ms callback (callback ran "
                                           << std::chrono::duration<double, std::milli>(sh.cb_end - sh.cb_start).count()
                                           << " ms wall)");
    CHECK(result == status::waited);
    CHECK(sh.cb_end <= cancel_return); // it returned after the callback, not before
    // Without priority inheritance the hog preempts the expirer at its wake-up and this fails.
    CHECK_FALSE(sh.hog_ran_first);
}

} // TEST_SUITE
