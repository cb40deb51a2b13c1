// cpu_timer_bench: how late a CPU-budget overrun is caught, and what arming a budget costs per
// cycle, beside the alternatives measured in the same run.
//
//   cpu_timer_bench [--quick] [--json FILE] [--no-rt] [--no-mlock] [--samples N]
//
// 1. Overrun detection lateness: CPU time the loop consumed past its budget before the handler ran
//    (budgets 100 µs, 1 ms, 10 ms), p50/p99/max, for
//      rtdefer hybrid    cpu_budget (urgent) on a thread set up with cpu_timer_policy::hybrid
//      kernel CPU clock  cpu_budget on a thread set up with cpu_timer_policy::kernel_clock (a
//                        CLOCK_THREAD_CPUTIME_ID POSIX timer: checked on the tick)
//      poll at loop top  clock_gettime(CLOCK_THREAD_CPUTIME_ID) after each 20 µs unit of work
//    Each runs on its own thread (SCHED_FIFO 80 where permitted, pinned), the same work loop.
// 2. Cost per cycle of arm+disarm (cpu_budget start_at+finish) and the syscalls it makes per cycle,
//    beside one CPU-clock read and the naive arm+disarm of a kernel timer (two timer_settime).
// 3. Process-wide lateness: process CPU time consumed past a process_cpu_timer deadline before its
//    callback ran on the designated expirer (budgets 1 ms, 10 ms; armed by a burning thread,
//    expired by a parked expirer on another CPU), for
//      rtdefer process hybrid   process_cpu_timer, cpu_timer_policy::hybrid (wall timer, budget/N)
//      rtdefer process kernel   process_cpu_timer, cpu_timer_policy::kernel_clock
//      kernel process timer     a raw CLOCK_PROCESS_CPUTIME_ID POSIX timer signalled to a thread
//                               blocked in sigwaitinfo (the baseline)
// Exit status: 1 if a correctness check fails (an overrun not caught, a handler that ran before the
// budget, an overrun reported for a cycle within budget).
#include "harness/report.hpp"

#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/process_cpu_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

#include <signal.h>
#include <time.h>

using namespace rtdefer_bench;
using rtdefer::cpu_budget;
using rtdefer::cpu_timer_policy;
using rtdefer::status;
using rtdefer::thread_ctx;
using clk = std::chrono::steady_clock;

