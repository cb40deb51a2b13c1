// cancel_sync_bench: what waiting for a running timer callback costs, for each wait policy, beside
// the machine's own limits measured in the same run.
//
//   cancel_sync_bench [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N]
//
// 1. Same CPU, canceller above expirer (SCHED_FIFO 20 over 10, one CPU), callback 1 ms of CPU:
//    cancel_sync latency p50/p99/max and the canceller's CPU time while waiting, for pi_block,
//    spin, spin_yield, sleep_poll. A spinning canceller never lets the expirer run, so the spin
//    variants are bounded by a watchdog (2 s; 0.3 s with --quick) and reported as "did not finish".
//    The watchdog is a SCHED_FIFO 50 thread on another CPU that flips the policy's give_up flag.
// 2. Different CPUs: latency beyond the callback's end (baseline: futex wake-to-run, cache-line
//    round trip) and the share of the wait the canceller spent on a CPU.
// 3. arm+cancel cost with 1 and 10^5 armed timers, beside std::mutex + std::multimap, and the
//    allocations per operation (must be 0).
// Exit status: 0, or 1 if a correctness check failed (a cancel_sync result, a callback still
// running after cancel_sync returned, an allocation on arm/cancel, pi_block not finishing).
#include "harness/alloc_counter.hpp"
#include "harness/baseline.hpp"
#include "harness/pacing.hpp"
#include "harness/report.hpp"

#include <rtdefer/baseline/spin_wait.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/timer.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

using namespace rtdefer_bench;
using rtdefer::pi_block;
using rtdefer::sched_policy;
using rtdefer::sleep_poll;
using rtdefer::baseline::spin;
using rtdefer::baseline::spin_yield;
using rtdefer::status;
using rtdefer::thread_ctx;
using clk = std::chrono::steady_clock;

namespace {

std::string fmt_ms(double ns) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f s", ns / 1e9);
    return b;
}

/// Stops a spinning canceller: a SCHED_FIFO 50 thread, on a CPU other than the canceller's where
/// possible, that sleeps in 2 ms steps and sets `give_up` once the armed deadline has passed.
class watchdog {
public:
    explicit watchdog(int cpu, bool rt)
        : thread_({.name = "cs-watchdog", .policy = rt ? sched_policy::fifo : sched_policy::other, .priority = 50, .cpu = cpu},
                  [this] { loop(); }) {}
    ~watchdog() {
        stop_.store(true, std::memory_order_release);
        thread_.join();
    }
    void arm(std::int64_t budget_ns) {
        give_up.store(false, std::memory_order_relaxed);
        deadline_.store(mono_ns() + budget_ns, std::memory_order_release);
    }
    void disarm() { deadline_.store(0, std::memory_order_release); }
    std::atomic<bool> give_up{false};

private:
    void loop() {
        while (!stop_.load(std::memory_order_acquire)) {
            const std::int64_t d = deadline_.load(std::memory_order_acquire);
            if (d != 0 && mono_ns() > d)
                give_up.store(true, std::memory_order_relaxed); // relaxed: a stop request
            sleep_ns(2'000'000);
        }
    }
    std::atomic<std::int64_t> deadline_{0};
    std::atomic<bool> stop_{false};
    rtdefer::rt_thread thread_;
};

struct scenario {
    const char* label;     // "same CPU" / "different CPUs"
    int expirer_cpu, canceller_cpu;
    std::size_t samples;
    std::int64_t callback_ns;
    std::int64_t watchdog_ns;
    bool rt;
};

struct outcome {
    std::string policy;
    bool finished = true;
    double gave_up_after_ns = 0;
    std::shared_ptr<histogram> latency = std::make_shared<histogram>();
    std::shared_ptr<histogram> beyond = std::make_shared<histogram>();    // return - callback end
    std::shared_ptr<histogram> remaining = std::make_shared<histogram>(); // callback end - cancel start
    std::shared_ptr<histogram> cpu = std::make_shared<histogram>();       // canceller CPU while waiting
    double cpu_sum = 0, wall_sum = 0;
    std::string sched;
    rt_outcome rt; // the canceller's scheduling
};

