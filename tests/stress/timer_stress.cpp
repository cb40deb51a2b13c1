// Stress tests for rtdefer/timer.hpp against a running expiry thread. Every one-shot expiry is counted:
// armed (arm returned ok) == ran + removed (by cancel/cancel_sync from owners and from callbacks);
// 0 lost, 0 duplicated. No callback runs after cancel_sync returned; timers freed right after
// cancel_sync are never touched again (ASan). Work scales with RTDEFER_STRESS_SCALE.
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/timer.hpp>

#include "test_util.hpp"
#include "timer_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

using namespace rtdefer;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

timer_service_options stress_options(std::size_t capacity) {
    timer_service_options o;
    o.capacity = capacity;
    // SCHED_OTHER: a stress test shares the machine; the RT behaviour is the unit test's and bench's.
    o.thread.policy = sched_policy::other;
    return o;
}

constexpr int owners = 4;
constexpr int timers_per_owner = 32;

struct stress_timer;

struct owner_state {
    std::vector<std::unique_ptr<stress_timer>> timers;
    timer_service<>* svc = nullptr;
};

struct stress_timer {
    timer t;
    owner_state* owner = nullptr;
    bool periodic = false;
    std::atomic<std::uint64_t> ran{0};      // callbacks run (relaxed: totals read after cancel_sync)
    std::atomic<int> in_callback{0};        // 1 while the callback runs
    std::uint64_t ran_at_cancel_sync = 0;   // owner-only snapshot
    bool quiesced = true;                   // owner-only: cancel_sync returned, not re-armed since
    std::uint32_t rng = 1;                  // callback-only
};

std::atomic<std::uint64_t> removed_by_callbacks{0};
std::atomic<std::uint64_t> callback_violations{0};

void stress_cb(timer&, void* arg) noexcept {
    auto* st = static_cast<stress_timer*>(arg);
    if (st->in_callback.exchange(1, std::memory_order_relaxed) != 0)
        callback_violations.fetch_add(1, std::memory_order_relaxed); // two expiries at once
    st->ran.fetch_add(1, std::memory_order_relaxed);
    st->rng = st->rng * 1103515245u + 12345u;
    if ((st->rng >> 16) % 8 == 0) { // a longer callback now and then: cancel_sync finds it running
        const auto until = clk::now() + std::chrono::microseconds(30);
        while (clk::now() < until) {
        }
    }
    // One callback in four cancels a random one-shot sibling: removals from the expirer too.
    st->rng = st->rng * 1103515245u + 12345u;
    if ((st->rng >> 16) % 4 == 0) {
        stress_timer& victim = *st->owner->timers[(st->rng >> 8) % timers_per_owner];
        if (!victim.periodic && &victim != st && st->owner->svc->cancel(victim.t))
            removed_by_callbacks.fetch_add(1, std::memory_order_relaxed);
    }
    st->in_callback.store(0, std::memory_order_relaxed);
}

} // namespace

