// Unit tests for rtdefer/irq_work.hpp: claim semantics, re-queue, per-CPU placement, LAZY vs tick,
// hard items in interrupt context, worker scheduling, irq_work_sync (self-sync, use-after-free),
// teardown, and a RealtimeSanitizer-watched real-time thread freeing memory through a lazy item.
// No timed assertions: every wait is for an event, never "it should have happened within X".
#include <doctest/doctest.h>

#include "async_cancel.hpp"
#include "test_util.hpp"

#include <rtdefer/irq_work.hpp>
#include <rtdefer/rt_thread.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

irq_work_domain_options no_tick() {
    irq_work_domain_options o;
    o.tick = 0ns;
    return o;
}

/// A lazy item whose callback blocks the worker until release(): makes "still pending" deterministic.
struct gate {
    std::atomic<std::uint32_t> entered{0};
    std::atomic<std::uint32_t> open{0};
    irq_work_fn<std::function<void()>> item{[this] {
        entered.store(1, std::memory_order_release);
        entered.notify_all();
        while (open.load(std::memory_order_acquire) == 0)
            open.wait(0, std::memory_order_acquire);
    }};
    void wait_entered() {
        while (entered.load(std::memory_order_acquire) == 0)
            entered.wait(0, std::memory_order_acquire);
    }
    void release() {
        open.store(1, std::memory_order_release);
        open.notify_all();
    }
};

/// Pins the calling thread to `cpu` for the lifetime of the object.
struct pin_to {
    cpu_set_t old{};
    explicit pin_to(int cpu) {
        sched_getaffinity(0, sizeof(old), &old);
        cpu_set_t s;
        CPU_ZERO(&s);
        CPU_SET(cpu, &s);
        REQUIRE(sched_setaffinity(0, sizeof(s), &s) == 0);
    }
    ~pin_to() { sched_setaffinity(0, sizeof(old), &old); }
};

std::atomic<int> plain_runs{0};
void count_run(irq_work&) noexcept { plain_runs.fetch_add(1, std::memory_order_relaxed); }

} // namespace

TEST_CASE("irq_work: initialisers set the kind bits and start free") {
    irq_work a = irq_work_init(&count_run);
    irq_work b = irq_work_init_lazy(&count_run);
    irq_work c = irq_work_init_hard(&count_run);
    CHECK_FALSE(irq_work_is_pending(a));
    CHECK_FALSE(irq_work_is_busy(a));
    CHECK_FALSE(irq_work_is_lazy(a));
    CHECK_FALSE(irq_work_is_hard(a));
    CHECK(irq_work_is_lazy(b));
    CHECK_FALSE(irq_work_is_hard(b));
    CHECK(irq_work_is_hard(c));
    init_irq_work(a, &count_run, irq_work_kind::hard);
    CHECK(irq_work_is_hard(a));
    CHECK((a.func == &count_run));
    // A free item syncs at once.
    CHECK(irq_work_sync(a) == status::ok);
}

TEST_CASE("irq_work: domain has one named, pinned worker per CPU") {
    irq_work_domain d(no_tick());
    REQUIRE_FALSE(d.cpus().empty());
    for (int cpu : d.cpus()) {
        CHECK(d.serves(cpu));
        std::atomic<int> ran_on{-1};
        char name[16] = {};
        irq_work_fn w{[&] {
            ran_on.store(sched_getcpu(), std::memory_order_relaxed);
            pthread_getname_np(pthread_self(), name, sizeof(name));
        }};
        REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(ran_on.load() == cpu);
        CHECK(std::string(name) == "irq_work/" + std::to_string(cpu));
    }
    CHECK_FALSE(d.serves(-1));
    CHECK_FALSE(d.serves(CPU_SETSIZE - 1));
}

TEST_CASE("irq_work: queueing a pending item fails, it runs once, and sees the failed claimer's writes") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered(); // the worker is now stuck in the gate: nothing else on this CPU runs

    int data = 0; // plain int: TSan checks the claim's ordering argument on it
    std::atomic<int> runs{0};
    int seen = -1;
    irq_work_fn w{[&] {
        seen = data;
        runs.fetch_add(1, std::memory_order_relaxed);
    }};
    REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
    CHECK(irq_work_is_pending(w));
    CHECK(irq_work_is_busy(w));
    CHECK(irq_work_needs_cpu(d, cpu));
    // Second queueing from another thread: fails, but its write before the call must be seen.
    std::thread other([&] {
        data = 42;
        CHECK(irq_work_queue_on(d, w, cpu) == status::already_queued);
        CHECK(irq_work_queue(d, w) == status::already_queued);
    });
    other.join();
    g.release();
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(runs.load() == 1);
    CHECK(seen == 42);
    CHECK_FALSE(irq_work_is_busy(w));
    REQUIRE(irq_work_sync(g.item) == status::ok);
    CHECK_FALSE(irq_work_needs_cpu(d, cpu));
    // Free again: queueing succeeds and it runs a second time.
    REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(runs.load() == 2);
}

TEST_CASE("irq_work: an item may re-queue itself from its own callback") {
    irq_work_domain d(no_tick());
    for (irq_work_kind kind : {irq_work_kind::normal, irq_work_kind::hard}) {
        CAPTURE(static_cast<int>(kind));
        std::atomic<int> runs{0};
        bool requeue_ok = true;
        irq_work_domain* dp = &d;
        irq_work_fn w{[&](irq_work& self) {
                          // PENDING is already clear while func runs: re-queueing succeeds.
                          if (runs.fetch_add(1, std::memory_order_relaxed) + 1 < 5)
                              requeue_ok = requeue_ok && (irq_work_queue(*dp, self) == status::ok);
                      },
                      kind};
        REQUIRE(irq_work_queue(d, w) == status::ok);
        // BUSY stays set across the re-queued runs, so one sync covers all five.
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(runs.load() == 5);
        CHECK(requeue_ok);
    }
}

TEST_CASE("irq_work: queue_on every CPU, each kind runs on that CPU's worker") {
    irq_work_domain d(no_tick());
    for (int cpu : d.cpus()) {
        for (irq_work_kind kind : {irq_work_kind::normal, irq_work_kind::lazy, irq_work_kind::hard}) {
            CAPTURE(cpu);
            CAPTURE(static_cast<int>(kind));
            std::atomic<int> ran_on{-1};
            std::atomic<bool> on_worker{false};
            thread_ctx* expected = &d.worker(cpu);
            irq_work_fn w{[&] {
                              ran_on.store(sched_getcpu(), std::memory_order_relaxed);
                              on_worker.store(current_thread_ctx() == expected, std::memory_order_relaxed);
                          },
                          kind};
            REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
            REQUIRE(irq_work_sync(w) == status::ok);
            CHECK(ran_on.load() == cpu);
            CHECK(on_worker.load());
        }
    }
}

