// Unit tests for rtdefer/task_work.hpp: add/run/cancel semantics, FIFO order, re-queueing and
// freeing from a callback, the exited sentinel, notify modes, adds from a signal handler, the
// run-vs-cancel handshake (a canceller held inside its walk), wait_for_work_until and inline_task_work.
//
// Callbacks run inside task_work_run, which is [[clang::nonblocking]]: under RealtimeSanitizer they
// must not allocate, so they record into fixed arrays and atomics; the CHECKs come afterwards.
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include "test_util.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

// --- allocation counter (this executable only) ------------------------------------------------
// Replacement operator new/delete; the helpers are out of line so the compiler does not pair an
// inlined malloc with a free it cannot see through (-Wmismatched-new-delete).
namespace {
std::atomic<std::uint64_t> g_allocations{0};
[[gnu::noinline]] void* counted_malloc(std::size_t n) {
    // relaxed: a statistic read by the same thread after the measured region.
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void counted_free(void* p) noexcept { std::free(p); }
} // namespace
void* operator new(std::size_t n) { return counted_malloc(n); }
void* operator new[](std::size_t n) { return counted_malloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace {

// --- a recording item ---------------------------------------------------------------------------
constexpr int max_log = 4096;
std::array<int, max_log> g_log{};
std::atomic<int> g_log_len{0};

void log_reset() noexcept { g_log_len.store(0, std::memory_order_relaxed); }
std::vector<int> log_snapshot() {
    // acquire: pairs with the release in log_push (another thread may have run the callbacks).
    const int n = g_log_len.load(std::memory_order_acquire);
    return {g_log.begin(), g_log.begin() + n};
}
void log_push(int v) noexcept {
    const int i = g_log_len.load(std::memory_order_relaxed);
    if (i < max_log) {
        g_log[static_cast<std::size_t>(i)] = v;
        // release: publishes the entry to log_snapshot (single writer: the owner thread).
        g_log_len.store(i + 1, std::memory_order_release);
    }
}

struct rec_item : callback_head {
    int id = 0;
    std::atomic<int> runs{0};
    rec_item() noexcept { init_task_work(*this, &rec_item::cb); }
    explicit rec_item(int i) noexcept : rec_item() { id = i; }
    static void cb(callback_head* h) noexcept {
        auto* self = static_cast<rec_item*>(h);
        // relaxed: checked after the owner's run/join.
        self->runs.fetch_add(1, std::memory_order_relaxed);
        log_push(self->id);
    }
};

/// A helper thread that attaches, takes a reference to its own ctx (so the ctx outlives the thread
/// even if `body` returns at once), publishes it, then runs `body(self)`.
struct owner_thread {
    std::atomic<bool> ready{false};
    thread_ref ref;
    std::thread t;
    template <class F> explicit owner_thread(F body) {
        t = std::thread([this, body]() mutable {
            thread_ctx& self = attach_this_thread();
            ref = thread_ref(self);
            // release: publishes `ref` to the constructor's acquire.
            ready.store(true, std::memory_order_release);
            body(self);
        });
        while (!ready.load(std::memory_order_acquire))
            std::this_thread::yield();
    }
    thread_ctx& operator*() const { return *ref; }
    void join() {
        if (t.joinable())
            t.join();
    }
    ~owner_thread() {
        // A failed REQUIRE unwinds past a helper that may be waiting for a flag that will never be
        // set: fail loudly now instead of hanging until the test runner's timeout.
        if (std::uncaught_exceptions() > 0 && t.joinable()) {
            std::fprintf(stderr, "task_work_test: a check failed while a helper thread runs; aborting\n");
            std::abort();
        }
        join();
    }
};

using rtdefer_test::cpu_relax;

/// interrupt_install() for a test that needs the interrupt signal. Returns: true when installed;
/// false, with the skip reported, when a foreign handler holds the signal (the caller returns).
/// Any other status fails the test.
bool interrupt_installed_or_skip() {
    const status inst = interrupt_install();
    if (inst == status::signal_in_use) {
        rtdefer_test::skip_test("the interrupt signal is taken by a foreign handler");
        return false;
    }
    REQUIRE(inst == status::ok);
    return true;
}

/// Spins (no syscalls, so usable inside callbacks under RealtimeSanitizer) until `flag` is true.
void spin_until(const std::atomic<bool>& flag) noexcept {
    while (!flag.load(std::memory_order_acquire))
        cpu_relax();
}

/// Waits for `pred` from test code (may sleep). Fails the test after 30 s instead of hanging.
template <class P> bool wait_for(P pred) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(100us);
    }
    return true;
}

/// A canceller held inside its walk (its match callable spins), reproducing the window in which
/// the kernel's runner would wait on pi_lock. leave() lets it finish and returns what it removed.
struct held_canceller {
    std::atomic<bool> inside{false}, leave_flag{false};
    callback_head* removed = nullptr;
    std::thread t;
    explicit held_canceller(thread_ctx& target) {
        t = std::thread([this, &target] {
            removed = task_work_cancel_match(target, [this](callback_head&) noexcept {
                inside.store(true, std::memory_order_release);
                spin_until(leave_flag);
                return false;
            });
        });
    }
    bool wait_inside() {
        return wait_for([this] { return inside.load(std::memory_order_acquire); });
    }
    callback_head* leave() {
        leave_flag.store(true, std::memory_order_release);
        if (t.joinable())
            t.join();
        return removed;
    }
    ~held_canceller() { leave(); }
};

} // namespace

TEST_CASE("an item is idle until added, queued until run, idle again after; run returns the count") {
    thread_ctx& self = attach_this_thread();
    rec_item a(1);
    CHECK_FALSE(task_work_queued(a));
    CHECK_FALSE(task_work_pending(self));
    CHECK(task_work_run(self) == 0);
    CHECK(task_work_add(self, a, notify::none) == status::ok);
    CHECK(task_work_queued(a));
    CHECK(task_work_pending(self));
    CHECK(task_work_run(self) == 1);
    CHECK(a.runs.load() == 1);
    CHECK_FALSE(task_work_queued(a));
    CHECK_FALSE(task_work_pending(self));
    CHECK(task_work_run(self) == 0);
    CHECK(a.runs.load() == 1);
}

TEST_CASE("items run in FIFO order, from this thread and from another producer") {
    thread_ctx& self = attach_this_thread();
    log_reset();
    std::vector<std::unique_ptr<rec_item>> items;
    for (int i = 0; i < 100; ++i)
        items.push_back(std::make_unique<rec_item>(i));
    for (int i = 0; i < 50; ++i)
        REQUIRE(task_work_add(self, *items[static_cast<std::size_t>(i)], notify::none) == status::ok);
    std::thread producer([&] {
        for (int i = 50; i < 100; ++i)
            REQUIRE(task_work_add(self, *items[static_cast<std::size_t>(i)], notify::none) == status::ok);
    });
    producer.join();
    CHECK(task_work_run(self) == 100);
    std::vector<int> expected(100);
    for (int i = 0; i < 100; ++i)
        expected[static_cast<std::size_t>(i)] = i;
    CHECK(log_snapshot() == expected);
}