struct cb_state {
    std::atomic<bool> started{false};
    std::atomic<std::int64_t> end_ns{0};
    thread_ctx* canceller = nullptr;
    std::int64_t work_ns = 0;
};

void bench_cb(rtdefer::timer&, void* arg) noexcept {
    auto* s = static_cast<cb_state*>(arg);
    s->started.store(true, std::memory_order_release);
    (void)rtdefer::unpark(*s->canceller); // same CPU: the canceller preempts us here
    burn_cpu(s->work_ns);
    s->end_ns.store(mono_ns(), std::memory_order_release);
}

template <class Policy>
outcome run_policy(const scenario& sc, watchdog& wd, report& rep) {
    outcome r;
    r.policy = Policy::name;
    Policy pol{};
    if constexpr (!std::is_same_v<Policy, pi_block>)
        pol.give_up = &wd.give_up;
    rtdefer::timer_service_options o;
    o.capacity = 4;
    o.thread = {.name = "cs-expirer", .policy = sc.rt ? sched_policy::fifo : sched_policy::other, .priority = 10,
                .cpu = sc.expirer_cpu};
    rtdefer::timer_service<Policy> svc(o, pol);
    cb_state st;
    st.work_ns = sc.callback_ns;
    rtdefer::timer t;
    rtdefer::rt_thread canceller(
        {.name = "cs-canceller", .policy = sc.rt ? sched_policy::fifo : sched_policy::other, .priority = 20,
         .cpu = sc.canceller_cpu},
        [&](thread_ctx& me) {
            st.canceller = &me;
            for (std::size_t i = 0; i < sc.samples; ++i) {
                st.started.store(false, std::memory_order_relaxed);
                if (!rep.check(svc.arm(t, clk::now(), bench_cb, &st) == status::ok, "arm failed"))
                    return;
                while (!st.started.load(std::memory_order_acquire))
                    (void)rtdefer::park(me);
                wd.arm(sc.watchdog_ns);
                const std::int64_t c0 = mono_ns(), cpu0 = thread_cpu_ns();
                const status s = svc.cancel_sync(t, me);
                const std::int64_t c1 = mono_ns(), cpu1 = thread_cpu_ns();
                wd.disarm();
                if (s == status::timed_out) {
                    r.finished = false;
                    r.gave_up_after_ns = static_cast<double>(c1 - c0);
                    // The callback is still running (or not yet resumed): wait for it properly.
                    const status w = rtdefer::wait_running<pi_block>(t.expiry(), me);
                    rep.check(w == status::waited || w == status::idle, "cleanup wait_running failed");
                    return;
                }
                const std::int64_t end = st.end_ns.load(std::memory_order_acquire);
                rep.check(s == status::waited || s == status::idle,
                          std::string(Policy::name) + ": cancel_sync returned " + rtdefer::to_string(s));
                rep.check(end != 0 && end <= c1, std::string(Policy::name) + ": returned before the callback ended");
                rep.check(!t.running(), std::string(Policy::name) + ": callback still running after cancel_sync");
                r.latency->record(static_cast<std::uint64_t>(c1 - c0));
                r.beyond->record(static_cast<std::uint64_t>(c1 > end ? c1 - end : 0));
                r.remaining->record(static_cast<std::uint64_t>(end > c0 ? end - c0 : 0));
                r.cpu->record(static_cast<std::uint64_t>(cpu1 - cpu0));
                r.cpu_sum += static_cast<double>(cpu1 - cpu0);
                r.wall_sum += static_cast<double>(c1 - c0);
                st.end_ns.store(0, std::memory_order_relaxed);
                sleep_ns(500'000); // let the rest of the machine run between samples
            }
        });
    canceller.join();
    const auto& cs = canceller.sched_status();
    r.rt.fifo_requested = sc.rt;
    r.rt.fifo = cs.actual == sched_policy::fifo;
    r.rt.fifo_error = cs.error;
    r.rt.priority = cs.priority;
    r.rt.cpu_requested = sc.canceller_cpu;
    r.rt.pinned = sc.canceller_cpu >= 0;
    const auto& es = svc.sched_status();
    r.sched = std::string("expirer ") + rtdefer::to_string(es->actual) + " " + std::to_string(es->priority) + " CPU " +
              std::to_string(sc.expirer_cpu) + ", canceller " + rtdefer::to_string(canceller.sched_status().actual) + " " +
              std::to_string(canceller.sched_status().priority) + " CPU " + std::to_string(sc.canceller_cpu);
    return r;
}

void print_outcome(const scenario& sc, const outcome& r, report& rep) {
    const std::string name = std::string(sc.label) + " " + r.policy;
    if (!r.finished) {
        rep.add(latency_result::unavailable(name + " cancel", "cancel_sync of a running 1 ms callback",
                                            "DID NOT FINISH: gave up after " + fmt_ms(r.gave_up_after_ns) +
                                                " (watchdog); the canceller burned 100% of the CPU the callback needed"));
        return;
    }
    rep.add(latency_result::from(name + " cancel", "cancel_sync start to return, callback running (1 ms of CPU)",
                                 r.latency, r.rt, r.sched));
    rep.add(latency_result::from(name + " beyond cb end", "callback end to cancel_sync return", r.beyond, r.rt));
    rep.add(latency_result::from(name + " canceller CPU", "canceller CPU time during cancel_sync", r.cpu, r.rt,
                                 "CPU burned while waiting: " +
                                     std::to_string(static_cast<int>(100.0 * r.cpu_sum / std::max(1.0, r.wall_sum) + 0.5)) +
                                     "% of the wait"));
}

// ---- 3. arm/cancel cost ------------------------------------------------------------------------

struct cost_result {
    double arm_cancel_ns = 0, move_ns = 0, map_ns = 0;
    std::uint64_t allocations = 0, map_allocations = 0;
};

void noop_cb(rtdefer::timer&, void*) noexcept {}

cost_result measure_arm_cancel(std::size_t armed, std::size_t ops, report& rep) {
    cost_result c;
    rtdefer::timer_service_options o;
    o.capacity = armed + 1;
    o.start_thread = false;
    rtdefer::timer_service<> svc(o);
    auto fill = std::make_unique<rtdefer::timer[]>(armed);
    std::mt19937_64 rng(1);
    const auto base = clk::now() + std::chrono::hours(1);
    auto random_deadline = [&] { return base + std::chrono::microseconds(rng() % 3'600'000'000ULL); };
    for (std::size_t i = 0; i < armed; ++i)
        (void)svc.arm(fill[i], random_deadline(), noop_cb);
    std::vector<clk::time_point> when(ops);
    for (auto& w : when)
        w = random_deadline();
    rtdefer::timer probe;
    auto& bc = rtdefer_bench::clock();
    {
        alloc_scope sc;
        const std::uint64_t t0 = bench_clock::now();
        for (std::size_t i = 0; i < ops; ++i) {
            (void)svc.arm(probe, when[i], noop_cb);
            (void)svc.cancel(probe);
        }
        const std::uint64_t t1 = bench_clock::now_end();
        c.arm_cancel_ns = bc.to_ns(t1 - t0) / static_cast<double>(ops);
        c.allocations = sc.allocations();
    }
    {
        (void)svc.arm(probe, when[0], noop_cb);
        const std::uint64_t t0 = bench_clock::now();
        for (std::size_t i = 0; i < ops; ++i)
            (void)svc.arm(probe, when[i], noop_cb); // a pending timer: moved
        const std::uint64_t t1 = bench_clock::now_end();
        c.move_ns = bc.to_ns(t1 - t0) / static_cast<double>(ops);
        (void)svc.cancel(probe);
    }
    rep.check(svc.size() == armed, "heap size wrong after arm/cancel");
    for (std::size_t i = 0; i < armed; ++i)
        (void)svc.cancel(fill[i]);
    rep.check(svc.size() == 0, "heap not empty after cancelling every timer");

    // Baseline: the usual std::mutex + std::multimap<deadline, timer*> (allocates per insert).
    std::mutex m;
    std::multimap<clk::time_point, void*> map;
    for (std::size_t i = 0; i < armed; ++i)
        map.emplace(random_deadline(), nullptr);
    {
        alloc_scope sc;
        const std::uint64_t t0 = bench_clock::now();
        for (std::size_t i = 0; i < ops; ++i) {
            std::multimap<clk::time_point, void*>::iterator it;
            {
                std::lock_guard<std::mutex> g(m);
                it = map.emplace(when[i], &probe);
            }
            std::lock_guard<std::mutex> g(m);
            map.erase(it);
        }
        const std::uint64_t t1 = bench_clock::now_end();
        c.map_ns = bc.to_ns(t1 - t0) / static_cast<double>(ops);
        c.map_allocations = sc.allocations();
    }
    return c;
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "cancel_sync_bench");
    report rep(opts);
    rep.print_header();
    std::printf("\n");
    baselines b = measure_baselines(opts, &rep);

    const bool rt = switches().allow_rt && rtdefer::rt_scheduling_permitted();
    const int cpu_a = nth_usable_cpu(0);
    const int cpu_b = usable_cpus() >= 2 ? nth_usable_cpu(1) : cpu_a;
    const std::size_t samples = opts.sample_count(300, 20);
    const std::int64_t watchdog_ns = opts.pick<std::int64_t>(2'000'000'000, 300'000'000);
    const std::int64_t cb_ns = 1'000'000;

    // ---- 1. same CPU ----
    std::printf("\n1. same CPU %d: canceller SCHED_FIFO 20 over expirer SCHED_FIFO 10, callback 1 ms of CPU\n", cpu_a);
    scenario same{"same CPU", cpu_a, cpu_a, samples, cb_ns, watchdog_ns, rt};
    outcome same_pi, same_sleep;
    if (!rt) {
        rep.note("SCHED_FIFO refused or --no-rt: the same-CPU priority-inversion scenario was not measured");
        std::printf("  not measured: no SCHED_FIFO (refused here, or --no-rt); priority inversion needs real-time "
                    "priorities\n");
    } else {
        watchdog wd(cpu_b, rt);
        same_pi = run_policy<pi_block>(same, wd, rep);
        print_outcome(same, same_pi, rep);
        rep.check(same_pi.finished, "pi_block did not finish on the same CPU");
        for (auto o : {run_policy<spin>(same, wd, rep), run_policy<spin_yield>(same, wd, rep)})
            print_outcome(same, o, rep);
        same_sleep = run_policy<sleep_poll>(same, wd, rep);
        print_outcome(same, same_sleep, rep);
        rep.add(latency_result::from("same CPU callback remaining", "callback end - cancel start (pi_block run)",
                                     same_pi.remaining, same_pi.rt));
        if (same_pi.finished && same_pi.latency->count()) {
            rep.compare("same CPU pi_block cancel", "p50", same_pi.latency->percentile(0.5), unit::ns,
                        "callback remaining", "p50", same_pi.remaining->percentile(0.5));
            rep.compare("same CPU pi_block cancel", "max", static_cast<double>(same_pi.latency->max()), unit::ns,
                        "callback remaining", "max", static_cast<double>(same_pi.remaining->max()));
        }
        if (same_sleep.finished && same_sleep.latency->count())
            rep.compare("same CPU sleep_poll cancel", "p50", same_sleep.latency->percentile(0.5), unit::ns,
                        "same CPU pi_block cancel", "p50", same_pi.latency->percentile(0.5));
    }

    // ---- 2. different CPUs ----
    if (cpu_b != cpu_a) {
        std::printf("\n2. different CPUs: expirer %s on CPU %d, canceller %s on CPU %d\n",
                    rt ? "SCHED_FIFO 10" : "SCHED_OTHER", cpu_a, rt ? "SCHED_FIFO 20" : "SCHED_OTHER", cpu_b);
        scenario diff{"2 CPUs", cpu_a, cpu_b, samples, cb_ns, watchdog_ns, rt};
        watchdog wd(cpu_a, rt);
        outcome d_pi = run_policy<pi_block>(diff, wd, rep);
        outcome d_spin = run_policy<spin>(diff, wd, rep);
        outcome d_yield = run_policy<spin_yield>(diff, wd, rep);
        outcome d_sleep = run_policy<sleep_poll>(diff, wd, rep);
        for (const outcome* o : {&d_pi, &d_spin, &d_yield, &d_sleep})
            print_outcome(diff, *o, rep);
        rep.check(d_pi.finished, "pi_block did not finish on two CPUs");
        if (d_pi.finished && b.futex_wake.valid)
            rep.compare("2 CPUs pi_block beyond cb end", "p50", d_pi.beyond->percentile(0.5), unit::ns, "futex wake-to-run",
                        "p50", b.futex_wake.s.p50);
        if (d_spin.finished && b.cacheline_rtt.valid)
            rep.compare("2 CPUs spin beyond cb end", "p50", d_spin.beyond->percentile(0.5), unit::ns, "cache-line round trip",
                        "p50", b.cacheline_rtt.s.p50);
        if (d_sleep.finished && d_pi.finished)
            rep.compare("2 CPUs sleep_poll beyond cb end", "p50", d_sleep.beyond->percentile(0.5), unit::ns,
                        "2 CPUs pi_block beyond cb end", "p50", d_pi.beyond->percentile(0.5));
        if (d_spin.finished && d_pi.finished)
            rep.compare("2 CPUs spin canceller CPU", "p50", d_spin.cpu->percentile(0.5), unit::ns, "pi_block canceller CPU",
                        "p50", d_pi.cpu->percentile(0.5));
    } else {
        rep.note("one usable CPU: the different-CPU scenario was not measured");
    }

    // ---- 3. arm/cancel cost ----
    std::printf("\n3. arm+cancel cost (no expiry thread; queue lock uncontended)\n");
    const std::size_t ops = opts.pick<std::size_t>(200'000, 20'000);
    for (std::size_t armed : {std::size_t{1}, std::size_t{100'000}}) {
        const cost_result c = measure_arm_cancel(armed, ops, rep);
        const std::string n = std::to_string(armed) + " armed";
        std::printf("  %s: arm+cancel %s, re-arm (move) %s, allocations/op %.3f | std::mutex+std::multimap %s, "
                    "allocations/op %.3f\n",
                    n.c_str(), fmt_ns(c.arm_cancel_ns).c_str(), fmt_ns(c.move_ns).c_str(),
                    static_cast<double>(c.allocations) / static_cast<double>(ops), fmt_ns(c.map_ns).c_str(),
                    static_cast<double>(c.map_allocations) / static_cast<double>(ops));
        rep.add_throughput("arm+cancel, " + n, 1e9 / c.arm_cancel_ns, "pairs/s");
        rep.compare("arm+cancel, " + n, "mean", c.arm_cancel_ns, unit::ns, "std::mutex+std::multimap", "mean", c.map_ns);
        rep.check(c.allocations == 0, "arm/cancel allocated (" + std::to_string(c.allocations) + " allocations)");
    }

    rep.print_table();
    return rep.finish();
}
