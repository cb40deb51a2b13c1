// rtdefer benchmark harness: common command line.
//
//   --quick          (or env RTDEFER_BENCH_QUICK=1) shrink every run to a few seconds in total; the
//                    test suite `bench-smoke` runs every bench this way, so correctness checks still run.
//   --json FILE      write the results (figures, histograms, machine, RT status) as JSON.
//   --no-rt          do not try SCHED_FIFO (env RTDEFER_BENCH_NO_RT=1).
//   --no-mlock       do not call mlockall.
//   --samples N      override the sample count of latency runs.
//   --repeat N       run the measurement N times and report medians (benches that support it).
//   --help
// parse_args() removes what it recognises from argv, so the rest can go to benchmark::Initialize.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "latency.hpp"

namespace rtdefer_bench {

struct options {
    bool quick = false;
    std::string json_path;
    std::size_t samples = 0;  ///< 0: the bench's default
    std::size_t repeat = 1;   ///< --repeat N: whole-measurement repetitions (median reported)
    std::string bench_name;

    /// The full-mode or the quick-mode value.
    template <class T>
    T pick(T full, T quick_value) const {
        return quick ? quick_value : full;
    }
    /// Sample count: --samples if given, else pick(full, quick_value).
    std::size_t sample_count(std::size_t full, std::size_t quick_value) const {
        return samples ? samples : pick(full, quick_value);
    }
};

inline bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

/// Parse the common flags; consumed ones are removed from argv. With `allow_unknown` false an unknown
/// argument is an error (exit 2); benches that forward the rest to Google Benchmark pass true.
/// Also calibrates the clock, so no timestamp is ever taken with an uncalibrated source.
inline options parse_args(int& argc, char** argv, const char* bench_name, bool allow_unknown = false,
                          const char* extra_help = nullptr) {
    options o;
    o.bench_name = bench_name;
    o.quick = env_flag("RTDEFER_BENCH_QUICK");
    if (env_flag("RTDEFER_BENCH_NO_RT")) switches().allow_rt = false;
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* flag) -> std::string {
            std::string f = flag;
            if (a.size() > f.size() && a.compare(0, f.size() + 1, f + "=") == 0) return a.substr(f.size() + 1);
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s: %s needs a value\n", bench_name, flag);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick") o.quick = true;
        else if (a == "--json" || a.rfind("--json=", 0) == 0) o.json_path = value("--json");
        else if (a == "--no-rt") switches().allow_rt = false;
        else if (a == "--no-mlock") switches().allow_mlock = false;
        else if (a == "--samples" || a.rfind("--samples=", 0) == 0) o.samples = std::strtoull(value("--samples").c_str(), nullptr, 10);
        else if (a == "--repeat" || a.rfind("--repeat=", 0) == 0) {
            o.repeat = std::strtoull(value("--repeat").c_str(), nullptr, 10);
            if (o.repeat == 0) o.repeat = 1;
        } else if (a == "--help" || a == "-h") {
            std::printf(
                "usage: %s [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N] [--repeat N]%s\n"
                "  --quick      a few seconds in total (also env RTDEFER_BENCH_QUICK=1)\n"
                "  --json FILE  write results as JSON\n"
                "  --no-rt      do not try SCHED_FIFO (also env RTDEFER_BENCH_NO_RT=1)\n"
                "  --no-mlock   do not call mlockall\n"
                "  --samples N  samples per latency figure\n"
                "  --repeat N   repeat the whole measurement N times, report medians\n"
                "%s",
                bench_name, allow_unknown ? " [Google Benchmark flags]" : "", extra_help ? extra_help : "");
            if (!allow_unknown) std::exit(0);
            argv[out++] = argv[i];  // let Google Benchmark print its own help too
        } else if (allow_unknown) argv[out++] = argv[i];
        else {
            std::fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", bench_name, argv[i]);
            std::exit(2);
        }
    }
    argc = out;
    argv[argc] = nullptr;
    (void)clock();  // calibrate now, before any timed region
    return o;
}

}  // namespace rtdefer_bench
