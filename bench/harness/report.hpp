// rtdefer benchmark harness: results, the side-by-side table, machine description, JSON.
//
//   report rep(opts);                                   // opts from parse_args()
//   rep.add(latency_result{...});                       // prints one line, keeps it for JSON
//   rep.add_throughput("llist 2P", 31.2e6, "items/s");
//   rep.compare("rtdefer lazy", "p50", 90.0, unit::ns, "futex-wake", "p50", 3100.0);  // table row
//   rep.check(lost == 0, "llist lost items");          // a failed check makes exit_code() non-zero
//   rep.print_table(); return rep.finish();             // writes --json FILE, returns 0 / 1
#pragma once

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/utsname.h>

#include "args.hpp"
#include "latency.hpp"

namespace rtdefer_bench {

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

enum class unit { ns, per_second, count, ratio };

/// 21 ns, 0.09 µs style: sub-µs values in ns, then µs, then ms.
inline std::string fmt_ns(double ns) {
    char b[64];
    if (ns < 10.0) std::snprintf(b, sizeof b, "%.1f ns", ns);
    else if (ns < 1000.0) std::snprintf(b, sizeof b, "%.0f ns", ns);
    else if (ns < 10e3) std::snprintf(b, sizeof b, "%.2f µs", ns / 1e3);
    else if (ns < 100e3) std::snprintf(b, sizeof b, "%.1f µs", ns / 1e3);
    else if (ns < 10e6) std::snprintf(b, sizeof b, "%.0f µs", ns / 1e3);
    else std::snprintf(b, sizeof b, "%.1f ms", ns / 1e6);
    return b;
}

inline std::string fmt_rate(double per_s, const std::string& what = "/s") {
    char b[64];
    if (per_s >= 1e9) std::snprintf(b, sizeof b, "%.2f G%s", per_s / 1e9, what.c_str());
    else if (per_s >= 1e6) std::snprintf(b, sizeof b, "%.2f M%s", per_s / 1e6, what.c_str());
    else if (per_s >= 1e3) std::snprintf(b, sizeof b, "%.2f k%s", per_s / 1e3, what.c_str());
    else std::snprintf(b, sizeof b, "%.2f %s", per_s, what.c_str());
    return b;
}

inline std::string fmt_ratio(double r) {
    char b[64];
    if (!(r == r)) return "n/a";
    if (r < 0.01) std::snprintf(b, sizeof b, "%.3f×", r);
    else if (r < 10) std::snprintf(b, sizeof b, "%.2f×", r);
    else if (r < 100) std::snprintf(b, sizeof b, "%.1f×", r);
    else std::snprintf(b, sizeof b, "%.0f×", r);
    return b;
}

inline std::string fmt_value(double v, unit u) {
    switch (u) {
    case unit::ns: return fmt_ns(v);
    case unit::per_second: return fmt_rate(v, "/s");
    case unit::ratio: return fmt_ratio(v);
    case unit::count: {
        char b[64];
        std::snprintf(b, sizeof b, "%.3g", v);
        return b;
    }
    }
    return "?";
}

/// Display width of a UTF-8 string: its code points (µ and × are one column each; printf's %-Ns
/// counts bytes, so a cell holding µs would come out one column short). Pad cells with pad().
inline std::size_t display_width(const std::string& s) {
    std::size_t w = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++w;
    return w;
}
/// Returns: s padded on the right to `w` display columns (left-aligned cell).
inline std::string pad(const std::string& s, std::size_t w) {
    std::size_t d = display_width(s);
    return d >= w ? s : s + std::string(w - d, ' ');
}
/// Returns: s padded on the left to `w` display columns (right-aligned cell).
inline std::string pad_left(const std::string& s, std::size_t w) {
    std::size_t d = display_width(s);
    return d >= w ? s : std::string(w - d, ' ') + s;
}

inline std::string json_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\t': o += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char b[8];
                std::snprintf(b, sizeof b, "\\u%04x", c);
                o += b;
            } else o += c;
        }
    }
    return o;
}
inline std::string json_num(double v) {
    if (!(v == v) || v > 1e300 || v < -1e300) return "null";
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", v);
    return b;
}

