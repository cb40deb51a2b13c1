// rtdefer benchmark harness: cyclictest-style latency measurement.
//
// What is here (namespace rtdefer_bench):
//   bench_clock   - (clock.hpp, included here) timestamps: calibrated TSC or steady_clock; clock().
//   histogram     - fixed-size, preallocated; per-µs linear view (cyclictest) + log-linear ns view (percentiles).
//   summary       - p50/p99/p99.9/max/min/mean/count of a histogram.
//   rt_request / rt_outcome / apply_rt_to_this_thread() / lock_memory_once()
//                 - SCHED_FIFO, CPU pinning, mlockall, each reported (never silently degraded).
//   bench_thread  - a helper thread that applies an rt_request before running its function.
//   run_measured  - run a measured section on such a thread and return its outcome.
//   cpu_relax / spin_for_ns / spin_until / event_stamp
//                 - busy-waits and cross-thread timestamps on the bench clock.
#pragma once

#include <rtdefer/detail/memlock.hpp>

#include "clock.hpp"  // also <x86intrin.h>, for cpu_relax

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

namespace rtdefer_bench {

// ---------------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------------

/// Fixed-size latency histogram, allocated once at construction; record() never allocates.
///
/// Two views of the same samples:
///  - fine (log-linear, HDR-style): exact for values < 128 ns, then 64 sub-buckets per power of two
///    (<= 1.6 % relative bucket width) up to 2^64 ns. Percentiles come from here, so a 20 ns p50 and a
///    20 ms max are both meaningful.
///  - per-µs (cyclictest): linear 1 µs buckets for [0, us_buckets) µs plus an overflow counter;
///    written to JSON for plotting/comparison with cyclictest output.
/// min, max, sum are exact.
class histogram {
public:
    static constexpr unsigned sub_bits = 6;                        // 64 sub-buckets per octave
    static constexpr unsigned sub_count = 1u << sub_bits;          // 64
    static constexpr unsigned exact_limit = 2 * sub_count;         // values below 128 ns are exact
    static constexpr unsigned fine_buckets = exact_limit + (64 - (sub_bits + 1)) * sub_count;

    explicit histogram(std::size_t us_buckets = 10000)
        : fine_(new std::uint64_t[fine_buckets]()), us_(new std::uint64_t[us_buckets]()), us_buckets_(us_buckets) {}
    histogram(const histogram& o) : histogram(o.us_buckets_) { merge(o); }
    histogram& operator=(const histogram& o) {
        if (this != &o) {
            histogram t(o);
            swap(t);
        }
        return *this;
    }
    histogram(histogram&&) noexcept = default;
    histogram& operator=(histogram&&) noexcept = default;
    void swap(histogram& o) noexcept {
        std::swap(fine_, o.fine_);
        std::swap(us_, o.us_);
        std::swap(us_buckets_, o.us_buckets_);
        std::swap(us_overflow_, o.us_overflow_);
        std::swap(count_, o.count_);
        std::swap(sum_, o.sum_);
        std::swap(min_, o.min_);
        std::swap(max_, o.max_);
    }

    /// Record one sample in ns. O(1), no allocation, no syscall.
    void record(std::uint64_t ns) noexcept {
        ++fine_[fine_index(ns)];
        std::uint64_t us = ns / 1000;
        if (us < us_buckets_) ++us_[us];
        else ++us_overflow_;
        ++count_;
        sum_ += ns;
        if (ns < min_) min_ = ns;
        if (ns > max_) max_ = ns;
    }

    void merge(const histogram& o) noexcept {
        for (unsigned i = 0; i < fine_buckets; ++i) fine_[i] += o.fine_[i];
        std::size_t n = std::min(us_buckets_, o.us_buckets_);
        for (std::size_t i = 0; i < n; ++i) us_[i] += o.us_[i];
        for (std::size_t i = n; i < o.us_buckets_; ++i) us_overflow_ += o.us_[i];
        us_overflow_ += o.us_overflow_;
        count_ += o.count_;
        sum_ += o.sum_;
        min_ = std::min(min_, o.min_);
        max_ = std::max(max_, o.max_);
    }