TEST_SUITE("stress") {

TEST_CASE("timer stress: owners arm/cancel/cancel_sync while the expiry thread runs; callbacks cancel siblings") {
    timer_service<> svc(stress_options(owners * timers_per_owner));
    std::vector<owner_state> state(owners);
    for (auto& o : state) {
        o.svc = &svc;
        for (int k = 0; k < timers_per_owner; ++k) {
            auto st = std::make_unique<stress_timer>();
            st->owner = &o;
            st->periodic = (k % 8) == 0;
            st->rng = static_cast<std::uint32_t>(k * 7919 + 1);
            o.timers.push_back(std::move(st));
        }
    }
    const std::size_t ops = rtdefer_test::scaled(40'000, 2'000);
    std::atomic<std::uint64_t> armed{0}, removed_by_owners{0}, failures{0}, after_cancel_sync{0};
    std::atomic<std::uint64_t> waited{0};

    std::vector<std::thread> threads;
    for (int w = 0; w < owners; ++w) {
        threads.emplace_back([&, w] {
            thread_ctx& self = attach_this_thread();
            owner_state& o = state[static_cast<std::size_t>(w)];
            std::mt19937 rng(static_cast<unsigned>(w + 1));
            for (std::size_t i = 0; i < ops; ++i) {
                if (rng() % 16 == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300)); // let expiries happen
                stress_timer& st = *o.timers[rng() % timers_per_owner];
                switch (rng() % 4) {
                case 0:
                case 1: { // arm (or move)
                    if (st.quiesced && st.ran.load(std::memory_order_relaxed) != st.ran_at_cancel_sync)
                        after_cancel_sync.fetch_add(1, std::memory_order_relaxed);
                    st.quiesced = false;
                    const auto when = clk::now() + std::chrono::microseconds(rng() % 400);
                    const status s = svc.arm(st.t, when, stress_cb, &st,
                                             st.periodic ? clk::duration(std::chrono::microseconds(150))
                                                         : clk::duration::zero());
                    if (s == status::ok) {
                        if (!st.periodic)
                            armed.fetch_add(1, std::memory_order_relaxed);
                    } else if (s != status::moved) {
                        failures.fetch_add(1, std::memory_order_relaxed);
                    }
                    break;
                }
                case 2: // try-cancel
                    if (svc.cancel(st.t) && !st.periodic)
                        removed_by_owners.fetch_add(1, std::memory_order_relaxed);
                    break;
                case 3: { // cancel_sync
                    const status s = svc.cancel_sync(st.t, self);
                    if (s == status::removed && !st.periodic)
                        removed_by_owners.fetch_add(1, std::memory_order_relaxed);
                    else if (s == status::waited)
                        waited.fetch_add(1, std::memory_order_relaxed);
                    else if (s != status::removed && s != status::idle)
                        failures.fetch_add(1, std::memory_order_relaxed);
                    if (st.in_callback.load(std::memory_order_relaxed) != 0)
                        after_cancel_sync.fetch_add(1, std::memory_order_relaxed);
                    st.ran_at_cancel_sync = st.ran.load(std::memory_order_relaxed);
                    st.quiesced = true;
                    break;
                }
                }
            }
            // Quiesce everything this owner has.
            for (auto& t : o.timers) {
                const status s = svc.cancel_sync(t->t, self);
                if (s == status::removed && !t->periodic)
                    removed_by_owners.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    // All quiet now; let a stray expiry show itself if there were one.
    std::this_thread::sleep_for(5ms);

    std::uint64_t ran_one_shot = 0, ran_periodic = 0;
    for (auto& o : state)
        for (auto& t : o.timers) {
            (t->periodic ? ran_periodic : ran_one_shot) += t->ran.load(std::memory_order_relaxed);
            CHECK_FALSE(t->t.running());
        }
    const std::uint64_t removed = removed_by_owners.load() + removed_by_callbacks.load();
    MESSAGE("armed " << armed.load() << " one-shot expiries: ran " << ran_one_shot << ", removed " << removed
                     << " (by callbacks " << removed_by_callbacks.load() << "); periodic runs " << ran_periodic
                     << "; cancel_sync waited " << waited.load());
    CHECK(failures.load() == 0);
    CHECK(callback_violations.load() == 0);
    CHECK(after_cancel_sync.load() == 0);
    CHECK(svc.size() == 0);
    CHECK(svc.dropped_rearms() == 0);
    CHECK(armed.load() == ran_one_shot + removed); // 0 lost, 0 duplicated
}

TEST_CASE("timer stress: threads create, arm, cancel_sync and free timers at once (use after free: ASan)") {
    timer_service<> svc(stress_options(256));
    struct victim {
        timer t;
        std::atomic<int> runs{0};
    };
    const std::size_t rounds = rtdefer_test::scaled(20'000, 1'000);
    std::atomic<std::uint64_t> armed{0}, ran{0}, removed{0}, bad{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < owners; ++w) {
        threads.emplace_back([&, w] {
            thread_ctx& self = attach_this_thread();
            std::mt19937 rng(static_cast<unsigned>(100 + w));
            for (std::size_t i = 0; i < rounds; ++i) {
                auto v = std::make_unique<victim>();
                const bool periodic = rng() % 4 == 0;
                if (svc.arm(v->t, clk::now() + std::chrono::microseconds(rng() % 100),
                            [](timer&, void* a) noexcept {
                                static_cast<victim*>(a)->runs.fetch_add(1, std::memory_order_relaxed);
                            },
                            v.get(), periodic ? clk::duration(std::chrono::microseconds(30)) : clk::duration::zero()) !=
                    status::ok) {
                    bad.fetch_add(1);
                    continue;
                }
                if (rng() % 2)
                    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 150));
                const status s = svc.cancel_sync(v->t, self);
                const int r = v->runs.load(std::memory_order_relaxed);
                if (!periodic) {
                    armed.fetch_add(1);
                    if (s == status::removed) {
                        removed.fetch_add(1);
                        if (r != 0)
                            bad.fetch_add(1);
                    } else if (r == 1) {
                        ran.fetch_add(1);
                    } else {
                        bad.fetch_add(1); // neither removed nor ran exactly once
                    }
                }
                v.reset(); // freed right after cancel_sync: a later callback would be a use-after-free
            }
        });
    }
    for (auto& t : threads)
        t.join();
    MESSAGE("one-shot: armed " << armed.load() << ", ran " << ran.load() << ", removed " << removed.load());
    CHECK(bad.load() == 0);
    CHECK(armed.load() == ran.load() + removed.load());
    CHECK(svc.size() == 0);
}

TEST_CASE("timer stress: 10^5 timers through the expiry thread, each runs exactly once, in order") {
    const std::size_t n = rtdefer_test::scaled(100'000, 5'000);
    timer_service<> svc(stress_options(n + 1));
    rtdefer_test::ordered_timers<> timers(n);
    std::mt19937_64 rng(3);
    // A gate timer expires first and holds the expirer until every timer is armed, so the expiry
    // order must be exactly the deadline order whatever the arming speed (sanitizers are slow).
    const auto t0 = clk::now() + 1ms;
    std::atomic<bool> armed_all{false};
    timer gate;
    REQUIRE(svc.arm(gate, t0,
                    [](timer&, void* a) noexcept {
                        auto* f = static_cast<std::atomic<bool>*>(a);
                        while (!f->load(std::memory_order_acquire))
                            std::this_thread::sleep_for(100us);
                    },
                    &armed_all) == status::ok);
    for (std::size_t i = 0; i < n; ++i)
        REQUIRE(timers.arm(svc, i, t0 + std::chrono::microseconds(1 + rng() % 200'000)) == status::ok);
    armed_all.store(true, std::memory_order_release);
    const auto limit = clk::now() + 120s;
    while (timers.runs() < n && clk::now() < limit)
        std::this_thread::sleep_for(5ms);
    REQUIRE(timers.runs() == n);
    thread_ctx& self = attach_this_thread();
    std::size_t once = 0;
    for (std::size_t i = 0; i < n; ++i) {
        once += timers.runs(i) == 1;
        CHECK(svc.cancel_sync(timers.timer(i), self) == status::idle);
    }
    CHECK(once == n);
    CHECK(timers.out_of_order() == 0); // read after cancel_sync of every timer: ordered by it
    CHECK(svc.cancel_sync(gate, self) == status::idle);
    CHECK(svc.size() == 0);
}

} // TEST_SUITE
