// task_work_bench: rtdefer task_work beside its peers, every figure next to its baseline from the
// same run.
//
//   1. Throughput, 1 and 2 producers -> one owner draining at its safe point (the harness's
//      mpsc_rig; every item counted): task_work_add + task_work_run (notify::none and
//      notify::resume) vs boost::lockfree::queue<void*> (bounded, fixed capacity) and
//      std::mutex + std::deque. Allocations per item over the measured rounds (all threads).
//   2. Per-add cost on the producer (owner draining concurrently on the other CPU), batch means,
//      beside the cache-line round trip measured now.
//   3. add -> run latency: owner parked in wait_for_work_until(), producer adds with notify::resume;
//      beside futex wake-to-run (rtdefer::unpark to a parked thread) measured now.
//
//   task_work_bench [--quick] [--json FILE] [--no-rt] [--repeat N]
//
// Exit status 1 if any item was lost or duplicated or an add failed (the bench-smoke check).
#include "harness/alloc_counter.hpp"
#include "harness/args.hpp"
#include "harness/baseline.hpp"
#include "harness/handoff.hpp"
#include "harness/mpsc.hpp"
#include "harness/peers.hpp"
#include "harness/report.hpp"

#include <rtdefer/park.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace rtdefer_bench;

constexpr int max_producers = 2;
constexpr std::size_t per_producer_round = 4096;

/// mpsc_rig peer: the callback_head is embedded in the rig's item (intrusive, as the llist peer's node
/// is), so both touch the same cache lines per item; the consumer (the rig's constructing thread) is
/// the task_work owner. push() = task_work_add, drain() = task_work_run; the callback hands each item
/// to the rig's checker (one indirect call more than the llist peer's inlined loop: a task_work
/// callback is a function pointer).
template <rtdefer::notify N>
class task_work_peer {
public:
    static constexpr const char* name =
        N == rtdefer::notify::none ? "task_work (notify::none)" : "task_work (notify::resume)";

    task_work_peer() : self_(&rtdefer::attach_this_thread()) {}

    bool push(mpsc_item& it) noexcept {
        it.work.func = &run; // the item is idle (each is pushed once per round): ours to set
        const rtdefer::status st = rtdefer::task_work_add(*self_, it.work, N);
        if (st != rtdefer::status::ok)
            bad_adds_.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic, read after the run
        return st == rtdefer::status::ok;
    }

    template <class F> std::size_t drain(F&& f) noexcept {
        sink_ctx_ = &f;
        sink_ = [](void* ctx, mpsc_item& it) noexcept { (*static_cast<std::remove_reference_t<F>*>(ctx))(it); };
        current_ = this; // callbacks run on this (the owner's) thread, inside task_work_run below
        return rtdefer::task_work_run(*self_);
    }

    std::uint64_t bad_adds() const { return bad_adds_.load(std::memory_order_relaxed); }

private:
    static void run(rtdefer::callback_head* h) noexcept {
        auto* it = reinterpret_cast<mpsc_item*>(reinterpret_cast<char*>(h) - offsetof(mpsc_item, work));
        current_->sink_(current_->sink_ctx_, *it);
    }

    rtdefer::thread_ctx* self_;
    void* sink_ctx_ = nullptr;
    void (*sink_)(void*, mpsc_item&) noexcept = nullptr;
    static inline task_work_peer* current_ = nullptr; // owner thread only
    std::atomic<std::uint64_t> bad_adds_{0};
};

using tw_none = task_work_peer<rtdefer::notify::none>;
using tw_resume = task_work_peer<rtdefer::notify::resume>;

struct mpsc_figure {
    double rate = 0;            ///< items/s (median over repeats)
    double allocs_per_item = 0; ///< over the measured rounds, all threads
    std::string placement;
    bool ok = true;
    std::string failure;
};

