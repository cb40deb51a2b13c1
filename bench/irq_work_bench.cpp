// irq_work_bench: rtdefer irq_work beside its peers and this machine's limits, all in one run.
//
//   irq_work_bench [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N]
//
// 1. Enqueue cost seen by a SCHED_FIFO producer (CPU a, priority 80) handing work to a consumer on
//    CPU b (the irq_work worker or a peer's consumer, all SCHED_FIFO 70: see consumer_priority),
//    p50/p99/p99.9/max, in bursts of 100 with a gap
//    in between (so the consumer goes back to sleep and the first add of a burst pays the wake):
//      rtdefer irq_work_queue_on (normal item: worker woken on empty→non-empty)
//      rtdefer irq_work_queue_on (LAZY item, 1 ms tick: never a syscall)
//      std::mutex + std::condition_variable + std::deque work queue (notify_one after each push)
//      boost::lockfree::queue (bounded, no allocation) + futex wake (rtdefer::unpark, syscall only
//      if the consumer sleeps)
//      liburcu call_rcu (memb flavour), the peer of LAZY irq_work: memory handed to a worker thread
//      that runs the callbacks later (after a grace period), no wake per item
//    plus the producer's allocations per 1000 enqueues.
// 2. Wake syscalls per 1000 enqueues in bursts of 1, 10 and 100 (gap between bursts).
// 3. Enqueue-to-run latency: a normal item to a sleeping worker, as a ratio to the futex wake-to-run
//    baseline; a hard item to a busy worker, as a ratio to the signal-IPI-to-busy-thread baseline;
//    the peers' enqueue-to-run beside them.
// Correctness checks (non-zero exit on failure): every successful claim ran exactly once, fresh items
// always claim, the peers deliver every item exactly once, LAZY items never wake the worker.
#include "harness/alloc_counter.hpp"
#include "harness/baseline.hpp"
#include "harness/report.hpp"

#include <rtdefer/irq_work.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>

#include <boost/lockfree/queue.hpp>

#if RTDEFER_BENCH_HAVE_URCU // bench/meson.build: liburcu found
#include <urcu/urcu-memb.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace rtdefer_bench;
using rtdefer::irq_work;
using rtdefer::irq_work_domain;
using rtdefer::irq_work_kind;