// ---------------------------------------------------------------------------------------------
// Machine description
// ---------------------------------------------------------------------------------------------

struct machine_info {
    std::string cpu_model, kernel, clocksource, hypervisor, compiler, build, utc_start;
    int cpus_online = 0, cpus_usable = 0;
    std::string load_start;  ///< /proc/loadavg at start: the machine is shared, figures depend on it
    double clock_ghz = 0, clock_overhead_ns = 0;
    std::string clock_source, clock_reason;

    static std::string loadavg() {
        std::ifstream f("/proc/loadavg");
        std::string a, b, c;
        f >> a >> b >> c;
        return a + " " + b + " " + c;
    }

    static machine_info probe() {
        machine_info m;
        {
            std::ifstream f("/proc/cpuinfo");
            std::string line;
            while (std::getline(f, line)) {
                if (m.cpu_model.empty() && line.rfind("model name", 0) == 0) m.cpu_model = line.substr(line.find(':') + 2);
                if (line.rfind("flags", 0) == 0) {
                    m.hypervisor = line.find(" hypervisor") != std::string::npos ? "yes" : "no";
                    break;
                }
            }
        }
        utsname u{};
        if (uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
        {
            std::ifstream f("/sys/devices/system/clocksource/clocksource0/current_clocksource");
            std::getline(f, m.clocksource);
        }
        m.cpus_online = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
        m.cpus_usable = usable_cpus();
        m.load_start = loadavg();
#if defined(__clang__)
        m.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        m.compiler = std::string("gcc ") + __VERSION__;
#endif
#if defined(__OPTIMIZE__)
        m.build = "optimized";
#else
        m.build = "UNOPTIMIZED (figures meaningless)";
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        m.build += ", sanitizer (figures meaningless)";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
        m.build += ", sanitizer (figures meaningless)";
#endif
#endif
        std::time_t t = std::time(nullptr);
        char b[64];
        std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
        m.utc_start = b;
        m.clock_ghz = clock().ghz();
        m.clock_overhead_ns = clock().overhead_ns();
        m.clock_source = clock().source();
        m.clock_reason = clock().reason();
        return m;
    }

    std::string one_line() const {
        char b[512];
        std::snprintf(b, sizeof b, "%s, %d CPUs (%d usable), %s, hypervisor=%s, load %s", cpu_model.c_str(), cpus_online,
                      cpus_usable, kernel.c_str(), hypervisor.c_str(), load_start.c_str());
        return b;
    }
};

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// One latency figure: a distribution in ns plus how it was obtained.
struct latency_result {
    std::string name;         ///< "futex wake-to-run"
    std::string what;         ///< what one sample is: "from just before unpark() to the woken thread running"
    summary s;                ///< figures in ns
    rt_outcome rt;            ///< scheduling of the measured thread
    std::string note;         ///< anything else worth printing (discarded samples, fallbacks)
    std::shared_ptr<const histogram> hist;  ///< optional: per-µs buckets go to JSON
    bool valid = true;        ///< false: could not be measured here (note says why)