TEST_CASE("irq_work: local queue lands on the caller's CPU") {
    irq_work_domain d(no_tick());
    for (int cpu : d.cpus()) {
        pin_to pin(cpu);
        std::atomic<int> ran_on{-1};
        irq_work_fn w{[&] { ran_on.store(sched_getcpu(), std::memory_order_relaxed); }};
        REQUIRE(irq_work_queue(d, w) == status::ok);
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(ran_on.load() == cpu);
    }
}

TEST_CASE("irq_work: a local queue from a CPU the domain does not serve runs on a served worker") {
    // Affinity or cpusets may change after construction, or a CPU come online: sched_getcpu() then
    // names a CPU without a worker (possibly beyond the domain's CPU map).
    std::vector<int> all;
    {
        irq_work_domain probe(no_tick());
        all = probe.cpus();
    }
    if (all.size() < 2) {
        rtdefer_test::skip_test("needs two CPUs");
        return;
    }
    irq_work_domain_options o = no_tick();
    o.cpus = {all.front()};
    irq_work_domain d(o);
    REQUIRE_FALSE(d.serves(all.back()));
    pin_to pin(all.back());
    for (irq_work_kind kind : {irq_work_kind::normal, irq_work_kind::lazy, irq_work_kind::hard}) {
        CAPTURE(static_cast<int>(kind));
        std::atomic<thread_ctx*> ran_by{nullptr};
        irq_work_fn w{[&] { ran_by.store(current_thread_ctx(), std::memory_order_relaxed); }, kind};
        REQUIRE(irq_work_queue(d, w) == status::ok);
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(ran_by.load() == &d.worker(all.front()));
    }
}

TEST_CASE("irq_work_queue_on: a CPU the domain does not serve is invalid_argument, the item untouched") {
    irq_work_domain d(no_tick());
    std::atomic<int> runs{0};
    irq_work_fn w{[&] { runs.fetch_add(1); }};
    for (int bad : {-1, CPU_SETSIZE, d.cpus().back() + 1000}) {
        CAPTURE(bad);
        CHECK_FALSE(d.serves(bad));
        CHECK(irq_work_queue_on(d, w, bad) == status::invalid_argument);
        CHECK_FALSE(irq_work_is_busy(w)); // never claimed
        CHECK_FALSE(irq_work_needs_cpu(d, bad));
        irq_work_producer p;
        CHECK(p.bind(d, bad) == status::invalid_argument);
        CHECK_FALSE(p.bound());
        CHECK(p.cpu() == -1);
        CHECK(p.queue(w) == status::invalid_argument);
        CHECK_FALSE(irq_work_is_busy(w));
    }
    // The item is still usable: nothing was half-queued.
    REQUIRE(irq_work_queue_on(d, w, d.cpus().front()) == status::ok);
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(runs.load() == 1);
}

TEST_CASE("irq_work_producer: items go to the bound CPU's worker wherever the producer runs") {
    irq_work_domain d(no_tick());
    const int target = d.cpus().back();
    irq_work_producer p;
    REQUIRE(p.bind(d, target) == status::ok);
    CHECK(p.bound());
    CHECK(p.cpu() == target);
    for (int here : d.cpus()) { // queue from every CPU: the target must not follow the caller
        CAPTURE(here);
        pin_to pin(here);
        std::atomic<thread_ctx*> ran_by{nullptr};
        std::atomic<int> ran_on{-1};
        irq_work_fn w{[&] {
            ran_by.store(current_thread_ctx());
            ran_on.store(sched_getcpu());
        }};
        const irq_work_producer copy = p; // a value: copies queue to the same CPU
        REQUIRE(copy.queue(w) == status::ok);
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(ran_by.load() == &d.worker(target));
        CHECK(ran_on.load() == target);
    }
    // Rebinding a bound producer to a bad CPU leaves the old binding.
    CHECK(p.bind(d, -1) == status::invalid_argument);
    CHECK(p.cpu() == target);
}

TEST_CASE("irq_work_producer: already_queued while pending; the pending run sees the second caller's write") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    irq_work_producer p;
    REQUIRE(p.bind(d, cpu) == status::ok);
    gate g;
    REQUIRE(p.queue(g.item) == status::ok);
    g.wait_entered(); // the worker is held inside the gate
    int seen = 0, value = 0;
    irq_work_fn w{[&] { seen = value; }};
    REQUIRE(p.queue(w) == status::ok);
    value = 42; // written before the failed claim below: the pending run must see it
    CHECK(p.queue(w) == status::already_queued);
    CHECK(irq_work_queue_on(d, w, cpu) == status::already_queued);
    g.release();
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(seen == 42);
}

TEST_CASE("irq_work_stats: backlog (pending, oldest age) grows while the worker is held, and drains to 0") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    irq_work_stats s0 = d.stats(cpu);
    CHECK(s0.pending == 0);
    CHECK(s0.oldest_pending_age.count() == 0);
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered(); // running, no longer pending
    CHECK(d.stats(cpu).pending == 0);
    std::vector<std::unique_ptr<irq_work_fn<std::function<void()>>>> items;
    std::atomic<int> runs{0};
    for (int i = 0; i < 5; ++i) {
        items.push_back(std::make_unique<irq_work_fn<std::function<void()>>>([&] { runs.fetch_add(1); }));
        REQUIRE(irq_work_queue_on(d, *items.back(), cpu) == status::ok);
    }
    const irq_work_stats s1 = d.stats(cpu);
    CHECK(s1.pending == 5);
    std::this_thread::sleep_for(2ms); // monotonic clock: the age can only grow (not a timing bound)
    const irq_work_stats s2 = d.stats(cpu);
    CHECK(s2.pending == 5);
    CHECK(s2.oldest_pending_age >= 2ms);
    CHECK(s2.oldest_pending_age > s1.oldest_pending_age);
    CHECK(d.total_stats().pending == 5);
    CHECK(d.total_stats().oldest_pending_age >= s2.oldest_pending_age);
    g.release();
    for (auto& it : items)
        REQUIRE(irq_work_sync(*it) == status::ok);
    CHECK(runs.load() == 5);
    const irq_work_stats s3 = d.stats(cpu);
    CHECK(s3.pending == 0);
    CHECK(s3.oldest_pending_age.count() == 0);
}

namespace {
/// A SCHED_FIFO thread spinning on `cpu` until stopped: RT load that starves lower-priority workers.
struct fifo_hog {
    std::atomic<bool> stop{false};
    std::atomic<bool> running{false};
    rt_thread t;
    fifo_hog(int cpu, int prio) {
        rt_thread_options o;
        o.name = "test-hog";
        o.priority = prio;
        o.cpu = cpu;
        o.require_rt = true;
        t = rt_thread(o, [this](thread_ctx&) {
            running.store(true, std::memory_order_release);
            while (!stop.load(std::memory_order_acquire)) {
            }
        });
        while (!running.load(std::memory_order_acquire))
            std::this_thread::yield();
    }
    ~fifo_hog() {
        stop.store(true, std::memory_order_release);
        t.join();
    }
};

/// Two CPUs the test may use (the domain's and the test thread's), or nothing.
bool two_cpus(int& worker_cpu, int& my_cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0 || CPU_COUNT(&set) < 2)
        return false;
    std::vector<int> c;
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set))
            c.push_back(i);
    my_cpu = c.front();
    worker_cpu = c.back();
    return true;
}
} // namespace

