// Unit tests for rtdefer/uring.hpp: the loop's setup and fallback, wakes from task_work (another
// thread), a signal handler, irq_work and timers reaching a loop that waits in io_uring, user I/O
// on pipes (completion, freeing the op in its callback, cancel, linked timeouts), teardown with
// operations in flight, and the futex fallback in a forked child whose seccomp filter refuses
// io_uring_setup.
//
// Callbacks run inside nonblocking code (task_work_run, the loop's reap): they record into atomics.
#include <rtdefer/irq_work.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/timer.hpp>
#include <rtdefer/uring.hpp>

#include "test_util.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <thread>

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

/// True when this machine gives us io_uring; otherwise reports the skip (the fallback tests still run).
bool require_uring(const uring_loop& loop) {
    if (loop.backend() == uring_backend::io_uring)
        return true;
    rtdefer_test::skip_test(std::string("io_uring unavailable here (") + to_string(loop.backend_status()) +
                            ", errno " + std::to_string(loop.setup_errno()) + ")");
    return false;
}

/// A loop on this thread, for TEST_CASE_FIXTURE(ring, ...): the test returns at once unless
/// `in_ring` (io_uring is available; otherwise require_uring reported the skip).
struct ring {
    thread_ctx& self = attach_this_thread();
    uring_loop loop{self};
    const bool in_ring = require_uring(loop);
};

/// Turns the loop until `done()` or 10 s pass. Returns: whether done() became true.
template <class Done> bool run_until(uring_loop& loop, thread_ctx& self, Done done) {
    const auto give_up = steady::now() + 10s;
    while (!done()) {
        if (steady::now() >= give_up)
            return false;
        const status st = loop.run_once_until(self, steady::now() + 100ms);
        if (st == status::system_error)
            return false;
    }
    return true;
}

std::atomic<int> g_ran{0};
void count_item(callback_head*) noexcept {
    // relaxed: a counter read after the loop observed it on the same thread.
    g_ran.fetch_add(1, std::memory_order_relaxed);
}

struct pipe_pair {
    int r = -1, w = -1;
    pipe_pair() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
    ~pipe_pair() {
        ::close(r);
        ::close(w);
    }
};

struct read_op : uring_op {
    read_op() : uring_op(&done) {}
    char buf[64] = {};
    int res = 1;   // 1: callback not run yet
    int calls = 0;
    static void done(uring_op& op, int res, std::uint32_t) noexcept {
        auto& self = static_cast<read_op&>(op);
        self.res = res;
        ++self.calls;
    }
};

template <class Op> status submit_read(uring_loop& loop, Op& op, int fd) {
    return loop.submit(op, [&](io_uring_sqe& sqe) noexcept { io_uring_prep_read(&sqe, fd, op.buf, sizeof op.buf, 0); });
}

} // namespace