    /// A measured result: figures from `h` (kept for the per-µs JSON histogram).
    static latency_result from(std::string name, std::string what, std::shared_ptr<const histogram> h,
                               const rt_outcome& rt = {}, std::string note = {}) {
        latency_result r;
        r.name = std::move(name);
        r.what = std::move(what);
        r.s = summary::of(*h);
        r.rt = rt;
        r.note = std::move(note);
        r.hist = std::move(h);
        return r;
    }
    /// A figure that could not be measured here; `why` is printed instead.
    static latency_result unavailable(std::string name, std::string what, std::string why) {
        latency_result r;
        r.name = std::move(name);
        r.what = std::move(what);
        r.valid = false;
        r.note = std::move(why);
        return r;
    }
};

struct throughput_result {
    std::string name;
    double per_second = 0;
    std::string unit_name = "items/s";
    std::string note;
};

struct comparison_row {
    std::string name, stat;
    double value = 0;
    unit u = unit::ns;
    std::string base_name, base_stat;
    double base_value = 0;
    double ratio() const { return base_value != 0 ? value / base_value : std::nan(""); }
};

/// The median of each headline figure over several runs of the same measurement (count: summed).
/// Invalid runs are skipped; if all are invalid, the first is returned.
inline latency_result median_of_runs(const std::vector<latency_result>& runs) {
    std::vector<const latency_result*> v;
    for (const auto& r : runs)
        if (r.valid) v.push_back(&r);
    if (v.empty()) return runs.empty() ? latency_result{} : runs.front();
    auto med = [&](double summary::*f) {
        std::vector<double> x;
        for (const auto* r : v) x.push_back(r->s.*f);
        std::sort(x.begin(), x.end());
        return x.size() % 2 ? x[x.size() / 2] : (x[x.size() / 2 - 1] + x[x.size() / 2]) / 2;
    };
    latency_result m = *v.front();
    m.hist.reset();
    m.s.p50 = med(&summary::p50);
    m.s.p99 = med(&summary::p99);
    m.s.p999 = med(&summary::p999);
    m.s.max = med(&summary::max);
    m.s.min = med(&summary::min);
    m.s.mean = med(&summary::mean);
    m.s.count = 0;
    for (const auto* r : v) m.s.count += r->s.count;
    m.name += " (median of " + std::to_string(v.size()) + ")";
    m.note = "each figure is the median over the runs of that figure; n = all samples";
    return m;
}

/// Print a side-by-side table:  name | stat value | baseline name stat value | ratio
inline void print_table(const std::vector<comparison_row>& rows, std::FILE* out = stdout, const char* title = nullptr) {
    if (rows.empty()) return;
    std::vector<std::string> c0, c1, c2, c3;
    for (const auto& r : rows) {
        c0.push_back(r.name);
        c1.push_back(r.stat + " " + fmt_value(r.value, r.u));
        c2.push_back("baseline " + r.base_name + (r.base_stat.empty() ? "" : " " + r.base_stat) + " " +
                     fmt_value(r.base_value, r.u));
        c3.push_back(fmt_ratio(r.ratio()));
    }
    auto width = [](const std::vector<std::string>& c) {
        std::size_t w = 0;
        for (const auto& s : c) w = std::max(w, display_width(s));
        return w;
    };
    std::size_t w0 = width(c0), w1 = width(c1), w2 = width(c2);
    if (title) std::fprintf(out, "\n%s\n", title);
    for (std::size_t i = 0; i < rows.size(); ++i)
        std::fprintf(out, "  %s | %s | %s | %s\n", pad(c0[i], w0).c_str(), pad(c1[i], w1).c_str(), pad(c2[i], w2).c_str(),
                     c3[i].c_str());
}

/// Print one latency line: name  p50 .. p99 .. p99.9 .. max .. (n=..)  [sched]
inline void print_latency(const latency_result& r, std::FILE* out = stdout) {
    if (!r.valid) {
        std::fprintf(out, "  %s not measured: %s\n", pad(r.name, 38).c_str(), r.note.c_str());
        return;
    }
    std::fprintf(out, "  %s | p50 %s | p99 %s | p99.9 %s | max %s | n=%llu | %s\n", pad(r.name, 38).c_str(),
                 pad(fmt_ns(r.s.p50), 8).c_str(), pad(fmt_ns(r.s.p99), 8).c_str(), pad(fmt_ns(r.s.p999), 8).c_str(),
                 pad(fmt_ns(r.s.max), 8).c_str(), static_cast<unsigned long long>(r.s.count), r.rt.describe().c_str());
    if (!r.note.empty()) std::fprintf(out, "  %s   note: %s\n", pad("", 38).c_str(), r.note.c_str());
}

/// Collects everything a bench measured; prints as it goes; writes JSON at the end.
class report {
public:
    explicit report(const options& o) : opts_(o), machine_(machine_info::probe()) {}

