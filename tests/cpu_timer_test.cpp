// Unit tests for rtdefer/cpu_timer.hpp: both policies and both models fire once, in the right
// context, never before the budget; each result of cancel_sync; thread exit with armed timers; a
// forked child starts idle; the sleep guard keeps the wall timer off a park; the per-cycle budget;
// priority inversion for real (canceller FIFO high, owner FIFO low, one CPU): judged by event order.
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>

#include "cpu_timer_util.hpp"
#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>

using namespace rtdefer;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

using rtdefer_test::eventually;

// Burns CPU on the calling (owner) thread until `done()` or `limit` of CPU time; runs the owner's
// safe point (task_work_run) every ~20 us, as a real-time loop would at its top.
template <class Done>
bool burn_until(thread_ctx& self, Done done, std::uint64_t limit_ns = 2'000'000'000) {
    return rtdefer_test::burn_cpu_until([&] { return cpu_time_ns(self); }, limit_ns, done,
                                        [&] { (void)task_work_run(self); });
}

struct probe {
    std::atomic<int> runs{0};
    std::atomic<bool> in_irq{false};
    std::atomic<std::uint64_t> late{0};
};

void probe_cb(cpu_timer& t, void* arg) noexcept RTDEFER_NONBLOCKING {
    auto* p = static_cast<probe*>(arg);
    p->in_irq.store(in_interrupt(), std::memory_order_relaxed);
    p->late.store(t.fired_at() - t.expires(), std::memory_order_relaxed);
    p->runs.fetch_add(1, std::memory_order_release);
}

void setup_or_fail(thread_ctx& self, cpu_timer_policy pol = cpu_timer_policy::hybrid) {
    REQUIRE(interrupt_install() == status::ok);
    REQUIRE(cpu_timer_setup(self, {.policy = pol}) == status::ok);
}

// Runs `fn(self)` on a fresh SCHED_OTHER thread (cpu_timer state is per thread).
template <class F>
void on_thread(F fn, rt_thread_options o = {.name = "cpu-timer-t", .policy = sched_policy::other}) {
    rt_thread t(o, [&](thread_ctx& self) { fn(self); });
    t.join();
}

} // namespace

TEST_SUITE("unit") {

TEST_CASE("cpu_timer: setup errors: arm before setup is not_installed, a second setup is busy") {
    on_thread([](thread_ctx& self) {
        cpu_timer t(self);
        probe p;
        CHECK(t.arm(0, &probe_cb, &p) == status::not_installed);
        CHECK(t.arm(0, nullptr, &p) == status::invalid_argument);
        CHECK(t.cancel_sync(self) == status::idle);
        setup_or_fail(self);
        CHECK(cpu_timer_setup(self) == status::busy);
        CHECK(cpu_time_ns(self) > 0);
    });
}

TEST_CASE("cpu_timer: each policy and model fires once, not before the budget, in its context") {
    for (cpu_timer_policy pol : {cpu_timer_policy::hybrid, cpu_timer_policy::kernel_clock}) {
        for (cpu_timer_mode mode : {cpu_timer_mode::deferred, cpu_timer_mode::urgent}) {
            const std::string name = std::string(to_string(pol)) + (mode == cpu_timer_mode::urgent ? " urgent" : " deferred");
            CAPTURE(name);
            on_thread([&](thread_ctx& self) {
                setup_or_fail(self, pol);
                cpu_timer t(self);
                probe p;
                const std::uint64_t start = cpu_time_ns(self);
                REQUIRE(t.arm(start + 2'000'000, &probe_cb, &p, mode) == status::ok);
                CHECK(burn_until(self, [&] { return p.runs.load(std::memory_order_acquire) > 0; }));
                CHECK(t.fired_at() >= t.expires());                 // never early in CPU time
                CHECK(cpu_time_ns(self) - start >= 2'000'000);
                CHECK(p.in_irq.load() == (mode == cpu_timer_mode::urgent));
                const std::uint64_t end = cpu_time_ns(self);
                (void)burn_until(self, [&] { return cpu_time_ns(self) - end > 3'000'000; });
                CHECK(p.runs.load() == 1);                          // one-shot: once
                CHECK(t.cancel_sync(self) == status::idle);
                MESSAGE(name << ": caught " << p.late.load() / 1000 << " us of CPU past the deadline");
            });
        }
    }
}

TEST_CASE("cpu_timer: urgent callbacks run in a real-time context: RealtimeSanitizer stops an allocation there") {
    if (!RTDEFER_HAS_RTSAN) {
        rtdefer_test::skip_test("not a -fsanitize=realtime build (the clang-rtsan configuration runs it)");
        return;
    }
    const int rc = rtdefer_test::in_child([] {
        int ran = 1;
        on_thread([&](thread_ctx& self) {
            REQUIRE(interrupt_install() == status::ok);
            REQUIRE(cpu_timer_setup(self) == status::ok);
            cpu_timer t(self);
            static std::atomic<bool> done{false};
            REQUIRE(t.arm(cpu_time_ns(self) + 500'000, [](cpu_timer&, void*) noexcept {
                        static int* volatile keep;
                        keep = new int(1); // not async-signal-safe: RTSan must report it
                        delete keep;
                        done.store(true);
                    }, nullptr, cpu_timer_mode::urgent) == status::ok);
            // Burn without syscalls: a signal that lands inside a trusted syscall wrapper (RTSan
            // disabled there) would run the hook unchecked.
            for (std::uint64_t i = 0; i < 20'000'000'000ULL && !done.load(std::memory_order_relaxed); ++i) {
            }
            ran = done.load() ? 0 : 2;
            (void)t.cancel_sync(self);
        });
        return ran;
    }, true);
    CAPTURE(rc);
    CHECK(rtdefer_test::aborted(rc));
}

