// llist_bench: rtdefer::llist_head add + del_all throughput beside the hand-offs a user would weigh
// against it: moodycamel's ConcurrentQueue (producer tokens, try_enqueue, bulk dequeue) and
// ReaderWriterQueue (1 producer), liburcu's cds_wfcq and cds_lfs (harness/peers.hpp), the bounded
// boost::lockfree::queue and std::mutex + std::deque (harness/mpsc.hpp), with 1 and 2 producers and
// one consumer draining concurrently; every item counted (a lost or duplicated item fails the run).
//
//   llist_bench [--quick] [--json FILE] [Google Benchmark flags, e.g. --benchmark_repetitions=5]
//
// --quick becomes --benchmark_min_time=0.05. --json FILE writes the harness report (figures, ratios,
// machine) to FILE and Google Benchmark's own JSON to FILE.gbench.json.
// After Google Benchmark's table: per-call push latency of each peer (one thread, SCHED_FIFO when
// permitted), the cache-line round trip of this run, and a summary with the ratios rtdefer/boost and
// rtdefer/mutex from this run (medians when --benchmark_repetitions > 1).
// The hand-off rig runs pinned and SCHED_FIFO when permitted (--no-rt: SCHED_OTHER); see mpsc.hpp.
#include "harness/alloc_counter.hpp"
#include "harness/baseline.hpp"
#include "harness/mpsc.hpp"
#include "harness/peers.hpp"
#include "harness/report.hpp"

#include <benchmark/benchmark.h>

#if !RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
#error "llist_bench compares against boost::lockfree::queue: install libboost-dev"
#endif

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace rtdefer_bench;

constexpr std::size_t per_producer_round = 4096;  // items per producer per round (one iteration)
constexpr std::size_t uncontended_batch = 256;

std::atomic<bool> g_failed{false};
std::string g_failure;

template <class Peer>
void BM_mpsc(benchmark::State& st) {
    const int producers = static_cast<int>(st.range(0));
    mpsc_rig<Peer> rig(producers, per_producer_round, /*fifo=*/switches().allow_rt);
    if (!rig.run_round()) {  // warm-up (and a first check)
        g_failed = true;
        g_failure = std::string(Peer::name) + ": " + rig.counts().describe();
        st.SkipWithError("items lost or duplicated");
        return;
    }
    std::uint64_t allocs = 0;
    for (auto _ : st) {
        alloc_scope round_allocs(true);  // all threads: the producers are the ones that allocate
        const bool ok = rig.run_round();
        allocs += round_allocs.allocations();
        if (!ok) {
            g_failed = true;
            g_failure = std::string(Peer::name) + ": " + rig.counts().describe();
            st.SkipWithError("items lost or duplicated");
            break;
        }
    }
    const double items = static_cast<double>(st.iterations()) * static_cast<double>(rig.items_per_round());
    st.SetItemsProcessed(static_cast<std::int64_t>(items));
    st.counters["allocs/item"] = items > 0 ? static_cast<double>(allocs) / items : 0.0;
    st.counters["push_fail"] = static_cast<double>(rig.counts().push_failures);
    st.SetLabel(rig.placement());
}

/// One thread: add `uncontended_batch` items, then drain them: the bare cost per item.
template <class Peer>
void BM_uncontended(benchmark::State& st) {
    Peer peer;
    std::vector<mpsc_item> items(uncontended_batch);
    std::uint64_t got = 0;
    std::uint64_t allocs = 0;
    for (auto _ : st) {
        alloc_scope batch_allocs;
        for (auto& it : items) (void)peer.push(it);
        got += peer.drain([](mpsc_item& it) { benchmark::DoNotOptimize(it.seq); });
        allocs += batch_allocs.allocations();
    }
    const double items_n = static_cast<double>(st.iterations()) * uncontended_batch;
    if (static_cast<double>(got) != items_n) {
        g_failed = true;
        g_failure = std::string(Peer::name) + ": uncontended run lost items";
        st.SkipWithError("items lost");
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(items_n));
    st.counters["allocs/item"] = items_n > 0 ? static_cast<double>(allocs) / items_n : 0.0;
}