    void reset() noexcept {
        std::memset(fine_.get(), 0, fine_buckets * sizeof(std::uint64_t));
        std::memset(us_.get(), 0, us_buckets_ * sizeof(std::uint64_t));
        us_overflow_ = count_ = sum_ = max_ = 0;
        min_ = ~0ull;
    }

    std::uint64_t count() const noexcept { return count_; }
    std::uint64_t max() const noexcept { return count_ ? max_ : 0; }
    std::uint64_t min() const noexcept { return count_ ? min_ : 0; }
    double mean() const noexcept { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }

    /// Nearest-rank percentile (q in [0,1]) in ns: the smallest bucket value with >= ceil(q*count)
    /// samples at or below it. Exact below 128 ns; above, the bucket's midpoint (<= 0.8 % error);
    /// clamped to [min, max].
    double percentile(double q) const noexcept {
        if (count_ == 0) return 0.0;
        std::uint64_t rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
        if (rank < 1) rank = 1;
        if (rank > count_) rank = count_;
        std::uint64_t cum = 0;
        for (unsigned i = 0; i < fine_buckets; ++i) {
            cum += fine_[i];
            if (cum >= rank) {
                double lo = static_cast<double>(bucket_low(i));
                double w = static_cast<double>(bucket_width(i));
                double v = (w <= 1.0) ? lo : lo + w / 2.0;
                return std::clamp(v, static_cast<double>(min_), static_cast<double>(max_));
            }
        }
        return static_cast<double>(max_);
    }

    std::size_t us_buckets() const noexcept { return us_buckets_; }
    std::uint64_t us_bucket(std::size_t i) const noexcept { return us_[i]; }
    std::uint64_t us_overflow() const noexcept { return us_overflow_; }

    static constexpr unsigned fine_index(std::uint64_t v) noexcept {
        if (v < exact_limit) return static_cast<unsigned>(v);
        unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(v));  // >= 7
        unsigned sub = static_cast<unsigned>((v >> (e - sub_bits)) & (sub_count - 1));
        return exact_limit + (e - (sub_bits + 1)) * sub_count + sub;
    }
    static constexpr std::uint64_t bucket_low(unsigned i) noexcept {
        if (i < exact_limit) return i;
        unsigned e = (i - exact_limit) / sub_count + sub_bits + 1;
        unsigned sub = (i - exact_limit) % sub_count;
        return (static_cast<std::uint64_t>(sub_count + sub)) << (e - sub_bits);
    }
    static constexpr std::uint64_t bucket_width(unsigned i) noexcept {
        if (i < exact_limit) return 1;
        unsigned e = (i - exact_limit) / sub_count + sub_bits + 1;
        return std::uint64_t{1} << (e - sub_bits);
    }

private:
    std::unique_ptr<std::uint64_t[]> fine_;
    std::unique_ptr<std::uint64_t[]> us_;
    std::size_t us_buckets_;
    std::uint64_t us_overflow_ = 0;
    std::uint64_t count_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t min_ = ~0ull;
    std::uint64_t max_ = 0;
};

static_assert(histogram::fine_index(127) == 127);
static_assert(histogram::fine_index(128) == 128);
static_assert(histogram::bucket_low(histogram::fine_index(1000)) <= 1000);
static_assert(histogram::bucket_low(histogram::fine_index(1000)) + histogram::bucket_width(histogram::fine_index(1000)) > 1000);
static_assert(histogram::fine_index(~0ull) == histogram::fine_buckets - 1);

/// A histogram's headline figures, in ns.
struct summary {
    std::uint64_t count = 0;
    double p50 = 0, p99 = 0, p999 = 0, max = 0, min = 0, mean = 0;
    static summary of(const histogram& h) {
        summary s;
        s.count = h.count();
        s.p50 = h.percentile(0.50);
        s.p99 = h.percentile(0.99);
        s.p999 = h.percentile(0.999);
        s.max = static_cast<double>(h.max());
        s.min = static_cast<double>(h.min());
        s.mean = h.mean();
        return s;
    }
};

