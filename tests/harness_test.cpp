// Unit tests for the benchmark harness (bench/harness/): every published figure comes from its
// histogram percentiles, its medians of repeated runs and its JSON, so they are tested like the library.
#include "harness/handoff.hpp"
#include "harness/housekeeping_job.hpp"
#include "harness/latency.hpp"
#include "harness/pacing.hpp"
#include "harness/report.hpp"

#include "test_util.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace rtdefer_bench;

TEST_CASE("histogram: exact below 128 ns, nearest-rank percentiles, exact min/max/mean") {
    histogram h(100);
    for (std::uint64_t v = 1; v <= 100; ++v)
        h.record(v);
    CHECK(h.count() == 100);
    CHECK(h.min() == 1);
    CHECK(h.max() == 100);
    CHECK(h.mean() == doctest::Approx(50.5));
    CHECK(h.percentile(0.50) == 50.0); // the 50th of 100 samples
    CHECK(h.percentile(0.99) == 99.0);
    CHECK(h.percentile(1.00) == 100.0);
    CHECK(h.percentile(0.0) == 1.0); // rank clamped to 1
}

TEST_CASE("histogram: above 128 ns the percentile is within one bucket (<= 1.6 %) of the true value") {
    histogram h;
    std::vector<std::uint64_t> values;
    for (std::uint64_t i = 1; i <= 10000; ++i)
        values.push_back(i * 997); // ~1 µs .. ~10 ms, irregular
    for (std::uint64_t v : values)
        h.record(v);
    for (double q : {0.5, 0.9, 0.99, 0.999}) {
        const double truth = static_cast<double>(values[static_cast<std::size_t>(q * 10000) - 1]);
        CHECK(h.percentile(q) == doctest::Approx(truth).epsilon(0.016));
    }
    CHECK(h.max() == values.back()); // max is exact, not a bucket
    CHECK(h.us_overflow() + [&] {
        std::uint64_t n = 0;
        for (std::size_t b = 0; b < h.us_buckets(); ++b)
            n += h.us_bucket(b);
        return n;
    }() == h.count()); // the per-µs view holds every sample
}

TEST_CASE("histogram: merge adds samples; reset empties; bucket bounds cover every value") {
    histogram a, b;
    a.record(10);
    a.record(5000);
    b.record(7);
    b.record(1'000'000);
    a.merge(b);
    CHECK(a.count() == 4);
    CHECK(a.min() == 7);
    CHECK(a.max() == 1'000'000);
    a.reset();
    CHECK(a.count() == 0);
    CHECK(a.max() == 0);
    for (std::uint64_t v : {0ull, 1ull, 127ull, 128ull, 129ull, 1000ull, 123456789ull, ~0ull >> 1}) {
        const unsigned i = histogram::fine_index(v);
        CHECK(histogram::bucket_low(i) <= v);
        CHECK(v - histogram::bucket_low(i) < histogram::bucket_width(i));
    }
}

TEST_CASE("summary and median_of_runs: each figure is the median over the valid runs") {
    std::vector<latency_result> runs;
    for (std::uint64_t base : {10ull, 30ull, 20ull}) {
        auto h = std::make_shared<histogram>();
        for (int i = 0; i < 10; ++i)
            h->record(base);
        runs.push_back(latency_result::from("x", "one sample", h));
    }
    runs.push_back(latency_result::unavailable("x", "one sample", "not here"));
    const latency_result m = median_of_runs(runs);
    CHECK(m.valid);
    CHECK(m.s.p50 == 20.0);
    CHECK(m.s.max == 20.0);
    CHECK(m.s.count == 30); // samples of the valid runs, summed
    CHECK(m.name.find("median of 3") != std::string::npos);
    const latency_result none = median_of_runs({latency_result::unavailable("y", "w", "why")});
    CHECK_FALSE(none.valid);
}