TEST_CASE("cpu_timer: timers run in deadline order; a moved timer returns removed and runs once") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        struct tagged {
            cpu_timer t;
            int id;
            int* log;
            int* n;
            tagged(thread_ctx& o, int i, int* l, int* c) : t(o), id(i), log(l), n(c) {}
        };
        int log[8] = {};
        int n = 0;
        auto cb = [](cpu_timer&, void* arg) noexcept {
            auto* me = static_cast<tagged*>(arg);
            me->log[(*me->n)++] = me->id;
        };
        tagged a(self, 1, log, &n), b(self, 2, log, &n), c(self, 3, log, &n);
        const std::uint64_t now = cpu_time_ns(self);
        REQUIRE(a.t.arm(now + 3'000'000, cb, &a) == status::ok);
        REQUIRE(b.t.arm(now + 1'000'000, cb, &b) == status::ok);
        REQUIRE(c.t.arm(now + 2'000'000, cb, &c) == status::ok);
        CHECK(a.t.arm(now + 500'000, cb, &a) == status::moved); // moved to the front
        CHECK(burn_until(self, [&] { return n == 3; }));
        CHECK(log[0] == 1);
        CHECK(log[1] == 2);
        CHECK(log[2] == 3);
    });
}

TEST_CASE("cpu_timer: a pass expires at most cpu_timer_max_collected timers; the rest follow, each once") {
    on_thread([](thread_ctx& self) {
        REQUIRE(interrupt_install() == status::ok);
        REQUIRE(cpu_timer_setup(self, {.capacity = 64}) == status::ok);
        constexpr int n = 50;
        std::vector<std::unique_ptr<cpu_timer>> ts;
        std::vector<probe> ps(n);
        for (int i = 0; i < n; ++i) {
            ts.push_back(std::make_unique<cpu_timer>(self));
            REQUIRE(ts.back()->arm(0, &probe_cb, &ps[static_cast<std::size_t>(i)]) == status::ok); // all due
        }
        const std::uint64_t passes0 = cpu_timer_statistics(self).passes;
        REQUIRE(send_ipi(self) == status::ok);
        int total = 0;
        CHECK(burn_until(self, [&] {
            total = 0;
            for (auto& p : ps)
                total += p.runs.load();
            return total == n;
        }));
        for (auto& p : ps)
            CHECK(p.runs.load() == 1);
        const std::uint64_t passes = cpu_timer_statistics(self).passes - passes0;
        CHECK(passes >= (n + cpu_timer_max_collected - 1) / cpu_timer_max_collected);
        MESSAGE(n << " due timers expired in " << passes << " passes");
    });
}

