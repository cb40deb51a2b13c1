// Stress tests for rtdefer/task_work.hpp. Every item is accounted for individually:
//   - add returned ok      → it ran exactly once, or a canceller removed it exactly once;
//   - add returned exited  → it never ran and is idle (the caller kept it);
//   - nothing is still queued at the end (0 leaked), runs per producer are in FIFO order.
// Work is scaled by RTDEFER_STRESS_SCALE (sanitizer configurations lower it).
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include "async_cancel.hpp"
#include "ledger.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <vector>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

constexpr int max_producers = 4;

struct stress_item : callback_head {
    std::uint32_t producer = 0;
    std::uint32_t seq = 0;
    std::size_t id = 0; // in the round's ledger: expected once if its add returned ok, else never
};

/// Owner-side accounting: only the owner thread runs callbacks, so plain fields would do; they
/// are atomics so the test thread can read them after join without a data race report.
struct owner_log {
    rtdefer_test::ledger* ledger = nullptr; // a run or a successful cancel records the item
    std::atomic<std::uint64_t> ran{0};
    std::atomic<std::uint64_t> fifo_violations{0};
    std::int64_t last_seq[max_producers];
    owner_log() {
        for (auto& s : last_seq)
            s = -1;
    }
};
owner_log* g_log = nullptr;

void stress_cb(callback_head* h) noexcept {
    auto* it = static_cast<stress_item*>(h);
    (void)g_log->ledger->record(it->id);
    std::int64_t& last = g_log->last_seq[it->producer];
    if (static_cast<std::int64_t>(it->seq) <= last)
        g_log->fifo_violations.fetch_add(1, std::memory_order_relaxed);
    last = it->seq;
    g_log->ran.fetch_add(1, std::memory_order_relaxed); // relaxed: read after the threads are joined
}

struct round_result {
    rtdefer_test::ledger::report items; // expected: the ok adds; refused: the exited ones
    std::uint64_t other = 0, ran = 0, cancelled = 0, leaked = 0, fifo = 0;
};