/// Rounds of the rig for about `seconds`, after a warm-up round; allocations counted globally.
template <class Peer> mpsc_figure measure_mpsc(int producers, double seconds, std::size_t repeat) {
    mpsc_figure f;
    std::vector<double> rates;
    std::uint64_t allocs = 0, items = 0;
    for (std::size_t r = 0; r < repeat; ++r) {
        mpsc_rig<Peer> rig(producers, per_producer_round, /*fifo=*/switches().allow_rt);
        if (!rig.run_round()) {
            f.ok = false;
            f.failure = std::string(Peer::name) + ": " + rig.counts().describe();
            return f;
        }
        alloc_scope sc(true);
        const std::uint64_t t0 = bench_clock::steady_ns();
        std::uint64_t rounds = 0, now = t0;
        while (rounds < 3 || static_cast<double>(now - t0) < seconds * 1e9) {
            if (!rig.run_round()) {
                f.ok = false;
                f.failure = std::string(Peer::name) + ": " + rig.counts().describe();
                return f;
            }
            ++rounds;
            now = bench_clock::steady_ns();
        }
        allocs += sc.allocations();
        items += rounds * rig.items_per_round();
        rates.push_back(static_cast<double>(rounds * rig.items_per_round()) / (static_cast<double>(now - t0) / 1e9));
        f.placement = rig.placement();
    }
    std::sort(rates.begin(), rates.end());
    f.rate = rates[rates.size() / 2];
    f.allocs_per_item = items ? static_cast<double>(allocs) / static_cast<double>(items) : 0;
    return f;
}

/// Producer-side cost of one push, batch means: the producer (CPU a) pushes `batch` items while the
/// consumer (CPU b) drains concurrently, then waits for the batch to be consumed (items reused).
template <class Peer>
latency_result measure_add_cost(const baseline_config& c, std::size_t batches, std::size_t batch, report& rep) {
    const std::string name = std::string("per add: ") + Peer::name;
    const char* what = "producer-side time per push (batch of 256 timed together), owner draining on the other CPU";
    if (!c.two_cpus())
        return latency_result::unavailable(name, what, "needs two usable CPUs");
    std::atomic<Peer*> peer_ptr{nullptr};
    std::atomic<std::uint64_t> received{0};
    std::atomic<bool> stop{false};
    bench_thread consumer({.fifo = true, .priority = 10, .cpu = c.cpu_b}, [&] {
        Peer peer;
        peer_ptr.store(&peer, std::memory_order_release);
        std::uint64_t got = 0;
        while (!stop.load(std::memory_order_acquire)) {
            const std::size_t n = peer.drain([](mpsc_item& it) noexcept { (void)it; });
            got += n;
            // release: the producer reuses items only after seeing them consumed.
            if (n != 0)
                received.store(got, std::memory_order_release);
            else
                cpu_relax();
        }
    });
    (void)consumer.outcome();
    auto h = std::make_shared<histogram>();
    bool ok = true;
    rt_outcome o = run_measured({.fifo = true, .priority = 10, .cpu = c.cpu_a}, [&] {
        Peer* peer;
        while ((peer = peer_ptr.load(std::memory_order_acquire)) == nullptr)
            std::this_thread::yield();
        std::vector<mpsc_item> items(batch);
        for (std::size_t i = 0; i < batch; ++i)
            items[i].seq = static_cast<std::uint32_t>(i);
        for (std::size_t b = 0; b < batches + 10; ++b) {
            const std::uint64_t t0 = bench_clock::now();
            for (auto& it : items)
                ok = peer->push(it) && ok;
            const std::uint64_t t1 = bench_clock::now_end();
            if (b >= 10)
                h->record(rtdefer_bench::clock().delta_ns(t0, t1) / batch);
            const std::uint64_t want = (b + 1) * batch;
            if (!spin_until([&] { return received.load(std::memory_order_acquire) >= want; })) {
                ok = false;
                break;
            }
        }
    });
    stop.store(true, std::memory_order_release);
    consumer.join();
    rep.check(ok, name + ": every push accepted and consumed");
    return latency_result::from(name, what, h, o,
                                "CPU " + std::to_string(c.cpu_a) + " -> CPU " + std::to_string(c.cpu_b));
}