TEST_CASE("irq_work: a higher-priority SCHED_FIFO hog starves a priority-1 worker; stats show it; priority fixes it") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    int wcpu = -1, mine = -1;
    if (!two_cpus(wcpu, mine)) {
        rtdefer_test::skip_test("needs two CPUs: the hog's (and the worker's) and the test thread's");
        return;
    }
    pin_to pin(mine);
    std::atomic<int> runs{0};
    irq_work_fn w{[&] { runs.fetch_add(1); }};
    {
        irq_work_domain_options o = no_tick();
        o.cpus = {wcpu};
        o.require_rt = true;
        irq_work_domain d(o);
        REQUIRE(d.worker_sched(wcpu).priority == 1);
        irq_work_producer p;
        REQUIRE(p.bind(d, wcpu) == status::ok);
        {
            fifo_hog hog(wcpu, 2); // above the worker: it cannot run while the hog spins
            REQUIRE(p.queue(w) == status::ok);
            const irq_work_stats s1 = d.stats(wcpu);
            CHECK(s1.pending == 1);
            std::this_thread::sleep_for(5ms);
            const irq_work_stats s2 = d.stats(wcpu);
            CHECK(s2.pending == 1);
            CHECK(s2.runs_lazy == s1.runs_lazy);
            CHECK(s2.oldest_pending_age >= 5ms);
            CHECK(s2.oldest_pending_age > s1.oldest_pending_age);
            CHECK(runs.load() == 0);
        } // hog released: the worker runs the item
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(runs.load() == 1);
        CHECK(d.stats(wcpu).pending == 0);
        CHECK(d.stats(wcpu).oldest_pending_age.count() == 0);
    }
    {
        irq_work_domain_options o = no_tick();
        o.cpus = {wcpu};
        o.priority = 3; // above the RT load: the documented answer to starvation
        o.require_rt = true;
        irq_work_domain d(o);
        CHECK(d.worker_sched(wcpu).priority == 3);
        CHECK_FALSE(d.worker_sched(wcpu).degraded());
        fifo_hog hog(wcpu, 2);
        REQUIRE(irq_work_queue_on(d, w, wcpu) == status::ok);
        // The worker preempts the hog; with the bug (priority ignored) this waits for the hog.
        CHECK(rtdefer_test::eventually([&] { return runs.load() == 2; }));
        CHECK(d.stats(wcpu).pending == 0);
    }
    REQUIRE(irq_work_sync(w) == status::ok);
}

TEST_CASE("irq_work: hard items run in interrupt (signal) context on the worker") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().back();
    std::atomic<int> in_irq{-1};
    std::atomic<std::uint64_t> irqs_at_run{0};
    thread_ctx& worker = d.worker(cpu);
    const std::uint64_t before = interrupts_received(worker);
    irq_work_fn w{[&] {
                      in_irq.store(in_interrupt() ? 1 : 0, std::memory_order_relaxed);
                      irqs_at_run.store(interrupts_received(worker), std::memory_order_relaxed);
                  },
                  irq_work_kind::hard};
    REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(in_irq.load() == 1);
    CHECK(irqs_at_run.load() > before);
    CHECK(d.stats(cpu).hard_raises >= 1);
    CHECK(d.stats(cpu).runs_hard >= 1);

    // Normal items run in the worker's thread context.
    irq_work_fn n{[&] { in_irq.store(in_interrupt() ? 1 : 0, std::memory_order_relaxed); }};
    REQUIRE(irq_work_queue_on(d, n, cpu) == status::ok);
    REQUIRE(irq_work_sync(n) == status::ok);
    CHECK(in_irq.load() == 0);
}

TEST_CASE("irq_work: hard items run even if the domain's creator blocks the interrupt signal") {
    // Programs often block signals in main() and sigwait() elsewhere; threads inherit that mask. The
    // workers must unblock the interrupt signal themselves, or every IPI stays pending forever.
    const int signo = interrupt_signal() != 0 ? interrupt_signal() : default_interrupt_signal();
    std::atomic<int> in_irq{-1};
    status st = status::system_error;
    std::thread creator([&] {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, signo);
        CHECK(pthread_sigmask(SIG_BLOCK, &s, nullptr) == 0); // CHECK: never throw out of a thread
        irq_work_fn h{[&] { in_irq.store(in_interrupt() ? 1 : 0, std::memory_order_relaxed); },
                      irq_work_kind::hard};
        irq_work_domain d(no_tick()); // after h: on a failure the destructor still runs h first
        if (irq_work_queue_on(d, h, d.cpus().front()) != status::ok)
            return;
        // Not a timing claim: without the fix the item never runs (the deadline only avoids a hang).
        st = irq_work_sync_until(h, std::chrono::steady_clock::now() + 30s);
    });
    creator.join();
    CHECK(st == status::ok);
    CHECK(in_irq.load() == 1);
}

TEST_CASE("irq_work: LAZY items wait for the tick; normal items do not") {
    SUBCASE("long tick: a LAZY item waits while normal items behind it run") {
        irq_work_domain_options o;
        o.tick = std::chrono::seconds(3600); // never within this test
        std::atomic<int> lazy_runs{0};
        {
            irq_work_domain d(o);
            const int cpu = d.cpus().front();
            irq_work_fn lz{[&] { lazy_runs.fetch_add(1, std::memory_order_relaxed); }, irq_work_kind::lazy};
            const std::uint64_t raises = d.stats(cpu).lazy_raises;
            REQUIRE(irq_work_queue_on(d, lz, cpu) == status::ok);
            CHECK(d.stats(cpu).lazy_raises == raises); // no wake for a LAZY item
            irq_work_fn n{[] {}};
            REQUIRE(irq_work_queue_on(d, n, cpu) == status::ok);
            REQUIRE(irq_work_sync(n) == status::ok);
            CHECK(d.stats(cpu).lazy_raises == raises + 1);
            // The worker ran and went back to sleep without touching the tick list.
            CHECK(lazy_runs.load() == 0);
            CHECK(irq_work_is_pending(lz));
            CHECK(irq_work_needs_cpu(d, cpu));
        } // destruction runs what is queued
        CHECK(lazy_runs.load() == 1);
    }
    SUBCASE("short tick: a LAZY item runs at a tick") {
        irq_work_domain_options o;
        o.tick = 1ms;
        irq_work_domain d(o);
        const int cpu = d.cpus().front();
        std::atomic<int> runs{0};
        irq_work_fn lz{[&] { runs.fetch_add(1, std::memory_order_relaxed); }, irq_work_kind::lazy};
        REQUIRE(irq_work_queue_on(d, lz, cpu) == status::ok);
        REQUIRE(irq_work_sync(lz) == status::ok);
        CHECK(runs.load() == 1);
        CHECK(d.stats(cpu).ticks >= 1);
    }
    SUBCASE("nohz: after idle periods the tick stops; the next LAZY add restarts it (one wake)") {
        irq_work_domain_options o;
        o.tick = 1ms;
        o.tick_stop_after = 2;
        irq_work_domain d(o);
        const int cpu = d.cpus().front();
        while (!d.stats(cpu).tick_stopped) // an event, not a timing assumption
            std::this_thread::sleep_for(1ms);
        std::atomic<int> runs{0};
        irq_work_fn lz{[&] { runs.fetch_add(1, std::memory_order_relaxed); }, irq_work_kind::lazy};
        const irq_work_stats before = d.stats(cpu);
        REQUIRE(irq_work_queue_on(d, lz, cpu) == status::ok);
        REQUIRE(irq_work_sync(lz) == status::ok);
        const irq_work_stats after = d.stats(cpu);
        CHECK(runs.load() == 1);
        CHECK(after.tick_restarts == before.tick_restarts + 1);
        CHECK(after.lazy_raises == before.lazy_raises); // not treated as a normal item
        CHECK(after.ticks >= before.ticks + 1);         // it ran at a tick
    }
    SUBCASE("tick off: a LAZY item wakes the worker like a normal one") {
        irq_work_domain d(no_tick());
        const int cpu = d.cpus().front();
        std::atomic<int> runs{0};
        irq_work_fn lz{[&] { runs.fetch_add(1, std::memory_order_relaxed); }, irq_work_kind::lazy};
        const std::uint64_t raises = d.stats(cpu).lazy_raises;
        REQUIRE(irq_work_queue_on(d, lz, cpu) == status::ok);
        REQUIRE(irq_work_sync(lz) == status::ok);
        CHECK(runs.load() == 1);
        CHECK(d.stats(cpu).lazy_raises == raises + 1);
    }
}

