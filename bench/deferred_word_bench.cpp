// deferred_word_bench: the deferred work word beside the signal it replaces, all in one run.
//
//   deferred_word_bench [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N]
//
// 1. Sender cost (SCHED_FIFO sender on CPU a, target on CPU b), one call timed at a time, p50/p99:
//      ct_set_work to an isolated target (which leaves and re-enters its section every ~50 µs)
//      pthread_kill with the interrupt signal to a busy target (the baseline: one IPI per request)
//      ct_set_work_or_ipi to a busy, non-isolated target (the fallback: CAS + tagged send)
//      send_ipi untagged (tgkill) and tagged (rt_tgsigqueueinfo with a tag in si_value), same target
//    Target: ct_set_work p50 and p99 at most 1/50 of pthread_kill's.
// 2. Jitter of an isolated busy-polling loop (SCHED_FIFO on CPU b; it leaves and re-enters its
//    section every 4096 iterations, its "safe point"): the gap between consecutive iterations,
//    p50/p99/p99.9/max, while 10k requests/s arrive from CPU a, in rounds of:
//      no requests at all (baseline)
//      a sender that wakes 10k/s and sends nothing (control: what the sender's CPU activity costs)
//      ct_set_work (a request refused in the short window between exit and enter is retried)
//      ct_set_work_or_ipi (such a request interrupts instead)
//      a signal per request (pthread_kill; the handler does the work)
//    Phases are short (0.4 s, 0.15 s with --quick) with pauses between them so SCHED_FIFO
//    throttling (950 ms per 1 s) never cuts into a phase; the rounds interleave the phases so a
//    change in machine load hits all of them alike. Target: the deferred word's gaps
//    indistinguishable from the no-request baseline.
// Correctness checks (non-zero exit on failure): every request's effect observed (the callback
// covers the newest posted sequence number: none lost); no interrupt reached the loop in the
// ct_set_work phase; every signal of the signal phase ran its work.
#include "harness/baseline.hpp"
#include "harness/housekeeping_job.hpp"
#include "harness/pacing.hpp"
#include "harness/report.hpp"

#include <rtdefer/deferred_word.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <time.h>

using namespace rtdefer_bench;
using rtdefer::status;
using rtdefer::thread_ctx;