/// add -> run on the harness's hand-off rig: the owner is parked in wait_for_work_until(); the
/// producer stamps, adds with notify::resume; the callback stamps. Rounds where the owner was not yet
/// parked (no futex wake was needed) are skipped, as in the futex baseline.
latency_result measure_add_to_run(const baseline_config& c, std::size_t samples, report& rep) {
    const char* name = "task_work add->run (owner parked)";
    const char* what = "from just before task_work_add(notify::resume) (CPU a) to the callback running in the "
                       "owner's wait_for_work_until (CPU b)";
    if (!c.two_cpus())
        return latency_result::unavailable(name, what, "needs two usable CPUs");
    const handoff_result r = measure_task_work_handoff(handoff_for(c, samples), task_work_owner{});
    rep.check(r.timeouts == 0 && r.failed == 0, std::string(name) + ": every add accepted and run within 2 s");
    rep.check(r.exactly_once() || r.timeouts != 0 || r.failed != 0, std::string(name) + ": each add ran exactly once");
    char b[200];
    std::snprintf(b, sizeof b, "CPU %d -> CPU %d; owner %s; %llu rounds skipped (owner not yet parked)", c.cpu_a,
                  c.cpu_b, r.owner.describe().c_str(), static_cast<unsigned long long>(r.not_woken));
    return latency_result::from(name, what, r.handed, r.producer, b);
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "task_work_bench");
    report rep(opts);
    rep.print_header();
    const double secs = opts.pick(1.0, 0.1);
    const std::size_t repeat = opts.repeat;

    // --- 1. throughput -------------------------------------------------------------------------
    std::printf("\nthroughput: producers -> one owner draining at its safe point (%zu items/producer/round)\n",
                per_producer_round);
    struct row {
        const char* name;
        mpsc_figure f[2];
    };
    std::vector<row> rows;
    auto run_peer = [&](const char* name, auto measure) {
        row r{name, {}};
        for (int p = 1; p <= max_producers; ++p) {
            r.f[p - 1] = measure(p);
            rep.check(r.f[p - 1].ok, std::string(name) + " item accounting: " + r.f[p - 1].failure);
            std::printf("  %-34s %d producer%s: %12s  allocs/item %.3g  [%s]\n", name, p, p > 1 ? "s" : " ",
                        fmt_rate(r.f[p - 1].rate, " items/s").c_str(), r.f[p - 1].allocs_per_item,
                        r.f[p - 1].placement.c_str());
            rep.add_throughput(std::string(name) + ", " + std::to_string(p) + " producer(s)", r.f[p - 1].rate);
        }
        rows.push_back(r);
    };
    run_peer(tw_none::name, [&](int p) { return measure_mpsc<tw_none>(p, secs, repeat); });
    run_peer(tw_resume::name, [&](int p) { return measure_mpsc<tw_resume>(p, secs, repeat); });
    // The bare list task_work is built on, and the strongest general hand-offs (harness/peers.hpp).
    run_peer("rtdefer::llist_head (bare)", [&](int p) { return measure_mpsc<llist_peer>(p, secs, repeat); });
#if RTDEFER_BENCH_HAVE_MOODYCAMEL
    run_peer("moodycamel::ConcurrentQueue", [&](int p) { return measure_mpsc<moodycamel_peer>(p, secs, repeat); });
#endif
#if RTDEFER_BENCH_HAVE_URCU
    run_peer("liburcu cds_wfcq", [&](int p) { return measure_mpsc<urcu_wfcq_peer>(p, secs, repeat); });
    run_peer("liburcu cds_lfs", [&](int p) { return measure_mpsc<urcu_lfs_peer>(p, secs, repeat); });
#endif
#if RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
    run_peer("boost::lockfree::queue (bounded)", [&](int p) { return measure_mpsc<boost_peer>(p, secs, repeat); });
#endif
    run_peer("std::mutex+std::deque", [&](int p) { return measure_mpsc<mutex_deque_peer>(p, secs, repeat); });

    // --- machine limits, measured now ------------------------------------------------------------
    std::printf("\nmachine limits (this run):\n");
    baseline_config bc = baseline_defaults(opts);
    latency_result rtt = measure_cacheline_roundtrip(bc);
    rep.add(rtt);
    auto fw = measure_futex_wake(bc);
    rep.add(fw.first);

    // --- 2. per-add cost -------------------------------------------------------------------------
    std::printf("\nper-add cost (producer side):\n");
    const std::size_t batches = opts.pick<std::size_t>(2000, 200);
    latency_result add_none = measure_add_cost<tw_none>(bc, batches, 256, rep);
    rep.add(add_none);
    latency_result add_resume = measure_add_cost<tw_resume>(bc, batches, 256, rep);
    rep.add(add_resume);
#if RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
    latency_result add_boost = measure_add_cost<boost_peer>(bc, batches, 256, rep);
    rep.add(add_boost);