TEST_SUITE("unit") {

TEST_CASE("uring: setup probes flags and opcodes, or says why it fell back") {
    thread_ctx& self = attach_this_thread();
    uring_loop loop(self);
    if (loop.backend() == uring_backend::io_uring) {
        CHECK(loop.backend_status() == status::ok);
        CHECK(loop.setup_errno() == 0);
        const unsigned f = loop.setup_flags();
        CHECK(((f & IORING_SETUP_DEFER_TASKRUN) != 0 || (f & IORING_SETUP_COOP_TASKRUN) != 0 || f == 0));
        char hex[16];
        std::snprintf(hex, sizeof hex, "%#x", f);
        MESSAGE("io_uring setup flags: " << hex);
    } else {
        CHECK(loop.backend_status() != status::ok);
    }
    uring_loop forced(self, uring_options{.force_futex = true});
    CHECK(forced.backend() == uring_backend::futex);
    CHECK(forced.backend_status() == status::not_supported);
    read_op op;
    pipe_pair p;
    CHECK(submit_read(forced, op, p.r) == status::not_supported);
    CHECK(forced.cancel(op) == status::idle);
}

TEST_CASE_FIXTURE(ring, "uring: run_once times out at its deadline with nothing to do") {
    if (!in_ring)
        return;
    (void)loop.run_once_until(self, steady::now()); // drain a token an earlier test may have left
    const auto t0 = steady::now();
    status st = status::ok;
    while (st == status::ok && steady::now() - t0 < 2s)
        st = loop.run_once_until(self, t0 + 20ms);
    CHECK(st == status::timed_out);
    CHECK(steady::now() - t0 >= 20ms);
}

TEST_CASE_FIXTURE(ring, "uring: task_work from another thread wakes the loop in the ring, none lost") {
    if (!in_ring)
        return;
    constexpr int n = 2000;
    static callback_head items[n];
    g_ran.store(0, std::memory_order_relaxed);
    // relaxed: the futex-wake counter is a statistic; read after the joins.
    const auto wakes0 = rtdefer::park_futex_wakes(self);
    std::thread producer([&] {
        for (int i = 0; i < n; ++i) {
            init_task_work(items[i], &count_item);
            REQUIRE(task_work_add(self, items[i], notify::resume) == status::ok);
            if (i % 100 == 0)
                std::this_thread::sleep_for(1ms); // let the loop go back to sleep in the ring
        }
    });
    const bool all = run_until(loop, self, [] { return g_ran.load(std::memory_order_relaxed) == n; });
    producer.join();
    CHECK(all);
    CHECK(g_ran.load(std::memory_order_relaxed) == n);
    // The loop slept in io_uring_enter and unpark's futex_wake reached its in-ring FUTEX_WAIT.
    CHECK(rtdefer::park_futex_wakes(self) > wakes0);
    CHECK(loop.enters() > 0);
}

namespace {
thread_ctx* g_sig_target = nullptr;
callback_head g_sig_item;
void add_from_handler(int) {
    // async-signal-safe: task_work_add is lock-free and its wake is one futex syscall.
    (void)task_work_add(*g_sig_target, g_sig_item, notify::resume);
}
} // namespace

TEST_CASE_FIXTURE(ring, "uring: task_work added by a signal handler on another thread reaches the loop") {
    if (!in_ring)
        return;
    g_ran.store(0, std::memory_order_relaxed);
    g_sig_target = &self;
    init_task_work(g_sig_item, &count_item);
    struct sigaction sa{};
    sa.sa_handler = &add_from_handler;
    sigemptyset(&sa.sa_mask);
    struct sigaction old{};
    REQUIRE(::sigaction(SIGUSR2, &sa, &old) == 0);
    // The handler runs on a helper thread (SIGUSR2 blocked here), so the loop is woken only by the
    // handler's unpark, not by EINTR of its own io_uring_enter.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0);
    std::atomic<pid_t> helper_tid{0};
    std::atomic<bool> stop{false};
    std::thread helper([&] {
        sigset_t un;
        sigemptyset(&un);
        sigaddset(&un, SIGUSR2);
        ::pthread_sigmask(SIG_UNBLOCK, &un, nullptr);
        helper_tid.store(static_cast<pid_t>(::syscall(SYS_gettid)), std::memory_order_release);
        while (!stop.load(std::memory_order_acquire))
            std::this_thread::sleep_for(1ms);
    });
    while (helper_tid.load(std::memory_order_acquire) == 0)
        std::this_thread::yield();
    std::thread sender([&] {
        std::this_thread::sleep_for(20ms); // the loop is asleep in the ring by now
        ::syscall(SYS_tgkill, ::getpid(), helper_tid.load(std::memory_order_acquire), SIGUSR2);
    });
    const bool ok = run_until(loop, self, [] { return g_ran.load(std::memory_order_relaxed) == 1; });
    sender.join();
    stop.store(true, std::memory_order_release);
    helper.join();
    ::sigaction(SIGUSR2, &old, nullptr);
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    CHECK(ok);
}

TEST_CASE_FIXTURE(ring, "uring: an irq_work callback and a timer callback wake the loop through task_work") {
    if (!in_ring)
        return;
    g_ran.store(0, std::memory_order_relaxed);
    static callback_head from_irq, from_timer;
    init_task_work(from_irq, &count_item);
    init_task_work(from_timer, &count_item);
    static thread_ctx* target = nullptr;
    target = &self;

    irq_work_domain_options dopts;
    dopts.policy = sched_policy::other;
    dopts.tick = std::chrono::nanoseconds::zero();
    irq_work_domain domain(dopts);
    irq_work_fn work{[] { (void)task_work_add(*target, from_irq, notify::resume); }};

    timer_service_options topts;
    topts.thread.policy = sched_policy::other;
    timer_service<> timers(topts);
    timer t;
    REQUIRE(timers.arm(t, steady::now() + 30ms, [](timer&, void*) noexcept {
        (void)task_work_add(*target, from_timer, notify::resume);
    }) == status::ok);
    std::thread kick([&] {
        std::this_thread::sleep_for(10ms);
        (void)irq_work_queue_on(domain, work, domain.cpus().front());
    });
    const bool ok = run_until(loop, self, [] { return g_ran.load(std::memory_order_relaxed) == 2; });
    kick.join();
    CHECK(ok);
    (void)timers.cancel_sync(t, self);
}

TEST_CASE_FIXTURE(ring, "uring: the loop is the expiry thread of a timer_service without a thread") {
    if (!in_ring)
        return;
    timer_service_options topts;
    topts.start_thread = false;
    timer_service<> timers(topts);
    static std::atomic<int> fired{0};
    fired.store(0, std::memory_order_relaxed);
    timer a, b;
    const auto t0 = steady::now();
    const auto cb = [](timer&, void*) noexcept { fired.fetch_add(1, std::memory_order_relaxed); };
    REQUIRE(timers.arm(a, t0 + 20ms, cb) == status::ok);
    REQUIRE(timers.arm(b, t0 + 40ms, cb) == status::ok);
    const auto give_up = t0 + 10s;
    while (fired.load(std::memory_order_relaxed) < 2 && steady::now() < give_up) {
        const auto next = timers.next_expiry().value_or(steady::time_point::max());
        (void)loop.run_once_until(self, std::min(next, give_up));
        (void)timers.run_expired(steady::now(), self);
    }
    CHECK(fired.load(std::memory_order_relaxed) == 2);
    CHECK(steady::now() - t0 >= 40ms);
}

TEST_CASE_FIXTURE(ring, "uring: a pipe read completes; its callback may free the op (never touched after)") {
    if (!in_ring)
        return;
    pipe_pair p;
    static std::atomic<int> got{0};
    got.store(0, std::memory_order_relaxed);
    struct heap_op : uring_op {
        heap_op() : uring_op(&done) {}
        char buf[64] = {};
        static void done(uring_op& op, int res, std::uint32_t) noexcept {
            got.store(res, std::memory_order_relaxed);
            // ASan reports any later access by the loop. Freeing is not real-time safe: this
            // test-only callback tells both checkers (-Wfunction-effects, RealtimeSanitizer).
            RTDEFER_EFFECTS_TRUST_BEGIN
            [[maybe_unused]] rtdefer::detail::rtsan_trust trust;
            delete static_cast<heap_op*>(&op);
            RTDEFER_EFFECTS_TRUST_END
        }
    };
    auto* op = new heap_op;
    REQUIRE(submit_read(loop, *op, p.r) == status::ok);
    CHECK(loop.ops_in_flight() == 1);
    CHECK(submit_read(loop, *op, p.r) == status::already_queued);
    (void)loop.run_once_until(self, steady::now()); // submitted; nothing to read yet
    REQUIRE(::write(p.w, "hello", 5) == 5);
    CHECK(run_until(loop, self, [] { return got.load(std::memory_order_relaxed) != 0; }));
    CHECK(got.load(std::memory_order_relaxed) == 5);
    CHECK(loop.ops_in_flight() == 0);
}

TEST_CASE_FIXTURE(ring, "uring: cancel of an in-flight read reports -ECANCELED to its callback") {
    if (!in_ring)
        return;
    pipe_pair p;
    read_op op;
    REQUIRE(submit_read(loop, op, p.r) == status::ok);
    (void)loop.run_once_until(self, steady::now() + 5ms); // in the kernel now, waiting for data
    CHECK(op.in_flight());
    CHECK(loop.cancel(op) == status::ok);
    CHECK(run_until(loop, self, [&] { return op.calls != 0; }));
    CHECK(op.calls == 1);
    CHECK(op.res == -ECANCELED);
    CHECK_FALSE(op.in_flight());
    CHECK(loop.cancel(op) == status::idle);
    // The op is reusable after its callback.
    REQUIRE(submit_read(loop, op, p.r) == status::ok);
    REQUIRE(::write(p.w, "x", 1) == 1);
    CHECK(run_until(loop, self, [&] { return op.calls == 2; }));
    CHECK(op.res == 1);
}

TEST_CASE_FIXTURE(ring, "uring: a linked timeout ends a read with -ETIME; a read that completes first is not hit") {
    if (!in_ring)
        return;
    pipe_pair p;
    read_op slow, fast;
    const auto prep = [&](read_op& op) {
        return [&](io_uring_sqe& sqe) noexcept { io_uring_prep_read(&sqe, p.r, op.buf, sizeof op.buf, 0); };
    };
    CHECK(loop.submit(slow, prep(slow), -1ns) == status::invalid_argument);
    REQUIRE(loop.submit(slow, prep(slow), 20ms) == status::ok);
    CHECK(run_until(loop, self, [&] { return slow.calls != 0; }));
    CHECK(slow.res == -ETIME);
    REQUIRE(::write(p.w, "ab", 2) == 2);
    REQUIRE(loop.submit(fast, prep(fast), 5s) == status::ok);
    CHECK(run_until(loop, self, [&] { return fast.calls != 0; }));
    CHECK(fast.calls == 1);
    CHECK(fast.res == 2);
    CHECK(loop.ops_in_flight() == 0);
}

TEST_CASE("uring: destroying the loop with reads in flight cancels them and runs their callbacks") {
    thread_ctx& self = attach_this_thread();
    pipe_pair p;
    read_op ops[4];
    {
        uring_loop loop(self);
        if (!require_uring(loop))
            return;
        for (auto& op : ops)
            REQUIRE(submit_read(loop, op, p.r) == status::ok);
        (void)loop.run_once_until(self, steady::now() + 5ms);
        CHECK(loop.ops_in_flight() == 4);
    }
    for (auto& op : ops) {
        CHECK(op.calls == 1);
        CHECK(op.res == -ECANCELED);
        CHECK_FALSE(op.in_flight());
    }
}

TEST_CASE("uring: under a seccomp filter refusing io_uring_setup the loop runs on the futex parker") {
    for (const int err : {EPERM, ENOSYS}) {
        const int rc = rtdefer_test::in_child([err] {
            if (!rtdefer_test::refuse_syscall(__NR_io_uring_setup, err))
                return 10;
            // The filter really refuses: a raw io_uring_setup fails with err.
            io_uring_params params{};
            if (::syscall(__NR_io_uring_setup, 4, &params) != -1 || errno != err)
                return 11;
            thread_ctx& self = attach_this_thread();
            uring_loop loop(self);
            if (loop.backend() != uring_backend::futex)
                return 12;
            if (loop.backend_status() != (err == EPERM ? status::not_permitted : status::not_supported))
                return 13;
            if (loop.setup_errno() != err)
                return 14;
            read_op op;
            pipe_pair p;
            if (submit_read(loop, op, p.r) != status::not_supported || op.calls != 0)
                return 15;
            // The same wakers reach the fallback loop.
            g_ran.store(0, std::memory_order_relaxed);
            static callback_head item;
            init_task_work(item, &count_item);
            std::thread producer([&] {
                std::this_thread::sleep_for(10ms);
                (void)task_work_add(self, item, notify::resume);
            });
            const bool ok = run_until(loop, self, [] { return g_ran.load(std::memory_order_relaxed) == 1; });
            producer.join();
            if (!ok)
                return 16;
            return loop.run_once_until(self, steady::now() + 5ms) == status::timed_out ? 0 : 17;
        });
        INFO("errno " << err);
        CHECK(rc == 0);
    }
}

} // TEST_SUITE