TEST_CASE("cpu_timer: cancel_sync: removed for a pending timer, idle for an idle one, cancel result") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        for (cpu_timer_mode mode : {cpu_timer_mode::deferred, cpu_timer_mode::urgent}) {
            cpu_timer t(self);
            probe p;
            CHECK(t.cancel_sync(self) == status::idle);
            REQUIRE(t.arm(cpu_time_ns(self) + 1'000'000'000, &probe_cb, &p, mode) == status::ok);
            CHECK(t.cancel_sync(self) == status::removed);
            CHECK(t.cancel_sync(self) == status::idle);
            REQUIRE(t.arm(cpu_time_ns(self) + 1'000'000'000, &probe_cb, &p, mode) == status::ok);
            CHECK(t.cancel());
            CHECK_FALSE(t.cancel());
            CHECK(p.runs.load() == 0);
        }
    });
}

TEST_CASE("cpu_timer: a collected, not started expiry is taken back once: cancel true then false") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        // a's callback cancels b twice (both due: one pass collects them, a first), then re-arms it.
        struct pair {
            cpu_timer a, b;
            probe pb;
            bool first = false, second = true;
            status rearm = status::ok;
            explicit pair(thread_ctx& o) : a(o), b(o) {}
        } x(self);
        const std::uint64_t now = cpu_time_ns(self);
        REQUIRE(x.a.arm(now, [](cpu_timer& t, void* arg) noexcept {
                    auto* p = static_cast<pair*>(arg);
                    p->first = p->b.cancel();
                    p->second = p->b.cancel();
                    p->rearm = p->b.arm(cpu_time_ns(t.owner()) + 100'000'000'000, &probe_cb, &p->pb);
                }, &x) == status::ok);
        REQUIRE(x.b.arm(now, &probe_cb, &x.pb) == status::ok);
        REQUIRE(send_ipi(self) == status::ok); // an interrupt makes the hook look now
        CHECK(burn_until(self, [&] { return x.rearm != status::ok || !x.second; }));
        CHECK(x.first);
        CHECK_FALSE(x.second); // never twice for one expiry
        CHECK(x.rearm == status::ok); // nothing was pending any more
        CHECK(x.b.cancel_sync(self) == status::removed);
        CHECK(x.pb.runs.load() == 0);
    });
}

TEST_CASE("cpu_timer: cancel_sync from its own deferred callback returns would_deadlock") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        struct ctx {
            cpu_timer* t;
            thread_ctx* self;
            status got = status::ok;
            std::atomic<bool> ran{false};
        } c;
        cpu_timer t(self);
        c.t = &t;
        c.self = &self;
        REQUIRE(t.arm(cpu_time_ns(self), [](cpu_timer&, void* a) noexcept {
                    auto* x = static_cast<ctx*>(a);
                    x->got = x->t->cancel_sync(*x->self);
                    x->ran.store(true, std::memory_order_release);
                }, &c) == status::ok);
        REQUIRE(send_ipi(self) == status::ok); // an interrupt makes the hook look now
        CHECK(burn_until(self, [&] { return c.ran.load(std::memory_order_acquire); }));
        CHECK(c.got == status::would_deadlock);
        CHECK(t.cancel_sync(self) == status::idle);
    });
}

