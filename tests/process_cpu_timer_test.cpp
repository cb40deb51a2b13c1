// Unit tests for rtdefer/process_cpu_timer.hpp: a timer armed on one thread fires once on the
// designated expirer (both policies), never before the process CPU deadline; each result of
// cancel_sync, a canceller on another thread that waits for the running callback (waited); cancel
// racing expiry with the timer freed right after cancel_sync; the expirer exits with armed timers
// and with a canceller waiting; priority inversion for real (canceller FIFO high, expirer FIFO low).
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/rt_thread.hpp>

#include "cpu_timer_util.hpp"
#include "test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

using rtdefer_test::eventually;

// The designated expirer: sets up, then loops on its safe point (wait_for_work_until) until stopped.
struct expirer_thread {
    std::atomic<bool> stop{false};
    std::atomic<int> setup{-1};
    thread_ctx* ctx = nullptr;
    pid_t tid = 0;
    rt_thread th;

    explicit expirer_thread(cpu_timer_policy pol = cpu_timer_policy::hybrid,
                            rt_thread_options o = {.name = "pct-expirer", .policy = sched_policy::other})
        : th(o, [this, pol](thread_ctx& self) {
              ctx = &self;
              tid = ::gettid();
              const status s = process_cpu_timer_setup(self, {.policy = pol});
              setup.store(static_cast<int>(s), std::memory_order_release);
              if (s != status::ok)
                  return;
              while (!stop.load(std::memory_order_acquire))
                  (void)wait_for_work_until(self, clk::now() + 2ms);
          }) {
        REQUIRE(eventually([&] { return setup.load(std::memory_order_acquire) >= 0; }));
        REQUIRE(setup.load() == static_cast<int>(status::ok));
    }
    void finish() {
        stop.store(true, std::memory_order_release);
        th.join(); // a no-op once joined
    }
    ~expirer_thread() { finish(); }
};

// Burns CPU on the caller until `done()` or `limit_ns` of process CPU time passed.
template <class Done>
bool burn_until(Done done, std::uint64_t limit_ns = 4'000'000'000) {
    return rtdefer_test::burn_cpu_until([] { return process_cpu_time_ns(); }, limit_ns, done, [] {});
}

struct probe {
    std::atomic<int> runs{0};
    std::atomic<pid_t> tid{0};
    std::atomic<bool> in_irq{true};
    std::uint64_t spin_ns = 0; // CPU the callback burns (so a racing cancel_sync finds it running)
};

void probe_cb(process_cpu_timer&, void* arg) noexcept {
    auto* p = static_cast<probe*>(arg);
    p->tid.store(::gettid(), std::memory_order_relaxed);
    p->in_irq.store(in_interrupt(), std::memory_order_relaxed);
    const std::uint64_t t0 = detail::clock_ns(CLOCK_THREAD_CPUTIME_ID);
    while (p->spin_ns != 0 && detail::clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0 < p->spin_ns) {
    }
    p->runs.fetch_add(1, std::memory_order_release);
}

thread_ctx& attached() {
    REQUIRE(interrupt_install() == status::ok);
    return attach_this_thread();
}

} // namespace

