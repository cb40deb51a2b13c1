// Stress test for rtdefer/process_cpu_timer.hpp: three threads arm, re-arm, cancel and cancel_sync a
// shared set of process timers while the designated expirer fires them. Every expiry is counted:
// per timer, callbacks run == arms that returned ok/removed − expiries those operations took back
// (arm: removed, cancel: true, cancel_sync: removed). 0 lost, 0 duplicated; a callback never runs
// after cancel_sync returned and before the next arm (checked per timer with a generation word).
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/rt_thread.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

struct slot {
    process_cpu_timer t;
    std::atomic<std::uint64_t> runs{0};
    std::atomic<bool> quiet{false};   // set after cancel_sync, cleared before the next arm
    std::atomic<int> late_runs{0};    // callbacks that ran while `quiet`
    std::atomic<std::uint64_t> expected{0};
    std::atomic<std::uint64_t> taken_back{0};
    std::atomic_flag busy = ATOMIC_FLAG_INIT; // one operating thread per slot at a time
};

void count_cb(process_cpu_timer&, void* arg) noexcept {
    auto* s = static_cast<slot*>(arg);
    // relaxed: the expiry lock and the queue lock order this against the operator's stores.
    if (s->quiet.load(std::memory_order_relaxed))
        s->late_runs.fetch_add(1, std::memory_order_relaxed);
    s->runs.fetch_add(1, std::memory_order_relaxed); // relaxed: read after cancel_sync / join
}

} // namespace

TEST_SUITE("stress") {

TEST_CASE("process_cpu_timer stress: arm / cancel / cancel_sync from three threads racing the expirer") {
    REQUIRE(interrupt_install() == status::ok);
    std::atomic<bool> stop{false};
    std::atomic<int> setup{-1};
    rt_thread expirer({.name = "pcts-expirer", .policy = sched_policy::other}, [&](thread_ctx& self) {
        const status s = process_cpu_timer_setup(self, {.capacity = 64});
        setup.store(static_cast<int>(s), std::memory_order_release);
        if (s != status::ok)
            return;
        while (!stop.load(std::memory_order_acquire))
            (void)wait_for_work_until(self, std::chrono::steady_clock::now() + 2ms);
    });
    REQUIRE(rtdefer_test::eventually([&] { return setup.load(std::memory_order_acquire) >= 0; }));
    REQUIRE(setup.load() == static_cast<int>(status::ok));

    constexpr std::size_t nslots = 16;
    std::vector<std::unique_ptr<slot>> slots;
    for (std::size_t i = 0; i < nslots; ++i)
        slots.push_back(std::make_unique<slot>());
    const std::size_t ops = rtdefer_test::scaled(20'000, 500);
    std::atomic<std::size_t> bad_status{0};
    auto worker = [&](std::uint64_t seed) {
        return [&, seed](thread_ctx& self) {
            std::uint64_t x = seed;
            for (std::size_t i = 0; i < ops; ++i) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                slot& s = *slots[x % nslots];
                if (s.busy.test_and_set(std::memory_order_acquire))
                    continue; // another worker operates this slot now
                switch ((x >> 8) % 4) {
                case 0:
                case 1: {
                    s.quiet.store(false, std::memory_order_relaxed); // relaxed: published by arm's lock
                    const status r = s.t.arm(self, process_cpu_time_ns() + (x >> 16) % 200'000, &count_cb, &s);
                    if (r == status::ok || r == status::moved)
                        s.expected.fetch_add(1, std::memory_order_relaxed); // relaxed: summed after join
                    if (r == status::moved)
                        s.taken_back.fetch_add(1, std::memory_order_relaxed);
                    if (r != status::ok && r != status::moved)
                        bad_status.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
                case 2:
                    if (s.t.cancel())
                        s.taken_back.fetch_add(1, std::memory_order_relaxed);
                    break;
                default: {
                    const status r = s.t.cancel_sync(self);
                    if (r == status::removed)
                        s.taken_back.fetch_add(1, std::memory_order_relaxed);
                    else if (r != status::waited && r != status::idle)
                        bad_status.fetch_add(1, std::memory_order_relaxed);
                    s.quiet.store(true, std::memory_order_relaxed); // nothing may run until the next arm
                    break;
                }
                }
                const std::uint64_t t0 = process_cpu_time_ns();
                while (process_cpu_time_ns() - t0 < (x >> 24) % 50'000) {
                }
                s.busy.clear(std::memory_order_release);
            }
        };
    };
    {
        rt_thread a({.name = "pcts-a", .policy = sched_policy::other}, worker(0x9E3779B97F4A7C15ULL));
        rt_thread b({.name = "pcts-b", .policy = sched_policy::other}, worker(0xD1B54A32D192ED03ULL));
        rt_thread c({.name = "pcts-c", .policy = sched_policy::other}, worker(0x8CB92BA72F3D8DD7ULL));
        a.join();
        b.join();
        c.join();
    }
    thread_ctx& me = attach_this_thread();
    std::uint64_t expected = 0, ran = 0;
    for (auto& s : slots) {
        const status r = s->t.cancel_sync(me);
        if (r == status::removed)
            s->taken_back.fetch_add(1, std::memory_order_relaxed);
        CHECK(r != status::would_deadlock);
        const std::uint64_t want = s->expected.load() - s->taken_back.load();
        CHECK(s->runs.load() == want); // 0 lost, 0 duplicated
        CHECK(s->late_runs.load() == 0);
        expected += want;
        ran += s->runs.load();
    }
    stop.store(true, std::memory_order_release);
    expirer.join();
    CHECK(bad_status.load() == 0);
    CHECK(ran == expected);
    MESSAGE((ops * 3) << " operations; " << ran << " expiries, each counted once; stats: "
                    << process_cpu_timer_statistics().passes << " passes, " << process_cpu_timer_statistics().kicks << " kicks");
}

} // TEST_SUITE