TEST_CASE("json_escape and json_num produce valid JSON tokens") {
    CHECK(json_escape("a\"b\\c\n\t") == "a\\\"b\\\\c\\n\\t");
    CHECK(json_escape(std::string("\x01", 1)).find("\\u0001") != std::string::npos);
    CHECK(json_num(1.5) == "1.5");
    CHECK(json_num(std::nan("")) == "null");
}

TEST_CASE("report::to_json is valid JSON with every figure in it") {
    switches().allow_mlock = false; // a unit test must not mlockall (the sanitizers' shadow is huge)
    options o;
    o.bench_name = "harness \"test\"";
    report rep(o);
    auto h = std::make_shared<histogram>();
    h->record(1500);
    h->record(2500);
    rep.add(latency_result::from("lat \"one\"", "a sample", h), /*print=*/false);
    rep.add_throughput("thr", 1e6);
    rep.compare("ours", "p50", 1.0, unit::ns, "theirs", "p50", 2.0);
    rep.note("a note with \\ and \"");
    const std::string json = rep.to_json();
    const std::string path = "harness_test_report.json";
    {
        std::ofstream f(path);
        f << json;
    }
    // python3 is one of the packages the test command installs; json.load is the strict parser we want.
    const std::string cmd = "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                            "assert d[\"latency\"][0][\"count\"]==2 and d[\"comparisons\"][0][\"ratio\"]==0.5 "
                            "and d[\"throughput\"][0][\"value\"]==1e6' " + path;
    const int rc = std::system(cmd.c_str());
    if (rc == -1 || (WIFEXITED(rc) && WEXITSTATUS(rc) == 127)) {
        rtdefer_test::skip_test("python3 is not installed: cannot parse the JSON");
        return;
    }
    CHECK(rc == 0);
    std::remove(path.c_str());
}

namespace {

/// The rig's tests run its threads SCHED_OTHER and unpinned (no RT needed, nothing to skip), without
/// mlockall (the sanitizers' shadow is huge), with short timeouts so a lost hand-off fails fast.
handoff_config test_handoff(std::size_t samples) {
    switches().allow_mlock = false;
    handoff_config c;
    c.fifo = false;
    c.gap = std::chrono::microseconds(0);
    c.samples = samples;
    c.timeout_ns = 2e9;
    return c;
}

/// The baseline-spin owner: polls `go` for the announced round; marks each round's arrival once
/// (or `marks(k)` times), tallying per round what it marked.
struct spin_owner {
    handoff_rig& rig;
    const std::atomic<std::uint64_t>& go;
    std::vector<int>& marked; // index: round
    int (*marks)(std::uint64_t) = [](std::uint64_t) { return 1; };
    void operator()(handoff_owner& o) const {
        while (o.next()) {
            while (go.load(std::memory_order_acquire) < o.round() && !o.stopped())
                cpu_relax();
            if (o.stopped())
                return;
            for (int i = 0; i < marks(o.round()); ++i) {
                rig.arrived.mark();
                ++marked[o.round()];
            }
        }
    }
};

/// Fires by bumping `go`; says the owner woke in the rounds `woke_if` picks.
struct spin_waker {
    std::atomic<std::uint64_t>& go;
    bool (*woke_if)(std::uint64_t) = [](std::uint64_t) { return true; };
    void prepare(rtdefer::thread_ctx&) noexcept {}
    bool fire(rtdefer::thread_ctx&) noexcept {
        go.fetch_add(1, std::memory_order_release); // release: pairs with spin_owner's acquire
        return true;
    }
    bool woke(rtdefer::thread_ctx&) const noexcept { return woke_if(go.load(std::memory_order_relaxed)); }
};

} // namespace

TEST_CASE("spin_until: true once the predicate holds, false when the timeout passes first") {
    int calls = 0;
    CHECK(spin_until([&] { return ++calls == 5; }));
    CHECK(calls == 5);
    CHECK_FALSE(spin_until([] { return false; }, 1e6));
}

TEST_CASE("event_stamp: count() counts marks; wait() returns the stamp of a mark after arm()") {
    event_stamp ev;
    CHECK(ev.count() == 0);
    const std::uint64_t armed = ev.arm();
    std::uint64_t t = 0;
    CHECK_FALSE(ev.wait(armed, t, 1e6)); // nothing marked yet
    const std::uint64_t before = bench_clock::now();
    ev.mark();
    CHECK(ev.wait(armed, t, 1e6));
    CHECK(t >= before);
    ev.mark();
    CHECK(ev.count() == 2);
}

TEST_CASE("handoff_rig: a spinning owner is handed every round exactly once, each recorded after the warm-up") {
    const handoff_config c = test_handoff(200);
    handoff_rig rig(c);
    std::atomic<std::uint64_t> go{0};
    std::vector<int> marked(c.rounds() + 2, 0);
    const handoff_result r = rig.run(spin_owner{rig, go, marked}, spin_waker{go});
    CHECK(r.refused.empty());
    CHECK(r.timeouts == 0);
    CHECK(r.failed == 0);
    CHECK(r.fired == c.rounds());
    CHECK(r.arrivals == r.fired);
    CHECK(r.late_arrivals == 0);
    CHECK(r.complete());
    CHECK(r.not_woken == 0);
    CHECK(r.handed->count() == c.samples); // every round but the warm-up ones
    CHECK(r.fire->count() == c.samples);
    CHECK(c.warm() == 20);
    for (std::size_t k = 1; k <= c.rounds(); ++k)
        CHECK(marked[k] == 1);
    CHECK(marked[c.rounds() + 1] == 0); // the rig stopped after its last round
}

TEST_CASE("handoff_rig: rounds whose fire did not wake the owner are counted, not recorded") {
    const handoff_config c = test_handoff(100); // warm-up 10, 110 rounds
    handoff_rig rig(c);
    std::atomic<std::uint64_t> go{0};
    std::vector<int> marked(c.rounds() + 2, 0);
    const handoff_result r =
        rig.run(spin_owner{rig, go, marked}, spin_waker{go, [](std::uint64_t k) { return k % 2 == 0; }});
    CHECK(r.complete());
    CHECK(r.not_woken == 55);       // the odd rounds 1..109
    CHECK(r.handed->count() == 50); // the even rounds 12..110
}

TEST_CASE("handoff_rig: a lost hand-off is a timeout and a duplicate one is counted: neither is complete") {
    SUBCASE("lost: round 3 is never marked") {
        handoff_config c = test_handoff(100);
        c.timeout_ns = 50e6;
        handoff_rig rig(c);
        std::atomic<std::uint64_t> go{0};
        std::vector<int> marked(c.rounds() + 2, 0);
        const handoff_result r = rig.run(spin_owner{rig, go, marked, [](std::uint64_t k) { return k == 3 ? 0 : 1; }},
                                         spin_waker{go});
        CHECK(r.timeouts == 1);
        CHECK(r.fired == 3);
        CHECK(r.arrivals == 2);
        CHECK_FALSE(r.complete());
    }
    SUBCASE("duplicated: round 2 is marked twice") {
        const handoff_config c = test_handoff(100);
        handoff_rig rig(c);
        std::atomic<std::uint64_t> go{0};
        std::vector<int> marked(c.rounds() + 2, 0);
        const handoff_result r = rig.run(spin_owner{rig, go, marked, [](std::uint64_t k) { return k == 2 ? 2 : 1; }},
                                         spin_waker{go});
        CHECK(r.fired == c.rounds());
        CHECK(r.arrivals == r.fired + 1);
        CHECK_FALSE(r.complete());
    }
}

TEST_CASE("handoff_rig: an owner that refuses is not measured") {
    const handoff_config c = test_handoff(100);
    handoff_rig rig(c);
    std::atomic<std::uint64_t> go{0};
    const handoff_result r = rig.run([](handoff_owner& o) { o.refuse("no backend here"); }, spin_waker{go});
    CHECK(r.refused == "no backend here");
    CHECK(r.fired == 0);
    CHECK(r.timeouts == 0);
    CHECK(r.handed->count() == 0);
    CHECK_FALSE(r.complete());
}

TEST_CASE("handoff_rig: a parked owner woken by unpark_waker marks every round once, plus the final wake") {
    handoff_config c = test_handoff(100);
    c.gap = std::chrono::microseconds(50);
    handoff_rig rig(c);
    const handoff_result r = rig.run(parked_owner{rig.arrived}, unpark_waker{});
    CHECK(r.timeouts == 0);
    CHECK(r.fired == c.rounds());
    CHECK(r.arrivals == r.fired);
    CHECK(r.late_arrivals <= 1); // the owner marks the rig's final unpark() too, if it parked again
    CHECK(r.handed->count() + r.not_woken >= c.samples);
    CHECK(r.handed->count() <= c.samples);
}

TEST_CASE("measure_task_work_handoff (task_work_owner, task_work_waker, arrival_item): task_work_add hands the item to its owner, which marks it once") {
    handoff_config c = test_handoff(100);
    c.gap = std::chrono::microseconds(50);
    const handoff_result r = measure_task_work_handoff(c, task_work_owner{});
    CHECK(r.complete());
    CHECK(r.exactly_once());
    CHECK(r.fired == c.rounds());
    CHECK(r.late_arrivals == 0); // no callback runs without an add
    CHECK(r.handed->count() + r.not_woken >= c.samples);
}

TEST_CASE("pacing: burn_cpu uses at least the CPU time asked; sleep_ns and pacer sleep at least as long") {
    const std::int64_t cpu0 = thread_cpu_ns();
    burn_cpu(2'000'000);
    CHECK(thread_cpu_ns() - cpu0 >= 2'000'000);
    const std::int64_t t0 = mono_ns();
    sleep_ns(1'000'000);
    const std::int64_t t1 = mono_ns();
    CHECK(t1 - t0 >= 1'000'000);
    pacer p(1'000'000); // absolute deadlines: 5 periods end no earlier than 5 ms after the start
    for (int i = 0; i < 5; ++i)
        p.wait();
    CHECK(mono_ns() - t1 >= 5'000'000);
}

TEST_CASE("housekeeping_job: each run covers the newest posted request; the hook runs it only on its target") {
    housekeeping_job::reset();
    rtdefer::thread_ctx& self = rtdefer::attach_this_thread();
    housekeeping_job::posted.store(5, std::memory_order_relaxed);
    housekeeping_job::word_callback(self, 0);
    CHECK(housekeeping_job::covered.load() == 5);
    CHECK(housekeeping_job::runs.load() == 1);
    housekeeping_job::posted.store(7, std::memory_order_relaxed);
    housekeeping_job::signal_hook(&self); // no target: not ours
    housekeeping_job::signal_hook(nullptr);
    CHECK(housekeeping_job::runs.load() == 1);
    CHECK(housekeeping_job::covered.load() == 5);
    housekeeping_job::signal_target.store(&self);
    housekeeping_job::signal_hook(&self);
    CHECK(housekeeping_job::runs.load() == 2);
    CHECK(housekeeping_job::covered.load() == 7);
    housekeeping_job::signal_target.store(nullptr);
    housekeeping_job::reset();
    CHECK(housekeeping_job::runs.load() == 0);
    CHECK(housekeeping_job::posted.load() == housekeeping_job::covered.load());
}

TEST_CASE("bench_clock: ticks and ns convert both ways; a reversed interval is 0; now_end() follows now()") {
    bench_clock& c = rtdefer_bench::clock();
    CHECK(c.ns_per_tick() > 0);
    CHECK(c.delta_ns(100, 100) == 0);
    CHECK(c.delta_ns(200, 100) == 0); // clock-skew guard
    const std::uint64_t ticks = c.ns_to_ticks(1e6);
    CHECK(c.to_ns(ticks) == doctest::Approx(1e6).epsilon(0.001));
    const std::uint64_t a = bench_clock::now();
    const std::uint64_t b = bench_clock::now_end();
    CHECK(b >= a);
    CHECK(std::string(c.source()) == (c.uses_tsc() ? "tsc" : "steady_clock"));
}