namespace {

constexpr int producer_priority = 80;
// The library's default worker priority is 1 (below every other real-time thread, as the kernel's
// irq_work/N). This machine is shared with other real-time tests that would starve a priority-1
// consumer for seconds, so the bench runs the worker and the peers' consumers at 70: below the
// producer, above the noise. Same priority for all, so the comparison is fair.
constexpr int consumer_priority = 70;

/// One unit of work. The consumer (worker callback or peer consumer) stamps when it runs it.
struct bench_item {
    irq_work work; // first member: the callback gets back to the item
    std::atomic<std::uint64_t> ran_at{0};
    std::atomic<std::uint64_t> runs{0};
    std::atomic<bool> in_flight{false}; // handed to a consumer, not yet run (peers have no BUSY bit)
#if RTDEFER_BENCH_HAVE_URCU
    rcu_head rcu{}; // the call_rcu peer's link
#endif
};
static_assert(std::is_standard_layout_v<bench_item>);

void bench_item_run(irq_work& w) noexcept {
    auto& it = *reinterpret_cast<bench_item*>(&w);
    // relaxed: read by the producer after it sees runs change (acquire below pairs with this release).
    it.ran_at.store(bench_clock::now_end(), std::memory_order_relaxed);
    it.runs.fetch_add(1, std::memory_order_release);
    // release: the producer's take() may reuse the item once it reads false (acquire).
    it.in_flight.store(false, std::memory_order_release);
}

struct item_pool {
    std::vector<std::unique_ptr<bench_item>> items;
    std::size_t next = 0;
    item_pool(std::size_t n, irq_work_kind kind) {
        for (std::size_t i = 0; i < n; ++i) {
            items.push_back(std::make_unique<bench_item>());
            rtdefer::init_irq_work(items.back()->work, &bench_item_run, kind);
        }
    }
    /// A free item (waits, untimed, until the oldest one has run).
    bench_item& take() {
        bench_item& it = *items[next++ % items.size()];
        while (rtdefer::irq_work_is_busy(it.work) || it.in_flight.load(std::memory_order_acquire))
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        // relaxed: published to the consumer by the enqueue's own release.
        it.in_flight.store(true, std::memory_order_relaxed);
        return it;
    }
    std::uint64_t total_runs() const {
        std::uint64_t n = 0;
        for (auto& it : items)
            n += it->runs.load(std::memory_order_acquire);
        return n;
    }
};

// ---------------------------------------------------------------------------------------------
// Peers: the same hand-off to a consumer on CPU b at the worker's priority.
// ---------------------------------------------------------------------------------------------

/// A peer consumer runs like the irq_work worker: SCHED_FIFO consumer_priority, pinned to CPU b.
rtdefer::rt_thread_options consumer_options(const char* name, int cpu) {
    rtdefer::rt_thread_options o;
    o.name = name;
    o.priority = consumer_priority;
    o.cpu = cpu;
    return o;
}

/// std::mutex + std::condition_variable + std::deque: the textbook work queue.
class cv_queue {
public:
    explicit cv_queue(int cpu) { consumer_ = rtdefer::rt_thread(consumer_options("cv-consumer", cpu), [this] { run(); }); }
    ~cv_queue() {
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        cv_.notify_one();
        consumer_.join();
    }
    void push(bench_item& it) {
        {
            std::lock_guard<std::mutex> g(m_);
            q_.push_back(&it);
        }
        cv_.notify_one();
    }
    std::uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

private:
    void run() {
        std::deque<bench_item*> batch;
        std::unique_lock<std::mutex> lk(m_);
        for (;;) {
            while (q_.empty() && !stop_) {
                sleeps_.fetch_add(1, std::memory_order_relaxed); // relaxed: a statistic
                cv_.wait(lk);
            }
            if (q_.empty() && stop_)
                return;
            batch.swap(q_);
            lk.unlock();
            for (bench_item* it : batch)
                bench_item_run(it->work);
            batch.clear();
            lk.lock();
        }
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<bench_item*> q_;
    bool stop_ = false;
    std::atomic<std::uint64_t> sleeps_{0};
    rtdefer::rt_thread consumer_;
};

/// boost::lockfree::queue, bounded (no allocation on push) + a futex wake through rtdefer's parker.
class boost_queue {
public:
    explicit boost_queue(int cpu) {
        consumer_ = rtdefer::rt_thread(consumer_options("bq-consumer", cpu), [this](rtdefer::thread_ctx& self) { run(self); });
        target_ = &consumer_.ctx();
    }
    ~boost_queue() {
        stop_.store(true, std::memory_order_release);
        (void)rtdefer::unpark(*target_);
        consumer_.join();
    }
    /// Returns: whether the push made a wake syscall.
    bool push(bench_item& it) noexcept {
        if (!q_.bounded_push(&it))
            full_.fetch_add(1, std::memory_order_relaxed); // relaxed: a statistic (capacity is ample)
        // unpark: release exchange publishes the push; futex_wake only if the consumer sleeps.
        return rtdefer::unpark(*target_);
    }
    std::uint64_t full() const { return full_.load(std::memory_order_relaxed); }

private:
    void run(rtdefer::thread_ctx& self) {
        for (;;) {
            bench_item* it = nullptr;
            while (q_.pop(it))
                bench_item_run(it->work);
            if (stop_.load(std::memory_order_acquire) && q_.empty())
                return;
            (void)rtdefer::park(self);
        }
    }
    boost::lockfree::queue<bench_item*, boost::lockfree::capacity<16384>> q_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> full_{0};
    rtdefer::thread_ctx* target_ = nullptr;
    rtdefer::rt_thread consumer_;
};

#if RTDEFER_BENCH_HAVE_URCU
/// liburcu's call_rcu, the peer of LAZY irq_work: the documented way to hand memory to a worker that
/// frees it later. Each call enqueues on the calling thread's call_rcu queue (a wait-free queue) and
/// wakes liburcu's call_rcu thread only when it sleeps; the worker runs the callbacks after a grace
/// period. The calling thread must be a registered RCU thread (urcu_memb_register_thread): the
/// producer registers before its timed loop (register_thread below) and unregisters at its end.
class call_rcu_peer {
public:
    static bool push(bench_item& it) noexcept {
        urcu_memb_call_rcu(&it.rcu, &run);
        return true;
    }
    /// On the producer thread, outside its timed region.
    struct thread_registration {
        thread_registration() { urcu_memb_register_thread(); }
        ~thread_registration() { urcu_memb_unregister_thread(); }
    };
    /// Waits until every callback queued so far ran (teardown).
    static void barrier() { urcu_memb_barrier(); }

private:
    static void run(rcu_head* h) { bench_item_run(caa_container_of(h, bench_item, rcu)->work); }
};
#endif

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

struct enqueue_run {
    latency_result lat;
    latency_result no_wake; ///< only the enqueues that made no syscall (valid if a classifier was given)
    std::uint64_t woke = 0;
    double allocs_per_1000 = 0;
    std::uint64_t enqueued = 0;
    std::uint64_t claim_failures = 0;
};

/// Enqueue cost: `rounds` bursts of `burst` enqueues on a SCHED_FIFO producer pinned to cpu_a.
/// `enq(item)` returns false if the enqueue was refused (counted).
/// `syscalls()` (optional, untimed) counts the wake syscalls made so far, to split the figures.
/// `ThreadSetup` (optional) is constructed on the producer thread before its timed loop and destroyed
/// after it (a peer that needs per-thread registration).
template <class Enq, class Count = std::nullptr_t, class ThreadSetup = std::nullptr_t>
enqueue_run measure_enqueue(const std::string& name, item_pool& pool, std::size_t rounds, std::size_t burst,
                            std::chrono::microseconds gap, int cpu_a, Enq&& enq, Count syscalls = nullptr) {
    enqueue_run r;
    auto h = std::make_shared<histogram>();
    auto h_quiet = std::make_shared<histogram>();
    constexpr bool split = !std::is_same_v<Count, std::nullptr_t>;
    std::vector<bench_item*> batch(burst);
    std::uint64_t allocs = 0;
    rt_outcome o = run_measured({.fifo = true, .priority = producer_priority, .cpu = cpu_a}, [&] {
        [[maybe_unused]] std::conditional_t<std::is_same_v<ThreadSetup, std::nullptr_t>, int, ThreadSetup> setup{};
        for (std::size_t k = 0; k < rounds; ++k) {
            for (auto& b : batch)
                b = &pool.take(); // untimed: make sure each item is free
            alloc_scope sc;
            for (bench_item* it : batch) {
                std::uint64_t sc0 = 0;
                if constexpr (split)
                    sc0 = syscalls();
                const std::uint64_t t0 = bench_clock::now();
                const bool ok = enq(*it);
                const std::uint64_t t1 = bench_clock::now_end();
                const std::uint64_t ns = rtdefer_bench::clock().delta_ns(t0, t1);
                h->record(ns);
                if constexpr (split) {
                    if (syscalls() == sc0)
                        h_quiet->record(ns);
                    else
                        ++r.woke;
                }
                r.claim_failures += ok ? 0 : 1;
                ++r.enqueued;
            }
            allocs += sc.allocations();
            std::this_thread::sleep_for(gap);
        }
    });
    r.allocs_per_1000 = r.enqueued ? 1000.0 * static_cast<double>(allocs) / static_cast<double>(r.enqueued) : 0;
    char note[160];
    std::snprintf(note, sizeof note, "bursts of %zu, %lld µs gap; producer allocations per 1000 enqueues: %.1f", burst,
                  static_cast<long long>(gap.count()), r.allocs_per_1000);
    r.lat = latency_result::from(name, "one enqueue call on the SCHED_FIFO producer (includes one clock read pair)", h,
                                 o, note);
    if constexpr (split)
        r.no_wake = latency_result::from(name + " (no wake)",
                                         "the enqueue calls of the run above that made no syscall", h_quiet, o,
                                         std::to_string(r.woke) + " enqueues with a wake syscall left out");
    else
        r.no_wake = latency_result::unavailable(name + " (no wake)", "", "not classified");
    return r;
}

/// Enqueue-to-run: one item at a time; the consumer is asleep (gap) before each, unless `busy`.
/// `enq` enqueues and returns whether the sample counts (e.g. the worker really slept).
template <class Enq>
latency_result measure_enqueue_to_run(const std::string& name, const std::string& what, item_pool& pool,
                                      std::size_t samples, std::chrono::microseconds gap, int cpu_a, Enq&& enq,
                                      std::size_t* timeouts_out) {
    auto h = std::make_shared<histogram>();
    std::size_t skipped = 0, timeouts = 0;
    rt_outcome o = run_measured({.fifo = true, .priority = producer_priority, .cpu = cpu_a}, [&] {
        for (std::size_t i = 0; i < samples; ++i) {
            bench_item& it = pool.take();
            const std::uint64_t before = it.runs.load(std::memory_order_acquire);
            std::this_thread::sleep_for(gap);
            const std::uint64_t t0 = bench_clock::now();
            const bool counts = enq(it);
            // acquire: pairs with the release in bench_item_run; ran_at is then visible.
            if (!spin_until([&] { return it.runs.load(std::memory_order_acquire) != before; }, 10e9)) {
                ++timeouts;
                break;
            }
            const std::uint64_t t1 = it.ran_at.load(std::memory_order_relaxed);
            if (!counts) {
                ++skipped;
                continue;
            }
            h->record(rtdefer_bench::clock().delta_ns(t0, t1));
        }
    });
    *timeouts_out += timeouts;
    if (timeouts != 0)
        return latency_result::unavailable(name, what, "the consumer did not run the item within 10 s");
    return latency_result::from(name, what, h, o,
                                skipped ? std::to_string(skipped) + " samples skipped (consumer was not asleep)" : "");
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "irq_work_bench");
    report rep(opts);
    rep.print_header();
    std::printf("\n");