    const machine_info& machine() const { return machine_; }
    const options& opts() const { return opts_; }

    /// Header: machine, clock, RT/mlock status. Call after lock_memory_once() if you use it.
    void print_header(std::FILE* out = stdout) const {
        std::fprintf(out, "%s%s\n", opts_.bench_name.c_str(), opts_.quick ? " (--quick: short runs, noisy figures)" : "");
        std::fprintf(out, "machine: %s\n", machine_.one_line().c_str());
        std::fprintf(out, "clock: %s (%.3f GHz, read overhead %.0f ns) — %s\n", machine_.clock_source.c_str(),
                     machine_.clock_ghz, machine_.clock_overhead_ns, machine_.clock_reason.c_str());
        std::fprintf(out, "memory: %s; build: %s\n", lock_memory_once().describe().c_str(), machine_.build.c_str());
    }

    void add(latency_result r, bool print = true) {
        if (print) print_latency(r);
        lat_.push_back(std::move(r));
    }
    void add_throughput(std::string name, double per_second, std::string unit_name = "items/s", std::string note = {}) {
        thr_.push_back({std::move(name), per_second, std::move(unit_name), std::move(note)});
    }
    void compare(std::string name, std::string stat, double value, unit u, std::string base_name, std::string base_stat,
                 double base_value) {
        rows_.push_back({std::move(name), std::move(stat), value, u, std::move(base_name), std::move(base_stat), base_value});
    }
    void compare(comparison_row r) { rows_.push_back(std::move(r)); }
    void print_table(const char* title = "side by side (same run):", std::FILE* out = stdout) const {
        rtdefer_bench::print_table(rows_, out, title);
    }

    /// Record a correctness check; a failed one is printed at once and makes exit_code() 1.
    bool check(bool ok, const std::string& what) {
        if (!ok) {
            std::fprintf(stderr, "%s: CHECK FAILED: %s\n", opts_.bench_name.c_str(), what.c_str());
            failures_.push_back(what);
        }
        return ok;
    }
    void note(std::string n) { notes_.push_back(std::move(n)); }
    int exit_code() const { return failures_.empty() ? 0 : 1; }

