// Showcase scene: a SCHED_FIFO control loop (1 kHz, pinned) receives parameter updates from a
// non-real-time UI thread. With task_work the UI builds each parameter block on its own time and
// queues it; the loop applies queued blocks at the top of its cycle (its safe point) in one
// task_work_run: no lock, no waiting. The baseline is the usual shared parameter block behind a
// mutex (plain, and with priority inheritance): the loop must take the lock the UI holds while it
// fills the block, and the UI thread shares its CPU with a busy SCHED_OTHER thread, so a UI
// preempted inside its critical section stalls the loop. Every update is accounted for.
// Full figures for task_work itself: bench/task_work_bench.
#include "scene.hpp"

#include <rtdefer/rt_thread.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto period = 1ms;
constexpr auto ui_interval = 150us; // the UI sends an update this often
constexpr int loop_priority = 70;

/// The loop's parameters: what the UI edits.
struct params {
    double coeff[16] = {};
    std::uint64_t version = 0;
};

/// The UI's work to produce one block: some math per field and a validation pass (tens of µs).
/// `field` is called per coefficient so the mutex baseline can write straight into the shared block
/// (the common pattern: lock, fill in the fields, unlock).
template <class Store> void ui_build(std::uint64_t version, Store&& field) {
    for (int i = 0; i < 16; ++i) {
        double v = 0;
        for (int k = 0; k < 160; ++k) // validation / interpolation stand-in (~50 µs in all)
            v += std::sin(0.001 * static_cast<double>(version) + i + 0.01 * k);
        field(i, v / 160.0);
    }
}

/// The loop's own work per cycle: a small filter over the coefficients (~tens of µs).
double loop_compute(const params& p, double state) {
    for (int r = 0; r < 200; ++r)
        for (double c : p.coeff)
            state = 0.999 * state + 0.001 * c;
    return state;
}

timespec to_timespec(steady::time_point tp) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

void pin_to(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    (void)pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

int nth_cpu(int n) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set) && n-- == 0)
            return c;
    return -1;
}

struct variant_result {
    std::string name;
    std::size_t cycles = 0;
    std::uint64_t sent = 0, applied = 0, skipped = 0;
    std::vector<double> top_us;  // time from wake-up to parameters ready, per cycle
    std::vector<double> late_us; // wake-up lateness, per cycle
    std::size_t stalled = 0;     // cycles whose top took > 10 µs
    std::size_t overruns = 0;    // cycles that ended past their period
    bool final_ok = false;       // the loop ended with the last block the UI sent
    bool order_ok = true;        // blocks applied in the order sent
    std::string sched;

    static double pct(std::vector<double> v, double q) {
        if (v.empty())
            return 0;
        std::sort(v.begin(), v.end());
        return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    }
};

enum class kind { task_work, mutex, pi_mutex };

/// task_work: a pool of update items (a block plus three captured pointers, stored inline); the UI
/// reuses an item once it is done (applied, and its callable returned: try_emplace checks).
constexpr std::size_t pool_size = 32;
struct update_pool {
    rtdefer::inline_task_work<sizeof(params) + 3 * sizeof(void*)> items[pool_size];
};