#endif

    // --- 3. add -> run latency -------------------------------------------------------------------
    std::printf("\nadd->run latency (owner parked):\n");
    latency_result a2r = measure_add_to_run(bc, opts.sample_count(5000, 500), rep);
    rep.add(a2r);

    // --- side by side ----------------------------------------------------------------------------
    auto find_row = [&](const char* prefix) -> const row* {
        for (const auto& r : rows)
            if (std::string(r.name).rfind(prefix, 0) == 0)
                return &r;
        return nullptr;
    };
    const row* boost_row = find_row("boost");
    const row* llist_row = find_row("rtdefer::llist_head");
    const row* moody_row = find_row("moodycamel");
    for (int i = 0; i < 2; ++i) {
        const auto& r = rows[static_cast<std::size_t>(i)];
        for (int p = 1; p <= max_producers; ++p) {
            const std::string label = std::string(r.name) + ", " + std::to_string(p) + " producer" + (p > 1 ? "s" : "");
            for (std::size_t j = 2; j < rows.size(); ++j)
                rep.compare(label, "items/s", r.f[p - 1].rate, unit::per_second, rows[j].name, "items/s",
                            rows[j].f[p - 1].rate);
        }
    }
    if (rtt.valid) {
        for (const latency_result* a : {&add_none, &add_resume})
            if (a->valid)
                rep.compare(a->name, "p50", a->s.p50, unit::ns, "cache-line round trip", "p50", rtt.s.p50);
#if RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
        if (add_boost.valid)
            rep.compare(add_boost.name, "p50", add_boost.s.p50, unit::ns, "cache-line round trip", "p50", rtt.s.p50);
#endif
    }
    if (a2r.valid && fw.first.valid) {
        rep.compare("task_work add->run (parked owner)", "p50", a2r.s.p50, unit::ns, "futex wake-to-run", "p50",
                    fw.first.s.p50);
        rep.compare("task_work add->run (parked owner)", "p99", a2r.s.p99, unit::ns, "futex wake-to-run", "p99",
                    fw.first.s.p99);
    }
    rep.print_table("side by side (same run; ratio = task_work / baseline):");

    // Targets, evaluated on this run's figures.
    std::printf("\ntargets:\n");
    if (llist_row)
        for (int p = 1; p <= max_producers; ++p) {
            const double ratio = llist_row->f[p - 1].rate / rows[0].f[p - 1].rate;
            std::printf("  task_work add+run within 1.5x of bare llist add+del_all, %d producer%s: llist/task_work %.2fx  %s\n",
                        p, p > 1 ? "s" : " ", ratio, ratio <= 1.5 ? "met" : "NOT met");
        }
    if (moody_row) {
        const double ratio = rows[0].f[0].rate / moody_row->f[0].rate;
        std::printf("  task_work >= moodycamel::ConcurrentQueue, 1 producer: %.2fx  %s\n", ratio,
                    ratio >= 1.0 ? "met" : "NOT met");
    }
    if (boost_row)
        for (int p = 1; p <= max_producers; ++p) {
            const double ratio = rows[0].f[p - 1].rate / boost_row->f[p - 1].rate;
            std::printf("  throughput >= 1.5x bounded boost::lockfree::queue, %d producer%s: %.2fx  %s\n", p,
                        p > 1 ? "s" : " ", ratio, ratio >= 1.5 ? "met" : "NOT met");
        }
    if (rtt.valid && add_none.valid) {
        const double ratio = add_none.s.p50 / rtt.s.p50;
        std::printf("  per-add cost <= 3x cache-line round trip: %s vs %s = %.2fx  %s\n", fmt_ns(add_none.s.p50).c_str(),
                    fmt_ns(rtt.s.p50).c_str(), ratio, ratio <= 3.0 ? "met" : "NOT met");
    }
    const double tw_allocs = std::max({rows[0].f[0].allocs_per_item, rows[0].f[1].allocs_per_item,
                                       rows[1].f[0].allocs_per_item, rows[1].f[1].allocs_per_item});
    std::printf("  allocations per operation = 0: %.3g  %s\n", tw_allocs, tw_allocs == 0 ? "met" : "NOT met");
    rep.check(tw_allocs == 0, "task_work makes no allocation per item");
    if (a2r.valid && fw.first.valid)
        std::printf("  add->run latency / futex wake-to-run (p50): %.2fx (reported, no target)\n",
                    a2r.s.p50 / fw.first.s.p50);
    return rep.finish();
}
