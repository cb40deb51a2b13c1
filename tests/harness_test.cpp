// Unit tests for the benchmark harness (bench/harness/): every published figure comes from its
// histogram percentiles, its medians of repeated runs and its JSON, so they are tested like the library.
#include "harness/latency.hpp"
#include "harness/report.hpp"

#include "test_util.hpp"

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