namespace {

std::uint64_t cpu_ns() { return rtdefer::detail::clock_ns(CLOCK_THREAD_CPUTIME_ID); }

// One unit of "work": a fixed number of iterations, calibrated to ~20 µs of CPU.
std::atomic<std::uint64_t> sink{0};
std::uint64_t iters_per_unit = 0;
void work_unit(std::uint64_t iters) {
    std::uint64_t x = sink.load(std::memory_order_relaxed); // relaxed: a sink against optimisation
    for (std::uint64_t i = 0; i < iters; ++i)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    sink.store(x, std::memory_order_relaxed);
}
void calibrate() {
    std::uint64_t n = 1000;
    for (;;) {
        const std::uint64_t t0 = cpu_ns();
        work_unit(n);
        const std::uint64_t d = cpu_ns() - t0;
        if (d > 2'000'000) {
            iters_per_unit = n * 20'000 / d;
            return;
        }
        n *= 2;
    }
}

struct method_result {
    std::shared_ptr<histogram> late = std::make_shared<histogram>();
    std::size_t caught = 0, early = 0;
    rt_outcome rt;
    std::string setup_error;
};

enum class method { hybrid, kernel_clock, poll };

// One method, `samples` overrunning cycles of budget `budget_ns`, on a fresh thread.
method_result run_method(method m, std::uint64_t budget_ns, std::size_t samples, int cpu) {
    method_result r;
    std::thread th([&] {
        r.rt = apply_rt_to_this_thread({.fifo = switches().allow_rt, .priority = 80, .cpu = cpu});
        thread_ctx& self = rtdefer::attach_this_thread();
        if (m != method::poll) {
            const auto pol = m == method::hybrid ? cpu_timer_policy::hybrid : cpu_timer_policy::kernel_clock;
            if (const status s = rtdefer::cpu_timer_setup(self, {.policy = pol}); s != status::ok) {
                r.setup_error = rtdefer::to_string(s);
                return;
            }
            cpu_budget budget(self, std::chrono::nanoseconds(budget_ns));
            std::uint64_t now = rtdefer::cpu_time_ns(self);
            for (std::size_t i = 0; i < samples; ++i) {
                (void)budget.start_at(now);
                // The cycle overruns: work until the budget says so (or 1 s of CPU: not caught).
                const std::uint64_t give_up = now + budget_ns + 1'000'000'000;
                while (!budget.overrunning() && cpu_ns() < give_up) {
                    for (int k = 0; k < 16 && !budget.overrunning(); ++k)
                        work_unit(iters_per_unit / 16);
                }
                const rtdefer::cpu_cycle c = budget.finish();
                now = c.now_ns;
                if (c.overran) {
                    ++r.caught;
                    r.late->record(c.late_ns);
                    if (budget.timer().fired_at() < budget.timer().expires())
                        ++r.early;
                }
                (void)rtdefer::task_work_run(self); // the loop's safe point: unlinks what fired
            }
        } else {
            for (std::size_t i = 0; i < samples; ++i) {
                const std::uint64_t deadline = cpu_ns() + budget_ns;
                std::uint64_t now;
                while ((now = cpu_ns()) < deadline)
                    work_unit(iters_per_unit);
                ++r.caught;
                r.late->record(now - deadline);
            }
        }
        drop_rt_on_this_thread();
    });
    th.join();
    return r;
}

const char* method_name(method m) {
    return m == method::hybrid ? "rtdefer hybrid" : m == method::kernel_clock ? "kernel CPU clock" : "poll at loop top";
}

std::string budget_name(std::uint64_t ns) {
    return ns >= 1'000'000 ? std::to_string(ns / 1'000'000) + " ms" : std::to_string(ns / 1000) + " µs";
}

// ---- 3. process-wide lateness -------------------------------------------------------------------

enum class pmethod { hybrid, kernel_clock, raw_kernel };

const char* pmethod_name(pmethod m) {
    return m == pmethod::hybrid ? "rtdefer process hybrid" : m == pmethod::kernel_clock ? "rtdefer process kernel"
                                                                                          : "kernel process timer";
}

struct pcaught {
    std::atomic<bool> fired{false};
    std::atomic<std::uint64_t> at{0};
};

// The load: arms (or, raw, sets) a deadline `budget_ns` of process CPU ahead, burns until the
// expiry is reported, records how far past the deadline the process clock was when it ran.
template <class Arm>
void burn_samples(method_result& r, std::uint64_t budget_ns, std::size_t samples, pcaught& c, Arm arm) {
    for (std::size_t i = 0; i < samples; ++i) {
        c.fired.store(false, std::memory_order_relaxed); // relaxed: published by the arm's syscall/lock
        const std::uint64_t deadline = rtdefer::process_cpu_time_ns() + budget_ns;
        if (!arm(deadline))
            return;
        const std::uint64_t give_up = deadline + 2'000'000'000;
        // acquire: pairs with the release in the handler; `at` is visible.
        while (!c.fired.load(std::memory_order_acquire) && rtdefer::process_cpu_time_ns() < give_up)
            work_unit(iters_per_unit / 16);
        if (!c.fired.load(std::memory_order_acquire))
            continue;
        const std::uint64_t at = c.at.load(std::memory_order_relaxed); // relaxed: see above
        ++r.caught;
        if (at < deadline)
            ++r.early;
        else
            r.late->record(at - deadline);
    }
}

method_result run_process_method(pmethod m, std::uint64_t budget_ns, std::size_t samples, int load_cpu, int exp_cpu) {
    method_result r;
    pcaught c;
    std::atomic<bool> stop{false};
    std::atomic<int> ready{0}; // 1: expirer/waiter ready, -1: its setup failed
    std::atomic<pid_t> waiter_tid{0};
    const int sig = SIGRTMIN + 6;
    std::thread expirer([&] {
        (void)apply_rt_to_this_thread({.fifo = switches().allow_rt, .priority = 70, .cpu = exp_cpu});
        thread_ctx& self = rtdefer::attach_this_thread();
        if (m == pmethod::raw_kernel) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, sig);
            pthread_sigmask(SIG_BLOCK, &set, nullptr);
            waiter_tid.store(rtdefer::detail::gettid(), std::memory_order_relaxed); // relaxed: `ready` publishes
            ready.store(1, std::memory_order_release);
            const timespec poll{0, 5'000'000};
            while (!stop.load(std::memory_order_acquire)) {
                siginfo_t si;
                if (sigtimedwait(&set, &si, &poll) == sig) {
                    c.at.store(rtdefer::process_cpu_time_ns(), std::memory_order_relaxed); // relaxed: released below
                    c.fired.store(true, std::memory_order_release);
                }
            }
        } else {
            const auto pol = m == pmethod::hybrid ? cpu_timer_policy::hybrid : cpu_timer_policy::kernel_clock;
            if (const status s = rtdefer::process_cpu_timer_setup(self, {.policy = pol}); s != status::ok) {
                r.setup_error = rtdefer::to_string(s);
                ready.store(-1, std::memory_order_release);
                return;
            }
            ready.store(1, std::memory_order_release);
            while (!stop.load(std::memory_order_acquire))
                (void)rtdefer::wait_for_work_until(self, clk::now() + std::chrono::milliseconds(5));
        }
        drop_rt_on_this_thread();
    });
    while (ready.load(std::memory_order_acquire) == 0)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (ready.load() == 1) {
        std::thread load([&] {
            r.rt = apply_rt_to_this_thread({.fifo = switches().allow_rt, .priority = 80, .cpu = load_cpu});
            thread_ctx& self = rtdefer::attach_this_thread();
            if (m == pmethod::raw_kernel) {
                sigevent sev{};
                sev.sigev_notify = SIGEV_THREAD_ID;
                sev.sigev_signo = sig;
                sev._sigev_un._tid = waiter_tid.load(std::memory_order_relaxed); // relaxed: after `ready`
                timer_t kt{};
                if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &kt) != 0) {
                    r.setup_error = "timer_create";
                    return;
                }
                burn_samples(r, budget_ns, samples, c, [&](std::uint64_t deadline) {
                    itimerspec its{};
                    its.it_value = rtdefer::detail::ns_ts(deadline);
                    return timer_settime(kt, TIMER_ABSTIME, &its, nullptr) == 0;
                });
                timer_delete(kt);
            } else {
                rtdefer::process_cpu_timer t;
                burn_samples(r, budget_ns, samples, c, [&](std::uint64_t deadline) {
                    return t.arm(self, deadline, [](rtdefer::process_cpu_timer& me, void* a) noexcept {
                        auto* pc = static_cast<pcaught*>(a);
                        pc->at.store(me.fired_at(), std::memory_order_relaxed); // relaxed: released below
                        pc->fired.store(true, std::memory_order_release);
                    }, &c) == status::ok;
                });
                (void)t.cancel_sync(self);
            }
            drop_rt_on_this_thread();
        });
        load.join();
    }
    stop.store(true, std::memory_order_release);
    expirer.join(); // its exit disarms the process timers; the next method sets up a new expirer
    return r;
}

} // namespace