TEST_CASE("adding a queued item returns already_queued and it still runs once") {
    thread_ctx& self = attach_this_thread();
    rec_item a(7);
    CHECK(task_work_add(self, a, notify::none) == status::ok);
    CHECK(task_work_add(self, a, notify::none) == status::already_queued);
    CHECK(task_work_add(self, a, notify::resume) == status::already_queued);
    // Queued on one thread: adding it to another thread's list is refused too.
    std::atomic<bool> done{false};
    owner_thread other([&done](thread_ctx&) { spin_until(done); });
    CHECK(task_work_add(*other, a, notify::none) == status::already_queued);
    done.store(true, std::memory_order_release);
    other.join();
    CHECK(task_work_run(self) == 1);
    CHECK(a.runs.load() == 1);
}

TEST_CASE("concurrent adds of the same item never corrupt the list: ok adds == runs") {
    // Four producers hammer one item while the owner runs; every ok add must be matched by one run,
    // and the other items on the list must all survive.
    std::atomic<bool> stop{false};
    std::atomic<long> ok_adds{0};
    rec_item shared(0);
    std::array<rec_item, 64> others;
    std::atomic<long> others_added{0};
    owner_thread owner([&](thread_ctx& self) {
        while (!stop.load(std::memory_order_acquire))
            (void)task_work_run(self);
        (void)task_work_run(self);
    });
    std::vector<std::thread> producers;
    for (int p = 0; p < 4; ++p)
        producers.emplace_back([&, p] {
            for (int i = 0; i < 20000; ++i) {
                if (task_work_add(*owner, shared, notify::none) == status::ok)
                    ok_adds.fetch_add(1, std::memory_order_relaxed);
                rec_item& o = others[static_cast<std::size_t>((p * 16) + (i % 16))];
                if (task_work_add(*owner, o, notify::none) == status::ok)
                    others_added.fetch_add(1, std::memory_order_relaxed);
            }
        });
    for (auto& t : producers)
        t.join();
    stop.store(true, std::memory_order_release);
    owner.join();
    CHECK(ok_adds.load() > 0);
    CHECK(shared.runs.load() == ok_adds.load());
    long other_runs = 0;
    for (auto& o : others)
        other_runs += o.runs.load();
    CHECK(other_runs == others_added.load());
}

namespace {
struct requeue_item : callback_head {
    thread_ctx* self = nullptr;
    int remaining = 0;
    int runs = 0;
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<requeue_item*>(h);
        ++it->runs;
        // The item is dequeued before its callback: re-queueing it must succeed.
        if (it->remaining-- > 0 && task_work_add(*it->self, *it, notify::none) != status::ok)
            std::abort();
    }
};
} // namespace

TEST_CASE("a callback may re-queue its own item; it runs again in the same task_work_run") {
    thread_ctx& self = attach_this_thread();
    requeue_item it;
    init_task_work(it, &requeue_item::cb);
    it.self = &self;
    it.remaining = 5;
    CHECK(task_work_add(self, it, notify::none) == status::ok);
    CHECK(task_work_run(self) == 6);
    CHECK(it.runs == 6);
    CHECK_FALSE(task_work_queued(it));
    CHECK_FALSE(task_work_pending(self));
}

namespace {
struct adder_item : callback_head {
    thread_ctx* self = nullptr;
    rec_item* child = nullptr;
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<adder_item*>(h);
        log_push(100);
        if (task_work_add(*it->self, *it->child, notify::none) != status::ok)
            std::abort();
    }
};

// A callback that destroys its own item and scribbles over the memory: if the runner touched the
// item after the call (e.g. writing `next`), the poison would be overwritten.
constexpr unsigned char poison = 0xA5;
struct self_freeing : callback_head {
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<self_freeing*>(h);
        it->~self_freeing();
        std::memset(static_cast<void*>(it), poison, sizeof(self_freeing));
    }
};
struct heap_freeing : callback_head {
    static std::atomic<int> freed;
    static void cb(callback_head* h) noexcept {
        delete static_cast<heap_freeing*>(h);
        freed.fetch_add(1, std::memory_order_relaxed);
    }
};
std::atomic<int> heap_freeing::freed{0};
} // namespace

TEST_CASE("work added by a callback runs in the same call, after the work already queued") {
    thread_ctx& self = attach_this_thread();
    log_reset();
    rec_item child(2), later(1);
    adder_item parent;
    init_task_work(parent, &adder_item::cb);
    parent.self = &self;
    parent.child = &child;
    CHECK(task_work_add(self, parent, notify::none) == status::ok);
    CHECK(task_work_add(self, later, notify::none) == status::ok);
    CHECK(task_work_run(self) == 3);
    CHECK(log_snapshot() == std::vector<int>{100, 1, 2});
}

TEST_CASE("a callback may free its own item: the runner never touches it afterwards") {
    thread_ctx& self = attach_this_thread();
    alignas(self_freeing) unsigned char storage[sizeof(self_freeing)];
    auto* it = ::new (static_cast<void*>(storage)) self_freeing;
    init_task_work(*it, &self_freeing::cb);
    rec_item after(3); // queued behind it: the runner must still reach it
    CHECK(task_work_add(self, *it, notify::none) == status::ok);
    CHECK(task_work_add(self, after, notify::none) == status::ok);
    CHECK(task_work_run(self) == 2);
    bool intact = true;
    for (unsigned char c : storage)
        intact = intact && c == poison;
    CHECK(intact);
    CHECK(after.runs.load() == 1);
#if !RTDEFER_HAS_RTSAN
    // The same with real heap memory, for ASan (RealtimeSanitizer would rightly flag the delete
    // inside the nonblocking run loop).
    heap_freeing::freed.store(0);
    for (int i = 0; i < 8; ++i) {
        auto* h = new heap_freeing;
        init_task_work(*h, &heap_freeing::cb);
        REQUIRE(task_work_add(self, *h, notify::none) == status::ok);
    }
    CHECK(task_work_run(self) == 8);
    CHECK(heap_freeing::freed.load() == 8);
#endif
}

TEST_CASE("cancel: a queued item is removed and never runs; a never-queued item is not found") {
    thread_ctx& self = attach_this_thread();
    log_reset();
    rec_item a(1), b(2), c(3), never(4);
    CHECK_FALSE(task_work_cancel(self, never));
    REQUIRE(task_work_add(self, a, notify::none) == status::ok);
    REQUIRE(task_work_add(self, b, notify::none) == status::ok);
    REQUIRE(task_work_add(self, c, notify::none) == status::ok);
    CHECK_FALSE(task_work_cancel(self, never));
    CHECK(task_work_cancel(self, b)); // middle of the list
    CHECK_FALSE(task_work_queued(b));
    CHECK_FALSE(task_work_cancel(self, b)); // twice: gone
    CHECK(task_work_cancel(self, c));       // head of the list
    CHECK(task_work_run(self) == 1);
    CHECK(log_snapshot() == std::vector<int>{1});
    CHECK(b.runs.load() == 0);
    CHECK(c.runs.load() == 0);
    // The cancelled item is the caller's again: it can be re-added and runs.
    CHECK(task_work_add(self, b, notify::none) == status::ok);
    CHECK(task_work_run(self) == 1);
    CHECK(b.runs.load() == 1);
    // Cancel on an empty list.
    CHECK_FALSE(task_work_cancel(self, a));
}

namespace {
void other_fn(callback_head*) noexcept { log_push(-1); }
} // namespace