TEST_CASE("cpu_timer: cancel_sync from another thread waits for a running callback (waited)") {
    for (cpu_timer_mode mode : {cpu_timer_mode::deferred, cpu_timer_mode::urgent}) {
        CAPTURE(mode == cpu_timer_mode::urgent);
        struct shared {
            std::atomic<bool> started{false}, finished{false}, owner_done{false};
            std::atomic<bool> finished_before_return{false};
        } sh;
        std::unique_ptr<cpu_timer> t;
        std::atomic<bool> armed{false};
        rt_thread owner({.name = "ct-owner", .policy = sched_policy::other}, [&](thread_ctx& self) {
            setup_or_fail(self);
            t = std::make_unique<cpu_timer>(self);
            REQUIRE(t->arm(cpu_time_ns(self) + 1'000'000, [](cpu_timer& me, void* a) noexcept {
                        auto* s = static_cast<shared*>(a);
                        s->started.store(true, std::memory_order_release);
                        // Burns 20 ms of CPU: async-signal-safe (clock reads only).
                        const std::uint64_t t0 = cpu_time_ns(me.owner());
                        while (cpu_time_ns(me.owner()) - t0 < 20'000'000) {
                        }
                        s->finished.store(true, std::memory_order_release);
                    }, &sh, mode) == status::ok);
            armed.store(true, std::memory_order_release);
            (void)burn_until(self, [&] { return sh.owner_done.load(std::memory_order_acquire); });
        });
        thread_ctx& me = attach_this_thread();
        REQUIRE(eventually([&] { return sh.started.load(std::memory_order_acquire); }));
        const status r = t->cancel_sync(me);
        sh.finished_before_return.store(sh.finished.load(std::memory_order_acquire));
        sh.owner_done.store(true, std::memory_order_release);
        owner.join();
        CHECK(r == status::waited);
        CHECK(sh.finished_before_return.load());
        t.reset(); // freed right after cancel_sync: ASan sees any later access
    }
}

TEST_CASE("cpu_timer: thread exit disarms armed timers: they never fire, cancel_sync returns idle") {
    probe p1, p2, p3;
    std::unique_ptr<cpu_timer> a, b, c;
    on_thread([&](thread_ctx& self) {
        setup_or_fail(self);
        a = std::make_unique<cpu_timer>(self);
        b = std::make_unique<cpu_timer>(self);
        c = std::make_unique<cpu_timer>(self);
        const std::uint64_t now = cpu_time_ns(self);
        REQUIRE(a->arm(now + 1'000'000'000, &probe_cb, &p1) == status::ok);
        REQUIRE(b->arm(now + 1'000'000'000, &probe_cb, &p2, cpu_timer_mode::urgent) == status::ok);
        REQUIRE(c->arm(0, &probe_cb, &p3) == status::ok);   // due, its pass queued but not run:
        REQUIRE(send_ipi(self) == status::ok);               // the exit disarms it first
    });
    thread_ctx& me = attach_this_thread();
    CHECK(a->cancel_sync(me) == status::idle);
    CHECK(b->cancel_sync(me) == status::idle);
    CHECK(c->cancel_sync(me) == status::idle);
    CHECK(p1.runs.load() + p2.runs.load() + p3.runs.load() == 0);
    a.reset(); // each holds the exited owner's ctx: the last one frees it (and its queue)
    b.reset();
    c.reset();
}

TEST_CASE("cpu_timer: a forked child starts idle: scheduled clear, timers unlinked, new timers fire") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        cpu_timer t(self);
        probe p;
        REQUIRE(t.arm(0, &probe_cb, &p) == status::ok); // due
        REQUIRE(send_ipi(self) == status::ok);           // the hook schedules the pass: not run yet
        REQUIRE(detail::ctx_access::cpu_timer(self).scheduled.load());
        const int rc = rtdefer_test::in_child([&] {
            if (detail::ctx_access::cpu_timer(self).scheduled.load() || detail::ctx_access::cpu_timer(self).next_ns.load() != detail::cpu_never)
                return 1;
            if (t.cancel()) // unlinked in the child: nothing to cancel
                return 2;
            probe q;
            cpu_timer u(self);
            if (u.arm(cpu_time_ns(self) + 1'000'000, &probe_cb, &q, cpu_timer_mode::urgent) != status::ok)
                return 3;
            if (!burn_until(self, [&] { return q.runs.load() > 0; }))
                return 4; // the kernel once copied `scheduled` into children: their timers never fired
            if (p.runs.load() != 0)
                return 5;
            // A thread the child creates starts idle too. (ThreadSanitizer cannot start threads
            // after a multi-threaded fork; the forking thread's reset above is checked there too.)
            if (rtdefer_test::tsan_build)
                return 0;
            std::atomic<int> fresh{-1};
            rt_thread th({.name = "ct-child", .policy = sched_policy::other}, [&](thread_ctx& c) {
                fresh.store(detail::ctx_access::cpu_timer(c).queue == nullptr && !detail::ctx_access::cpu_timer(c).scheduled.load() ? 0 : 6);
            });
            th.join();
            return fresh.load();
        });
        CHECK(rc == 0);
        CHECK(burn_until(self, [&] { return p.runs.load() > 0; })); // the parent's pass still runs
    });
}

TEST_CASE("cpu_timer: the sleep guard keeps the hybrid wall timer off a park; it fires after") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        cpu_timer t(self);
        probe p;
        REQUIRE(t.arm(cpu_time_ns(self) + 2'000'000, &probe_cb, &p, cpu_timer_mode::urgent) == status::ok);
        // 2 ms of wall time would fire the wall timer mid-park (EINTR); paused, the park times out.
        const std::uint64_t irq0 = interrupts_received(self);
        CHECK(cpu_timer_park_until(self, clk::now() + 20ms) == status::timed_out);
        CHECK(interrupts_received(self) == irq0);
        CHECK(p.runs.load() == 0);
        CHECK(burn_until(self, [&] { return p.runs.load() > 0; }));
        CHECK(t.fired_at() >= t.expires());
    });
}