    const baselines base = measure_baselines(opts, &rep);
    const int cpu_a = nth_usable_cpu(0);
    const int cpu_b = usable_cpus() >= 2 ? nth_usable_cpu(1) : cpu_a;
    if (cpu_a == cpu_b)
        rep.note("one usable CPU: producer and consumers share it; cross-CPU figures are not meaningful");

    rtdefer::irq_work_domain_options dopt;
    dopt.tick = std::chrono::milliseconds(1);
    dopt.priority = consumer_priority;
    irq_work_domain dom(dopt);
    rtdefer::thread_ctx& worker_b = dom.worker(cpu_b);
    std::printf("\nirq_work worker on CPU %d: %s priority %d%s\n", cpu_b, rtdefer::to_string(dom.worker_sched(cpu_b).actual),
                dom.worker_sched(cpu_b).priority, dom.worker_sched(cpu_b).degraded() ? " (SCHED_FIFO refused)" : "");

    const std::size_t rounds = opts.sample_count(2000, 100);
    const std::size_t burst = 100;
    const auto gap = std::chrono::microseconds(200);
    item_pool normal_pool(4 * burst, irq_work_kind::normal);
    item_pool lazy_pool(32 * burst, irq_work_kind::lazy);
    item_pool hard_pool(64, irq_work_kind::hard);
    item_pool peer_pool(4 * burst, irq_work_kind::normal);