TEST_CASE("task_work_cancel_func removes the most recently queued item with that func") {
    thread_ctx& self = attach_this_thread();
    log_reset();
    rec_item a(1), b(2);
    callback_head x(&other_fn), y(&other_fn);
    REQUIRE(task_work_add(self, x, notify::none) == status::ok);
    REQUIRE(task_work_add(self, a, notify::none) == status::ok);
    REQUIRE(task_work_add(self, y, notify::none) == status::ok);
    REQUIRE(task_work_add(self, b, notify::none) == status::ok);
    CHECK(task_work_cancel_func(self, &other_fn) == &y);
    CHECK(task_work_cancel_func(self, &other_fn) == &x);
    CHECK(task_work_cancel_func(self, &other_fn) == nullptr);
    CHECK(task_work_run(self) == 2);
    CHECK(log_snapshot() == std::vector<int>{1, 2});
}

namespace {
struct blocking_item : callback_head {
    std::atomic<bool> running{false};
    std::atomic<bool> release{false};
    std::atomic<int> runs{0};
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<blocking_item*>(h);
        it->runs.fetch_add(1, std::memory_order_relaxed);
        it->running.store(true, std::memory_order_release);
        spin_until(it->release);
    }
};
struct self_cancel_item : callback_head {
    thread_ctx* self = nullptr;
    bool cancel_result = true;
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<self_cancel_item*>(h);
#if RTDEFER_HAS_RTSAN
        // cancel takes the PI lock: RealtimeSanitizer rightly flags it inside the nonblocking run
        // loop (an RT owner must not do this); the test is about the semantics, so pause it.
        __rtsan::ScopedDisabler not_realtime_here;
#endif
        it->cancel_result = task_work_cancel(*it->self, *it);
    }
};
} // namespace

TEST_CASE("cancel of a running item finds nothing; the item runs exactly once") {
    blocking_item it;
    init_task_work(it, &blocking_item::cb);
    std::atomic<bool> go{false};
    owner_thread owner([&](thread_ctx& self) {
        spin_until(go);
        (void)task_work_run(self);
    });
    REQUIRE(task_work_add(*owner, it, notify::none) == status::ok);
    go.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return it.running.load(std::memory_order_acquire); }));
    CHECK_FALSE(task_work_cancel(*owner, it));
    it.release.store(true, std::memory_order_release);
    owner.join();
    CHECK(it.runs.load() == 1);

    // And from inside its own callback (the kernel's "cancel from the work itself").
    thread_ctx& self = attach_this_thread();
    self_cancel_item sc;
    init_task_work(sc, &self_cancel_item::cb);
    sc.self = &self;
    REQUIRE(task_work_add(self, sc, notify::none) == status::ok);
    CHECK(task_work_run(self) == 1);
    CHECK_FALSE(sc.cancel_result);
}

TEST_CASE("run vs cancel: a chain detached while a canceller walks is held back, not run, until it leaves") {
    rec_item a(1), b(2);
    std::atomic<int> phase{0};
    std::atomic<std::size_t> run_inside{99}, run_after{99};
    std::atomic<bool> pending_inside{true};
    std::atomic<std::uint32_t> park_word_after_cancel{0};
    owner_thread owner([&](thread_ctx& self) {
        while (phase.load(std::memory_order_acquire) != 1)
            cpu_relax();
        run_inside.store(task_work_run(self));          // must not run a or b, must not block
        pending_inside.store(task_work_pending(self));  // held back: nothing runnable
        phase.store(2, std::memory_order_release);
        while (phase.load(std::memory_order_acquire) != 3)
            cpu_relax();
        park_word_after_cancel.store(detail::ctx_access::park(self).word.load());
        run_after.store(task_work_run(self));
        phase.store(4, std::memory_order_release);
    });
    REQUIRE(task_work_add(*owner, a, notify::none) == status::ok);
    REQUIRE(task_work_add(*owner, b, notify::none) == status::ok);
    held_canceller canceller(*owner);
    REQUIRE(canceller.wait_inside());
    phase.store(1, std::memory_order_release);
    REQUIRE(wait_for([&] { return phase.load(std::memory_order_acquire) == 2; }));
    CHECK(run_inside.load() == 0);
    CHECK_FALSE(pending_inside.load());
    CHECK(a.runs.load() == 0);
    CHECK(b.runs.load() == 0);
    // The held-back chain has left the shared list: a cancel can no longer remove it.
    CHECK(canceller.leave() == nullptr);
    CHECK_FALSE(task_work_cancel(*owner, a));
    phase.store(3, std::memory_order_release);
    REQUIRE(wait_for([&] { return phase.load(std::memory_order_acquire) == 4; }));
    // The canceller woke the owner (left a park token) because it had held work back.
    CHECK(park_word_after_cancel.load() == detail::park_notified);
    CHECK(run_after.load() == 2);
    CHECK(a.runs.load() == 1);
    CHECK(b.runs.load() == 1);
}

TEST_CASE("wait_for_work_until waits out a canceller that holds work back (PI lock), then runs it") {
    rec_item a(1);
    std::atomic<bool> owner_waiting{false};
    std::atomic<int> result{-1};
    std::atomic<bool> go{false};
    owner_thread owner([&](thread_ctx& self) {
        spin_until(go);
        owner_waiting.store(true, std::memory_order_release);
        result.store(static_cast<int>(wait_for_work_until(self, std::chrono::steady_clock::now() + 60s)));
    });
    REQUIRE(task_work_add(*owner, a, notify::none) == status::ok);
    held_canceller canceller(*owner);
    REQUIRE(canceller.wait_inside());
    go.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return owner_waiting.load(std::memory_order_acquire); }));
    std::this_thread::sleep_for(2ms); // let the owner reach the lock; correctness does not depend on it
    CHECK(a.runs.load() == 0);
    canceller.leave();
    owner.join();
    CHECK(result.load() == static_cast<int>(status::ok));
    CHECK(a.runs.load() == 1);
}

namespace {
struct exit_chain_item : callback_head {
    thread_ctx* self = nullptr;
    exit_chain_item* next_item = nullptr;
    std::atomic<int> runs{0};
    status chained_add = status::busy;
    static void cb(callback_head* h) noexcept {
        auto* it = static_cast<exit_chain_item*>(h);
        it->runs.fetch_add(1, std::memory_order_relaxed);
        if (it->next_item != nullptr)
            it->chained_add = task_work_add(*it->self, *it->next_item, notify::none);
    }
};
} // namespace

TEST_CASE("thread exit runs pending work, drains work added by exit-time callbacks, then refuses adds") {
    std::array<exit_chain_item, 4> chain;
    rec_item late(9);
    owner_thread owner([&](thread_ctx& self) {
        for (std::size_t i = 0; i < chain.size(); ++i) {
            init_task_work(chain[i], &exit_chain_item::cb);
            chain[i].self = &self;
            chain[i].next_item = i + 1 < chain.size() ? &chain[i + 1] : nullptr;
        }
        // Only the first is queued; each callback queues the next one during the exit drain.
        if (task_work_add(self, chain[0], notify::none) != status::ok)
            std::abort();
        // Return without running anything: the exit hook must run the whole chain.
    });
    owner.join();
    for (std::size_t i = 0; i < chain.size(); ++i) {
        CHECK(chain[i].runs.load() == 1);
        if (i + 1 < chain.size())
            CHECK(chain[i].chained_add == status::ok);
    }
    CHECK((*owner).exited());
    CHECK(task_work_add(*owner, late, notify::resume) == status::exited);
    CHECK_FALSE(task_work_queued(late)); // untouched: still the caller's
    CHECK((late.func == &rec_item::cb));
    CHECK_FALSE(task_work_pending(*owner));
    CHECK_FALSE(task_work_cancel(*owner, late));
    // The caller kept ownership: it can queue the item elsewhere.
    thread_ctx& self = attach_this_thread();
    CHECK(task_work_add(self, late, notify::none) == status::ok);
    CHECK(task_work_run(self) == 1);
    CHECK(late.runs.load() == 1);
}