/// Latency of a push, one thread, SCHED_FIFO when permitted: the real-time question is not the mean
/// but the tail (an allocation inside push_back, a CAS retry). Two views: `single` samples are one
/// call plus one clock read pair (~20 ns, and the clock advances in ~10 ns steps here), for the tail;
/// `batched` samples are the mean of 16 back-to-back calls, for the p50 of a ~10 ns operation. After
/// every 256 pushes the items are drained (untimed) and counted.
struct push_latency_pair {
    latency_result single, batched;
};
template <class Peer>
push_latency_pair push_latency(const options& o, const char* label) {
    constexpr std::size_t batch = 16;
    auto h1 = std::make_shared<histogram>();
    auto h16 = std::make_shared<histogram>();
    auto peer = std::make_unique<Peer>();
    std::vector<mpsc_item> items(uncontended_batch);
    const std::size_t rounds = o.sample_count(400000, 40000) / uncontended_batch;
    std::uint64_t lost = 0;
    rt_outcome rt = run_measured({.fifo = true, .priority = 80, .cpu = nth_usable_cpu(0)}, [&] {
        for (std::size_t r = 0; r < rounds; ++r) {
            for (auto& it : items) h1->record(time_one([&] { (void)peer->push(it); }));
            lost += uncontended_batch - peer->drain([](mpsc_item&) {});
            for (std::size_t b = 0; b < uncontended_batch; b += batch)
                h16->record(time_batch(batch, [&](std::size_t i) { (void)peer->push(items[b + i]); }));
            lost += uncontended_batch - peer->drain([](mpsc_item&) {});
        }
    });
    if (lost) {
        g_failed = true;
        g_failure = std::string(label) + ": push latency run lost items";
    }
    return {latency_result::from(std::string("push, one call: ") + label,
                                 "one push() call, uncontended; includes one clock read pair", h1, rt),
            latency_result::from(std::string("push, mean of 16: ") + label,
                                 "mean of 16 back-to-back push() calls, uncontended", h16, rt)};
}