TEST_CASE("cpu_budget: catches an overrun while it runs and reports the CPU used; no timer syscalls per cycle") {
    on_thread([](thread_ctx& self) {
        setup_or_fail(self);
        cpu_budget budget(self, 1ms);
        // A cycle within budget.
        REQUIRE(budget.start() == status::ok);
        cpu_cycle c = budget.finish();
        CHECK_FALSE(c.overran);
        CHECK(c.used_ns < 1'000'000);
        // An overrunning cycle: the loop sees overrunning() become true before it ends.
        REQUIRE(budget.start_at(c.now_ns) == status::ok);
        CHECK(burn_until(self, [&] { return budget.overrunning(); }));
        c = budget.finish();
        CHECK(c.overran);
        CHECK(c.used_ns >= 1'000'000);
        CHECK(budget.overruns() == 1);
        // Busy cycles within budget: the kernel timer stays armed at or before each deadline.
        const std::uint64_t arms0 = cpu_timer_statistics(self).kernel_arms;
        constexpr int cycles = 1000;
        for (int i = 0; i < cycles; ++i) {
            REQUIRE(succeeded(budget.start_at(c.now_ns)));
            c = budget.finish();
        }
        const std::uint64_t arms = cpu_timer_statistics(self).kernel_arms - arms0;
        MESSAGE("timer_settime calls in " << cycles << " busy cycles: " << arms);
        CHECK(arms < cycles / 4); // lazy re-arming: far fewer than one per cycle
    });
}

TEST_CASE("cpu_timer: priority inversion for real: cancel_sync boosts the low-priority owner on one CPU") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    const int cpu = rtdefer_test::first_allowed_cpu();
    REQUIRE(cpu >= 0);
    // Owner FIFO 10 (its callback burns 2 ms of CPU and wakes the canceller and the hog), hog FIFO
    // 15, canceller FIFO 20, all on `cpu`. With priority inheritance (the expiry lock for deferred,
    // the hard lock for urgent) the owner runs at 20 until its callback returns, so the hog's first
    // look finds cancel_sync already returned. Event order, not time.
    for (cpu_timer_mode mode : {cpu_timer_mode::deferred, cpu_timer_mode::urgent}) {
        CAPTURE(mode == cpu_timer_mode::urgent);
        std::unique_ptr<cpu_timer> t;
        rtdefer_test::pi_scene scene("ct", cpu, [&](thread_ctx& me) { return t->cancel_sync(me); });
        rt_thread owner({.name = "ct-owner", .policy = sched_policy::fifo, .priority = 10, .cpu = cpu, .require_rt = true},
                        [&](thread_ctx& self) {
                            setup_or_fail(self);
                            t = std::make_unique<cpu_timer>(self);
                            REQUIRE(t->arm(cpu_time_ns(self) + 500'000, [](cpu_timer&, void* a) noexcept {
                                        rtdefer_test::pi_scene::on_callback(a);
                                    }, &scene, mode) == status::ok);
                            (void)burn_until(self, [&] { return scene.cancel_done(); });
                        });
        scene.join_and_check();
        owner.join();
        t.reset();
    }
}

} // TEST_SUITE