TEST_CASE("thread exit with a held-back chain waits for the canceller, then runs it") {
    rec_item a(1);
    std::atomic<bool> go{false}, exiting{false};
    std::atomic<std::size_t> ran_before_exit{99};
    owner_thread owner([&](thread_ctx& self) {
        spin_until(go);
        ran_before_exit.store(task_work_run(self)); // held back by the canceller
        exiting.store(true, std::memory_order_release);
        // Returning runs the exit hook, which must take the cancel lock and then run `a`.
    });
    REQUIRE(task_work_add(*owner, a, notify::none) == status::ok);
    held_canceller canceller(*owner);
    REQUIRE(canceller.wait_inside());
    go.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return exiting.load(std::memory_order_acquire); }));
    CHECK(ran_before_exit.load() == 0);
    CHECK(a.runs.load() == 0);
    canceller.leave();
    owner.join();
    CHECK(a.runs.load() == 1);
    CHECK((*owner).exited());
}

TEST_CASE("notify: none leaves the park word alone, resume sets the token, and wakes a parked owner") {
    rec_item a(1), b(2), c(3);
    std::atomic<bool> go{false};
    std::atomic<int> result{-1};
    owner_thread owner([&](thread_ctx& self) {
        spin_until(go);
        result.store(static_cast<int>(wait_for_work_until(self, std::chrono::steady_clock::now() + 60s)));
    });
    thread_ctx& o = *owner;
    REQUIRE(task_work_add(o, a, notify::none) == status::ok);
    CHECK(detail::ctx_access::park(o).word.load() == detail::park_empty);
    REQUIRE(task_work_cancel(o, a)); // back to an empty list (the canceller leaves no token)
    CHECK(detail::ctx_access::park(o).word.load() == detail::park_empty);
    go.store(true, std::memory_order_release);
    // Wait until the owner is parked (word PARKED), then add: resume must wake it.
    REQUIRE(wait_for([&] { return detail::ctx_access::park(o).word.load() == detail::park_parked; }));
    const std::uint64_t wakes_before = rtdefer::park_futex_wakes(o);
    REQUIRE(task_work_add(o, b, notify::resume) == status::ok);
    owner.join();
    CHECK(result.load() == static_cast<int>(status::ok));
    CHECK(b.runs.load() == 1);
    CHECK(rtdefer::park_futex_wakes(o) == wakes_before + 1);
    (void)c;
}

TEST_CASE("a resume add to a list made non-empty by a notify::none add still wakes the parked owner") {
    // The plain "wake only on empty->non-empty" rule would lose this wake-up: the none add made the
    // list non-empty without waking anyone.
    rec_item a(1), b(2);
    std::atomic<bool> go{false};
    std::atomic<int> result{-1};
    std::atomic<std::size_t> ran_after{0};
    owner_thread owner([&](thread_ctx& self) {
        spin_until(go);
        // Only the resume add should end this wait (the deadline is a fallback for a broken build).
        result.store(static_cast<int>(wait_for_work_until(self, std::chrono::steady_clock::now() + 30s)));
        ran_after.store(static_cast<std::size_t>(a.runs.load() + b.runs.load()));
    });
    thread_ctx& o = *owner;
    go.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return detail::ctx_access::park(o).word.load() == detail::park_parked; }));
    const std::uint64_t wakes_before = rtdefer::park_futex_wakes(o);
    REQUIRE(task_work_add(o, a, notify::none) == status::ok);
    CHECK(detail::ctx_access::park(o).word.load() == detail::park_parked); // none: still asleep
    REQUIRE(task_work_add(o, b, notify::resume) == status::ok);
    CHECK(rtdefer::park_futex_wakes(o) == wakes_before + 1); // the resume add woke it
    owner.join();
    CHECK(result.load() == static_cast<int>(status::ok));
    CHECK(ran_after.load() == 2);
}

TEST_CASE("wait_for_work_until returns timed_out at its deadline when nothing is queued") {
    thread_ctx& self = attach_this_thread();
    (void)task_work_run(self);
    (void)park_until(self, std::chrono::steady_clock::now()); // drop a token left by earlier cases
    CHECK(wait_for_work_until(self, std::chrono::steady_clock::now() + 1ms) == status::timed_out);
    rec_item a(1);
    REQUIRE(task_work_add(self, a, notify::none) == status::ok);
    CHECK(wait_for_work_until(self, std::chrono::steady_clock::now() + 1ms) == status::ok);
    CHECK(a.runs.load() == 1);
}

TEST_CASE("notify::signal interrupts a blocking syscall (EINTR) and sends one IPI per run pass") {
    if (!interrupt_installed_or_skip())
        return;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    rec_item a(1), b(2), c(3);
    std::atomic<bool> blocked{false}, stop{false};
    std::atomic<int> eintr{0};
    owner_thread owner([&](thread_ctx& self) {
        char ch;
        blocked.store(true, std::memory_order_release);
        // The owner's loop: block in read(); on EINTR, run task_work at the top of the loop.
        while (!stop.load(std::memory_order_acquire)) {
            const ssize_t r = ::read(fds[0], &ch, 1);
            if (r < 0 && errno == EINTR)
                eintr.fetch_add(1, std::memory_order_relaxed);
            (void)task_work_run(self);
        }
    });
    thread_ctx& o = *owner;
    REQUIRE(wait_for([&] { return blocked.load(std::memory_order_acquire); }));
    std::this_thread::sleep_for(1ms); // let it enter read(); if not yet, the signal still lands
    REQUIRE(task_work_add(o, a, notify::signal) == status::ok);
    REQUIRE(wait_for([&] { return a.runs.load() == 1; }));
    CHECK(eintr.load() >= 1);
    CHECK(interrupts_received(o) >= 1);
    stop.store(true, std::memory_order_release);
    REQUIRE(::write(fds[1], "x", 1) == 1);
    owner.join();
    ::close(fds[0]);
    ::close(fds[1]);

    // Dedup: a target that never reaches a safe point gets one IPI for any number of adds.
    std::atomic<bool> stop2{false};
    owner_thread sleeper([&](thread_ctx&) {
        while (!stop2.load(std::memory_order_acquire))
            ::usleep(1000);
    });
    thread_ctx& t = *sleeper;
    const std::uint64_t before = interrupts_received(t);
    REQUIRE(task_work_add(t, b, notify::signal) == status::ok);
    REQUIRE(wait_for([&] { return interrupts_received(t) >= before + 1; }));
    // The first IPI was delivered, but the target has not run task_work: no second one.
    REQUIRE(task_work_add(t, c, notify::signal) == status::ok);
    // A marker IPI: the same real-time signal, queued behind any IPI the second add sent (sanitizer
    // runtimes may coalesce pending signals, which can hide an extra IPI but never invent one).
    REQUIRE(send_ipi(t) == status::ok);
    REQUIRE(wait_for([&] { return interrupts_received(t) >= before + 2; }));
    CHECK(interrupts_received(t) == before + 2);
    stop2.store(true, std::memory_order_release);
    sleeper.join(); // exit runs b and c
    CHECK(b.runs.load() == 1);
    CHECK(c.runs.load() == 1);
}