TEST_SUITE("unit") {

TEST_CASE("process_cpu_timer: no expirer: arm is not_installed or exited; a second setup is busy") {
    thread_ctx& me = attached();
    process_cpu_timer t;
    probe p;
    const status before = t.arm(me, 0, &probe_cb, &p);
    CHECK((before == status::not_installed || before == status::exited));
    CHECK(t.arm(me, 0, nullptr) == status::invalid_argument);
    CHECK(t.cancel_sync(me) == status::idle);
    expirer_thread e;
    CHECK(process_cpu_timer_setup(me) == status::busy);
    CHECK(process_cpu_time_ns() > 0);
}

TEST_CASE("process_cpu_timer: armed on another thread, fires once on the expirer, never before the deadline") {
    for (cpu_timer_policy pol : {cpu_timer_policy::hybrid, cpu_timer_policy::kernel_clock}) {
        const std::string pol_name = to_string(pol);
        CAPTURE(pol_name);
        thread_ctx& me = attached();
        expirer_thread e(pol);
        process_cpu_timer t;
        probe p;
        const std::uint64_t start = process_cpu_time_ns();
        REQUIRE(t.arm(me, start + 5'000'000, &probe_cb, &p) == status::ok);
        CHECK(burn_until([&] { return p.runs.load(std::memory_order_acquire) > 0; }));
        CHECK(t.fired_at() >= t.expires()); // never early in process CPU time
        CHECK(p.tid.load() == e.tid);       // on the designated expirer
        CHECK_FALSE(p.in_irq.load());       // in its task_work, not its interrupt hook
        const std::uint64_t end = process_cpu_time_ns();
        (void)burn_until([&] { return process_cpu_time_ns() - end > 5'000'000; });
        CHECK(p.runs.load() == 1);
        CHECK(t.cancel_sync(me) == status::idle);
        MESSAGE(std::string(to_string(pol)) << ": caught " << (t.fired_at() - t.expires()) / 1000
                               << " us of process CPU past the deadline; " << process_cpu_timer_statistics().kicks
                               << " kicks so far");
    }
}

TEST_CASE("process_cpu_timer: timers run in deadline order; a moved timer returns removed and runs once") {
    thread_ctx& me = attached();
    expirer_thread e;
    struct tagged {
        process_cpu_timer t;
        int id = 0;
        std::atomic<int>* n = nullptr;
        int* log = nullptr;
    };
    int log[3] = {};
    std::atomic<int> n{0};
    auto cb = [](process_cpu_timer&, void* arg) noexcept {
        auto* me2 = static_cast<tagged*>(arg);
        me2->log[me2->n->load(std::memory_order_relaxed)] = me2->id;
        me2->n->fetch_add(1, std::memory_order_release);
    };
    tagged a, b, c;
    a.id = 1, b.id = 2, c.id = 3;
    a.n = b.n = c.n = &n;
    a.log = b.log = c.log = log;
    const std::uint64_t now = process_cpu_time_ns();
    REQUIRE(a.t.arm(me, now + 30'000'000, cb, &a) == status::ok);
    REQUIRE(b.t.arm(me, now + 10'000'000, cb, &b) == status::ok);
    REQUIRE(c.t.arm(me, now + 20'000'000, cb, &c) == status::ok);
    CHECK(a.t.arm(me, now + 5'000'000, cb, &a) == status::moved); // moved to the front
    CHECK(burn_until([&] { return n.load(std::memory_order_acquire) == 3; }));
    CHECK(log[0] == 1);
    CHECK(log[1] == 2);
    CHECK(log[2] == 3);
}

TEST_CASE("process_cpu_timer: cancel_sync: removed for a pending timer, idle for an idle one; cancel result") {
    thread_ctx& me = attached();
    expirer_thread e;
    process_cpu_timer t;
    probe p;
    CHECK(t.cancel_sync(me) == status::idle);
    REQUIRE(t.arm(me, process_cpu_time_ns() + 10'000'000'000, &probe_cb, &p) == status::ok);
    CHECK(t.cancel_sync(me) == status::removed);
    CHECK(t.cancel_sync(me) == status::idle);
    REQUIRE(t.arm(me, process_cpu_time_ns() + 10'000'000'000, &probe_cb, &p) == status::ok);
    CHECK(t.cancel());
    CHECK_FALSE(t.cancel());
    CHECK(p.runs.load() == 0);
}

TEST_CASE("process_cpu_timer: a collected, not started expiry is taken back once: cancel true then false") {
    thread_ctx& me = attached();
    expirer_thread e;
    // a's callback cancels b (collected in the same pass, not started) twice, then re-arms it.
    struct pair {
        process_cpu_timer a, b;
        probe pb;
        bool first = false, second = true;
        status rearm = status::ok;
        std::atomic<bool> done{false};
        thread_ctx* expirer = nullptr;
    } x;
    x.expirer = e.ctx;
    const std::uint64_t now = process_cpu_time_ns();
    REQUIRE(x.a.arm(me, now + 1'000'000, [](process_cpu_timer&, void* arg) noexcept {
                auto* p = static_cast<pair*>(arg);
                p->first = p->b.cancel();
                p->second = p->b.cancel();
                p->rearm = p->b.arm(*p->expirer, process_cpu_time_ns() + 100'000'000'000, &probe_cb, &p->pb);
                p->done.store(true, std::memory_order_release);
            }, &x) == status::ok);
    // The same deadline, armed after a: due at the same instant, so one pass collects both, a first.
    REQUIRE(x.b.arm(me, now + 1'000'000, &probe_cb, &x.pb) == status::ok);
    CHECK(burn_until([&] { return x.done.load(std::memory_order_acquire); }));
    CHECK(x.first);        // b was collected, not started: taken back
    CHECK_FALSE(x.second); // never twice for one expiry
    CHECK(x.rearm == status::ok);            // nothing was pending any more
    CHECK(x.b.cancel_sync(me) == status::removed);
    CHECK(x.pb.runs.load() == 0);
    CHECK(x.a.cancel_sync(me) == status::idle);
}

TEST_CASE("process_cpu_timer: cancel_sync from its own callback returns would_deadlock") {
    thread_ctx& me = attached();
    expirer_thread e;
    struct ctx {
        process_cpu_timer t;
        thread_ctx* expirer = nullptr;
        status got = status::ok;
        std::atomic<bool> ran{false};
    } c;
    c.expirer = e.ctx;
    REQUIRE(c.t.arm(me, 0, [](process_cpu_timer& t, void* a) noexcept {
                auto* x = static_cast<ctx*>(a);
                x->got = t.cancel_sync(*x->expirer);
                x->ran.store(true, std::memory_order_release);
            }, &c) == status::ok);
    CHECK(eventually([&] { return c.ran.load(std::memory_order_acquire); }));
    CHECK(c.got == status::would_deadlock);
    CHECK(c.t.cancel_sync(me) == status::idle);
}

TEST_CASE("process_cpu_timer: cancel_sync on another thread waits for the running callback (waited)") {
    thread_ctx& me = attached();
    expirer_thread e;
    struct shared {
        std::atomic<bool> started{false}, finished{false};
    } sh;
    auto t = std::make_unique<process_cpu_timer>();
    REQUIRE(t->arm(me, process_cpu_time_ns() + 1'000'000, [](process_cpu_timer&, void* a) noexcept {
                auto* s = static_cast<shared*>(a);
                s->started.store(true, std::memory_order_release);
                const std::uint64_t t0 = detail::clock_ns(CLOCK_THREAD_CPUTIME_ID);
                while (detail::clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0 < 20'000'000) { // 20 ms of CPU
                }
                s->finished.store(true, std::memory_order_release);
            }, &sh) == status::ok);
    REQUIRE(burn_until([&] { return sh.started.load(std::memory_order_acquire); }));
    CHECK(t->expiry().running());
    const status r = t->cancel_sync(me);
    const bool finished = sh.finished.load(std::memory_order_acquire);
    CHECK(r == status::waited);
    CHECK(finished);
    t.reset(); // freed right after cancel_sync: ASan sees any later access by the expirer
}

TEST_CASE("process_cpu_timer: cancel racing expiry: each timer runs at most once, removed means never, freed at once") {
    thread_ctx& me = attached();
    expirer_thread e;
    const std::size_t rounds = rtdefer_test::scaled(3000, 200);
    std::size_t removed = 0, waited = 0, idle = 0, ran = 0;
    std::uint64_t x = 88172645463325252ULL;
    for (std::size_t i = 0; i < rounds; ++i) {
        auto p = std::make_unique<probe>();
        auto t = std::make_unique<process_cpu_timer>();
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p->spin_ns = (x >> 40) % 2 == 0 ? 100'000 : 0;
        const std::uint64_t budget = x % 300'000; // 0..300 us of process CPU
        REQUIRE(succeeded(t->arm(me, process_cpu_time_ns() + budget, &probe_cb, p.get())));
        const std::uint64_t spin = (x >> 20) % 400'000;
        const std::uint64_t t0 = process_cpu_time_ns();
        while (process_cpu_time_ns() - t0 < spin) {
        }
        const status r = t->cancel_sync(me);
        const int runs = p->runs.load(std::memory_order_acquire);
        if (r == status::removed) {
            ++removed;
            CHECK(runs == 0);
        } else if (r == status::waited) {
            ++waited;
            CHECK(runs == 1);
        } else {
            ++idle;
            CHECK(r == status::idle);
            CHECK(runs == 1);
        }
        ran += static_cast<std::size_t>(runs);
        t.reset(); // freed right after cancel_sync: a late run would touch it (ASan reports it)
    }
    CHECK(removed + waited + idle == rounds);
    CHECK(ran == waited + idle);
    MESSAGE(rounds << " rounds: " << removed << " removed, " << waited << " waited, " << idle << " idle");
}

TEST_CASE("process_cpu_timer: the expirer exits with armed timers: they never fire, cancel_sync idle, arm exited") {
    thread_ctx& me = attached();
    probe p1, p2;
    process_cpu_timer a, b;
    {
        expirer_thread e;
        REQUIRE(a.arm(me, process_cpu_time_ns() + 10'000'000'000, &probe_cb, &p1) == status::ok);
        REQUIRE(b.arm(me, process_cpu_time_ns() + 20'000'000'000, &probe_cb, &p2) == status::ok);
        e.finish();
    }
    CHECK(a.cancel_sync(me) == status::idle);
    CHECK(b.cancel_sync(me) == status::idle);
    CHECK(a.arm(me, 0, &probe_cb, &p1) == status::exited);
    CHECK(p1.runs.load() + p2.runs.load() == 0);
    // A new expirer can be designated; old timers armed again fire on it.
    expirer_thread e2;
    REQUIRE(a.arm(me, 0, &probe_cb, &p1) == status::ok);
    CHECK(eventually([&] { return p1.runs.load(std::memory_order_acquire) == 1; }));
    CHECK(p1.tid.load() == e2.tid);
    CHECK(a.cancel_sync(me) == status::idle);
}

TEST_CASE("process_cpu_timer: a canceller waiting on an expirer that exits right after the callback returns") {
    thread_ctx& me = attached();
    struct shared {
        std::atomic<bool> started{false}, finished{false};
        expirer_thread* e = nullptr;
    } sh;
    auto t = std::make_unique<process_cpu_timer>();
    status r = status::ok;
    bool finished = false;
    {
        expirer_thread e;
        sh.e = &e;
        REQUIRE(t->arm(me, 0, [](process_cpu_timer&, void* a) noexcept {
                    auto* s = static_cast<shared*>(a);
                    s->started.store(true, std::memory_order_release);
                    const std::uint64_t t0 = detail::clock_ns(CLOCK_THREAD_CPUTIME_ID);
                    while (detail::clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0 < 20'000'000) {
                    }
                    s->finished.store(true, std::memory_order_release);
                    s->e->stop.store(true, std::memory_order_release); // the expirer leaves after the pass
                }, &sh) == status::ok);
        REQUIRE(eventually([&] { return sh.started.load(std::memory_order_acquire); }));
        r = t->cancel_sync(me); // holds a counted reference to the expirer, which exits meanwhile
        finished = sh.finished.load(std::memory_order_acquire);
        e.finish();
    }
    CHECK(r == status::waited);
    CHECK(finished);
    CHECK(t->cancel_sync(me) == status::idle);
    t.reset();
}

TEST_CASE("process_cpu_timer: priority inversion for real: cancel_sync boosts the low-priority expirer on one CPU") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    const int cpu = rtdefer_test::first_allowed_cpu();
    REQUIRE(cpu >= 0);
    thread_ctx& me = attached();
    // Expirer FIFO 10 (its callback burns 2 ms of CPU and wakes the canceller and the hog), hog FIFO
    // 15, canceller FIFO 20, all on `cpu`. With priority inheritance on the expirer's expiry lock the
    // expirer runs at 20 until the callback returns, so the hog's first look finds cancel_sync
    // already returned. Event order, not time.
    auto t = std::make_unique<process_cpu_timer>();
    {
        rtdefer_test::pi_scene scene("pct", cpu, [&](thread_ctx& self) { return t->cancel_sync(self); });
        expirer_thread e(cpu_timer_policy::hybrid,
                         {.name = "pct-expirer", .policy = sched_policy::fifo, .priority = 10, .cpu = cpu, .require_rt = true});
        REQUIRE(t->arm(me, 0, [](process_cpu_timer&, void* a) noexcept { rtdefer_test::pi_scene::on_callback(a); },
                       &scene) == status::ok);
        scene.join_and_check();
    }
    t.reset();
}

} // TEST_SUITE