    // Every successful claim on the domain is counted here (producers run one at a time, joined).
    std::uint64_t claims = 0;
    auto queue_b = [&](bench_item& it) noexcept {
        const bool ok = rtdefer::irq_work_queue_on(dom, it.work, cpu_b) == rtdefer::status::ok;
        claims += ok ? 1 : 0;
        return ok;
    };

    // ---- 1. enqueue cost --------------------------------------------------------------------
    std::printf("\nenqueue cost on a SCHED_FIFO %d producer (CPU %d -> consumer on CPU %d):\n", producer_priority, cpu_a,
                cpu_b);
    const rtdefer::irq_work_stats s0 = dom.stats(cpu_b);
    auto worker_wakes = [&] { return rtdefer::park_futex_wakes(worker_b); };
    enqueue_run rt_normal = measure_enqueue("rtdefer irq_work_queue_on", normal_pool, rounds, burst, gap, cpu_a,
                                            queue_b, worker_wakes);
    rep.add(rt_normal.lat);
    rep.add(rt_normal.no_wake);
    const rtdefer::irq_work_stats s1 = dom.stats(cpu_b);
    enqueue_run rt_lazy = measure_enqueue("rtdefer irq_work_queue_on LAZY", lazy_pool, rounds, burst, gap, cpu_a,
                                          queue_b);
    rep.add(rt_lazy.lat);
    const rtdefer::irq_work_stats s2 = dom.stats(cpu_b);
    enqueue_run cv_run, bq_run;
    {
        cv_queue cvq(cpu_b);
        cv_run = measure_enqueue("mutex+condvar+deque queue", peer_pool, rounds, burst, gap, cpu_a, [&](bench_item& it) {
            cvq.push(it);
            return true;
        });
        rep.add(cv_run.lat);
    }
    {
        boost_queue bq(cpu_b);
        std::uint64_t bq_wakes = 0;
        bq_run = measure_enqueue("boost::lockfree::queue+futex", peer_pool, rounds, burst, gap, cpu_a,
                                 [&](bench_item& it) noexcept {
                                     bq_wakes += bq.push(it) ? 1 : 0;
                                     return true;
                                 },
                                 [&] { return bq_wakes; });
        rep.add(bq_run.lat);
        rep.add(bq_run.no_wake);
        rep.check(bq.full() == 0, "boost queue full (capacity too small for the burst)");
    }
    enqueue_run rcu_run;
#if RTDEFER_BENCH_HAVE_URCU
    {
        rcu_run = measure_enqueue<decltype(&call_rcu_peer::push), std::nullptr_t, call_rcu_peer::thread_registration>(
            "liburcu call_rcu (memb)", peer_pool, rounds, burst, gap, cpu_a, &call_rcu_peer::push);
        call_rcu_peer::barrier();
        rep.add(rcu_run.lat);
    }
#else
    rcu_run.lat = latency_result::unavailable("liburcu call_rcu (memb)", "", "liburcu-dev not installed");
#endif
    for (const auto* r : {&rt_normal, &rt_lazy, &cv_run, &bq_run})
        rep.check(r->claim_failures == 0, r->lat.name + ": an enqueue of a free item was refused");
    rep.check(s2.lazy_raises == s1.lazy_raises, "LAZY items were treated as normal ones (lazy list raised)");
    std::printf("  rtdefer normal: %llu raises, %llu futex wakes for %llu enqueues; LAZY: %llu raises, %llu futex wakes\n",
                static_cast<unsigned long long>(s1.lazy_raises - s0.lazy_raises),
                static_cast<unsigned long long>(s1.futex_wakes - s0.futex_wakes),
                static_cast<unsigned long long>(rt_normal.enqueued),
                static_cast<unsigned long long>(s2.lazy_raises - s1.lazy_raises),
                static_cast<unsigned long long>(s2.futex_wakes - s1.futex_wakes));