/// One run: a busy SCHED_OTHER thread and the UI on CPU a, the loop (SCHED_FIFO) on CPU b.
variant_result run_variant(kind k, std::chrono::milliseconds duration) {
    variant_result r;
    r.name = k == kind::task_work ? "task_work (apply at top)" : k == kind::mutex ? "std::mutex block" : "PI mutex block";
    const int cpu_ui = nth_cpu(0), cpu_loop = nth_cpu(1);
    const std::size_t max_cycles = static_cast<std::size_t>(duration / period) + 64;
    r.top_us.reserve(max_cycles);
    r.late_us.reserve(max_cycles);

    // Shared state of the baselines.
    params shared;
    pthread_mutex_t m;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    if (k == kind::pi_mutex)
        pthread_mutexattr_setprotocol(&ma, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&m, &ma);
    pthread_mutexattr_destroy(&ma);

    // The loop's live parameters (task_work callbacks write them on the loop thread). Lives here so
    // it outlives the loop thread's exit, where any last queued update would be applied.
    params live;
    std::uint64_t last_applied = 0;
    std::uint64_t seen_versions = 0;
    bool order_ok = true;

    // task_work: a pool of update items; the UI reuses an item once it is done().
    update_pool pool;

    std::atomic<bool> stop_ui{false}, stop_loop{false}, stop_busy{false};
    std::atomic<std::uint64_t> last_sent{0};
    std::uint64_t skipped = 0;

    rtdefer::rt_thread loop(
        {.name = "ctl_loop", .policy = rtdefer::sched_policy::fifo, .priority = loop_priority, .cpu = cpu_loop},
        [&](rtdefer::thread_ctx& self) {
            double state = 0;
            auto next = steady::now() + period;
            for (;;) {
                timespec ts = to_timespec(next);
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
                }
                const auto woke = steady::now();
                // --- top of cycle: the safe point ---
                params cur;
                if (k == kind::task_work) {
                    (void)rtdefer::task_work_run(self); // applies every queued block, oldest first
                    cur = live;
                } else {
                    pthread_mutex_lock(&m);
                    cur = shared;
                    pthread_mutex_unlock(&m);
                }
                const auto ready = steady::now();
                if (k != kind::task_work) {
                    if (cur.version < last_applied)
                        order_ok = false;
                    if (cur.version != last_applied)
                        ++seen_versions; // the block is overwritten in place: the loop sees the latest
                    last_applied = cur.version;
                }
                r.top_us.push_back(std::chrono::duration<double, std::micro>(ready - woke).count());
                r.late_us.push_back(std::chrono::duration<double, std::micro>(woke - next).count());
                // --- the loop's work ---
                state = loop_compute(cur, state);
                if (steady::now() > next + period)
                    ++r.overruns;
                if (stop_loop.load(std::memory_order_acquire) || r.top_us.size() >= max_cycles)
                    break;
                next += period;
            }
            if (k == kind::task_work) {
                (void)rtdefer::task_work_run(self);
                r.final_ok = live.version == last_sent.load(std::memory_order_acquire);
            } else {
                r.final_ok = shared.version == last_sent.load(std::memory_order_acquire);
            }
            if (state == 12345.0) // keep the work
                std::printf(" ");
        });
    r.sched = loop.sched_status().degraded() ? "SCHED_OTHER (SCHED_FIFO refused)"
                                             : "SCHED_FIFO " + std::to_string(loop_priority);
    rtdefer::thread_ctx& loop_ctx = loop.ctx();

    std::thread busy([&] {
        pin_to(cpu_ui);
        volatile double x = 0;
        while (!stop_busy.load(std::memory_order_relaxed))
            x = x + 1.0;
    });
    std::thread ui([&] {
        pin_to(cpu_ui);
        std::uint64_t version = 0;
        std::size_t slot = 0;
        while (!stop_ui.load(std::memory_order_acquire)) {
            ++version;
            if (k == kind::task_work) {
                // Build the block on the UI's own time, then queue it: no lock, one CAS.
                params p;
                ui_build(version, [&](int i, double v) { p.coeff[i] = v; });
                p.version = version;
                auto& item = pool.items[slot];
                // try_emplace refuses (busy) while the slot is queued or its callable still runs:
                // "not queued" alone would let us overwrite a block the loop is applying.
                const rtdefer::status st = item.try_emplace([p, &live, &last_applied, &order_ok]() noexcept {
                    if (p.version <= last_applied)
                        order_ok = false;
                    last_applied = p.version;
                    live = p;
                });
                if (st != rtdefer::status::ok) {
                    ++skipped; // every slot in flight: the loop is far behind (never expected)
                    --version;
                } else {
                    slot = (slot + 1) % pool_size;
                    if (rtdefer::task_work_add(loop_ctx, item, rtdefer::notify::none) == rtdefer::status::ok)
                        last_sent.store(version, std::memory_order_release);
                    else
                        --version;
                }
            } else {
                // The usual pattern: lock, fill in the fields, unlock.
                pthread_mutex_lock(&m);
                ui_build(version, [&](int i, double v) { shared.coeff[i] = v; });
                shared.version = version;
                last_sent.store(version, std::memory_order_release);
                pthread_mutex_unlock(&m);
            }
            std::this_thread::sleep_for(ui_interval);
        }
    });

    std::this_thread::sleep_for(duration);
    stop_ui.store(true, std::memory_order_release);
    ui.join();
    stop_loop.store(true, std::memory_order_release);
    loop.join();
    stop_busy.store(true, std::memory_order_relaxed);
    busy.join();
    pthread_mutex_destroy(&m);

    r.cycles = r.top_us.size();
    r.sent = last_sent.load();
    r.applied = k == kind::task_work ? last_applied : seen_versions;
    r.skipped = skipped;
    r.order_ok = order_ok;
    for (double t : r.top_us)
        if (t > 10.0)
            ++r.stalled;
    return r;
}