TEST_CASE("irq_work: only the add that makes the list non-empty wakes the worker") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered();
    const std::uint64_t raises = d.stats(cpu).lazy_raises;
    std::atomic<int> runs{0};
    std::vector<std::unique_ptr<irq_work_fn<std::function<void()>>>> items;
    for (int i = 0; i < 10; ++i)
        items.push_back(std::make_unique<irq_work_fn<std::function<void()>>>(
            std::function<void()>([&] { runs.fetch_add(1, std::memory_order_relaxed); })));
    for (auto& it : items)
        REQUIRE(irq_work_queue_on(d, *it, cpu) == status::ok);
    CHECK(d.stats(cpu).lazy_raises == raises + 1); // ten adds, one raise
    g.release();
    for (auto& it : items)
        REQUIRE(irq_work_sync(*it) == status::ok);
    CHECK(runs.load() == 10);
}

TEST_CASE("irq_work: the worker runs SCHED_FIFO at the configured priority (default 1)") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    for (int prio : {0, 3}) {
        irq_work_domain_options o = no_tick();
        if (prio != 0)
            o.priority = prio;
        const int expected = prio != 0 ? prio : 1;
        irq_work_domain d(o);
        for (int cpu : d.cpus()) {
            CAPTURE(cpu);
            CHECK_FALSE(d.worker_sched(cpu).degraded());
            int policy = -1;
            sched_param sp{};
            irq_work_fn w{[&] { pthread_getschedparam(pthread_self(), &policy, &sp); }};
            REQUIRE(irq_work_queue_on(d, w, cpu) == status::ok);
            REQUIRE(irq_work_sync(w) == status::ok);
            CHECK(policy == SCHED_FIFO);
            CHECK(sp.sched_priority == expected);
        }
    }
}

TEST_CASE("irq_work_sync: from the item's own callback returns would_deadlock") {
    irq_work_domain d(no_tick());
    std::vector<irq_work_kind> kinds{irq_work_kind::normal};
    // irq_work_sync is a blocking function: RealtimeSanitizer rightly reports any call from hard
    // context (the hook is a real-time context), even this one that returns at once. Elsewhere the
    // hard case checks that the self-detection also works through the signal-context runner.
    if (!RTDEFER_HAS_RTSAN)
        kinds.push_back(irq_work_kind::hard);
    for (irq_work_kind kind : kinds) {
        CAPTURE(static_cast<int>(kind));
        status st = status::ok;
        irq_work_fn w{[&](irq_work& self) { st = irq_work_sync(self); }, kind};
        REQUIRE(irq_work_queue(d, w) == status::ok);
        REQUIRE(irq_work_sync(w) == status::ok);
        CHECK(st == status::would_deadlock);
    }
}

TEST_CASE("irq_work: overlapping runs (re-queued to another CPU) keep the item busy until both end") {
    irq_work_domain d(no_tick());
    if (d.cpus().size() < 2) {
        rtdefer_test::skip_test("needs two CPUs");
        return;
    }
    const int cpu0 = d.cpus()[0], cpu1 = d.cpus()[1];
    std::atomic<int> runs{0};
    std::atomic<std::uint32_t> second_done{0};
    bool busy_while_first_runs = false;
    irq_work_domain* dp = &d;
    irq_work_fn w{[&](irq_work& self) {
        if (runs.fetch_add(1) == 0) {
            // First run (CPU 0): re-queue onto CPU 1 and wait until that second run has finished.
            CHECK(irq_work_queue_on(*dp, self, cpu1) == status::ok); // CHECK: never throw out of a callback
            while (second_done.load(std::memory_order_acquire) == 0)
                second_done.wait(0, std::memory_order_acquire);
            // The kernel's cmpxchg protocol would have cleared BUSY here (the second run ended and
            // no claim was pending), letting irq_work_sync return while this callback still runs.
            busy_while_first_runs = irq_work_is_busy(self);
        } else {
            second_done.store(1, std::memory_order_release);
            second_done.notify_all();
        }
    }};
    REQUIRE(irq_work_queue_on(d, w, cpu0) == status::ok);
    REQUIRE(irq_work_sync(w) == status::ok);
    CHECK(runs.load() == 2);
    CHECK(busy_while_first_runs);
    CHECK_FALSE(irq_work_is_busy(w));
}

TEST_CASE("irq_work_sync: from hard context: would_deadlock, never a wait, never lazy callbacks in the handler") {
    if (RTDEFER_HAS_RTSAN) {
        // irq_work_sync is blocking: RealtimeSanitizer rightly reports it in hard context.
        rtdefer_test::skip_test("calls a blocking function from hard context on purpose (RTSan build)");
        return;
    }
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered(); // the worker is inside g.item's callback
    std::atomic<int> lazy_in_irq{-1};
    irq_work_fn l{[&] { lazy_in_irq.store(in_interrupt() ? 1 : 0, std::memory_order_relaxed); }};
    REQUIRE(irq_work_queue_on(d, l, cpu) == status::ok); // pending behind the gate, on the worker's own list
    status st_running = status::ok, st_queued = status::ok;
    irq_work_fn h{[&] {
                      st_running = irq_work_sync(g.item); // the run this handler interrupted
                      st_queued = irq_work_sync(l);       // queued on the interrupted worker's list
                  },
                  irq_work_kind::hard};
    REQUIRE(irq_work_queue_on(d, h, cpu) == status::ok); // interrupts that callback on the same thread
    REQUIRE(irq_work_sync(h) == status::ok);
    CHECK(st_running == status::would_deadlock);
    // Waiting in the handler would block the only thread that runs `l`; helping would run `l` (which
    // may lock and free) in signal context.
    CHECK(st_queued == status::would_deadlock);
    CHECK(irq_work_is_pending(l));
    g.release();
    REQUIRE(irq_work_sync(g.item) == status::ok);
    REQUIRE(irq_work_sync(l) == status::ok);
    CHECK(lazy_in_irq.load() == 0);
}