// ---------------------------------------------------------------------------------------------
// Real-time setup: SCHED_FIFO, pinning, mlockall — each attempted, each reported.
// ---------------------------------------------------------------------------------------------

struct rt_request {
    bool fifo = true;   ///< try SCHED_FIFO (harness-wide --no-rt turns it off)
    int priority = 80;  ///< cyclictest's customary priority range is 80-99; 80 leaves room above us
    int cpu = -1;       ///< pin to this CPU (-1: no pinning)
};

struct rt_outcome {
    bool fifo_requested = false;
    bool fifo = false;      ///< SCHED_FIFO actually in force
    int fifo_error = 0;     ///< errno when refused (EPERM in unprivileged containers)
    int priority = 0;
    int cpu_requested = -1;
    bool pinned = false;
    int pin_error = 0;
    /// "SCHED_FIFO 80, CPU 1" or "SCHED_OTHER (SCHED_FIFO refused: Operation not permitted), CPU 1"
    std::string describe() const {
        std::string s;
        if (fifo) s = "SCHED_FIFO " + std::to_string(priority);
        else if (fifo_requested) s = std::string("SCHED_OTHER (SCHED_FIFO refused: ") + std::strerror(fifo_error) + ", fell back)";
        else s = "SCHED_OTHER (RT not requested)";
        if (cpu_requested >= 0) {
            if (pinned) s += ", CPU " + std::to_string(cpu_requested);
            else s += ", unpinned (CPU " + std::to_string(cpu_requested) + " refused: " + std::strerror(pin_error) + ")";
        }
        return s;
    }
};

/// Global harness switches (set by parse_args; benches may also set them directly).
struct harness_switches {
    bool allow_rt = true;
    bool allow_mlock = true;
};
inline harness_switches& switches() {
    static harness_switches s;
    return s;
}

/// Number of CPUs this process may run on.
inline int usable_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return CPU_COUNT(&set);
}
/// The n-th CPU (0-based) in this process's affinity mask, or -1.
inline int nth_usable_cpu(int n) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set) && n-- == 0) return c;
    return -1;
}

/// Apply an rt_request to the calling thread. Setup path.
inline rt_outcome apply_rt_to_this_thread(const rt_request& r) {
    rt_outcome o;
    o.cpu_requested = r.cpu;
    if (r.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(r.cpu, &set);
        int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        o.pinned = (e == 0);
        o.pin_error = e;
    }
    o.fifo_requested = r.fifo && switches().allow_rt;
    if (o.fifo_requested) {
        sched_param p{};
        p.sched_priority = r.priority;
        int e = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
        o.fifo = (e == 0);
        o.fifo_error = e;
        o.priority = o.fifo ? r.priority : 0;
    }
    return o;
}

/// Applies an rt_request (pinning, SCHED_FIFO) to the calling thread for the guard's lifetime and
/// restores the previous affinity mask and policy after (for a bench's main thread, which runs
/// other benchmarks afterwards).
class thread_placement_guard {
public:
    explicit thread_placement_guard(const rt_request& r) {
        CPU_ZERO(&saved_cpus_);
        have_cpus_ = pthread_getaffinity_np(pthread_self(), sizeof saved_cpus_, &saved_cpus_) == 0;
        have_sched_ = pthread_getschedparam(pthread_self(), &saved_policy_, &saved_param_) == 0;
        outcome_ = apply_rt_to_this_thread(r);
    }
    thread_placement_guard(const thread_placement_guard&) = delete;
    thread_placement_guard& operator=(const thread_placement_guard&) = delete;
    ~thread_placement_guard() {
        if (have_sched_ && outcome_.fifo) pthread_setschedparam(pthread_self(), saved_policy_, &saved_param_);
        if (have_cpus_ && outcome_.pinned) pthread_setaffinity_np(pthread_self(), sizeof saved_cpus_, &saved_cpus_);
    }
    const rt_outcome& outcome() const { return outcome_; }

private:
    cpu_set_t saved_cpus_{};
    bool have_cpus_ = false;
    int saved_policy_ = SCHED_OTHER;
    sched_param saved_param_{};
    bool have_sched_ = false;
    rt_outcome outcome_;
};