namespace {
// The posix CPU timer pattern ("posix-cpu-timers: Provide mechanisms to defer timer handling to task_work"): a quick check in interrupt context queues the expiry
// work, deduplicated by a "scheduled" flag that the work clears when it has run.
struct cpu_timer_sim {
    std::atomic<thread_ctx*> target{nullptr};
    std::atomic<bool> work_scheduled{false}; // CPUTIMERS_WORK_SCHEDULED
    callback_head work;
    std::atomic<long> interrupts{0}, queued{0}, deduped{0}, expiries{0}, add_failures{0};
};
cpu_timer_sim g_timer;

void timer_work(callback_head*) noexcept {
    g_timer.expiries.fetch_add(1, std::memory_order_relaxed);
    // posix_cpu_timers_enable_work(): allow new work once the expiry is handled.
    g_timer.work_scheduled.store(false, std::memory_order_release);
}

void timer_interrupt_hook(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr || self != g_timer.target.load(std::memory_order_acquire))
        return;
    g_timer.interrupts.fetch_add(1, std::memory_order_relaxed);
    // __run_posix_cpu_timers(): if (!test_and_set_bit(CPUTIMERS_WORK_SCHEDULED)) task_work_add()
    if (!g_timer.work_scheduled.exchange(true, std::memory_order_acq_rel)) {
        if (task_work_add(*self, g_timer.work, notify::none) == status::ok)
            g_timer.queued.fetch_add(1, std::memory_order_relaxed);
        else
            g_timer.add_failures.fetch_add(1, std::memory_order_relaxed);
    } else {
        g_timer.deduped.fetch_add(1, std::memory_order_relaxed);
    }
}
} // namespace

TEST_CASE("adds from a signal handler: the posix CPU timer pattern, deduplicated by a scheduled flag") {
    if (!interrupt_installed_or_skip())
        return;
    REQUIRE(interrupt_register_hook(&timer_interrupt_hook) == status::ok);
    init_task_work(g_timer.work, &timer_work);
    std::atomic<bool> stop{false}, allow_run{false};
    owner_thread owner([&](thread_ctx& self) {
        g_timer.target.store(&self, std::memory_order_release);
        // The owner's loop: a syscall (interrupted by the tick, as a thread returning to user
        // space), then its safe point.
        while (!stop.load(std::memory_order_acquire)) {
            ::usleep(50);
            if (allow_run.load(std::memory_order_acquire))
                (void)task_work_run(self);
        }
    });
    REQUIRE(wait_for([&] { return g_timer.target.load() != nullptr; }));
    // One tick at a time, each waited for (sanitizer runtimes may coalesce pending signals).
    long ticks = 0;
    auto tick = [&] {
        REQUIRE(send_ipi(*owner) == status::ok);
        ++ticks;
        REQUIRE(wait_for([&] { return g_timer.interrupts.load() == ticks; }));
    };
    // Phase 1: the owner does not reach its safe point: the first tick queues, the rest dedup.
    for (int i = 0; i < 10; ++i)
        tick();
    CHECK(g_timer.queued.load() == 1);
    CHECK(g_timer.deduped.load() == 9);
    CHECK(g_timer.expiries.load() == 0);
    // Phase 2: the expiry runs at the safe point and re-enables queueing.
    allow_run.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return g_timer.expiries.load() == 1; }));
    for (int i = 0; i < 300; ++i)
        tick();
    stop.store(true, std::memory_order_release);
    owner.join(); // the exit drains a last queued expiry
    g_timer.target.store(nullptr, std::memory_order_release);
    CHECK(g_timer.add_failures.load() == 0);
    CHECK(g_timer.queued.load() + g_timer.deduped.load() == ticks);
    CHECK(g_timer.expiries.load() == g_timer.queued.load()); // every queued expiry ran exactly once
    CHECK(g_timer.queued.load() >= 2);
    CHECK_FALSE(task_work_queued(g_timer.work));
}

namespace {
// Called from a [[clang::nonblocking]] function: -Wfunction-effects verifies at compile time that
// task_work_add and task_work_run are nonblocking; RealtimeSanitizer checks it at run time.
status rt_add(thread_ctx& target, callback_head& w, notify n) noexcept RTDEFER_NONBLOCKING {
    return task_work_add(target, w, n);
}
std::size_t rt_run(thread_ctx& self) noexcept RTDEFER_NONBLOCKING { return task_work_run(self); }
bool rt_pending(const thread_ctx& self) noexcept RTDEFER_NONBLOCKING { return task_work_pending(self); }
} // namespace

TEST_CASE("task_work_add/run/pending from nonblocking code: no allocation, no lock, no syscall") {
    thread_ctx& self = attach_this_thread();
    std::array<rec_item, 32> items;
    for (int round = 0; round < 3; ++round) {
        const std::uint64_t allocs_before = g_allocations.load(std::memory_order_relaxed);
        for (auto& it : items) {
            REQUIRE(rt_add(self, it, notify::resume) == status::ok); // owner running: no wake syscall
        }
        CHECK(rt_pending(self));
        CHECK(rt_run(self) == items.size());
        CHECK(g_allocations.load(std::memory_order_relaxed) == allocs_before);
        // The resume notifications left a token (a running owner is not woken by a syscall).
        CHECK(detail::ctx_access::park(self).word.load() == detail::park_notified);
        CHECK(park_until(self, std::chrono::steady_clock::now()) == status::ok); // consume it
    }
    for (auto& it : items)
        CHECK(it.runs.load() == 3);
}

TEST_CASE("inline_task_work stores a callable inline, runs it each time it is queued, no allocation") {
    thread_ctx& self = attach_this_thread();
    int gain = 0;
    int applied = 0;
    const std::uint64_t allocs_before = g_allocations.load(std::memory_order_relaxed);
    inline_task_work<> item([&gain, &applied]() noexcept {
        gain += 10;
        ++applied;
    });
    CHECK(item.has_value());
    REQUIRE(task_work_add(self, item, notify::none) == status::ok);
    CHECK(task_work_add(self, item, notify::none) == status::already_queued);
    CHECK(task_work_run(self) == 1);
    REQUIRE(task_work_add(self, item, notify::none) == status::ok);
    CHECK(task_work_run(self) == 1);
    CHECK(gain == 20);
    CHECK(applied == 2);
    // A new payload in the same storage.
    struct payload {
        double a, b, c, d;
    } p{1, 2, 3, 4};
    double sum = 0;
    item.emplace([p, &sum]() noexcept { sum = p.a + p.b + p.c + p.d; });
    REQUIRE(task_work_add(self, item, notify::none) == status::ok);
    CHECK(task_work_run(self) == 1);
    CHECK(sum == 10.0);
    CHECK(g_allocations.load(std::memory_order_relaxed) == allocs_before);
    static_assert(inline_task_work<>::capacity == 6 * sizeof(void*));
    static_assert(std::is_base_of_v<callback_head, inline_task_work<16>>);
}

namespace {
struct destroy_counter {
    int* destroyed;
    void operator()() const noexcept {}
    ~destroy_counter() {
        if (destroyed != nullptr)
            ++*destroyed;
    }
};
} // namespace

TEST_CASE("inline_task_work destroys its callable on emplace and destruction") {
    int destroyed = 0;
    {
        inline_task_work<> item(destroy_counter{&destroyed});
        const int after_construct = destroyed; // the moved-from temporary
        item.emplace([]() noexcept {});
        CHECK(destroyed == after_construct + 1);
    }
    CHECK(destroyed >= 2);
}