TEST_CASE("irq_work_sync: waits for a running callback, then the item may be freed") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    std::atomic<bool> finished{false};
    // The item lives on the heap: ASan reports any runner access after the delete below.
    auto* w = new irq_work_fn<std::function<void()>>(std::function<void()>([&] {
        g.item.func(g.item); // reuse the gate's body: block until released
        finished.store(true, std::memory_order_relaxed);
    }));
    REQUIRE(irq_work_queue_on(d, *w, cpu) == status::ok);
    g.wait_entered();
    std::atomic<bool> synced{false};
    std::thread syncer([&] {
        CHECK(irq_work_sync(*w) == status::ok);
        synced.store(true, std::memory_order_release);
        // The runner no longer touches the item: free it right away, as the contract allows.
        delete w;
    });
    CHECK(irq_work_is_busy(*w)); // the syncer cannot have returned: the callback is still blocked
    CHECK_FALSE(synced.load(std::memory_order_acquire));
    g.release();
    syncer.join();
    CHECK(finished.load(std::memory_order_relaxed));
}

TEST_CASE("irq_work_sync: many items, sync and free each right after it ran (ASan)") {
    irq_work_domain d(no_tick());
    const std::size_t n = rtdefer_test::scaled(2000, 200);
    std::atomic<std::size_t> runs{0};
    for (std::size_t i = 0; i < n; ++i) {
        const int cpu = d.cpus()[i % d.cpus().size()];
        const irq_work_kind kind = (i % 3 == 0) ? irq_work_kind::hard : irq_work_kind::normal;
        auto* w = new irq_work_fn<std::function<void()>>(
            std::function<void()>([&runs] { runs.fetch_add(1, std::memory_order_relaxed); }), kind);
        REQUIRE(irq_work_queue_on(d, *w, cpu) == status::ok);
        REQUIRE(irq_work_sync(*w) == status::ok);
        delete w;
    }
    CHECK(runs.load() == n);
}

TEST_CASE("irq_work_sync: from a worker, waiting for an item queued behind us on our own CPU") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    std::atomic<int> b_runs{0};
    irq_work_fn b{[&] { b_runs.fetch_add(1, std::memory_order_relaxed); }};
    status st = status::system_error;
    irq_work_domain* dp = &d;
    irq_work_fn a{[&] {
        // b goes on this worker's own list; only this worker runs it: sync must help, not hang.
        if (irq_work_queue_on(*dp, b, cpu) == status::ok)
            st = irq_work_sync(b);
    }};
    REQUIRE(irq_work_queue_on(d, a, cpu) == status::ok);
    REQUIRE(irq_work_sync(a) == status::ok);
    CHECK(st == status::ok);
    CHECK(b_runs.load() == 1);
}

TEST_CASE("irq_work_sync_until: times out while the callback is held") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered();
    CHECK(irq_work_sync_until(g.item, std::chrono::steady_clock::now() + 1ms) == status::timed_out);
    g.release();
    CHECK(irq_work_sync(g.item) == status::ok);
}

namespace {

/// Holds a domain's worker in a callback that blocks the interrupt signal: IPIs sent to that CPU stay
/// pending (one per empty->non-empty raise) until release(), so its hard items run only through an
/// irq_work_run() caller. When unblocked, the pending IPIs run whatever is left. Declare it after
/// the domain: the destructor releases the worker and waits for the holder.
struct blocked_worker {
    std::atomic<int> phase{0}; // 1: holding, signal blocked; 2: released
    irq_work_fn<std::function<void()>> holder{[this] {
        sigset_t s, old;
        sigemptyset(&s);
        sigaddset(&s, interrupt_signal());
        pthread_sigmask(SIG_BLOCK, &s, &old);
        phase.store(1, std::memory_order_release); // pairs with hold()'s acquire
        phase.notify_all();
        while (phase.load(std::memory_order_acquire) != 2) // pairs with release()
            phase.wait(1, std::memory_order_acquire);
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }};
    /// Effects: queues the holder on `cpu` and waits until it holds. Returns: the queue's status.
    status hold(irq_work_domain& d, int cpu) {
        const status st = irq_work_queue_on(d, holder, cpu);
        if (st == status::ok)
            while (phase.load(std::memory_order_acquire) != 1) // pairs with the holder's release
                phase.wait(0, std::memory_order_acquire);
        return st;
    }
    void release() {
        phase.store(2, std::memory_order_release); // pairs with the holder's acquire
        phase.notify_all();
    }
    ~blocked_worker() {
        release();
        (void)irq_work_sync(holder);
    }
};

} // namespace

TEST_CASE("irq_work_run: runs the local CPU's raised list in the caller") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    pin_to pin(cpu);
    thread_ctx& self = attach_this_thread();
    // The IPI stays pending, so the hard item can only run through our irq_work_run().
    blocked_worker worker;
    REQUIRE(worker.hold(d, cpu) == status::ok);
    std::atomic<thread_ctx*> ran_by{nullptr};
    status self_sync = status::ok;
    irq_work_fn h{[&](irq_work& me) {
                      ran_by.store(current_thread_ctx(), std::memory_order_relaxed);
                      // Self-sync is detected outside the workers too (irq_work_run is nonblocking:
                      // RealtimeSanitizer rightly reports the blocking call, so not in that build).
                      if (!RTDEFER_HAS_RTSAN)
                          self_sync = irq_work_sync(me);
                  },
                  irq_work_kind::hard};
    REQUIRE(irq_work_queue_on(d, h, cpu) == status::ok);
    CHECK(irq_work_needs_cpu(d, cpu));
    CHECK(irq_work_needs_cpu(d));
    CHECK(irq_work_run(d) == 1);
    CHECK(ran_by.load() == &self);
    if (!RTDEFER_HAS_RTSAN)
        CHECK(self_sync == status::would_deadlock);
    CHECK_FALSE(irq_work_is_busy(h));
    worker.release(); // the pending IPI runs the hook: the list is empty
    REQUIRE(irq_work_sync(worker.holder) == status::ok);
    CHECK(irq_work_run(d) == 0);
}