std::string fmt_us(double us) {
    char b[32];
    if (us < 10)
        std::snprintf(b, sizeof b, "%.1f µs", us);
    else if (us < 1000)
        std::snprintf(b, sizeof b, "%.0f µs", us);
    else
        std::snprintf(b, sizeof b, "%.2f ms", us / 1000);
    return b;
}

int run_task_work_scene(const scene_args& args) {
    const auto duration = args.quick ? 150ms : 1200ms;
    std::printf("== task_work: a 1 kHz SCHED_FIFO control loop receiving parameter updates from a UI thread ==\n");
    std::printf("loop pinned to CPU %d; UI thread + one busy SCHED_OTHER thread on CPU %d; UI update every %lld µs;\n"
                "updates applied only at the top of each cycle. Same loop, same UI work, three ways:\n\n",
                nth_cpu(1), nth_cpu(0), static_cast<long long>(ui_interval.count()));
    std::vector<variant_result> rs;
    for (kind k : {kind::task_work, kind::mutex, kind::pi_mutex})
        rs.push_back(run_variant(k, duration));

    // Pads by display width (µ is two bytes, one column).
    auto pad = [](std::string s, std::size_t w) {
        std::size_t cols = 0;
        for (unsigned char c : s)
            cols += (c & 0xC0) != 0x80;
        return s + std::string(cols < w ? w - cols : 0, ' ');
    };
    auto row = [&](const char* label, auto cell) {
        std::printf("  %s", pad(label, 30).c_str());
        for (const auto& r : rs)
            std::printf(" | %s", pad(cell(r), 26).c_str());
        std::printf("\n");
    };
    row("", [](const variant_result& r) { return r.name; });
    row("loop scheduling", [](const variant_result& r) { return r.sched; });
    row("cycles", [](const variant_result& r) { return std::to_string(r.cycles); });
    row("updates sent / seen by loop", [](const variant_result& r) {
        return std::to_string(r.sent) + " / " + std::to_string(r.applied);
    });
    row("top of cycle p50 / p99", [](const variant_result& r) {
        return fmt_us(variant_result::pct(r.top_us, 0.5)) + " / " + fmt_us(variant_result::pct(r.top_us, 0.99));
    });
    row("top of cycle max", [](const variant_result& r) { return fmt_us(variant_result::pct(r.top_us, 1.0)); });
    row("cycles that waited > 10 µs", [](const variant_result& r) { return std::to_string(r.stalled); });
    row("wake-up lateness p99 / max", [](const variant_result& r) {
        return fmt_us(variant_result::pct(r.late_us, 0.99)) + " / " + fmt_us(variant_result::pct(r.late_us, 1.0));
    });
    row("cycles overrun (> 1 ms)", [](const variant_result& r) { return std::to_string(r.overruns); });
    row("last update in force at end", [](const variant_result& r) { return std::string(r.final_ok ? "yes" : "NO"); });
    std::printf("\n  task_work: the loop never waits for the UI; every update is applied whole, in order, at a cycle\n"
                "  boundary. The shared block makes the loop wait whenever the UI holds the lock: for a UI time\n"
                "  slice when the busy thread preempts it inside (plain mutex); PI boosts the UI, so the loop waits\n"
                "  out the rest of its critical section. The block is overwritten in place: the loop sees only the\n"
                "  latest version at each cycle.\n\n");

    int failed = 0;
    const auto& tw = rs[0];
    if (tw.applied != tw.sent || !tw.final_ok || !tw.order_ok || tw.skipped != 0) {
        std::printf("FAILED: task_work updates: sent %llu, applied %llu, skipped %llu, order %s, final %s\n",
                    static_cast<unsigned long long>(tw.sent), static_cast<unsigned long long>(tw.applied),
                    static_cast<unsigned long long>(tw.skipped), tw.order_ok ? "ok" : "BROKEN",
                    tw.final_ok ? "ok" : "WRONG");
        failed = 1;
    }
    for (std::size_t i = 1; i < rs.size(); ++i)
        if (!rs[i].final_ok || !rs[i].order_ok) {
            std::printf("FAILED: %s: final %s, order %s\n", rs[i].name.c_str(), rs[i].final_ok ? "ok" : "WRONG",
                        rs[i].order_ok ? "ok" : "BROKEN");
            failed = 1;
        }
    return failed;
}

} // namespace

RTDEFER_SCENE("task_work", 30, run_task_work_scene);