/// Console output as usual, plus the items/s of each run kept for the summary.
class capture_reporter : public benchmark::ConsoleReporter {
public:
    explicit capture_reporter(OutputOptions o) : benchmark::ConsoleReporter(o) {}
    void ReportRuns(const std::vector<Run>& runs) override {
        benchmark::ConsoleReporter::ReportRuns(runs);
        for (const auto& r : runs) {
            if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
            auto it = r.counters.find("items_per_second");
            if (it == r.counters.end()) continue;
            auto& e = results[r.run_name.function_name + (r.run_name.args.empty() ? "" : "/" + r.run_name.args)];
            e.rates.push_back(it->second.value);
            auto a = r.counters.find("allocs/item");
            if (a != r.counters.end()) e.allocs = a->second.value;
        }
    }
    struct entry {
        std::vector<double> rates;
        double allocs = 0;
        double median() const {
            if (rates.empty()) return 0;
            std::vector<double> v = rates;
            std::sort(v.begin(), v.end());
            return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
        }
    };
    std::map<std::string, entry> results;
};

}  // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "llist_bench", /*allow_unknown=*/true,
                              "  (other arguments go to Google Benchmark)\n");
    report rep(opts);
    rep.print_header();
    {
        boost_peer probe;
        std::printf("boost::lockfree::queue is_lock_free(): %s\n", probe.is_lock_free() ? "yes" : "NO");
        std::printf("peers: moodycamel %s, ReaderWriterQueue %s, liburcu %s\n",
                    RTDEFER_BENCH_HAVE_MOODYCAMEL ? "yes" : "not installed (libconcurrentqueue-dev)",
                    RTDEFER_BENCH_HAVE_RWQ ? "yes" : "not installed (libreaderwriterqueue-dev)",
                    RTDEFER_BENCH_HAVE_URCU ? "yes" : "not found (liburcu-dev)");
    }
    std::printf("\n");

    // Benchmarks, registered in display order. peers[0] is ours; the rest are its peers.
    struct peer_entry {
        const char* name;
        void (*mpsc)(benchmark::State&);
        void (*uncontended)(benchmark::State&);
        int max_producers;
        push_latency_pair (*latency)(const options&, const char*);
    };
    std::vector<peer_entry> peers = {
        {"rtdefer_llist", &BM_mpsc<llist_peer>, &BM_uncontended<llist_peer>, 2, &push_latency<llist_peer>},
        {"llist_head_per_producer", &BM_mpsc<sharded_llist_peer>, &BM_uncontended<sharded_llist_peer>, 2,
         &push_latency<sharded_llist_peer>},
#if RTDEFER_BENCH_HAVE_MOODYCAMEL
        {"moodycamel_concurrentqueue", &BM_mpsc<moodycamel_peer>, &BM_uncontended<moodycamel_peer>, 2,
         &push_latency<moodycamel_peer>},
#endif
#if RTDEFER_BENCH_HAVE_RWQ
        {"moodycamel_readerwriterqueue", &BM_mpsc<rwq_peer>, &BM_uncontended<rwq_peer>, 1, &push_latency<rwq_peer>},
#endif
#if RTDEFER_BENCH_HAVE_URCU
        {"urcu_cds_wfcq", &BM_mpsc<urcu_wfcq_peer>, &BM_uncontended<urcu_wfcq_peer>, 2, &push_latency<urcu_wfcq_peer>},
        {"urcu_cds_lfs", &BM_mpsc<urcu_lfs_peer>, &BM_uncontended<urcu_lfs_peer>, 2, &push_latency<urcu_lfs_peer>},
#endif
        {"boost_lockfree_queue", &BM_mpsc<boost_peer>, &BM_uncontended<boost_peer>, 2, &push_latency<boost_peer>},
        {"mutex_deque", &BM_mpsc<mutex_deque_peer>, &BM_uncontended<mutex_deque_peer>, 2, &push_latency<mutex_deque_peer>},
    };
    const char* const ours = peers.front().name;
    for (const char* kind : {"mpsc", "uncontended"}) {
        const bool mpsc = std::string(kind) == "mpsc";
        for (const peer_entry& p : peers) {
            auto* b = benchmark::RegisterBenchmark((std::string(kind) + "/" + p.name).c_str(), mpsc ? p.mpsc : p.uncontended);
            b->UseRealTime();
            if (mpsc) {
                b->ArgName("producers");
                for (int n = 1; n <= p.max_producers; ++n) b->Arg(n);
            }
        }
    }

    // Translate our flags into Google Benchmark's.
    std::vector<std::string> extra;
    if (opts.quick) extra.push_back("--benchmark_min_time=0.05");
    if (!opts.json_path.empty()) {
        extra.push_back("--benchmark_out=" + opts.json_path + ".gbench.json");
        extra.push_back("--benchmark_out_format=json");
    }
    std::vector<char*> av(argv, argv + argc);
    for (auto& e : extra) av.insert(av.begin() + 1, e.data());  // before user flags: the user's win
    av.push_back(nullptr);
    int ac = static_cast<int>(av.size()) - 1;
    bool color = isatty(STDOUT_FILENO) != 0;
    for (int i = 1; i < ac; ++i) {
        std::string a = av[static_cast<std::size_t>(i)];
        if (a.rfind("--benchmark_color=", 0) == 0) color = a == "--benchmark_color=true" || a == "--benchmark_color=yes";
    }
    benchmark::Initialize(&ac, av.data());
    if (benchmark::ReportUnrecognizedArguments(ac, av.data())) return 2;
    capture_reporter cap(color ? benchmark::ConsoleReporter::OO_ColorTabular : benchmark::ConsoleReporter::OO_Tabular);
    benchmark::RunSpecifiedBenchmarks(&cap);
    benchmark::Shutdown();

    std::printf("\nper-call push latency (one thread; the tail is what a real-time producer pays):\n");
    std::vector<push_latency_pair> lat;
    for (const peer_entry& p : peers) lat.push_back(p.latency(opts, p.name));
    for (auto& l : lat) rep.add(l.batched);
    for (auto& l : lat) rep.add(l.single);

    rep.check(!g_failed.load(), "item accounting: " + g_failure);

    // The machine's cache-line round trip, measured now: a hand-off that moves one line per item
    // cannot beat it, which is what the per-item peers run into when producer and consumer overlap.
    baseline_config bc = baseline_defaults(opts);
    bc.rtt_samples = opts.pick<std::size_t>(100000, 10000);
    latency_result rtt = measure_cacheline_roundtrip(bc);
    std::printf("\n");
    rep.add(rtt);

    // Summary: the same run's figures side by side.
    auto rate = [&](const std::string& n) -> double {
        auto it = cap.results.find(n);
        return it == cap.results.end() ? 0.0 : it->second.median();
    };
    for (const char* kind : {"mpsc", "uncontended"}) {
        const bool mpsc = std::string(kind) == "mpsc";
        for (const char* arg : mpsc ? std::vector<const char*>{"/producers:1", "/producers:2"} : std::vector<const char*>{""}) {
            std::string suffix = std::string(arg);
            std::string label = mpsc ? std::string("llist add+del_all, ") + (suffix.back() == '1' ? "1" : "2") + " producer(s) + 1 consumer"
                                     : std::string("llist add+del_all, one thread (uncontended)");
            double mine = rate(std::string(kind) + "/" + ours + suffix);
            if (mine <= 0) continue;  // filtered out by --benchmark_filter
            rep.add_throughput(std::string(kind) + "/" + ours + suffix, mine);
            for (std::size_t i = 1; i < peers.size(); ++i) {
                const double theirs = rate(std::string(kind) + "/" + peers[i].name + suffix);
                if (theirs <= 0) continue;  // not run (ReaderWriterQueue: 1 producer only)
                rep.add_throughput(std::string(kind) + "/" + peers[i].name + suffix, theirs);
                rep.compare(label, "items/s", mine, unit::per_second, peers[i].name, "", theirs);
            }
        }
    }
    if (rtt.valid)
        for (const peer_entry& p : peers) {
            const double r = rate(std::string("mpsc/") + p.name + "/producers:1");
            if (r > 0)
                rep.compare(std::string("ns per item, 1 producer: ") + p.name, "mean", 1e9 / r, unit::ns,
                            "cache-line round trip", "p50", rtt.s.p50);
        }
    for (double summary::*stat : {&summary::p50, &summary::p999, &summary::max}) {
        const bool p50 = stat == &summary::p50;
        const char* sn = p50 ? "p50 (mean of 16)" : stat == &summary::p999 ? "p99.9 (one call)" : "max (one call)";
        auto pick = [&](const push_latency_pair& p) { return p50 ? p.batched.s.*stat : p.single.s.*stat; };
        for (std::size_t i = 1; i < peers.size(); ++i)
            rep.compare("push: llist add()", sn, pick(lat[0]), unit::ns, std::string(peers[i].name) + " push", "", pick(lat[i]));
    }
    for (const auto& [name, e] : cap.results)
        if (name.rfind("mpsc/", 0) == 0)
            rep.note(name + ": allocations per item " + std::to_string(e.allocs));
    rep.print_table("summary (same run; ratio = rtdefer / peer: for items/s higher is better, for ns lower):");
    std::printf("  allocations per item (mpsc, producers included):");
    for (const auto& [name, e] : cap.results)
        if (name.rfind("mpsc/", 0) == 0 && name.find("producers:1") != std::string::npos)
            std::printf("  %s %.3g", name.substr(5, name.find('/', 5) - 5).c_str(), e.allocs);
    std::printf("\n");
    for (const auto& [name, e] : cap.results)
        if (e.rates.size() > 1) {
            auto [lo, hi] = std::minmax_element(e.rates.begin(), e.rates.end());
            std::printf("  %-40s median %s over %zu repetitions (min %s, max %s)\n", name.c_str(), fmt_rate(e.median(), "/s").c_str(),
                        e.rates.size(), fmt_rate(*lo, "/s").c_str(), fmt_rate(*hi, "/s").c_str());
        }
    return rep.finish();
}