// --- inline_task_work: done() is the one reuse test ----------------------------------------------
// The runner releases an item (R6) before its callable runs, so "not queued" is no licence to
// re-emplace, reuse or free an inline item: these cases use done()/try_emplace and fail (wrong
// captures, use after free, TSan races) if done() means only "not queued".

TEST_CASE("inline_task_work: done() stays false while the callable runs, though the item is not queued") {
    std::atomic<bool> inside{false}, leave{false}, stop{false};
    std::atomic<int> ran{0};
    inline_task_work<> item([&]() noexcept {
        inside.store(true, std::memory_order_release);
        spin_until(leave);
        ran.fetch_add(1, std::memory_order_relaxed);
    });
    CHECK(item.done());
    owner_thread owner([&](thread_ctx& self) {
        while (!stop.load(std::memory_order_acquire))
            (void)task_work_run(self);
    });
    REQUIRE(task_work_add(*owner, item, notify::none) == status::ok);
    CHECK_FALSE(item.done()); // queued (or already running)
    REQUIRE(wait_for([&] { return inside.load(std::memory_order_acquire); }));
    CHECK_FALSE(task_work_queued(item)); // released at (R6) ...
    CHECK_FALSE(item.done());            // ... but its callable is on the owner's stack
    int other = 0;
    CHECK(item.try_emplace([&other]() noexcept { other = 1; }) == status::busy);
    leave.store(true, std::memory_order_release);
    REQUIRE(wait_for([&] { return item.done(); }));
    CHECK(ran.load(std::memory_order_relaxed) == 1); // visible: done() acquires the run's end
    CHECK(item.try_emplace([&other]() noexcept { other = 2; }) == status::ok);
    REQUIRE(task_work_add(*owner, item, notify::none) == status::ok);
    REQUIRE(wait_for([&] { return item.done(); }));
    CHECK(other == 2); // the callable stored by try_emplace ran, and done() made its write visible
    stop.store(true, std::memory_order_release);
    owner.join();
}

TEST_CASE("inline_task_work: a cancelled item is done at once; a callable that re-queues its item keeps it busy") {
    thread_ctx& self = attach_this_thread();
    int runs = 0;
    inline_task_work<> item([&runs]() noexcept { ++runs; });
    REQUIRE(task_work_add(self, item, notify::none) == status::ok);
    CHECK_FALSE(item.done());
    CHECK(item.try_emplace([&runs]() noexcept { runs = 100; }) == status::busy); // queued: unchanged
    CHECK(task_work_cancel(self, item));
    CHECK(item.done());
    CHECK(runs == 0);
    // Re-queueing from the callable: between the runs the item is queued, so never done.
    struct requeue {
        thread_ctx* self;
        inline_task_work<>* item;
        int* left;
        bool* saw_done;
        void operator()() const noexcept {
            *saw_done = *saw_done || item->done(); // running: must be false
            if ((*left)-- > 0 && task_work_add(*self, *item, notify::none) != status::ok)
                std::abort();
        }
    };
    int left = 3;
    bool saw_done = false;
    item.emplace(requeue{&self, &item, &left, &saw_done});
    REQUIRE(task_work_add(self, item, notify::none) == status::ok);
    CHECK(task_work_run(self) == 4);
    CHECK_FALSE(saw_done);
    CHECK(item.done());
}

namespace {
/// Busy work inside a callable, between two reads of its captures: the window in which a producer
/// that reuses the item too early would change (or free) them.
void callable_window() noexcept {
    for (int i = 0; i < 64; ++i)
        cpu_relax();
}

/// An owner thread that runs task_work until stopped (a busy safe-point loop).
struct busy_owner {
    std::atomic<bool> stop{false}; // before `owner`: the thread reads it from its first instruction
    owner_thread owner{[this](thread_ctx& self) {
        while (!stop.load(std::memory_order_acquire))
            (void)task_work_run(self);
    }};
    thread_ctx& operator*() const { return *owner; }
    ~busy_owner() {
        stop.store(true, std::memory_order_release);
        owner.join();
    }
};

/// What the callables saw (written on the owner thread; read after done()/join).
struct reuse_log {
    std::atomic<std::uint64_t> applied{0}, torn{0}, out_of_order{0};
    std::uint64_t last = 0; // owner thread only
    void apply(std::uint64_t first_read, std::uint64_t second_read, std::uint64_t check) noexcept {
        if (first_read != second_read || check != first_read * 3 + 1)
            torn.fetch_add(1, std::memory_order_relaxed);
        if (first_read != last + 1)
            out_of_order.fetch_add(1, std::memory_order_relaxed);
        last = first_read;
        applied.fetch_add(1, std::memory_order_relaxed);
    }
};

struct versioned {
    std::uint64_t v, check;
};
} // namespace

TEST_CASE("inline_task_work: re-emplacing on done() never changes the captures of a running callable") {
    const std::uint64_t rounds = rtdefer_test::scaled(4000, 400);
    reuse_log log;
    inline_task_work<> item;
    {
        busy_owner owner;
        for (std::uint64_t v = 1; v <= rounds; ++v) {
            while (!item.done())
                cpu_relax();
            item.emplace([p = versioned{v, v * 3 + 1}, &log]() noexcept {
                const std::uint64_t a = p.v;
                callable_window();
                log.apply(a, p.v, p.check);
            });
            REQUIRE(task_work_add(*owner, item, notify::none) == status::ok);
        }
        while (!item.done())
            cpu_relax();
        CHECK(log.applied.load() == rounds); // done() acquired every run's effects
    }
    CHECK(log.torn.load() == 0);
    CHECK(log.out_of_order.load() == 0);
}

TEST_CASE("inline_task_work: deleting on done() never frees a running callable") {
    const std::uint64_t rounds = rtdefer_test::scaled(4000, 400);
    reuse_log log;
    busy_owner owner;
    for (std::uint64_t v = 1; v <= rounds; ++v) {
        auto* item = new inline_task_work<>([p = versioned{v, v * 3 + 1}, &log]() noexcept {
            const std::uint64_t a = p.v;
            callable_window();
            log.apply(a, p.v, p.check); // reads the captures after the window: freed memory if early
        });
        REQUIRE(task_work_add(*owner, *item, notify::none) == status::ok);
        while (!item->done())
            cpu_relax();
        delete item; // the next `new` likely reuses this block: an early delete shows as torn too
    }
    CHECK(log.applied.load() == rounds);
    CHECK(log.torn.load() == 0);
    CHECK(log.out_of_order.load() == 0);
}

TEST_CASE("inline_task_work: a pool reused with try_emplace: every block applied whole, once, in order") {
    // The showcase pattern: a producer builds blocks and queues each in the next free pool slot.
    constexpr std::size_t slots = 4;
    struct block {
        std::uint64_t v;
        std::uint64_t coeff[6];
    };
    const std::uint64_t blocks = rtdefer_test::scaled(4000, 400);
    reuse_log log;
    inline_task_work<sizeof(block) + sizeof(void*)> pool[slots];
    std::uint64_t busy_hits = 0;
    {
        busy_owner owner;
        std::size_t slot = 0;
        for (std::uint64_t v = 1; v <= blocks;) {
            block b{v, {}};
            for (auto& c : b.coeff)
                c = v * 3 + 1;
            const status st = pool[slot].try_emplace([b, &log]() noexcept {
                const std::uint64_t a = b.v;
                callable_window();
                std::uint64_t check = b.coeff[0];
                for (std::uint64_t c : b.coeff)
                    check = c == check ? check : 0; // a torn block mixes versions
                log.apply(a, b.v, check);
            });
            if (st == status::busy) {
                ++busy_hits; // every slot in flight: try the same slot again
                cpu_relax();
                continue;
            }
            REQUIRE(st == status::ok);
            REQUIRE(task_work_add(*owner, pool[slot], notify::none) == status::ok);
            slot = (slot + 1) % slots;
            ++v;
        }
        for (auto& it : pool)
            while (!it.done())
                cpu_relax();
        CHECK(log.applied.load() == blocks);
    }
    CHECK(log.torn.load() == 0);
    CHECK(log.out_of_order.load() == 0);
    MESSAGE(blocks << " blocks through " << slots << " slots; slot busy " << busy_hits << " times");
}