/// Back to SCHED_OTHER (for a thread that continues with non-measured work).
inline void drop_rt_on_this_thread() {
    sched_param p{};
    p.sched_priority = 0;
    pthread_setschedparam(pthread_self(), SCHED_OTHER, &p);
}

struct mlock_outcome {
    bool attempted = false;
    rtdefer::memlock_result result; ///< what was locked, and why no more (detail/memlock.hpp)
    std::string describe() const {
        if (!attempted) return "mlockall not attempted (--no-mlock)";
        std::string s = result.describe();
        if (result.locked != rtdefer::memlock_level::current_and_future) s += " (page faults may show in the tail)";
        return s;
    }
};

/// mlockall once per process (idempotent), as much as RLIMIT_MEMLOCK leaves room for: the same
/// decision as rt_thread's lock_memory, so the bench's later threads still start. Setup path.
inline const mlock_outcome& lock_memory_once() {
    static const mlock_outcome o = [] {
        mlock_outcome r;
        if (!switches().allow_mlock) return r;
        r.attempted = true;
        r.result = rtdefer::detail::lock_process_memory();
        return r;
    }();
    return o;
}

/// Print a one-line warning once per process the first time SCHED_FIFO is refused.
inline void note_rt_outcome(const rt_outcome& o) {
    static std::atomic<bool> warned{false};
    if (o.fifo_requested && !o.fifo && !warned.exchange(true, std::memory_order_relaxed))
        std::fprintf(stderr,
                     "rtdefer-bench: NOTE: SCHED_FIFO refused (%s); measured threads run SCHED_OTHER. Tails are NOT "
                     "real-time figures.\n",
                     std::strerror(o.fifo_error));
}

/// A helper thread configured (pinning, SCHED_FIFO) before its function runs. Setup-time object
/// (std::thread allocates). The outcome is available once started() returns.
class bench_thread {
public:
    bench_thread() = default;
    template <class F>
    bench_thread(rt_request req, F&& fn) : state_(std::make_shared<shared>()) {
        auto st = state_;
        th_ = std::thread([st, req, f = std::forward<F>(fn)]() mutable {
            st->outcome = apply_rt_to_this_thread(req);
            st->ready.store(true, std::memory_order_release);  // pairs with acquire in outcome()
            note_rt_outcome(st->outcome);
            f();
        });
    }
    bench_thread(bench_thread&&) noexcept = default;
    bench_thread& operator=(bench_thread&& o) noexcept {
        join();
        th_ = std::move(o.th_);
        state_ = std::move(o.state_);
        return *this;
    }
    ~bench_thread() { join(); }
    void join() {
        if (th_.joinable()) th_.join();
    }
    /// Waits (yielding) until the thread has applied its request.
    const rt_outcome& outcome() const {
        while (!state_->ready.load(std::memory_order_acquire)) std::this_thread::yield();
        return state_->outcome;
    }

private:
    struct shared {
        std::atomic<bool> ready{false};
        rt_outcome outcome;
    };
    std::shared_ptr<shared> state_;
    std::thread th_;
};

/// Run fn() on a fresh thread configured by req (pinning + SCHED_FIFO when permitted), after
/// mlockall; join it and return the outcome. fn must not allocate inside its timed region; give it a
/// histogram constructed beforehand.
template <class F>
rt_outcome run_measured(const rt_request& req, F&& fn) {
    lock_memory_once();
    bench_thread t(req, std::forward<F>(fn));
    rt_outcome o = t.outcome();
    t.join();
    return o;
}

/// Time one call of op() (ns, includes one clock overhead — see bench_clock::overhead_ns()).
template <class Op>
inline std::uint64_t time_one(Op&& op) noexcept(noexcept(op())) {
    std::uint64_t a = bench_clock::now();
    op();
    std::uint64_t b = bench_clock::now_end();
    return clock().delta_ns(a, b);
}