    // ---- 2. wakes per 1000 enqueues ----------------------------------------------------------
    std::printf("\nwake syscalls per 1000 enqueues (bursts, %lld µs gap between bursts):\n",
                static_cast<long long>(gap.count()));
    struct wake_row {
        std::size_t burst;
        double rt, rt_lazy, cv, bq;
    };
    std::vector<wake_row> wake_rows;
    for (std::size_t b : {std::size_t{1}, std::size_t{10}, std::size_t{100}}) {
        const std::size_t n_rounds = std::max<std::size_t>(opts.pick<std::size_t>(20000, 1000) / b, 10);
        wake_row row{b, 0, 0, 0, 0};
        {
            const std::uint64_t w0 = rtdefer::park_futex_wakes(worker_b);
            auto r = measure_enqueue("w", normal_pool, n_rounds, b, gap, cpu_a, queue_b);
            const std::uint64_t w1 = rtdefer::park_futex_wakes(worker_b);
            row.rt = 1000.0 * static_cast<double>(w1 - w0) / static_cast<double>(r.enqueued);
        }
        {
            const std::uint64_t w0 = rtdefer::park_futex_wakes(worker_b);
            const std::uint64_t t0 = dom.stats(cpu_b).tick_restarts;
            auto r = measure_enqueue("w", lazy_pool, n_rounds, b, gap, cpu_a, queue_b);
            const std::uint64_t w1 = rtdefer::park_futex_wakes(worker_b);
            const std::uint64_t t1 = dom.stats(cpu_b).tick_restarts;
            row.rt_lazy = 1000.0 * static_cast<double>(w1 - w0) / static_cast<double>(r.enqueued);
            // The only wakes a LAZY add may make are nohz tick restarts (the tick had stopped after
            // 100 idle periods, e.g. while the peers ran).
            rep.check(w1 - w0 <= t1 - t0, "LAZY enqueues made wake syscalls other than nohz tick restarts");
        }
        {
            cv_queue cvq(cpu_b);
            // Let the consumer reach its first wait, so the count starts from a sleeping consumer.
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            const std::uint64_t z0 = cvq.sleeps();
            auto r = measure_enqueue("w", peer_pool, n_rounds, b, gap, cpu_a, [&](bench_item& it) {
                cvq.push(it);
                return true;
            });
            // Each consumer sleep that ended was ended by a producer's notify_one → FUTEX_WAKE.
            row.cv = 1000.0 * static_cast<double>(cvq.sleeps() - z0) / static_cast<double>(r.enqueued);
        }
        {
            boost_queue bq(cpu_b);
            std::uint64_t wakes = 0;
            auto r = measure_enqueue("w", peer_pool, n_rounds, b, gap, cpu_a, [&](bench_item& it) noexcept {
                wakes += bq.push(it) ? 1 : 0;
                return true;
            });
            row.bq = 1000.0 * static_cast<double>(wakes) / static_cast<double>(r.enqueued);
        }
        std::printf("  burst %3zu | rtdefer %7.1f | rtdefer LAZY %5.1f | mutex+condvar %7.1f | boost+futex %7.1f\n", b,
                    row.rt, row.rt_lazy, row.cv, row.bq);
        rep.add_throughput("wakes/1000 enqueues rtdefer burst " + std::to_string(b), row.rt, "wakes/1000");
        rep.add_throughput("wakes/1000 enqueues rtdefer LAZY burst " + std::to_string(b), row.rt_lazy, "wakes/1000");
        rep.add_throughput("wakes/1000 enqueues mutex+condvar burst " + std::to_string(b), row.cv, "wakes/1000");
        rep.add_throughput("wakes/1000 enqueues boost+futex burst " + std::to_string(b), row.bq, "wakes/1000");
        wake_rows.push_back(row);
    }