TEST_CASE("irq_work: destruction runs what is queued, hard and LAZY included, then stops") {
    irq_work_domain_options o;
    o.tick = std::chrono::seconds(3600); // LAZY items can only run in the teardown
    std::atomic<int> runs{0};
    std::atomic<int> lazy_runs{0};
    std::atomic<int> hard_in_irq{0};
    std::vector<std::unique_ptr<irq_work_fn<std::function<void()>>>> items;
    auto make = [&](irq_work_kind kind, std::function<void()> f) -> irq_work& {
        items.push_back(std::make_unique<irq_work_fn<std::function<void()>>>(std::move(f), kind));
        return *items.back();
    };
    {
        irq_work_domain d(o);
        for (int i = 0; i < 60; ++i) {
            const int cpu = d.cpus()[static_cast<std::size_t>(i) % d.cpus().size()];
            if (i % 3 == 0) {
                REQUIRE((irq_work_queue_on(d, make(irq_work_kind::lazy, [&] { lazy_runs.fetch_add(1); }), cpu) == status::ok));
            } else if (i % 3 == 1) {
                REQUIRE((irq_work_queue_on(d, make(irq_work_kind::normal, [&] { runs.fetch_add(1); }), cpu) == status::ok));
            } else {
                REQUIRE((irq_work_queue_on(
                    d, make(irq_work_kind::hard, [&] { hard_in_irq.fetch_add(in_interrupt() ? 1 : 0); }), cpu) == status::ok));
            }
        }
        CHECK(lazy_runs.load() == 0);
    }
    CHECK(lazy_runs.load() == 20);
    CHECK(runs.load() == 20);
    CHECK(hard_in_irq.load() == 20);
    for (auto& it : items)
        CHECK_FALSE(irq_work_is_busy(*it));
}

TEST_CASE("irq_work: a hard item interrupts the worker while it runs a lazy callback") {
    irq_work_domain d(no_tick());
    const int cpu = d.cpus().front();
    gate g;
    REQUIRE(irq_work_queue_on(d, g.item, cpu) == status::ok);
    g.wait_entered();
    std::atomic<int> in_irq{-1};
    irq_work_fn h{[&] { in_irq.store(in_interrupt() ? 1 : 0); }, irq_work_kind::hard};
    REQUIRE(irq_work_queue_on(d, h, cpu) == status::ok);
    REQUIRE(irq_work_sync(h) == status::ok); // returns while the gate still holds the worker
    CHECK(in_irq.load() == 1);
    CHECK(irq_work_is_busy(g.item));
    g.release();
    REQUIRE(irq_work_sync(g.item) == status::ok);
}

TEST_CASE("irq_work_fn: stores the callable inline, invokes with or without the item") {
    struct big {
        char bytes[200];
    };
    big payload{};
    payload.bytes[199] = 7;
    int got = 0;
    irq_work_fn w{[payload, &got] { got = payload.bytes[199]; }};
    static_assert(sizeof(w) >= sizeof(irq_work) + sizeof(big));
    irq_work* seen = nullptr;
    irq_work_fn w2{[&seen](irq_work& self) { seen = &self; }};
    irq_work_domain d(no_tick());
    REQUIRE(irq_work_queue(d, w) == status::ok);
    REQUIRE(irq_work_queue(d, w2) == status::ok);
    REQUIRE(irq_work_sync(w) == status::ok);
    REQUIRE(irq_work_sync(w2) == status::ok);
    CHECK(got == 7);
    CHECK(seen == static_cast<irq_work*>(&w2));
}

TEST_CASE("irq_work: two domains coexist; each hook runs only its own worker's list") {
    irq_work_domain a(no_tick());
    irq_work_domain b(no_tick());
    const int cpu = a.cpus().front();
    std::atomic<thread_ctx*> ran_a{nullptr}, ran_b{nullptr};
    irq_work_fn wa{[&] { ran_a.store(current_thread_ctx()); }, irq_work_kind::hard};
    irq_work_fn wb{[&] { ran_b.store(current_thread_ctx()); }, irq_work_kind::hard};
    REQUIRE(irq_work_queue_on(a, wa, cpu) == status::ok);
    REQUIRE(irq_work_queue_on(b, wb, cpu) == status::ok);
    REQUIRE(irq_work_sync(wa) == status::ok);
    REQUIRE(irq_work_sync(wb) == status::ok);
    CHECK(ran_a.load() == &a.worker(cpu));
    CHECK(ran_b.load() == &b.worker(cpu));
}

// ---------------------------------------------------------------------------------------------
// RealtimeSanitizer: an RT thread frees memory through a lazy item
// ---------------------------------------------------------------------------------------------

namespace {

struct buffer {
    llist_node link;
    std::uint64_t payload[32];
};

/// The retire pattern: RT threads push on an llist and queue one long-lived item; the worker frees.
struct retirer {
    llist_head retired;
    std::atomic<std::size_t> freed{0};
    // Atomic: the thread migrates, so two reclaim runs may overlap on two CPUs' workers; relaxed:
    // read after irq_work_sync(), whose acquire orders the last run's store before the read.
    std::atomic<pid_t> freeing_tid{0};
    irq_work_fn<std::function<void()>> reclaim{[this] {
        llist_node* n = retired.del_all();
        while (n != nullptr) {
            llist_node* next = n->next;
            delete llist_entry<buffer, &buffer::link>(n); // free(): fine here, this is the worker
            freed.fetch_add(1, std::memory_order_relaxed);
            n = next;
        }
        freeing_tid.store(static_cast<pid_t>(syscall(SYS_gettid)), std::memory_order_relaxed);
    }};
};

/// The real-time loop: checked by -Wfunction-effects (clang) and watched by RealtimeSanitizer.
/// Everything it calls must be nonblocking: the llist add and irq_work_queue (whose only syscall is
/// the deliberate, exempted worker wake on empty→non-empty).
std::size_t rt_retire_loop(irq_work_domain& d, retirer& r, buffer* const* bufs, std::size_t n) noexcept
    RTDEFER_NONBLOCKING {
    std::size_t queued = 0;
    for (std::size_t i = 0; i < n; ++i) {
        bufs[i]->payload[0] = i; // "use" the buffer, then retire it
        (void)r.retired.add(bufs[i]->link);
        // false means a reclaim run is pending and will see this buffer (the claim's ordering).
        if (irq_work_queue(d, r.reclaim) == status::ok)
            ++queued;
    }
    return queued;
}

} // namespace