/// Time `n` calls of op(i) back to back and return the mean per call in ns, rounded; for sub-µs
/// operations where one clock read (~10-30 ns) would dominate a single-call measurement.
template <class Op>
inline std::uint64_t time_batch(std::size_t n, Op&& op) noexcept(noexcept(op(std::size_t{}))) {
    std::uint64_t a = bench_clock::now();
    for (std::size_t i = 0; i < n; ++i) op(i);
    std::uint64_t b = bench_clock::now_end();
    return static_cast<std::uint64_t>(clock().to_ns(b > a ? b - a : 0) / static_cast<double>(n) + 0.5);
}

/// Record `samples` samples of `batch` back-to-back op(i) calls each (per-call mean of a batch; see
/// time_batch). With batch = 1 each sample is one call plus one clock read pair.
template <class Op>
inline void record_batches(histogram& h, std::size_t samples, std::size_t batch, Op&& op) {
    for (std::size_t s = 0; s < samples; ++s) h.record(time_batch(batch, op));
}

/// Pause hint for spin loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// Busy-wait for `ns` nanoseconds of this clock (no syscall).
inline void spin_for_ns(double ns) noexcept {
    std::uint64_t end = bench_clock::now() + clock().ns_to_ticks(ns);
    while (bench_clock::now() < end) cpu_relax();
}

/// Spin until pred() or `timeout_ns` of bench_clock passes; false on timeout.
template <class Pred>
inline bool spin_until(Pred&& pred, double timeout_ns = 2e9) noexcept {
    const std::uint64_t end = bench_clock::now() + clock().ns_to_ticks(timeout_ns);
    for (unsigned i = 0;; ++i) {
        if (pred()) return true;
        cpu_relax();
        if ((i & 1023) == 1023 && bench_clock::now() > end) return false;
    }
}

/// Cross-thread event timestamp: the measuring thread arm()s, triggers something, and wait()s; the
/// target context (another thread, a signal handler, a work callback) calls mark() when the event
/// reaches it. mark() is wait-free and async-signal-safe (a TSC read and two atomic stores).
///
///   auto armed = ev.arm();  std::uint64_t t0 = bench_clock::now();  trigger();
///   std::uint64_t t1;  if (ev.wait(armed, t1)) h.record(clock().delta_ns(t0, t1));
class event_stamp {
public:
    /// The sequence number a later wait() compares against.
    std::uint64_t arm() const noexcept { return seq_.load(std::memory_order_acquire); }
    /// mark() calls so far (read after the marking thread was joined, or as arm() does).
    std::uint64_t count() const noexcept { return seq_.load(std::memory_order_acquire); }
    /// In the target context: timestamp now and publish it.
    void mark() noexcept {
        // relaxed: published by the release increment below.
        stamp_.store(bench_clock::now_end(), std::memory_order_relaxed);
        // release: pairs with the acquire in wait(): the stamp is visible once the count moved.
        seq_.fetch_add(1, std::memory_order_release);
    }
    /// Spin until a mark() after `armed`; its timestamp goes to `stamp`. false after `timeout_ns`.
    bool wait(std::uint64_t armed, std::uint64_t& stamp, double timeout_ns = 2e9) const noexcept {
        const std::uint64_t end = bench_clock::now() + clock().ns_to_ticks(timeout_ns);
        for (unsigned i = 0;; ++i) {
            if (seq_.load(std::memory_order_acquire) != armed) {
                // relaxed: ordered by the acquire above (a later mark() may overwrite it: then the
                // caller sees the later event's time, which only happens if it triggered twice).
                stamp = stamp_.load(std::memory_order_relaxed);
                return true;
            }
            cpu_relax();
            if ((i & 1023) == 1023 && bench_clock::now() > end) return false;
        }
    }

private:
    alignas(64) std::atomic<std::uint64_t> seq_{0};
    std::atomic<std::uint64_t> stamp_{0};
};

}  // namespace rtdefer_bench