    // ---- 3. enqueue-to-run -------------------------------------------------------------------
    std::printf("\nenqueue-to-run (producer CPU %d -> consumer CPU %d):\n", cpu_a, cpu_b);
    const std::size_t e2r_samples = opts.sample_count(5000, 300);
    std::size_t timeouts = 0;
    const latency_result e2r_lazy = measure_enqueue_to_run(
        "rtdefer normal -> asleep worker", "from just before irq_work_queue_on() to the callback running on the worker",
        normal_pool, e2r_samples, std::chrono::microseconds(100), cpu_a,
        [&](bench_item& it) noexcept {
            const std::uint64_t w0 = rtdefer::park_futex_wakes(worker_b);
            const bool ok = queue_b(it);
            // Counts only if this enqueue really woke a sleeping worker (the futex path).
            return ok && rtdefer::park_futex_wakes(worker_b) != w0;
        },
        &timeouts);
    rep.add(e2r_lazy);

    // Hard item to a busy worker: hold the worker in a spinning (normal) callback on CPU b.
    std::atomic<bool> spin{true};
    std::atomic<bool> spinning{false};
    rtdefer::irq_work_fn spinner{[&] {
        spinning.store(true, std::memory_order_release);
        while (spin.load(std::memory_order_acquire))
            cpu_relax();
    }};
    latency_result e2r_hard_busy;
    if (cpu_a != cpu_b) {
        rep.check(rtdefer::irq_work_queue_on(dom, spinner, cpu_b) == rtdefer::status::ok, "spinner queued");
        rep.check(spin_until([&] { return spinning.load(std::memory_order_acquire); }),
                  "worker started the spinner");
        e2r_hard_busy = measure_enqueue_to_run(
            "rtdefer hard -> busy worker", "from just before irq_work_queue_on() to the hard callback (signal context)",
            hard_pool, e2r_samples, std::chrono::microseconds(50), cpu_a,
            queue_b, &timeouts);
        spin.store(false, std::memory_order_release);
        rep.check(rtdefer::irq_work_sync(spinner) == rtdefer::status::ok, "spinner synced");
    } else {
        e2r_hard_busy = latency_result::unavailable("rtdefer hard -> busy worker", "", "needs two CPUs");
    }
    rep.add(e2r_hard_busy);
    const latency_result e2r_hard_idle = measure_enqueue_to_run(
        "rtdefer hard -> asleep worker", "from just before irq_work_queue_on() to the hard callback (signal context)",
        hard_pool, e2r_samples, std::chrono::microseconds(100), cpu_a,
        queue_b, &timeouts);
    rep.add(e2r_hard_idle);
    latency_result e2r_cv, e2r_bq;
    {
        cv_queue cvq(cpu_b);
        e2r_cv = measure_enqueue_to_run("mutex+condvar -> asleep consumer", "push + notify_one to the consumer running it",
                                        peer_pool, e2r_samples, std::chrono::microseconds(100), cpu_a,
                                        [&](bench_item& it) {
                                            cvq.push(it);
                                            return true;
                                        },
                                        &timeouts);
        rep.add(e2r_cv);
    }
    {
        boost_queue bq(cpu_b);
        e2r_bq = measure_enqueue_to_run("boost+futex -> asleep consumer", "push + unpark to the consumer running it",
                                        peer_pool, e2r_samples, std::chrono::microseconds(100), cpu_a,
                                        [&](bench_item& it) noexcept { return bq.push(it); }, &timeouts);
        rep.add(e2r_bq);
    }
    rep.check(timeouts == 0, "a consumer did not run an item within 10 s");