namespace {

constexpr unsigned work_bit = 0;
constexpr unsigned work = 1u << work_bit;
constexpr int prio = 80;

using job = housekeeping_job;

// ---- 1. sender cost -----------------------------------------------------------------------------

struct sender_costs {
    latency_result set_work, kill, or_ipi, tgkill, sigqueue;
    std::uint64_t set_work_refused = 0;
};

sender_costs measure_sender_cost(const options& o, report& rep, int cpu_a, int cpu_b) {
    sender_costs r;
    const std::size_t n = o.sample_count(100'000, 10'000);
    const std::size_t n_sig = o.sample_count(20'000, 2'000);
    const int signo = rtdefer::interrupt_signal();

    // (a) ct_set_work to an isolated target.
    {
        published_ctx target;
        std::atomic<bool> stop{false};
        auto h = std::make_shared<histogram>();
        bench_thread t({.fifo = true, .priority = prio, .cpu = cpu_b}, [&] {
            thread_ctx& self = target.attach_and_publish();
            while (!stop.load(std::memory_order_relaxed)) { // relaxed: a stop flag
                if (rtdefer::ct_isolation_enter(self) != status::ok)
                    continue;
                spin_for_ns(50'000);
                rtdefer::ct_isolation_exit(self);
            }
        });
        (void)t.outcome();
        job::reset();
        rt_outcome out = run_measured({.fifo = true, .priority = prio, .cpu = cpu_a}, [&] {
            thread_ctx& tgt = target.wait();
            for (std::size_t i = 0; i < n; ++i) {
                job::posted.store(i + 1, std::memory_order_relaxed);
                status s = status::ok;
                h->record(time_one([&] { s = rtdefer::ct_set_work(tgt, work); }));
                if (s != status::ok)
                    ++r.set_work_refused;
                spin_for_ns(2'000);
            }
        });
        stop.store(true);
        t.join();
        r.set_work = latency_result::from("ct_set_work (isolated target)", "one ct_set_work() call on the sender", h, out,
                                          "target " + t.outcome().describe() + "; " + std::to_string(r.set_work_refused) +
                                              " calls found it between sections (not_accepting)");
        rep.add(r.set_work);
    }

    // To a busy target: (b) pthread_kill with the interrupt signal, (c) ct_set_work_or_ipi,
    // (d) send_ipi untagged (tgkill), (e) send_ipi tagged (rt_tgsigqueueinfo).
    struct variant_desc {
        const char* name;
        const char* what;
        const char* check;
        latency_result sender_costs::*out;
    };
    static constexpr variant_desc variants[] = {
        {"pthread_kill (busy target)", "one pthread_kill(interrupt signal) call on the sender",
         "pthread_kill: the hook ran for every signal", &sender_costs::kill},
        {"ct_set_work_or_ipi (non-isolated target)", "one ct_set_work_or_ipi() call on the sender (CAS + tagged send)",
         "ct_set_work_or_ipi: every request ran on the busy target", &sender_costs::or_ipi},
        {"send_ipi untagged (tgkill)", "one send_ipi(target) call on the sender",
         "send_ipi (tgkill): the hook ran for every interrupt", &sender_costs::tgkill},
        {"send_ipi tagged (rt_tgsigqueueinfo)", "one send_ipi(target, interrupt_source::user) call on the sender",
         "send_ipi (tagged): the hook ran for every interrupt", &sender_costs::sigqueue},
    };
    for (int variant = 0; variant < 4; ++variant) {
        published_ctx target;
        std::atomic<bool> stop{false};
        auto h = std::make_shared<histogram>();
        std::size_t lost = 0;
        bench_thread t({.fifo = true, .priority = prio, .cpu = cpu_b}, [&] {
            target.attach_and_publish();
            while (!stop.load(std::memory_order_relaxed)) // relaxed: a stop flag
                cpu_relax();
        });
        (void)t.outcome();
        job::reset();
        rt_outcome out = run_measured({.fifo = true, .priority = prio, .cpu = cpu_a}, [&] {
            thread_ctx& tgt = target.wait();
            job::signal_target.store(variant == 1 ? nullptr : &tgt); // the hook does the job, except for (c)
            for (std::size_t i = 0; i < n_sig; ++i) {
                const std::uint64_t before = job::runs.load(std::memory_order_relaxed);
                job::posted.store(i + 1, std::memory_order_relaxed);
                int rc = 0;
                status s = status::ok;
                switch (variant) {
                case 0: h->record(time_one([&] { rc = pthread_kill(tgt.handle, signo); })); break;
                case 1: h->record(time_one([&] { s = rtdefer::ct_set_work_or_ipi(tgt, work); })); break;
                case 2: h->record(time_one([&] { s = rtdefer::send_ipi(tgt); })); break;
                default:
                    h->record(time_one([&] { s = rtdefer::send_ipi(tgt, rtdefer::interrupt_source::user); }));
                }
                // Wait for the job so signals never queue up, then leave the target alone a while.
                if (rc != 0 || s != status::ok ||
                    !spin_until([&] { return job::runs.load(std::memory_order_relaxed) != before; })) {
                    ++lost;
                    break;
                }
                spin_for_ns(10'000);
            }
            job::signal_target.store(nullptr);
        });
        stop.store(true);
        t.join();
        const variant_desc& v = variants[variant];
        rep.check(lost == 0, v.check);
        latency_result res = latency_result::from(v.name, v.what, h, out, "target " + t.outcome().describe());
        rep.add(res);
        r.*v.out = res;
    }
    return r;
}

// ---- 1b. the cancellation hold on the exit -----------------------------------------------------------
// ct_isolation_exit with work to run holds pthread cancellation off (detail/cancel_hold.hpp); with
// none it takes the CAS fast path and no hold. Same run, one thread: exit with nothing deferred, exit
// running one deferred bit (hold included), and the hold alone (engage + restore).

struct exit_costs {
    latency_result empty, with_work, hold;
};

exit_costs measure_exit_cost(const options& o, report& rep, int cpu) {
    exit_costs r;
    const std::size_t n = o.sample_count(100'000, 10'000);
    auto he = std::make_shared<histogram>(), hw = std::make_shared<histogram>(), hh = std::make_shared<histogram>();
    std::size_t bad = 0;
    rt_outcome out = run_measured({.fifo = true, .priority = prio, .cpu = cpu}, [&] {
        thread_ctx& self = rtdefer::attach_this_thread();
        for (std::size_t i = 0; i < n; ++i) {
            if (rtdefer::ct_isolation_enter(self) != status::ok) {
                ++bad;
                continue;
            }
            he->record(time_one([&] { rtdefer::ct_isolation_exit(self); }));
            if (rtdefer::ct_isolation_enter(self) != status::ok || rtdefer::ct_set_work(self, work) != status::ok) {
                ++bad;
                continue;
            }
            hw->record(time_one([&] { rtdefer::ct_isolation_exit(self); }));
            hh->record(time_one([&] {
                rtdefer::detail::cancel_hold hold;
                hold.engage();
            }));
        }
    });
    rep.check(bad == 0, "exit cost: every enter and self-request accepted");
    r.empty = latency_result::from("ct_isolation_exit, nothing deferred", "one exit (CAS fast path, no hold)", he, out);
    r.with_work = latency_result::from("ct_isolation_exit, one deferred bit",
                                       "one exit running one callback (cancellation hold included)", hw, out);
    r.hold = latency_result::from("cancel_hold engage + restore", "pthread_setcancelstate/type x2 each way", hh, out);
    rep.add(r.empty);
    rep.add(r.with_work);
    rep.add(r.hold);
    return r;
}

// ---- 2. isolated-loop jitter ----------------------------------------------------------------------

enum class mode { none, idle_sender, set_work, or_ipi, signal };
const char* mode_name(mode m) {
    switch (m) {
    case mode::none: return "isolated loop, no requests";
    case mode::idle_sender: return "isolated loop + sender waking 10k/s, idle";
    case mode::set_work: return "isolated loop + ct_set_work 10k/s";
    case mode::or_ipi: return "isolated loop + ct_set_work_or_ipi 10k/s";
    case mode::signal: return "isolated loop + signal per request 10k/s";
    }
    return "?";
}

struct phase_totals {
    std::shared_ptr<histogram> gaps = std::make_shared<histogram>();
    std::uint64_t requests = 0, retries = 0, interrupts = 0, runs = 0, sections = 0, refused = 0;
    rt_outcome loop_rt, sender_rt;
};

void run_phase(mode m, double seconds, int cpu_a, int cpu_b, phase_totals& tot, report& rep) {
    published_ctx target;
    std::atomic<bool> stop{false};
    std::atomic<bool> measuring{false};
    histogram local; // allocated before the loop starts
    std::uint64_t irq_before = 0, irq_after = 0, sections = 0, refused = 0;
    job::reset();
    bench_thread loop({.fifo = true, .priority = prio, .cpu = cpu_b}, [&] {
        thread_ctx& self = target.attach_and_publish();
        if (m == mode::signal)
            job::signal_target.store(&self);
        while (!measuring.load(std::memory_order_acquire))
            cpu_relax();
        irq_before = rtdefer::interrupts_received(self);
        bool isolated = rtdefer::ct_isolation_enter(self) == status::ok;
        std::uint64_t prev = bench_clock::now();
        for (std::uint64_t i = 1;; ++i) {
            const std::uint64_t now = bench_clock::now();
            local.record(rtdefer_bench::clock().delta_ns(prev, now));
            prev = now;
            if ((i & 4095) == 0) { // the safe point
                if (stop.load(std::memory_order_relaxed)) // relaxed: a stop flag
                    break;
                if (isolated) {
                    rtdefer::ct_isolation_exit(self);
                    ++sections;
                }
                isolated = rtdefer::ct_isolation_enter(self) == status::ok;
                refused += isolated ? 0 : 1;
                prev = bench_clock::now(); // the safe point's cost is not a loop gap
            }
        }
        if (isolated) {
            rtdefer::ct_isolation_exit(self);
            ++sections;
        }
        irq_after = rtdefer::interrupts_received(self);
        job::signal_target.store(nullptr);
    });
    tot.loop_rt = loop.outcome();
    thread_ctx& tgt = target.wait();
    std::uint64_t requests = 0, retries = 0;
    if (m == mode::none) {
        measuring.store(true, std::memory_order_release);
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    } else {
        tot.sender_rt = run_measured({.fifo = true, .priority = prio, .cpu = cpu_a}, [&] {
            // The phase starts when the sender runs (creating it may take a while on a loaded
            // machine): the loop must not spin at SCHED_FIFO longer than the phase.
            measuring.store(true, std::memory_order_release);
            pacer p(100'000); // 10k/s
            const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
            const int signo = rtdefer::interrupt_signal();
            while (std::chrono::steady_clock::now() < end) {
                p.wait();
                if (m == mode::idle_sender)
                    continue; // the control: wake up, send nothing
                job::posted.store(++requests, std::memory_order_relaxed);
                switch (m) {
                case mode::set_work:
                    // A housekeeping request can wait: refused between sections, retry shortly.
                    while (rtdefer::ct_set_work(tgt, work) == status::not_accepting) {
                        ++retries;
                        spin_for_ns(500);
                    }
                    break;
                case mode::or_ipi: (void)rtdefer::ct_set_work_or_ipi(tgt, work); break;
                case mode::signal: pthread_kill(tgt.handle, signo); break;
                case mode::none:
                case mode::idle_sender: break;
                }
            }
        });
    }
    stop.store(true);
    loop.join();
    // The loop's last exit ran any deferred work; a signal still in flight has been handled by now
    // (the thread ran until its exit hooks).
    const bool all_covered = job::covered.load() == job::posted.load();
    rep.check(all_covered, std::string(mode_name(m)) + ": every request's effect observed (none lost)");
    if (m == mode::set_work)
        rep.check(irq_after == irq_before, "ct_set_work phase: no interrupt reached the isolated loop");
    tot.gaps->merge(local);
    tot.requests += requests;
    tot.retries += retries;
    tot.interrupts += irq_after - irq_before;
    tot.runs += job::runs.load();
    tot.sections += sections;
    tot.refused += refused;
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "deferred_word_bench");
    report rep(opts);
    rep.print_header();
    std::printf("\n");

    if (rtdefer::ct_work_setup() != status::ok ||
        rtdefer::ct_register_work(work_bit, &job::word_callback) != status::ok ||
        rtdefer::interrupt_register_hook(&job::signal_hook) != status::ok) {
        std::fprintf(stderr, "deferred_word_bench: setup failed\n");
        return 1;
    }
    const baselines base = measure_baselines(opts, &rep);
    (void)base;
    const int cpu_a = nth_usable_cpu(0);
    const int cpu_b = usable_cpus() >= 2 ? nth_usable_cpu(1) : cpu_a;
    if (cpu_a == cpu_b)
        rep.note("one usable CPU: sender and target share it; figures are not meaningful");

    std::printf("\n1. sender cost (sender CPU %d, target CPU %d):\n", cpu_a, cpu_b);
    const sender_costs sc = measure_sender_cost(opts, rep, cpu_a, cpu_b);

    std::printf("\n1b. cancellation hold on the exit (CPU %d):\n", cpu_b);
    const exit_costs ec = measure_exit_cost(opts, rep, cpu_b);

    std::printf("\n2. isolated-loop jitter (loop CPU %d, sender CPU %d, 10k requests/s):\n", cpu_b, cpu_a);
    const double phase_s = opts.pick(0.4, 0.15);
    const int rounds = static_cast<int>(opts.pick<std::size_t>(3, 1) * opts.repeat);
    constexpr int n_modes = 5;
    const mode modes[n_modes] = {mode::none, mode::idle_sender, mode::set_work, mode::or_ipi, mode::signal};
    phase_totals tot[n_modes];
    for (int r = 0; r < rounds; ++r)
        for (int i = 0; i < n_modes; ++i) {
            run_phase(modes[i], phase_s, cpu_a, cpu_b, tot[i], rep);
            std::this_thread::sleep_for(std::chrono::milliseconds(opts.quick ? 50 : 300)); // no RT throttling
        }
    latency_result jl[n_modes];
    double p9999[n_modes];
    double spikes[n_modes]; // gaps of 2 µs or more (what an interrupt costs the loop), per 10^6 iterations
    for (int i = 0; i < n_modes; ++i) {
        const histogram& g = *tot[i].gaps;
        p9999[i] = g.percentile(0.9999);
        std::uint64_t n_spikes = g.us_overflow();
        for (std::size_t b = 2; b < g.us_buckets(); ++b)
            n_spikes += g.us_bucket(b);
        spikes[i] = g.count() ? 1e6 * static_cast<double>(n_spikes) / static_cast<double>(g.count()) : 0;
        char note[384];
        std::snprintf(note, sizeof note,
                      "p99.99 %s; gaps >= 2 us: %.1f per 10^6 iterations; %llu requests (%llu retried), %llu job runs, %llu interrupts "
                      "received, %llu sections, %llu enters refused; sender %s",
                      fmt_ns(p9999[i]).c_str(), spikes[i],
                      (unsigned long long)tot[i].requests, (unsigned long long)tot[i].retries,
                      (unsigned long long)tot[i].runs, (unsigned long long)tot[i].interrupts,
                      (unsigned long long)tot[i].sections, (unsigned long long)tot[i].refused,
                      modes[i] == mode::none ? "-" : tot[i].sender_rt.describe().c_str());
        jl[i] = latency_result::from(mode_name(modes[i]), "gap between consecutive loop iterations", tot[i].gaps,
                                     tot[i].loop_rt, note);
        rep.add(jl[i]);
    }

    // Side by side.
    rep.compare("ct_set_work (sender)", "p50", sc.set_work.s.p50, unit::ns, "pthread_kill", "p50", sc.kill.s.p50);
    rep.compare("ct_set_work (sender)", "p99", sc.set_work.s.p99, unit::ns, "pthread_kill", "p99", sc.kill.s.p99);
    rep.compare("ct_set_work_or_ipi, busy target", "p50", sc.or_ipi.s.p50, unit::ns, "pthread_kill", "p50", sc.kill.s.p50);
    rep.compare("exit running one bit", "p50", ec.with_work.s.p50, unit::ns, "cancel_hold alone", "p50", ec.hold.s.p50);
    rep.compare("exit, nothing deferred", "p50", ec.empty.s.p50, unit::ns, "exit running one bit", "p50",
                ec.with_work.s.p50);
    rep.compare("send_ipi tagged (sigqueue)", "p50", sc.sigqueue.s.p50, unit::ns, "send_ipi (tgkill)", "p50", sc.tgkill.s.p50);
    rep.compare("send_ipi tagged (sigqueue)", "p99", sc.sigqueue.s.p99, unit::ns, "send_ipi (tgkill)", "p99", sc.tgkill.s.p99);
    for (int i = 1; i < n_modes; ++i) {
        rep.compare(mode_name(modes[i]), "p99.9", jl[i].s.p999, unit::ns, "no requests", "p99.9", jl[0].s.p999);
        rep.compare(mode_name(modes[i]), "p99.99", p9999[i], unit::ns, "no requests", "p99.99", p9999[0]);
        rep.compare(mode_name(modes[i]), "gaps>=2us/1e6", spikes[i], unit::count, "no requests", "gaps>=2us/1e6",
                    spikes[0]);
        rep.compare(mode_name(modes[i]), "max", jl[i].s.max, unit::ns, "no requests", "max", jl[0].s.max);
    }
    rep.print_table();

    const double r50 = sc.kill.s.p50 / sc.set_work.s.p50, r99 = sc.kill.s.p99 / sc.set_work.s.p99;
    std::printf("\ntargets:\n");
    std::printf("  sender cost <= 1/50 of pthread_kill: p50 1/%.0f, p99 1/%.0f -> %s\n", r50, r99,
                (r50 >= 50 && r99 >= 50) ? "met" : "NOT met");
    std::printf("  isolated-loop jitter with ct_set_work vs no requests / idle sender: p99.9 %s vs %s / %s, p99.99 %s "
                "vs %s / %s, max %s vs %s / %s, gaps >= 2 us per 10^6 iterations %.1f vs %.1f / %.1f\n"
                "    (signal per request: p99.9 %s, p99.99 %s, max %s, gaps >= 2 us per 10^6 iterations %.1f)\n",
                fmt_ns(jl[2].s.p999).c_str(), fmt_ns(jl[0].s.p999).c_str(), fmt_ns(jl[1].s.p999).c_str(),
                fmt_ns(p9999[2]).c_str(), fmt_ns(p9999[0]).c_str(), fmt_ns(p9999[1]).c_str(),
                fmt_ns(jl[2].s.max).c_str(), fmt_ns(jl[0].s.max).c_str(), fmt_ns(jl[1].s.max).c_str(), spikes[2],
                spikes[0], spikes[1], fmt_ns(jl[4].s.p999).c_str(), fmt_ns(p9999[4]).c_str(),
                fmt_ns(jl[4].s.max).c_str(), spikes[4]);
    rep.check(tot[2].interrupts == 0, "ct_set_work phases: zero interrupts received by the isolated loop");
    rep.check(tot[4].runs >= tot[4].requests && tot[4].requests > 0, "signal phases: every signal ran the job");
    return rep.finish();
}