    std::string to_json() const {
        std::ostringstream j;
        j << "{\n  \"bench\": \"" << json_escape(opts_.bench_name) << "\",\n  \"quick\": " << (opts_.quick ? "true" : "false")
          << ",\n  \"machine\": {\"cpu\": \"" << json_escape(machine_.cpu_model) << "\", \"cpus_online\": " << machine_.cpus_online
          << ", \"cpus_usable\": " << machine_.cpus_usable << ", \"kernel\": \"" << json_escape(machine_.kernel)
          << "\", \"hypervisor\": \"" << machine_.hypervisor << "\", \"clocksource\": \"" << json_escape(machine_.clocksource)
          << "\", \"loadavg_start\": \"" << machine_.load_start << "\", \"loadavg_end\": \"" << machine_info::loadavg()
          << "\", \"utc_start\": \"" << machine_.utc_start << "\", \"compiler\": \"" << json_escape(machine_.compiler)
          << "\", \"build\": \"" << json_escape(machine_.build) << "\"},\n  \"clock\": {\"source\": \"" << machine_.clock_source
          << "\", \"ghz\": " << json_num(machine_.clock_ghz) << ", \"overhead_ns\": " << json_num(machine_.clock_overhead_ns)
          << ", \"reason\": \"" << json_escape(machine_.clock_reason) << "\"},\n  \"mlock\": \""
          << json_escape(lock_memory_once().describe()) << "\",\n  \"latency\": [";
        for (std::size_t i = 0; i < lat_.size(); ++i) {
            const auto& r = lat_[i];
            j << (i ? "," : "") << "\n    {\"name\": \"" << json_escape(r.name) << "\", \"what\": \"" << json_escape(r.what)
              << "\", \"valid\": " << (r.valid ? "true" : "false") << ", \"unit\": \"ns\", \"count\": " << r.s.count
              << ", \"p50\": " << json_num(r.s.p50) << ", \"p99\": " << json_num(r.s.p99) << ", \"p999\": " << json_num(r.s.p999)
              << ", \"max\": " << json_num(r.s.max) << ", \"min\": " << json_num(r.s.min) << ", \"mean\": " << json_num(r.s.mean)
              << ", \"sched\": \"" << json_escape(r.rt.describe()) << "\", \"sched_fifo\": " << (r.rt.fifo ? "true" : "false")
              << ", \"note\": \"" << json_escape(r.note) << "\"";
            if (r.hist) {
                j << ", \"histogram_us\": [";
                bool first = true;
                for (std::size_t b = 0; b < r.hist->us_buckets(); ++b)
                    if (auto c = r.hist->us_bucket(b)) {
                        j << (first ? "" : ",") << "[" << b << "," << c << "]";
                        first = false;
                    }
                j << "], \"histogram_us_overflow\": " << r.hist->us_overflow();
            }
            j << "}";
        }
        j << "\n  ],\n  \"throughput\": [";
        for (std::size_t i = 0; i < thr_.size(); ++i)
            j << (i ? "," : "") << "\n    {\"name\": \"" << json_escape(thr_[i].name) << "\", \"value\": " << json_num(thr_[i].per_second)
              << ", \"unit\": \"" << json_escape(thr_[i].unit_name) << "\", \"note\": \"" << json_escape(thr_[i].note) << "\"}";
        j << "\n  ],\n  \"comparisons\": [";
        for (std::size_t i = 0; i < rows_.size(); ++i) {
            const auto& r = rows_[i];
            const char* un = r.u == unit::ns ? "ns" : r.u == unit::per_second ? "per_second" : r.u == unit::ratio ? "ratio" : "count";
            j << (i ? "," : "") << "\n    {\"name\": \"" << json_escape(r.name) << "\", \"stat\": \"" << json_escape(r.stat)
              << "\", \"value\": " << json_num(r.value) << ", \"unit\": \"" << un << "\", \"baseline\": \"" << json_escape(r.base_name)
              << "\", \"baseline_stat\": \"" << json_escape(r.base_stat) << "\", \"baseline_value\": " << json_num(r.base_value)
              << ", \"ratio\": " << json_num(r.ratio()) << "}";
        }
        j << "\n  ],\n  \"notes\": [";
        for (std::size_t i = 0; i < notes_.size(); ++i) j << (i ? ", " : "") << "\"" << json_escape(notes_[i]) << "\"";
        j << "],\n  \"failures\": [";
        for (std::size_t i = 0; i < failures_.size(); ++i) j << (i ? ", " : "") << "\"" << json_escape(failures_[i]) << "\"";
        j << "]\n}\n";
        return j.str();
    }

    /// Write --json FILE if requested; print the verdict; return the process exit code.
    int finish() {
        if (!opts_.json_path.empty()) {
            std::ofstream f(opts_.json_path);
            f << to_json();
            if (!f) check(false, "could not write " + opts_.json_path);
            else std::printf("JSON written to %s\n", opts_.json_path.c_str());
        }
        std::printf("load at end: %s\n", machine_info::loadavg().c_str());
        if (!failures_.empty()) std::printf("%zu correctness check(s) FAILED\n", failures_.size());
        return exit_code();
    }

    const std::vector<latency_result>& latencies() const { return lat_; }
    const std::vector<comparison_row>& rows() const { return rows_; }

private:
    options opts_;
    machine_info machine_;
    std::vector<latency_result> lat_;
    std::vector<throughput_result> thr_;
    std::vector<comparison_row> rows_;
    std::vector<std::string> notes_;
    std::vector<std::string> failures_;
};

}  // namespace rtdefer_bench
