// Stress test for rtdefer/cpu_timer.hpp: cancel_sync from another thread racing expiry (both
// models), the timer freed right after cancel_sync returns (ASan/TSan see any later access).
// Every round is counted: removed ⇔ the callback never ran; waited/idle ⇔ it ran exactly once.
// 0 lost, 0 duplicated.
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

struct round_slot {
    std::atomic<int> runs{0};
};

struct shared {
    std::atomic<cpu_timer*> handoff{nullptr}; // owner → canceller: the armed timer of this round
    std::atomic<std::size_t> done{0};         // canceller → owner: rounds finished (timer freed)
    std::vector<round_slot> slots;
    std::vector<status> results;
    thread_ctx* canceller = nullptr;
    explicit shared(std::size_t n) : slots(n), results(n, status::ok) {}
};

struct cb_arg {
    round_slot* slot;
};

void count_cb(cpu_timer&, void* arg) noexcept RTDEFER_NONBLOCKING {
    static_cast<cb_arg*>(arg)->slot->runs.fetch_add(1, std::memory_order_relaxed);
}

} // namespace

TEST_SUITE("stress") {

TEST_CASE("cpu_timer stress: cancel_sync racing expiry, timer freed right after: 0 lost, 0 duplicated") {
    REQUIRE(interrupt_install() == status::ok);
    const std::size_t rounds = rtdefer_test::scaled(3000, 200);
    shared sh(rounds);
    std::vector<cb_arg> args(rounds);
    for (std::size_t i = 0; i < rounds; ++i)
        args[i].slot = &sh.slots[i];

    rt_thread canceller({.name = "cts-cancel", .policy = sched_policy::other}, [&](thread_ctx& me) {
        std::mt19937 rng(7);
        for (std::size_t i = 0; i < rounds; ++i) {
            cpu_timer* t;
            while ((t = sh.handoff.exchange(nullptr, std::memory_order_acquire)) == nullptr)
                (void)park_until(me, std::chrono::steady_clock::now() + 1ms);
            // Land anywhere: before the deadline, during the callback or after.
            const auto spin_ns = static_cast<std::int64_t>(rng() % 150'000);
            const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
            while (std::chrono::steady_clock::now() < end) {
            }
            sh.results[i] = t->cancel_sync(me);
            delete t; // freed at once: any later access by the hook or the pass is a use after free
            sh.done.store(i + 1, std::memory_order_release);
        }
    });
    sh.canceller = &canceller.ctx();

    rt_thread owner({.name = "cts-owner", .policy = sched_policy::other}, [&](thread_ctx& self) {
        REQUIRE(cpu_timer_setup(self) == status::ok);
        std::mt19937 rng(11);
        for (std::size_t i = 0; i < rounds; ++i) {
            auto* t = new cpu_timer(self);
            const cpu_timer_mode mode = (i & 1) != 0 ? cpu_timer_mode::urgent : cpu_timer_mode::deferred;
            const std::uint64_t at = cpu_time_ns(self) + rng() % 50'000;
            REQUIRE(t->arm(at, &count_cb, &args[i], mode) == status::ok);
            sh.handoff.store(t, std::memory_order_release);
            (void)unpark(*sh.canceller);
            // The owner's loop: burn CPU, pass its safe point, until the canceller is done with t.
            while (sh.done.load(std::memory_order_acquire) <= i)
                (void)task_work_run(self);
        }
        // Anything still queued would run here (and touch freed memory).
        const std::uint64_t t0 = cpu_time_ns(self);
        while (cpu_time_ns(self) - t0 < 5'000'000)
            (void)task_work_run(self);
    });
    owner.join();
    canceller.join();

    std::size_t removed = 0, ran = 0, lost = 0, duplicated = 0, bad_status = 0;
    for (std::size_t i = 0; i < rounds; ++i) {
        const int runs = sh.slots[i].runs.load(std::memory_order_relaxed);
        const status s = sh.results[i];
        if (s == status::removed) {
            ++removed;
            duplicated += runs != 0 ? 1 : 0; // ran although removed
        } else if (s == status::waited || s == status::idle) {
            ++ran;
            lost += runs == 0 ? 1 : 0;
            duplicated += runs > 1 ? 1 : 0;
        } else {
            ++bad_status;
        }
    }
    MESSAGE(rounds << " rounds: " << removed << " removed before expiry, " << ran << " ran (waited/idle); lost "
                   << lost << ", duplicated " << duplicated);
    CHECK(bad_status == 0);
    CHECK(lost == 0);
    CHECK(duplicated == 0);
    CHECK(removed + ran == rounds);
}

} // TEST_SUITE