int main(int argc, char** argv) {
    const options opts = parse_args(argc, argv, "cpu_timer_bench");
    report rep(opts);
    rep.print_header();
    if (rtdefer::interrupt_install() != status::ok) {
        std::fprintf(stderr, "cpu_timer_bench: interrupt_install failed\n");
        return 1;
    }
    calibrate();
    const int cpu = nth_usable_cpu(usable_cpus() > 1 ? 1 : 0);
    std::printf("work unit: %llu iterations (~20 µs of CPU); measured threads on CPU %d\n\n",
                static_cast<unsigned long long>(iters_per_unit), cpu);

    // ---- 1. overrun detection lateness --------------------------------------------------------
    const std::uint64_t budgets[] = {100'000, 1'000'000, 10'000'000};
    for (const std::uint64_t b : budgets) {
        const std::size_t n = b == 100'000 ? opts.sample_count(300, 40) : b == 1'000'000 ? opts.sample_count(200, 25)
                                                                                           : opts.sample_count(40, 6);
        double p99[3] = {};
        for (const method m : {method::hybrid, method::kernel_clock, method::poll}) {
            const method_result r = run_method(m, b, n, cpu);
            const std::string name = std::string(method_name(m)) + ", budget " + budget_name(b);
            if (!r.setup_error.empty()) {
                rep.add(latency_result::unavailable(name, "CPU past the budget when caught", "setup: " + r.setup_error));
                rep.check(false, name + ": cpu_timer_setup failed");
                continue;
            }
            rep.add(latency_result::from(name, "CPU time consumed past the budget before the handler ran", r.late, r.rt,
                                         std::to_string(r.caught) + "/" + std::to_string(n) + " caught"));
            rep.check(r.caught == n, name + ": every overrun caught");
            rep.check(r.early == 0, name + ": no handler before the budget was spent");
            p99[static_cast<int>(m)] = summary::of(*r.late).p99;
        }
        rep.compare("rtdefer hybrid " + budget_name(b), "p99", p99[0], unit::ns, "kernel CPU clock", "p99", p99[1]);
        rep.compare("rtdefer hybrid " + budget_name(b), "p99", p99[0], unit::ns, "poll (20 µs units)", "p99", p99[2]);
    }

    // ---- 2. cost per cycle ----------------------------------------------------------------------
    {
        const std::size_t cycles = opts.sample_count(200'000, 20'000);
        double budget_ns_per = 0, settime_per = 0, read_ns = 0, naive_ns = 0;
        std::uint64_t overruns = 0;
        std::thread th([&] {
            (void)apply_rt_to_this_thread({.fifo = switches().allow_rt, .priority = 80, .cpu = cpu});
            thread_ctx& self = rtdefer::attach_this_thread();
            if (rtdefer::cpu_timer_setup(self) != status::ok)
                return;
            cpu_budget budget(self, std::chrono::milliseconds(10));
            rtdefer::cpu_cycle c = budget.finish();
            const std::uint64_t arms0 = rtdefer::cpu_timer_statistics(self).kernel_arms;
            auto t0 = clk::now();
            for (std::size_t i = 0; i < cycles; ++i) {
                (void)budget.start_at(c.now_ns);
                c = budget.finish();
            }
            budget_ns_per = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / static_cast<double>(cycles);
            settime_per = static_cast<double>(rtdefer::cpu_timer_statistics(self).kernel_arms - arms0) / static_cast<double>(cycles);
            overruns = budget.overruns();
            t0 = clk::now();
            for (std::size_t i = 0; i < cycles; ++i)
                sink.fetch_add(cpu_ns(), std::memory_order_relaxed); // relaxed: a sink
            read_ns = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / static_cast<double>(cycles);
            // Naive: arm and disarm a kernel CPU-clock timer every cycle (signal ignored: never fires).
            sigevent sev{};
            sev.sigev_notify = SIGEV_NONE;
            timer_t kt{};
            if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &kt) == 0) {
                itimerspec arm{}, off{};
                arm.it_value.tv_sec = 10;
                t0 = clk::now();
                for (std::size_t i = 0; i < cycles; ++i) {
                    timer_settime(kt, 0, &arm, nullptr);
                    timer_settime(kt, 0, &off, nullptr);
                }
                naive_ns = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / static_cast<double>(cycles);
                timer_delete(kt);
            }
            drop_rt_on_this_thread();
        });
        th.join();
        std::printf("\narm+disarm per cycle (cpu_budget start_at + finish, %zu busy cycles):\n", cycles);
        std::printf("  rtdefer cpu_budget        %s per cycle; syscalls per cycle: %.4f timer_settime + 1 CPU-clock read\n",
                    fmt_ns(budget_ns_per).c_str(), settime_per);
        std::printf("  baseline: CPU-clock read  %s (one syscall)\n", fmt_ns(read_ns).c_str());
        std::printf("  baseline: naive kernel    %s per cycle (2 timer_settime: arm + disarm)\n", fmt_ns(naive_ns).c_str());
        rep.compare("cpu_budget arm+disarm", "per cycle", budget_ns_per, unit::ns, "naive 2x timer_settime", "per cycle", naive_ns);
        rep.compare("cpu_budget arm+disarm", "per cycle", budget_ns_per, unit::ns, "one CPU-clock read", "per call", read_ns);
        rep.check(overruns == 0, "no overrun reported for cycles far within their budget");
        rep.check(budget_ns_per > 0, "cost loop ran (cpu_timer_setup succeeded)");
    }

    // ---- 3. process-wide lateness --------------------------------------------------------------
    {
        const int load_cpu = cpu, exp_cpu = nth_usable_cpu(0);
        std::printf("\nprocess-wide: load on CPU %d, expirer/waiter on CPU %d\n", load_cpu, exp_cpu);
        for (const std::uint64_t b : {std::uint64_t{1'000'000}, std::uint64_t{10'000'000}}) {
            const std::size_t n = b == 1'000'000 ? opts.sample_count(200, 25) : opts.sample_count(40, 6);
            double p99[3] = {};
            for (const pmethod m : {pmethod::hybrid, pmethod::kernel_clock, pmethod::raw_kernel}) {
                const method_result r = run_process_method(m, b, n, load_cpu, exp_cpu);
                const std::string name = std::string(pmethod_name(m)) + ", budget " + budget_name(b);
                if (!r.setup_error.empty()) {
                    rep.add(latency_result::unavailable(name, "process CPU past the deadline", "setup: " + r.setup_error));
                    rep.check(false, name + ": setup failed");
                    continue;
                }
                rep.add(latency_result::from(name, "process CPU time consumed past the deadline before the callback ran",
                                             r.late, r.rt, std::to_string(r.caught) + "/" + std::to_string(n) + " caught"));
                rep.check(r.caught == n, name + ": every deadline caught");
                rep.check(r.early == 0, name + ": no callback before the deadline");
                p99[static_cast<int>(m)] = summary::of(*r.late).p99;
            }
            rep.compare("rtdefer process hybrid " + budget_name(b), "p99", p99[0], unit::ns, "kernel process timer", "p99", p99[2]);
            rep.compare("rtdefer process kernel " + budget_name(b), "p99", p99[1], unit::ns, "kernel process timer", "p99", p99[2]);
        }
    }
    rep.print_table();
    return rep.finish();
}
