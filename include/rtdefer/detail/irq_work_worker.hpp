// rtdefer/detail/irq_work_worker.hpp: the irq_work/N worker (its hooks on detail/percpu_thread.hpp:
// setup, one pass, park, teardown drain) and irq_work_domain's setup, teardown and statistics.
// Internals of irq_work.hpp, which includes this after the domain's declaration.
#pragma once

#ifndef RTDEFER_IRQ_WORK_CONTRACT
#error "include <rtdefer/irq_work.hpp>, not this detail header"
#endif

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cpu_clock.hpp>
#include <rtdefer/detail/irq_work_item.hpp>
#include <rtdefer/detail/percpu_thread.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>

#include <pthread.h>
#include <signal.h>

namespace rtdefer {
namespace detail {

inline status irq_work_worker_hooks::setup(std::size_t i, thread_ctx& self) noexcept {
    irq_work_cpu& pc = pcpu[i];
    // Threads inherit their creator's signal mask, and programs often block signals in main() to
    // sigwait() elsewhere: with the interrupt signal blocked here every IPI would stay pending and
    // hard items would never run (send_ipi still succeeds, so nothing would notice).
    sigset_t irq;
    sigemptyset(&irq);
    sigaddset(&irq, interrupt_signal());
    ::pthread_sigmask(SIG_UNBLOCK, &irq, nullptr);
    pc.worker = &self; // published to the constructor by percpu_threads' start handshake
    pc.nohz.start(std::chrono::steady_clock::now());
    // no_space: more than irq_work_max_workers workers in the process.
    return irq_work_register_worker(self, pc) ? status::ok : status::no_space;
}

inline void irq_work_worker_hooks::run(std::size_t i, thread_ctx& self) noexcept {
    irq_work_cpu& pc = pcpu[i];
    (void)irq_work_run_list(pc, irq_work_list::lazy, pc.running);
    // `ticks` is counted inside, before the tick's items are released (BUSY clear).
    pc.nohz.poll(pc.tick, [&] { return irq_work_run_list(pc, irq_work_list::tick, pc.running, &pc.ticks); });
    // Safety net for a refused IPI (irq_work_raise_hard unparks us instead): interrupt ourselves,
    // so hard items still run in interrupt context. The signal is delivered before tgkill returns.
    if (RTDEFER_UNLIKELY(!pc.raised.empty()) && send_ipi(self) != status::ok)
        (void)irq_work_run_hard(pc, pc.running);
}

inline bool irq_work_worker_hooks::should_run(std::size_t i) noexcept { return !pcpu[i].lazy.empty(); }

inline std::chrono::steady_clock::time_point irq_work_worker_hooks::park_deadline(std::size_t i) noexcept {
    return pcpu[i].nohz.deadline();
}

/// One teardown pass over the three lists of `pc`, frames on `runs`. On the CPU's own worker
/// (`worker` non-null) hard items run in interrupt context like always (a self-IPI, or thread
/// context if it is refused); from the destructor, after the workers left, in thread context (they
/// are async-signal-safe, so that is fine too). Returns: callbacks run here (not by the IPI).
inline std::size_t irq_work_drain_pass(irq_work_cpu& pc, irq_work_run_stack& runs, thread_ctx* worker) noexcept {
    std::size_t n = 0;
    if (!pc.raised.empty() && (worker == nullptr || send_ipi(*worker) != status::ok))
        n += irq_work_run_hard(pc, runs);
    n += irq_work_run_list(pc, irq_work_list::lazy, runs);
    n += irq_work_run_list(pc, irq_work_list::tick, runs);
    return n;
}

/// Teardown on the worker: run what is queued here until the lists stay empty.
inline void irq_work_worker_hooks::cleanup(std::size_t i, thread_ctx& self) noexcept {
    irq_work_cpu& pc = pcpu[i];
    while (!pc.raised.empty() || !pc.lazy.empty() || !pc.tick.empty())
        (void)irq_work_drain_pass(pc, pc.running, &self);
    irq_work_unregister_worker(self);
}

/// Effects: adds the counters and backlog of `pc` to `into` (the one place a snapshot is written:
/// stats() adds one CPU to a zeroed snapshot, total_stats() every CPU). `now_ns`: mono_ns().
inline void irq_work_add_stats(const irq_work_cpu& pc, std::uint64_t now_ns, irq_work_stats& into) noexcept {
    // relaxed: statistics snapshots.
    constexpr auto r = std::memory_order_relaxed;
    into.hard_raises += pc.hard_raises.load(r);
    into.lazy_raises += pc.lazy_raises.load(r);
    into.futex_wakes += park_futex_wakes(*pc.worker);
    into.ipi_failures += pc.ipi_failures.load(r);
    into.runs_hard += pc.runs_hard.load(r);
    into.runs_lazy += pc.runs_lazy.load(r);
    into.ticks += pc.ticks.load(r);
    into.tick_restarts += pc.tick_restarts.load(r);
    into.tick_stopped = into.tick_stopped || pc.nohz.stopped_snapshot();
    // `started` first: every begun run was queued before (see irq_work_cpu::queued), so reading
    // `queued` second rarely sees fewer; the clamp covers the rest.
    const std::uint64_t started = pc.started.load(r);
    const std::uint64_t queued = pc.queued.load(r);
    into.pending += queued > started ? queued - started : 0;
    const llist_head* lists[irq_work_nlists] = {&pc.raised, &pc.lazy, &pc.tick};
    for (std::size_t l = 0; l < irq_work_nlists; ++l) {
        if (lists[l]->empty())
            continue;
        const std::uint64_t since = pc.since_ns[l].load(r);
        const std::chrono::nanoseconds age{now_ns > since ? now_ns - since : 0};
        into.oldest_pending_age = std::max(into.oldest_pending_age, age);
    }
}

} // namespace detail

inline irq_work_domain::irq_work_domain(irq_work_domain_options opts) : tick_(opts.tick) {
    // Interrupt signal: keep whichever is installed; otherwise install the requested/default one.
    int signo = interrupt_signal();
    if (signo == 0)
        signo = opts.interrupt_signal != 0 ? opts.interrupt_signal : default_interrupt_signal();
    if (status st = interrupt_install(signo); st != status::ok)
        throw std::system_error(make_error_code(st), "irq_work_domain: interrupt_install");
    if (status st = interrupt_register_hook(&detail::irq_work_interrupt); st != status::ok)
        throw std::system_error(make_error_code(st), "irq_work_domain: interrupt_register_hook");

    cpus_ = detail::percpu_cpu_set(std::move(opts.cpus), "irq_work_domain");
    pcpu_ = std::make_unique<detail::irq_work_cpu[]>(cpus_.size());
    map_.assign(static_cast<std::size_t>(cpus_.back()) + 1, nullptr);
    for (std::size_t i = 0; i < cpus_.size(); ++i) {
        pcpu_[i].cpu = cpus_[i];
        pcpu_[i].nohz.configure(opts.tick, opts.tick_stop_after);
        map_[static_cast<std::size_t>(cpus_[i])] = &pcpu_[i];
    }
    hooks_.pcpu = pcpu_.get();
    detail::percpu_thread_options to;
    to.name = "irq_work";
    to.policy = opts.policy;
    to.priority = opts.priority;
    to.require_rt = opts.require_rt;
    to.lock_memory = opts.lock_memory;
    workers_.emplace(cpus_, to, hooks_);
}

inline irq_work_domain::~irq_work_domain() {
    workers_->stop();
    // A callback drained on one worker may have queued to a CPU whose worker had already left: run
    // those here, until a pass over every CPU finds nothing.
    detail::irq_work_run_stack& runs = detail::irq_work_thread_stack(); // not a worker: our own
    for (bool more = true; more;) {
        more = false;
        for (std::size_t i = 0; i < cpus_.size(); ++i)
            more |= detail::irq_work_drain_pass(pcpu_[i], runs, nullptr) != 0;
    }
}

inline const detail::irq_work_cpu& irq_work_domain::checked(int cpu) const noexcept {
    const detail::irq_work_cpu* pc = percpu(cpu);
    RTDEFER_ASSERT(pc != nullptr, "irq_work_domain: CPU not served by this domain");
    return *pc;
}

inline thread_ctx& irq_work_domain::worker(int cpu) const noexcept { return *checked(cpu).worker; }

inline const sched_report& irq_work_domain::worker_sched(int cpu) const noexcept {
    return workers_->sched(static_cast<std::size_t>(&checked(cpu) - pcpu_.get()));
}

inline irq_work_stats irq_work_domain::stats(int cpu) const noexcept {
    irq_work_stats s;
    detail::irq_work_add_stats(checked(cpu), detail::mono_ns(), s);
    return s;
}

inline irq_work_stats irq_work_domain::total_stats() const noexcept {
    irq_work_stats t;
    const std::uint64_t now = detail::mono_ns();
    for (std::size_t i = 0; i < cpus_.size(); ++i)
        detail::irq_work_add_stats(pcpu_[i], now, t);
    return t;
}

} // namespace rtdefer