TEST_CASE("inline_task_work: emplace while queued and destruction from its own callable are asserted") {
    const int queued_rc = rtdefer_test::in_child(
        [] {
            thread_ctx& self = attach_this_thread();
            inline_task_work<> item([]() noexcept {});
            if (task_work_add(self, item, notify::none) != status::ok)
                return 1;
            item.emplace([]() noexcept {}); // must abort
            return 0;
        },
        true);
    CHECK(rtdefer_test::aborted(queued_rc));
    const int self_destroy_rc = rtdefer_test::in_child(
        [] {
            thread_ctx& self = attach_this_thread();
            alignas(inline_task_work<>) static unsigned char storage[sizeof(inline_task_work<>)];
            auto* item = ::new (static_cast<void*>(storage)) inline_task_work<>;
            item->emplace([item]() noexcept { item->~inline_task_work(); }); // running: must abort
            if (task_work_add(self, *item, notify::none) != status::ok)
                return 1;
            (void)task_work_run(self);
            return 0;
        },
        true);
    CHECK(rtdefer_test::aborted(self_destroy_rc));
}

TEST_CASE("a cancelled rt_thread unwinds through its trampoline (no terminate) and its exit runs queued task_work") {
    // rt_thread's trampoline catches std::exception only: glibc's forced unwind
    // (abi::__forced_unwind) is not one, so it passes, running the trampoline's cleanups; the
    // pthread key destructor then detaches the thread (exit hooks, the exited sentinel).
    std::atomic<bool> in_loop{false};
    std::atomic<std::uint64_t> passes{0};
    rec_item queued_late(1), after_exit(2);
    rt_thread victim({.name = "cancel_me"}, [&](thread_ctx& self) {
        in_loop.store(true, std::memory_order_release);
        for (;;) {
            passes.fetch_add(1, std::memory_order_relaxed);
            (void)task_work_run(self);
            ::usleep(200); // a cancellation point (deferred cancellation, the default type)
        }
    });
    REQUIRE(wait_for([&] { return in_loop.load(std::memory_order_acquire); }));
    REQUIRE(task_work_add(victim.ctx(), queued_late, notify::none) == status::ok);
    REQUIRE(::pthread_cancel(victim.native_handle()) == 0);
    victim.join(); // returns: the process did not terminate
    CHECK(victim.ctx().exited());
    CHECK(queued_late.runs.load() == 1); // in a pass, or in the exit hook
    CHECK(task_work_add(victim.ctx(), after_exit, notify::none) == status::exited);
    CHECK(passes.load() >= 1);
}

// ---- The list's transitions with an injecting Atom (detail/task_work_transitions.hpp) ----
// Each case runs one transition on a test head, with a competing one injected right before its
// operation number `at` on the head, for every `at` it reaches (the competitor runs after it when
// `at` is past its end), and checks where every item ended up: 0 lost, 0 duplicated.
#include "injecting_atomic.hpp"

namespace {
using head_t = rtdefer_test::injecting_atomic<callback_head*>;
constexpr int max_head_ops = 6; // more than any transition here performs on the head

void noop_cb(callback_head*) noexcept {}

using rtdefer_test::interleave;

/// The chain from `first`, newest first (stops at the sentinel, and after 16 links on a cycle).
std::vector<callback_head*> chain_of(callback_head* first) {
    std::vector<callback_head*> out;
    for (callback_head* c = first; c != nullptr && c != detail::task_work_exited() && out.size() < 16;
         c = c->next.load(std::memory_order_relaxed))
        out.push_back(c);
    return out;
}
} // namespace

TEST_CASE("task_work list transitions: an add racing the owner's exit") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head w{&noop_cb};
        callback_head* closed = &w; // what the close took (poisoned until it runs)
        auto close = [&] { closed = detail::task_work_close(works, false); };
        status s{};
        const bool before = interleave(works, at, [&] { s = detail::task_work_push(works, w); }, close);
        if (before) {
            // The exit closed the empty list between the add's load and its CAS: the add fails
            // and hands the item back untouched; nothing is on the closed list.
            CHECK(s == status::exited);
            CHECK_FALSE(task_work_queued(w));
            CHECK(closed == nullptr);
            CHECK(works.load(std::memory_order_relaxed) == detail::task_work_exited());
        } else {
            // The add won: the close took it (the exit runs it, then closes on the next round).
            CHECK(s == status::ok);
            CHECK(chain_of(closed) == std::vector<callback_head*>{&w});
            CHECK(works.load(std::memory_order_relaxed) == nullptr);
        }
    }
}

TEST_CASE("task_work list transitions: the owner's exit racing an add") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head w{&noop_cb};
        status s = status::busy; // poisoned until the add runs
        auto add = [&] { s = detail::task_work_push(works, w); };
        callback_head* closed = &w;
        const bool before = interleave(works, at, [&] { closed = detail::task_work_close(works, false); }, add);
        if (s == status::ok) {
            // The add came before the close's CAS: the close fails to install the sentinel, takes
            // the item instead and leaves the list open; the next round closes it.
            CHECK(before);
            CHECK(chain_of(closed) == std::vector<callback_head*>{&w});
            CHECK(works.load(std::memory_order_relaxed) == nullptr);
            CHECK(detail::task_work_close(works, false) == nullptr);
            CHECK(works.load(std::memory_order_relaxed) == detail::task_work_exited());
        } else {
            CHECK_FALSE(before);
            CHECK(s == status::exited);
            CHECK(closed == nullptr);
            CHECK_FALSE(task_work_queued(w));
        }
    }
}

TEST_CASE("task_work list transitions: two adds race for the head") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head a{&noop_cb}, b{&noop_cb}, old{&noop_cb};
        REQUIRE(detail::task_work_push(works, old) == status::ok);
        status sb{};
        auto add_b = [&] { sb = detail::task_work_push(works, b); };
        status sa{};
        const bool before = interleave(works, at, [&] { sa = detail::task_work_push(works, a); }, add_b);
        CHECK(sa == status::ok);
        CHECK(sb == status::ok);
        // Both on the list once, newest first in CAS order: b's CAS came first if it was injected.
        const std::vector<callback_head*> want = before ? std::vector<callback_head*>{&a, &b, &old}
                                                        : std::vector<callback_head*>{&b, &a, &old};
        CHECK(chain_of(works.load(std::memory_order_relaxed)) == want);
    }
}

TEST_CASE("task_work list transitions: the run's detach while an add pushes") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head a{&noop_cb}, b{&noop_cb};
        REQUIRE(detail::task_work_push(works, a) == status::ok);
        status sb{};
        auto add_b = [&] { sb = detail::task_work_push(works, b); };
        callback_head* got = nullptr;
        const bool before = interleave(works, at, [&] { got = detail::task_work_detach(works); }, add_b);
        CHECK(sb == status::ok);
        // Every item is either in the detached chain or still on the list, once.
        if (before) {
            CHECK(chain_of(got) == std::vector<callback_head*>{&b, &a});
            CHECK(works.load(std::memory_order_relaxed) == nullptr);
        } else {
            CHECK(chain_of(got) == std::vector<callback_head*>{&a});
            CHECK(chain_of(works.load(std::memory_order_relaxed)) == std::vector<callback_head*>{&b});
        }
    }
}