TEST_CASE("irq_work: an RT thread frees memory via a lazy item; RealtimeSanitizer sees no violation") {
    irq_work_domain d(no_tick());
    retirer r;
    const std::size_t n = 10000;
    std::vector<buffer*> bufs(n);
    for (auto& b : bufs)
        b = new buffer{};
    rt_thread_options to;
    to.name = "rt-retire";
    to.priority = 10;
    std::size_t queued = 0;
    pid_t rt_tid = 0;
    {
        // The loop starts once the creator has the thread's scheduling report (`go`).
        std::atomic<std::uint32_t> go{0};
        rt_thread t(to, [&](thread_ctx& self) {
            while (go.load(std::memory_order_acquire) == 0)
                go.wait(0, std::memory_order_acquire);
            rt_tid = self.tid;
            queued = rt_retire_loop(d, r, bufs.data(), n);
        });
        go.store(1, std::memory_order_release);
        go.notify_all();
        t.join();
        if (t.sched_status().degraded())
            MESSAGE("SCHED_FIFO refused: the RT loop ran SCHED_OTHER (the RTSan check is unaffected)");
    }
    REQUIRE(irq_work_sync(r.reclaim) == status::ok);
    CHECK(r.freed.load() == n);
    CHECK(queued >= 1);
    CHECK(r.freeing_tid.load(std::memory_order_relaxed) != rt_tid); // the free happened in the worker
    const std::string rtsan = RTDEFER_HAS_RTSAN ? "yes" : "no (not a -fsanitize=realtime build)";
    MESSAGE("RTSan active: " << rtsan);
}

#if RTDEFER_HAS_RTSAN
#define RTDEFER_IRQ_WORK_TEST_TRUST_BEGIN                                                          \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wfunction-effects\"")
#define RTDEFER_IRQ_WORK_TEST_TRUST_END _Pragma("clang diagnostic pop")
namespace {
[[gnu::noinline]] void rt_free_inline(buffer* b) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_IRQ_WORK_TEST_TRUST_BEGIN
    delete b; // a real-time violation RealtimeSanitizer must report
    RTDEFER_IRQ_WORK_TEST_TRUST_END
}
} // namespace

TEST_CASE("irq_work: RealtimeSanitizer is really watching (freeing inline in the RT loop is reported)") {
    // The negative control for the test above, in a child process because RTSan aborts on a report.
    auto* b = new buffer{};
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The expected report would look like a failure in the logs: send it to /dev/null.
        const int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        rt_free_inline(b);
        _exit(0); // not reached when RTSan is active
    }
    int st = 0;
    REQUIRE(waitpid(child, &st, 0) == child);
    CHECK_FALSE((WIFEXITED(st) && WEXITSTATUS(st) == 0));
    delete b;
}
#endif

// ---------------------------------------------------------------------------------------------
// irq_work_run() on a host thread cancelled asynchronously
// ---------------------------------------------------------------------------------------------