/// One round: `producers` threads add `per_producer` distinct items each (mixed notify modes) to
/// an owner that runs them at its safe point and exits after `exit_after` callbacks; optional
/// cancellers remove random items meanwhile.
round_result run_round(int producers, std::size_t per_producer, std::uint64_t exit_after, int cancellers,
                       bool use_signal, std::uint32_t seed) {
    rtdefer_test::ledger ledger(static_cast<std::size_t>(producers) * per_producer);
    owner_log log;
    log.ledger = &ledger;
    g_log = &log;
    std::vector<std::unique_ptr<stress_item[]>> items;
    for (int p = 0; p < producers; ++p) {
        items.emplace_back(new stress_item[per_producer]);
        for (std::size_t i = 0; i < per_producer; ++i) {
            init_task_work(items.back()[i], &stress_cb);
            items.back()[i].producer = static_cast<std::uint32_t>(p);
            items.back()[i].seq = static_cast<std::uint32_t>(i);
            items.back()[i].id = static_cast<std::size_t>(p) * per_producer + i;
        }
    }
    std::atomic<std::uint64_t> other_status{0}; // an add that returned neither ok nor exited
    // How many items each producer has handed over: cancellers pick among those.
    std::vector<std::atomic<std::size_t>> published(static_cast<std::size_t>(producers));

    std::atomic<thread_ctx*> owner_ctx{nullptr};
    thread_ref owner_ref;
    std::atomic<bool> start{false}, stop_owner{false};
    std::thread owner([&] {
        thread_ctx& self = attach_this_thread();
        owner_ref = thread_ref(self);
        owner_ctx.store(&self, std::memory_order_release);
        while (!start.load(std::memory_order_acquire))
            std::this_thread::yield();
        // The safe-point loop: run work, park until notified or 1 ms passes; exit at exit_after.
        while (!stop_owner.load(std::memory_order_acquire) && log.ran.load(std::memory_order_relaxed) < exit_after)
            (void)wait_for_work_until(self, std::chrono::steady_clock::now() + 1ms);
        // Returning: the exit hook runs what is still queued and installs the exited sentinel.
    });
    while (owner_ctx.load(std::memory_order_acquire) == nullptr)
        std::this_thread::yield();
    thread_ctx& target = *owner_ctx.load(std::memory_order_acquire);

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::minstd_rand rng(seed + static_cast<std::uint32_t>(p));
            while (!start.load(std::memory_order_acquire))
                std::this_thread::yield();
            stress_item* mine = items[static_cast<std::size_t>(p)].get();
            for (std::size_t i = 0; i < per_producer; ++i) {
                const unsigned r = rng() % 16;
                const notify n = r == 0 && use_signal ? notify::signal : (r < 8 ? notify::none : notify::resume);
                const status st = task_work_add(target, mine[i], n);
                if (st == status::ok)
                    (void)ledger.expect(mine[i].id);
                else if (st == status::exited)
                    ledger.refuse(mine[i].id);
                else
                    other_status.fetch_add(1, std::memory_order_relaxed); // relaxed: read after the joins
                published[static_cast<std::size_t>(p)].store(i + 1, std::memory_order_release);
                if ((i & 1023) == 0)
                    std::this_thread::yield(); // let the owner and the cancellers interleave
            }
        });
    }
    std::atomic<bool> producers_done{false};
    std::atomic<std::uint64_t> cancel_hits{0};
    for (int c = 0; c < cancellers; ++c) {
        threads.emplace_back([&, c] {
            std::minstd_rand rng(seed * 7919U + static_cast<std::uint32_t>(c));
            while (!start.load(std::memory_order_acquire))
                std::this_thread::yield();
            while (!producers_done.load(std::memory_order_acquire)) {
                const auto p = static_cast<std::size_t>(rng() % static_cast<unsigned>(producers));
                const std::size_t n = published[p].load(std::memory_order_acquire);
                if (n == 0)
                    continue;
                // Mostly recent items (likely still queued), sometimes any.
                const std::size_t back = rng() % 4 == 0 ? rng() % n : rng() % std::min<std::size_t>(n, 64);
                stress_item& it = items[p][n - 1 - back];
                if (task_work_cancel(target, it)) {
                    (void)ledger.record(it.id);
                    cancel_hits.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    start.store(true, std::memory_order_release);
    for (int p = 0; p < producers; ++p)
        threads[static_cast<std::size_t>(p)].join();
    producers_done.store(true, std::memory_order_release);
    for (std::size_t t = static_cast<std::size_t>(producers); t < threads.size(); ++t)
        threads[t].join();
    // The owner may still be below exit_after (everything ran or was cancelled): tell it to leave.
    stop_owner.store(true, std::memory_order_release);
    (void)unpark(target); // owner_ref keeps the ctx alive even if the owner already exited
    owner.join();

    round_result r;
    r.ran = log.ran.load();
    r.fifo = log.fifo_violations.load();
    r.cancelled = cancel_hits.load();
    r.other = other_status.load();
    for (int p = 0; p < producers; ++p)
        for (std::size_t i = 0; i < per_producer; ++i)
            r.leaked += task_work_queued(items[static_cast<std::size_t>(p)][i]);
    r.items = ledger.count();
    g_log = nullptr;
    return r;
}

void check_round(const round_result& r, std::size_t total) {
    INFO("ran=" << r.ran << " cancelled=" << r.cancelled << "; items (ok adds expected, exited refused): "
                 << r.items.str());
    CHECK(r.items.expected + r.items.refused == total);
    CHECK(r.other == 0);
    CHECK(r.items.lost == 0);
    CHECK(r.items.duplicated == 0);
    CHECK(r.leaked == 0);
    CHECK(r.items.unexpected == 0); // an exited add ran or was cancelled
    CHECK(r.fifo == 0);
}

/// An owner thread running `loop(self, stop)` until stop(); holds a reference to its ctx so adds
/// and unparks stay safe after it exits.
struct owner_loop {
    std::atomic<bool> stop_flag{false};
    std::atomic<thread_ctx*> ctx{nullptr};
    thread_ref ref;
    std::thread t;
    template <class Loop> explicit owner_loop(Loop loop) {
        t = std::thread([this, loop] {
            thread_ctx& self = attach_this_thread();
            ref = thread_ref(self);
            ctx.store(&self, std::memory_order_release); // publishes ref
            loop(self, stop_flag);
        });
        while (ctx.load(std::memory_order_acquire) == nullptr)
            std::this_thread::yield();
    }
    thread_ctx& target() const { return *ctx.load(std::memory_order_acquire); }
    void stop() {
        stop_flag.store(true, std::memory_order_release);
        (void)unpark(target());
        if (t.joinable())
            t.join();
    }
    ~owner_loop() { stop(); }
};

} // namespace

TEST_CASE("stress: 2+ producers x 1e5 items to an owner that exits at a random point: 0 lost, 0 duplicated, 0 leaked") {
    const std::size_t per = rtdefer_test::scaled(100000, 2000);
    std::mt19937 rng(12345);
    const bool signal_ok = interrupt_install() == status::ok;
    for (int round = 0; round < 4; ++round) {
        const int producers = 2 + round % 2; // 2 or 3
        const std::size_t total = per * static_cast<std::size_t>(producers);
        // Round 0 exits almost at once, racing with the first adds; the others at a random point.
        const std::uint64_t exit_after = round == 0 ? 1 + rng() % 1000 : rng() % total;
        CAPTURE(round);
        CAPTURE(exit_after);
        const round_result r = run_round(producers, per, exit_after, 0, signal_ok, rng());
        check_round(r, total);
        CHECK(r.cancelled == 0);
        MESSAGE("round " << round << ": " << producers << " producers, " << total << " items, exit after "
                         << exit_after << ": ran " << r.ran << ", exited " << r.items.refused);
    }
}

TEST_CASE("stress: cancellers race with the owner's runs and its exit: each item runs or is cancelled, once") {
    const std::size_t per = rtdefer_test::scaled(100000, 2000);
    std::mt19937 rng(777);
    for (int round = 0; round < 3; ++round) {
        const int producers = 2;
        const std::size_t total = per * static_cast<std::size_t>(producers);
        // Exit late (most items run or are cancelled while alive), except the last round.
        const std::uint64_t exit_after = round == 2 ? rng() % (total / 2) : total;
        CAPTURE(round);
        const round_result r = run_round(producers, per, exit_after, 2, false, rng());
        check_round(r, total);
        CHECK(r.ran + r.cancelled == r.items.expected);
        MESSAGE("round " << round << ": " << total << " items, ran " << r.ran << ", cancelled " << r.cancelled
                         << ", exited " << r.items.refused);
    }
}

TEST_CASE("stress: one item re-added by many producers while the owner runs: ok adds == runs") {
    // The already_queued claim under contention, plus re-queueing from the callback itself.
    struct counted : callback_head {
        std::atomic<std::uint64_t> runs{0};
    };
    counted shared;
    init_task_work(shared, [](callback_head* h) noexcept {
        static_cast<counted*>(h)->runs.fetch_add(1, std::memory_order_relaxed);
    });
    // A busy owner: the item is dequeued as often as possible, which is when racing adds of it
    // can both see it idle (the window the claim must close).
    owner_loop owner([](thread_ctx& self, const std::atomic<bool>& stop) {
        while (!stop.load(std::memory_order_acquire))
            (void)task_work_run(self);
    });
    thread_ctx& target = owner.target();
    // Producers keep racing until the item has been queued `target_ok` times in all, or for 10 s
    // (4 spinning threads on 2 CPUs: the owner's share of a CPU decides the pace).
    const std::uint64_t target_ok = rtdefer_test::scaled(20000, 1000);
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    std::atomic<std::uint64_t> ok{0}, queued{0};
    std::vector<std::thread> producers;
    for (int p = 0; p < 3; ++p)
        producers.emplace_back([&] {
            std::uint64_t spins = 0;
            while (ok.load(std::memory_order_relaxed) < target_ok && std::chrono::steady_clock::now() < give_up) {
                const status st = task_work_add(target, shared, notify::none);
                if (st == status::ok) {
                    ok.fetch_add(1, std::memory_order_relaxed);
                } else if (st == status::already_queued) {
                    queued.fetch_add(1, std::memory_order_relaxed);
                    if ((++spins & 15) == 0)
                        std::this_thread::yield(); // 2 CPUs: let the owner run
                }
            }
        });
    for (auto& t : producers)
        t.join();
    owner.stop();
    CHECK(ok.load() >= std::min<std::uint64_t>(target_ok, 100));
    CHECK(shared.runs.load() == ok.load());
    CHECK_FALSE(task_work_queued(shared));
    MESSAGE(ok.load() << " ok adds, " << queued.load() << " already_queued, " << shared.runs.load() << " runs");
}

TEST_CASE("stress: no lost wake-ups: producers wait for each resume add to run while the owner parks with no deadline") {
    // The owner sleeps in wait_for_work_until without a deadline, so a lost wake-up hangs the round; each
    // producer waits (with a 30 s bound, reported as a failure) for its item to run before adding
    // it again, sometimes after a notify::none add of a second item, so adds race with the owner's
    // run passes, its clearing of the notify flag, and its parking.
    owner_loop owner([](thread_ctx& self, const std::atomic<bool>& stop) {
        while (!stop.load(std::memory_order_acquire))
            (void)wait_for_work_until(self, std::chrono::steady_clock::time_point::max());
    });
    thread_ctx& target = owner.target();
    struct counted : callback_head {
        std::atomic<std::uint64_t> runs{0};
    };
    const std::uint64_t rounds = rtdefer_test::scaled(20000, 500);
    std::atomic<std::uint64_t> hangs{0}, bad{0};
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p)
        producers.emplace_back([&, p] {
            counted main_item, side_item;
            auto cb = [](callback_head* h) noexcept { static_cast<counted*>(h)->runs.fetch_add(1, std::memory_order_release); };
            init_task_work(main_item, cb);
            init_task_work(side_item, cb);
            std::minstd_rand rng(static_cast<unsigned>(p) + 1);
            std::uint64_t side_ok = 0;
            for (std::uint64_t r = 1; r <= rounds; ++r) {
                if (rng() % 4 == 0 && task_work_add(target, side_item, notify::none) == status::ok)
                    ++side_ok;
                if (task_work_add(target, main_item, notify::resume) != status::ok) {
                    bad.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
                const auto deadline = std::chrono::steady_clock::now() + 30s;
                unsigned spins = 0;
                while (main_item.runs.load(std::memory_order_acquire) < r) {
                    if (++spins % 64 == 0) {
                        std::this_thread::yield();
                        if (std::chrono::steady_clock::now() > deadline)
                            break;
                    }
                }
                if (main_item.runs.load(std::memory_order_acquire) < r) {
                    hangs.fetch_add(1, std::memory_order_relaxed); // a lost wake-up
                    break;
                }
            }
            // side_item rode along with the main items: it has run by the time the last main did
            // (FIFO). After a lost wake-up, wake the owner by hand so no item outlives this frame.
            const auto deadline = std::chrono::steady_clock::now() + 30s;
            while (task_work_queued(side_item) || task_work_queued(main_item)) {
                (void)unpark(target);
                std::this_thread::sleep_for(1ms);
                if (std::chrono::steady_clock::now() > deadline) {
                    std::fprintf(stderr, "task_work_stress: items still queued after 30 s; aborting\n");
                    std::abort();
                }
            }
            if (side_item.runs.load() != side_ok)
                bad.fetch_add(1, std::memory_order_relaxed);
        });
    for (auto& t : producers)
        t.join();
    owner.stop();
    CHECK(hangs.load() == 0);
    CHECK(bad.load() == 0);
}

namespace {
// --- asynchronous cancellation of a task_work_run loop (tests/async_cancel.hpp) -----------------

struct cancel_item : callback_head {
    std::size_t index = 0;
};
struct cancel_round {
    rtdefer_test::ledger* ledger = nullptr;
    thread_ctx* ctx = nullptr; // the victim's; kept alive by `ref`
    thread_ref ref;
    std::atomic<std::uint64_t> ran_at_exit{0};
};
cancel_round* g_cancel_round = nullptr;

void cancel_item_cb(callback_head* h) noexcept {
    cancel_round& r = *g_cancel_round;
    (void)r.ledger->record(static_cast<cancel_item*>(h)->index);
    if (r.ctx->exiting())
        r.ran_at_exit.fetch_add(1, std::memory_order_relaxed); // relaxed: read after the joins
}

void victim_setup(void* arg) {
    auto* r = static_cast<cancel_round*>(arg);
    thread_ctx& self = attach_this_thread();
    r->ref = thread_ref(self);
    r->ctx = &self;
}

// The victim's loop: async-cancel-clean (no C++ cleanups in this frame: a cancellation landing on
// an instruction of a frame with an exception table would std::terminate; see async_cancel.hpp).
void victim_loop(void* arg) {
    thread_ctx& self = *static_cast<cancel_round*>(arg)->ctx;
    for (;;)
        (void)task_work_run(self);
}
} // namespace

TEST_CASE("stress: a task_work_run loop cancelled asynchronously at a random point: no abort, every ok add runs once") {
    // jack2's jack_deactivate() cancels its real-time thread with PTHREAD_CANCEL_ASYNCHRONOUS. The
    // run loop holds cancellation off while it has a chain in hand (detail/cancel_hold.hpp), so the
    // request is acted on between passes; the exit hook then runs what was queued after the pass.
    if (const char* why = rtdefer_test::async_cancel_unsupported()) {
        rtdefer_test::skip_test(why);
        return;
    }
    const std::size_t rounds = rtdefer_test::scaled(10000, 200);
    constexpr std::size_t per_round = 256;
    std::vector<cancel_item> items(per_round);
    for (std::size_t i = 0; i < per_round; ++i) {
        init_task_work(items[i], &cancel_item_cb);
        items[i].index = i;
    }
    rtdefer_test::ledger ledger(per_round);
    rtdefer_test::ledger::report total;
    std::uint64_t not_cancelled = 0, other_status = 0, late_add_wrong = 0, left_queued = 0, ran_at_exit = 0;
    std::uint64_t rounds_with_exit_runs = 0;
    std::mt19937 rng(2026);
    cancel_item late;
    init_task_work(late, &cancel_item_cb);
    for (std::size_t round = 0; round < rounds; ++round) {
        ledger.reset();
        cancel_round r;
        r.ledger = &ledger;
        g_cancel_round = &r;
        rtdefer_test::async_cancel_victim victim(&victim_setup, &victim_loop, &r);
        REQUIRE(victim.started());
        thread_ctx& target = *r.ctx;
        const std::uint32_t pace = rng() % 8; // 0: adds back to back; else a yield every 2^pace adds
        std::thread adder([&] {
            for (std::size_t i = 0; i < per_round; ++i) {
                const status st = task_work_add(target, items[i], notify::none);
                if (st == status::ok)
                    (void)ledger.expect(i);
                else if (st == status::exited)
                    ledger.refuse(i);
                else
                    ++other_status; // only this thread writes it until the join
                if (pace != 0 && (i & ((1U << pace) - 1)) == 0)
                    std::this_thread::yield();
            }
        });
        victim.cancel_at_random_point(rng);
        const bool cancelled = victim.join();
        adder.join();
        not_cancelled += !cancelled;
        // After the exit: adds are refused, and nothing is left on the list.
        if (task_work_add(target, late, notify::none) != status::exited)
            ++late_add_wrong;
        for (const cancel_item& it : items)
            left_queued += task_work_queued(it);
        const auto t = ledger.count();
        total += t;
        ran_at_exit += r.ran_at_exit.load();
        rounds_with_exit_runs += r.ran_at_exit.load() != 0;
        g_cancel_round = nullptr;
        if (!cancelled)
            MESSAGE("round " << round << ": join rc " << victim.join_rc() << ", returned " << victim.returned());
        if (!t.exactly_once() || !cancelled)
            break; // stop at the first broken round (the tally says which)
    }
    INFO(total.str());
    CHECK(not_cancelled == 0);
    CHECK(other_status == 0);
    CHECK(total.lost == 0);
    CHECK(total.duplicated == 0);
    CHECK(total.unexpected == 0);
    CHECK(late_add_wrong == 0);
    CHECK(left_queued == 0);
    CHECK(total.expected + total.refused == rounds * per_round);
    MESSAGE(rounds << " rounds: " << total.expected << " adds ok, " << total.seen << " runs (" << ran_at_exit
                   << " in the exit hook, in " << rounds_with_exit_runs << " rounds), " << total.refused
                   << " adds refused (exited)");
}