    // ---- exactly-once over everything rtdefer ran ---------------------------------------------
    for (auto* p : {&normal_pool, &lazy_pool, &hard_pool})
        for (auto& it : p->items)
            rep.check(rtdefer::irq_work_sync(it->work) == rtdefer::status::ok, "irq_work_sync of a pool item");
    const std::uint64_t ran = normal_pool.total_runs() + lazy_pool.total_runs() + hard_pool.total_runs();
    rep.check(ran == claims, "successful claims (" + std::to_string(claims) + ") != callback runs (" +
                                 std::to_string(ran) + "): lost or duplicated");
    rep.check(dom.total_stats().ipi_failures == 0, "send_ipi failed");
    std::printf("\nexactly once: %llu successful claims, %llu runs\n", static_cast<unsigned long long>(claims),
                static_cast<unsigned long long>(ran));

    // ---- side by side -------------------------------------------------------------------------
    auto cmp = [&](const std::string& n, const char* stat, double v, const std::string& bn, const char* bstat, double bv) {
        rep.compare(n, stat, v, unit::ns, bn, bstat, bv);
    };
    for (const char* stat : {"p50", "p99.9"}) {
        auto pick = [&](const latency_result& r) { return std::string(stat) == "p50" ? r.s.p50 : r.s.p999; };
        cmp("rtdefer irq_work_queue_on", stat, pick(rt_normal.lat), "mutex+condvar", stat, pick(cv_run.lat));
        cmp("rtdefer irq_work_queue_on", stat, pick(rt_normal.lat), "boost+futex", stat, pick(bq_run.lat));
        cmp("rtdefer LAZY", stat, pick(rt_lazy.lat), "mutex+condvar", stat, pick(cv_run.lat));
        cmp("rtdefer LAZY", stat, pick(rt_lazy.lat), "boost+futex", stat, pick(bq_run.lat));
        cmp("rtdefer queue_on (no-wake calls)", stat, pick(rt_normal.no_wake), "boost+futex (no-wake calls)", stat,
            pick(bq_run.no_wake));
        if (rcu_run.lat.valid)
            cmp("rtdefer LAZY", stat, pick(rt_lazy.lat), "liburcu call_rcu", stat, pick(rcu_run.lat));
    }
    if (base.futex_wake.valid && e2r_lazy.valid) {
        cmp("enqueue-to-run normal (asleep)", "p50", e2r_lazy.s.p50, "futex wake-to-run", "p50", base.futex_wake.s.p50);
        cmp("enqueue-to-run normal (asleep)", "p99", e2r_lazy.s.p99, "futex wake-to-run", "p99", base.futex_wake.s.p99);
    }
    if (base.ipi.valid && e2r_hard_busy.valid) {
        cmp("enqueue-to-run hard (busy)", "p50", e2r_hard_busy.s.p50, "signal IPI to busy thread", "p50", base.ipi.s.p50);
        cmp("enqueue-to-run hard (busy)", "p99", e2r_hard_busy.s.p99, "signal IPI to busy thread", "p99", base.ipi.s.p99);
    }
    if (e2r_lazy.valid && e2r_cv.valid)
        cmp("enqueue-to-run normal (asleep)", "p50", e2r_lazy.s.p50, "mutex+condvar (asleep)", "p50", e2r_cv.s.p50);
    if (e2r_lazy.valid && e2r_bq.valid)
        cmp("enqueue-to-run normal (asleep)", "p50", e2r_lazy.s.p50, "boost+futex (asleep)", "p50", e2r_bq.s.p50);
    rep.print_table();