TEST_CASE("task_work list transitions: a cancel at the head while an add pushes") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head a{&noop_cb}, b{&noop_cb}, old{&noop_cb};
        REQUIRE(detail::task_work_push(works, old) == status::ok);
        REQUIRE(detail::task_work_push(works, a) == status::ok);
        status sb{};
        auto add_b = [&] { sb = detail::task_work_push(works, b); };
        auto is_a = [&](const callback_head& c) noexcept { return &c == &a; };
        callback_head* removed = nullptr;
        (void)interleave(works, at, [&] { removed = detail::task_work_unlink_match(works, is_a); }, add_b);
        // Whether the add came before the load, between the load and the head CAS (the CAS fails
        // and the walk finds a again behind b), or after: a is removed, b and old stay, once.
        CHECK(sb == status::ok);
        CHECK(removed == &a);
        CHECK_FALSE(task_work_queued(a));
        CHECK(chain_of(works.load(std::memory_order_relaxed)) == std::vector<callback_head*>{&b, &old});
    }
}

TEST_CASE("task_work list transitions: a cancel at the head while the run detaches") {
    for (int at = 0; at < max_head_ops; ++at) {
        CAPTURE(at);
        head_t works{nullptr};
        callback_head a{&noop_cb}, old{&noop_cb};
        REQUIRE(detail::task_work_push(works, old) == status::ok);
        REQUIRE(detail::task_work_push(works, a) == status::ok);
        callback_head* detached = &a; // poisoned until the detach runs
        auto detach = [&] { detached = detail::task_work_detach(works); };
        auto is_a = [&](const callback_head& c) noexcept { return &c == &a; };
        callback_head* removed = nullptr;
        const bool before = interleave(works, at, [&] { removed = detail::task_work_unlink_match(works, is_a); }, detach);
        if (before) {
            // The runner took the chain first: a is committed to run; the cancel finds nothing
            // and leaves the detached chain intact.
            CHECK(removed == nullptr);
            CHECK(chain_of(detached) == std::vector<callback_head*>{&a, &old});
            CHECK(task_work_queued(a));
        } else {
            CHECK(removed == &a);
            CHECK_FALSE(task_work_queued(a));
            CHECK(chain_of(detached) == std::vector<callback_head*>{&old});
        }
        CHECK(works.load(std::memory_order_relaxed) == nullptr);
    }
}

// ---- task_work_cancel with its caller cancelled asynchronously (tests/support/async_cancel.hpp) ----
#include "async_cancel.hpp"

#include <random>

namespace {
struct cancel_target_item : callback_head {
    cancel_target_item() noexcept { init_task_work(*this, &cb); }
    std::atomic<std::uint32_t> runs{0};
    static void cb(callback_head* h) noexcept {
        // relaxed: read after the owner's join.
        static_cast<cancel_target_item*>(h)->runs.fetch_add(1, std::memory_order_relaxed);
    }
};
constexpr std::size_t cancel_target_items = 32;

/// One round's shared state; leaked when a round leaves the owner stuck (it may still read it).
struct cancel_caller_round {
    thread_ctx* target = nullptr;
    cancel_target_item items[cancel_target_items];
    std::atomic<bool> go{false}, stop_adding{false};
};

void cancel_caller_setup(void*) {}

// The canceller's loop: async-cancel-clean (no C++ cleanups in this frame; see async_cancel.hpp).
// The list is kept long by an adder, so most of the time is spent inside the cancel lock.
void cancel_caller_loop(void* arg) {
    auto* r = static_cast<cancel_caller_round*>(arg);
    for (std::size_t i = 0;; i = (i + 1) % cancel_target_items)
        (void)task_work_cancel(*r->target, r->items[i]);
}
} // namespace

TEST_CASE("task_work_cancel with its caller cancelled asynchronously: the lock is free, cancel_seq even, every item idle or run once") {
    // A host may cancel any of its threads asynchronously, a canceller too. task_work_cancel_match
    // holds cancellation off around its lock (detail/cancel_hold.hpp): a cancel acted on inside would
    // leave cancel_lock held and cancel_seq odd (the owner would hold its work back for good and
    // block at exit), or an unlinked item never marked dequeued (lost: neither queued nor idle).
    if (const char* why = rtdefer_test::async_cancel_unsupported()) {
        rtdefer_test::skip_test(why);
        return;
    }
    constexpr int rounds = 64;
    std::mt19937 rng(2026);
    int not_cancelled = 0, lock_held = 0, seq_odd = 0, left_queued = 0, duplicated = 0, ran = 0, done = 0;
    for (int round = 0; round < rounds; ++round, ++done) {
        auto r = std::make_unique<cancel_caller_round>();
        owner_thread owner([rp = r.get()](thread_ctx& self) {
            while (!rp->go.load(std::memory_order_acquire)) // acquire: pairs with the release below
                std::this_thread::yield();
            (void)task_work_run(self); // then the thread's exit runs the rest and closes the list
        });
        r->target = &*owner;
        for (cancel_target_item& it : r->items)
            REQUIRE(task_work_add(*r->target, it, notify::none) == status::ok);
        std::thread adder([rp = r.get()] { // re-adds what the canceller removed
            while (!rp->stop_adding.load(std::memory_order_relaxed)) // relaxed: a stop flag
                for (cancel_target_item& it : rp->items)
                    (void)task_work_add(*rp->target, it, notify::none);
        });
        {
            rtdefer_test::async_cancel_victim canceller(&cancel_caller_setup, &cancel_caller_loop, r.get());
            REQUIRE(canceller.started());
            canceller.cancel_at_random_point(rng);
            not_cancelled += !canceller.join();
        }
        r->stop_adding.store(true, std::memory_order_relaxed); // relaxed: a stop flag
        adder.join();
        auto& s = detail::ctx_access::task_work(*r->target);
        const bool lock_free = s.cancel_lock.try_lock();
        if (lock_free)
            s.cancel_lock.unlock();
        const bool even = (s.cancel_seq.load(std::memory_order_seq_cst) & 1U) == 0;
        lock_held += !lock_free;
        seq_odd += !even;
        if (!lock_free || !even) {
            // The owner would block in its exit on the dead canceller's lock: leave it there.
            r->go.store(true, std::memory_order_release);
            owner.t.detach();
            (void)r.release();
            break;
        }
        r->go.store(true, std::memory_order_release); // release: pairs with the owner's acquire
        owner.join();
        for (cancel_target_item& it : r->items) {
            left_queued += task_work_queued(it);
            // relaxed: the owner is joined.
            const std::uint32_t n = it.runs.load(std::memory_order_relaxed);
            duplicated += n > 1;
            ran += n;
        }
        if (left_queued != 0 || duplicated != 0)
            break;
    }
    CHECK(not_cancelled == 0);
    CHECK(lock_held == 0);
    CHECK(seq_odd == 0);
    CHECK(left_queued == 0);
    CHECK(duplicated == 0);
    MESSAGE(done << " of " << rounds << " rounds whole, " << ran << " runs after the canceller was cancelled");
}
