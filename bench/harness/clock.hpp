// rtdefer benchmark harness: the bench clock (bench_clock, clock()).
//
//   bench_clock   - timestamps: calibrated TSC (rdtsc) where the kernel itself trusts the TSC, else steady_clock.
//                   clock() returns it; write rtdefer_bench::clock() under `using namespace` (::clock exists).
//
// Why the TSC: on this class of machine (KVM, clocksource=tsc) a vDSO clock_gettime costs ~29 ns and
// `lfence; rdtsc` ~10-20 ns; the figures we need (an llist add at ~20 ns) are of the same order, so the
// cheaper clock matters, and for those we also time batches (see time_batch). Timestamps taken on two
// CPUs are only comparable if the TSC is synchronised; the kernel checks exactly that before it uses
// the TSC as its clocksource, so we use the TSC only when constant_tsc+nonstop_tsc are present and the
// current clocksource is "tsc". Otherwise (or with RTDEFER_BENCH_CLOCK=steady) we use steady_clock
// (CLOCK_MONOTONIC), which is always cross-CPU consistent. The chosen source is printed and in JSON.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define RTDEFER_BENCH_HAVE_TSC 1
#else
#define RTDEFER_BENCH_HAVE_TSC 0
#endif

namespace rtdefer_bench {

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// Timestamps in "ticks" (TSC cycles or steady_clock ns) and their conversion to ns.
/// Calibrated once, on first use (a setup path: ~20 ms); now() itself is a few instructions.
class bench_clock {
public:
    static bench_clock& instance() {
        static bench_clock c;
        return c;
    }

    // now()/now_end() read the source chosen at calibration: call clock() once during setup, before any
    // timed region (parse_args() does), or early timestamps would be steady_clock ns, later ones ticks.

    /// Start-of-interval timestamp: lfence keeps earlier loads from drifting past the read.
    static std::uint64_t now() noexcept {
#if RTDEFER_BENCH_HAVE_TSC
        if (__builtin_expect(tsc_in_use(), 1)) {
            _mm_lfence();
            return __rdtsc();
        }
#endif
        return steady_ns();
    }

    /// End-of-interval timestamp: rdtscp waits for earlier instructions; lfence keeps later ones after.
    static std::uint64_t now_end() noexcept {
#if RTDEFER_BENCH_HAVE_TSC
        if (__builtin_expect(tsc_in_use(), 1)) {
            unsigned aux;
            std::uint64_t t = __rdtscp(&aux);
            _mm_lfence();
            return t;
        }
#endif
        return steady_ns();
    }

    /// Ticks -> ns. Signed input tolerated (returns 0 for negative intervals: clock skew guard).
    double to_ns(std::uint64_t ticks) const noexcept { return static_cast<double>(ticks) * ns_per_tick_; }
    std::uint64_t delta_ns(std::uint64_t start, std::uint64_t end) const noexcept {
        if (end <= start) return 0;
        return static_cast<std::uint64_t>(static_cast<double>(end - start) * ns_per_tick_ + 0.5);
    }
    std::uint64_t ns_to_ticks(double ns) const noexcept { return static_cast<std::uint64_t>(ns / ns_per_tick_); }

    bool uses_tsc() const noexcept { return tsc_in_use(); }
    const char* source() const noexcept { return tsc_in_use() ? "tsc" : "steady_clock"; }
    /// Why the source was chosen (for the output).
    const std::string& reason() const noexcept { return reason_; }
    double ns_per_tick() const noexcept { return ns_per_tick_; }
    double ghz() const noexcept { return 1.0 / ns_per_tick_; }
    /// Median cost of now() immediately followed by now_end(), in ns: the floor of any single-op figure.
    double overhead_ns() const noexcept { return overhead_ns_; }

    static std::uint64_t steady_ns() noexcept {
        return static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
                .count());
    }

private:
    static bool& tsc_flag() noexcept {
        static bool f = false;
        return f;
    }
    static bool tsc_in_use() noexcept { return tsc_flag(); }

    static std::string read_file_line(const char* path) {
        std::ifstream f(path);
        std::string s;
        std::getline(f, s);
        return s;
    }

    static bool cpuinfo_has_flag(const std::string& flag) {
        std::ifstream f("/proc/cpuinfo");
        std::string line;
        while (std::getline(f, line)) {
            if (line.rfind("flags", 0) == 0) {
                return line.find(" " + flag + " ") != std::string::npos ||
                       (line.size() >= flag.size() + 1 && line.compare(line.size() - flag.size(), flag.size(), flag) == 0);
            }
        }
        return false;
    }

    bench_clock() {
        const char* force = std::getenv("RTDEFER_BENCH_CLOCK");
        bool want_tsc = RTDEFER_BENCH_HAVE_TSC && !(force && std::strcmp(force, "steady") == 0);
        if (!RTDEFER_BENCH_HAVE_TSC) reason_ = "no TSC on this architecture";
        else if (!want_tsc) reason_ = "RTDEFER_BENCH_CLOCK=steady";
        if (want_tsc) {
            std::string cs = read_file_line("/sys/devices/system/clocksource/clocksource0/current_clocksource");
            bool inv = cpuinfo_has_flag("constant_tsc") && cpuinfo_has_flag("nonstop_tsc");
            if (!inv) {
                want_tsc = false;
                reason_ = "TSC not invariant (constant_tsc/nonstop_tsc missing)";
            } else if (cs != "tsc") {
                want_tsc = false;
                reason_ = "kernel clocksource is '" + cs + "', not tsc: TSC not trusted across CPUs";
            } else {
                reason_ = "invariant TSC and kernel clocksource=tsc (synchronised across CPUs); rdtsc ~2x cheaper than "
                          "clock_gettime";
            }
        }
#if RTDEFER_BENCH_HAVE_TSC
        if (want_tsc) {
            // Calibrate against CLOCK_MONOTONIC over ~20 ms, bracketing each end tightly.
            auto sample = [](std::uint64_t& ns, std::uint64_t& tsc) {
                std::uint64_t best = ~0ull;
                for (int i = 0; i < 5; ++i) {
                    std::uint64_t a = __rdtsc();
                    std::uint64_t n = steady_ns();
                    std::uint64_t b = __rdtsc();
                    if (b - a < best) {
                        best = b - a;
                        ns = n;
                        tsc = a + (b - a) / 2;
                    }
                }
            };
            std::uint64_t n0 = 0, t0 = 0, n1 = 0, t1 = 0;
            sample(n0, t0);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            sample(n1, t1);
            if (t1 > t0 && n1 > n0) {
                ns_per_tick_ = static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0);
                tsc_flag() = true;
            } else {
                reason_ = "TSC calibration failed";
            }
        }
#endif
        // Overhead: median of back-to-back now()/now_end() pairs.
        std::vector<std::uint64_t> d(2001);
        for (auto& x : d) {
            std::uint64_t a = now();
            std::uint64_t b = now_end();
            x = b - a;
        }
        std::nth_element(d.begin(), d.begin() + 1000, d.end());
        overhead_ns_ = to_ns(d[1000]);
    }

    double ns_per_tick_ = 1.0;
    double overhead_ns_ = 0.0;
    std::string reason_;
};

inline bench_clock& clock() { return bench_clock::instance(); }

}  // namespace rtdefer_bench