namespace {

std::atomic<std::uint64_t> cancel_item_runs{0};
std::atomic<std::uint64_t> cancel_item_runs_on_host{0};
std::atomic<thread_ctx*> cancel_host_ctx{nullptr};
std::atomic<irq_work_domain*> cancel_domain{nullptr};

// Spins ~50 µs, so that a chain is in hand on the host most of the time when the cancel arrives.
void cancel_item_fn(irq_work&) noexcept {
    for (int i = 0; i < 125'000; ++i) // no clock call: this runs in a real-time (RTSan) context
        asm volatile("" ::: "memory");
    if (current_thread_ctx() == cancel_host_ctx.load(std::memory_order_relaxed))
        cancel_item_runs_on_host.fetch_add(1, std::memory_order_relaxed);
    cancel_item_runs.fetch_add(1, std::memory_order_release);
}

// The host: pinned to the worker's CPU, it runs the raised list with irq_work_run() (the worker is
// held with the interrupt signal blocked, so only the host runs hard items). A plain function (no destructors, not noexcept), so that the forced unwind of
// an asynchronous cancellation may pass through it.
void* irq_cancel_host(void*) {
    thread_ctx& self = attach_this_thread();
    int old = 0;
    ::pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    irq_work_domain& d = *cancel_domain.load(std::memory_order_acquire);
    cancel_host_ctx.store(&self, std::memory_order_release);
    for (;;)
        (void)irq_work_run(d);
    return nullptr;
}

} // namespace

TEST_CASE("irq_work_run: asynchronous cancellation of the host never loses a taken chain") {
    if (const char* why = rtdefer_test::async_cancel_unsupported()) {
        rtdefer_test::skip_test(why);
        return;
    }
    const std::size_t rounds = rtdefer_test::scaled(100, 10);
    const int rc = rtdefer_test::in_child([rounds] {
        irq_work_domain d(no_tick());
        const int cpu = d.cpus().front();
        cancel_domain.store(&d, std::memory_order_release);
        // The worker's IPIs stay pending until the end: only the hosts run hard items.
        blocked_worker worker;
        if (worker.hold(d, cpu) != status::ok)
            return 9;
        irq_work items[] = {irq_work_init_hard(&cancel_item_fn), irq_work_init_hard(&cancel_item_fn),
                            irq_work_init_hard(&cancel_item_fn), irq_work_init_hard(&cancel_item_fn)};
        std::mt19937 rng(777);
        std::uint64_t queued = 0;
        for (std::size_t r = 0; r < rounds; ++r) {
            cancel_host_ctx.store(nullptr);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            pthread_attr_setaffinity_np(&attr, sizeof set, &set);
            pthread_t host;
            const int create_rc = ::pthread_create(&host, &attr, &irq_cancel_host, nullptr);
            pthread_attr_destroy(&attr);
            if (create_rc != 0)
                return 10;
            while (cancel_host_ctx.load(std::memory_order_acquire) == nullptr)
                std::this_thread::yield();
            std::atomic<bool> stop{false};
            // Bursts of the four items (each re-queued only once its last run finished), so chains form.
            std::thread sender([&] {
                while (!stop.load(std::memory_order_acquire)) {
                    for (irq_work& w : items)
                        if (!irq_work_is_busy(w) && (irq_work_queue_on(d, w, cpu) == status::ok))
                            ++queued;
                    std::this_thread::yield();
                }
            });
            const rtdefer_test::cancel_outcome c = rtdefer_test::cancel_and_join(host, std::chrono::microseconds(rng() % 3000));
            stop.store(true, std::memory_order_release);
            sender.join();
            if (!c.cancelled())
                return 11; // (the worker's destructor releases it)
        }
        worker.release(); // the worker runs what the last host left queued
        // A chain taken by a host and dropped by its cancel would leave its items BUSY forever.
        for (irq_work& w : items)
            if (irq_work_sync_until(w, std::chrono::steady_clock::now() + 10s) != status::ok) {
                std::fprintf(stderr, "an item stayed busy after its host was cancelled\n");
                return 12;
            }
        if (irq_work_sync(worker.holder) != status::ok)
            return 14;
        const std::uint64_t runs = cancel_item_runs.load();
        std::printf("irq_work_run async cancel: %zu rounds, %llu queued, %llu run (%llu by the host)\n", rounds,
                    (unsigned long long)queued, (unsigned long long)runs,
                    (unsigned long long)cancel_item_runs_on_host.load());
        std::fflush(stdout); // the child leaves with _exit()
        return runs == queued && cancel_item_runs_on_host.load() > 0 ? 0 : 13;
    });
    CHECK(rc == 0);
}

// ---------------------------------------------------------------------------------------------
// The item state machine over a swapped Atom: a competing transition injected between a load and
// the CAS it seeds, or between the sync's check and its futex_wait, deterministically.
// ---------------------------------------------------------------------------------------------

#include "injecting_atomic.hpp"

namespace {

using injected_word = rtdefer_test::injecting_atomic<std::uint32_t>;

std::uint32_t injected_claim_result = 0;
int injected_end_cleared = 0;
void inject_claim(injected_word& w) { injected_claim_result = detail::irq_work_flags_claim(w); }
void inject_end(injected_word& w) { injected_end_cleared += detail::irq_work_flags_end(w) ? 1 : 0; }
void inject_begin_end(injected_word& w) {
    detail::irq_work_flags_begin(w);
    inject_end(w);
}

/// The word of a queued item taken off its list and running: claim, then the runner's begin.
void claim_and_begin(injected_word& w) {
    REQUIRE(detail::irq_work_flags_claim(w) != ~std::uint32_t{0});
    detail::irq_work_flags_begin(w);
    REQUIRE(w.std::atomic<std::uint32_t>::load(std::memory_order_relaxed) == (irq_work_flags::busy | irq_work_flags::active_one));
}

std::uint32_t raw(const injected_word& w) { return w.std::atomic<std::uint32_t>::load(std::memory_order_seq_cst); }

// The operations, numbered from 0 as injecting_atomic counts them. irq_work_flags_end: #0 its load,
// #1 its first CAS. irq_work_flags_wait_idle: only the condition's seq_cst loads, #0 before
// registering, #1 after the futex snapshot (WV2), #2 the re-check after a wake or poll.
constexpr int end_first_cas = 1;
constexpr int wait_check_after_snapshot = 1;
constexpr int wait_recheck = 2;

} // namespace

TEST_CASE("irq_work item state (Atom): a claim between a run's load and its CAS keeps the item busy and pending") {
    injected_word w{0};
    claim_and_begin(w);
    injected_claim_result = 0;
    auto claim = [&] { inject_claim(w); };
    w.inject_before(end_first_cas, claim);      // re-queue lands after end()'s load, before its CAS
    CHECK_FALSE(detail::irq_work_flags_end(w)); // BUSY stays: the new claim must run
    CHECK(w.fired());
    CHECK(w.cas_failures() >= 1);               // the CAS saw the claim and retried
    CHECK(injected_claim_result != ~std::uint32_t{0}); // the claim won (item was not pending)
    CHECK(raw(w) == irq_work_flags::claimed);   // PENDING | BUSY, no run in progress
    // The re-queued run then ends normally and frees the item.
    w.disarm();
    detail::irq_work_flags_begin(w);
    CHECK(detail::irq_work_flags_end(w));
    CHECK(raw(w) == 0);
}

TEST_CASE("irq_work item state (Atom): two overlapping runs' ends racing: exactly one clears BUSY and wakes once") {
    injected_word w{0};
    claim_and_begin(w);                  // first run (CPU A)
    REQUIRE(detail::irq_work_flags_claim(w) != ~std::uint32_t{0}); // its callback re-queues to CPU B
    detail::irq_work_flags_begin(w);     // second run begins while the first still runs
    REQUIRE(raw(w) == (irq_work_flags::busy | 2 * irq_work_flags::active_one));
    // A syncer registered in the word's bucket: count the wakes the two ends make.
    detail::wait_var_bucket& b = detail::var_waitqueue(&w);
    b.waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint64_t wakes = b.futex_wakes.load(std::memory_order_relaxed);
    injected_end_cleared = 0;
    auto end = [&] { inject_end(w); };
    w.inject_before(end_first_cas, end); // the second run ends between the first's load and CAS
    const bool cleared = detail::irq_work_flags_end(w);
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    CHECK(w.fired());
    CHECK(w.cas_failures() >= 1);
    CHECK(injected_end_cleared == 0); // the injected end saw ACTIVE 2: not the last one out
    CHECK(cleared);                   // the retried CAS saw ACTIVE 1: last out, clears BUSY
    CHECK(raw(w) == 0);
    CHECK(b.futex_wakes.load(std::memory_order_relaxed) - wakes == 1);
}

TEST_CASE("irq_work item state (Atom): a run's end between the sync's check and its futex_wait is not lost") {
    injected_word w{0};
    claim_and_begin(w);
    // The run ends right after the check that follows the futex snapshot read BUSY: the waiter is
    // registered, so the end's wake must reach it. Armed here, before the syncer starts; the
    // syncer alone touches the counters until the join.
    injected_end_cleared = 0;
    auto end = [&] { inject_end(w); };
    w.inject_after(wait_check_after_snapshot, end);
    std::atomic<bool> done{false};
    status result = status::invalid_argument;
    std::thread syncer([&] {
        result = detail::irq_work_flags_wait_idle(w, std::chrono::steady_clock::time_point::max(),
                                                  detail::wait_var_no_round{}, 0ns);
        done.store(true, std::memory_order_release);
    });
    const bool returned = rtdefer_test::eventually([&] { return done.load(std::memory_order_acquire); });
    CHECK_MESSAGE(returned, "irq_work sync slept through the end of the run it waited for");
    while (!done.load(std::memory_order_acquire)) { // unstick it (BUSY is clear) to join
        detail::wake_up_var(&w);
        std::this_thread::sleep_for(1ms);
    }
    syncer.join();
    CHECK(result == status::ok);
    CHECK(w.fired());
    CHECK(injected_end_cleared == 1);
    CHECK(w.ops() == 3); // the check that missed, then the re-check after the wake
}

TEST_CASE("irq_work item state (Atom): a queue between a wake and the sync's re-check keeps it waiting") {
    injected_word w{0};
    claim_and_begin(w);
    // Single thread, driven from the wait itself (the 1 ms poll of a worker's sync re-checks without
    // a wake): the check after the snapshot is followed by the run's end (BUSY clear, wake); right
    // before the re-check the item is queued again; the sync must see BUSY and wait for that run,
    // which the third round runs (a worker helping).
    auto claim = [&] { inject_claim(w); };
    auto end_then_claim = [&] {
        inject_end(w);
        w.then_before(wait_recheck, claim);
    };
    w.inject_after(wait_check_after_snapshot, end_then_claim);
    injected_end_cleared = 0;
    injected_claim_result = 0;
    int rounds = 0;
    std::uint32_t busy_seen_in_round3 = 0;
    const status s = detail::irq_work_flags_wait_idle(
        w, std::chrono::steady_clock::now() + 60s,
        [&]() noexcept {
            if (++rounds == 3) {
                busy_seen_in_round3 = raw(w) & irq_work_flags::busy;
                inject_begin_end(w);
            }
        },
        std::chrono::nanoseconds(1ms));
    CHECK(s == status::ok);
    CHECK(w.fired());
    CHECK(injected_claim_result != ~std::uint32_t{0}); // the queue won its claim after the end
    CHECK(busy_seen_in_round3 != 0);      // the sync did not return at the re-check that saw it queued
    CHECK(rounds == 3);
    CHECK(injected_end_cleared == 2); // the first run's end, then the re-queued run's
    CHECK(raw(w) == 0);
}