    std::printf("\nwakes per 1000 enqueues (same run):\n  burst | rtdefer | rtdefer LAZY | mutex+condvar | boost+futex\n");
    for (const auto& r : wake_rows)
        std::printf("  %5zu | %7.1f | %12.1f | %13.1f | %11.1f\n", r.burst, r.rt, r.rt_lazy, r.cv, r.bq);
    std::printf("\nproducer allocations per 1000 enqueues: rtdefer %.1f, rtdefer LAZY %.1f, mutex+condvar %.1f, "
                "boost+futex %.1f, call_rcu %.1f\n",
                rt_normal.allocs_per_1000, rt_lazy.allocs_per_1000, cv_run.allocs_per_1000, bq_run.allocs_per_1000,
                rcu_run.allocs_per_1000);
    rep.check(rt_normal.allocs_per_1000 == 0 && rt_lazy.allocs_per_1000 == 0, "rtdefer enqueue allocated");
    auto verdict = [](double v) { return v < 1000.0 ? "met" : "NOT met"; };
    std::printf("target: enqueue p99.9 < 1 µs with no syscall except the empty->non-empty wake:\n"
                "  rtdefer normal, calls without a wake: %s (%s); LAZY (never a syscall): %s (%s);\n"
                "  rtdefer normal, all calls incl. the %llu wakes: p99.9 %s (the wake is a futex syscall)\n",
                verdict(rt_normal.no_wake.s.p999), fmt_ns(rt_normal.no_wake.s.p999).c_str(),
                verdict(rt_lazy.lat.s.p999), fmt_ns(rt_lazy.lat.s.p999).c_str(),
                static_cast<unsigned long long>(rt_normal.woke), fmt_ns(rt_normal.lat.s.p999).c_str());
    return rep.finish();
}
