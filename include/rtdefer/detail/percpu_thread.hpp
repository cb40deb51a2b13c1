// rtdefer/detail/percpu_thread.hpp: one pinned real-time thread per CPU, each running a
// run / should_run / park loop: the userspace analogue of the kernel's smpboot (kernel/smpboot.c,
// struct smp_hotplug_thread), which owns the irq_work/N threads so that irq_work.c need not. Knows
// nothing of irq_work: any service thread can sit on it, also a single one that is not per-CPU
// (timer_service's expiry thread: the second constructor, its rt_thread_options as given).
//
// The owner supplies Hooks (the smp_hotplug_thread callbacks), called on the CPU's thread with the
// CPU's index i (position in cpus(); 0 for the single thread):
//   status setup(std::size_t i, thread_ctx& self)   before the thread counts as started (setup);
//                                                   not ok: the constructor throws it
//   void run(std::size_t i, thread_ctx& self)       one pass over the work (thread_fn)
//   bool should_run(std::size_t i)                  more work now: run again without parking
//                                                   (thread_should_run)
//   steady_clock::time_point park_deadline(std::size_t i)   idle: park until then or unpark()
//   void cleanup(std::size_t i, thread_ctx& self)   after stop(): drain and unregister (cleanup)
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <sched.h>

namespace rtdefer::detail {

struct percpu_thread_options {
    std::string name;                         ///< thread name prefix: "irq_work" names "irq_work/3"
    sched_policy policy = sched_policy::fifo;
    int priority = 1;
    bool require_rt = false;
    bool lock_memory = false;                 ///< mlockall from the first thread
};

/// Returns: `cpus` sorted and deduplicated, or every CPU the calling thread may run on if it is empty.
/// Throws: std::system_error: the sched_getaffinity errno; invalid_argument for an empty set or a CPU
/// outside 0..CPU_SETSIZE-1. Real-time safety: setup path (allocates).
inline std::vector<int> percpu_cpu_set(std::vector<int> cpus, const char* who) {
    if (cpus.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (::sched_getaffinity(0, sizeof(set), &set) != 0)
            throw std::system_error(errno, std::generic_category(), std::string(who) + ": sched_getaffinity");
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &set))
                cpus.push_back(c);
    }
    std::sort(cpus.begin(), cpus.end());
    cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
    if (cpus.empty() || cpus.front() < 0 || cpus.back() >= CPU_SETSIZE)
        throw std::system_error(make_error_code(status::invalid_argument), std::string(who) + ": bad CPU list");
    return cpus;
}

template <class Hooks> class percpu_threads {
public:
    /// Effects: starts one thread per CPU of `cpus` (pinned, named name/N) and waits until each has run
    /// its setup hook. `hooks` must outlive this object.
    /// Throws: std::system_error: rt_thread's errors, or the status a setup hook returned (the threads
    /// started so far are stopped and joined first). Real-time safety: setup path.
    percpu_threads(const std::vector<int>& cpus, const percpu_thread_options& o, Hooks& hooks)
        : percpu_threads(per_cpu(cpus, o), o.name, hooks) {}

    /// Effects: starts a single thread with exactly `one` (its name, and no pinning for cpu -1), its
    /// index i 0, and waits until it has run its setup hook. `hooks` must outlive this object.
    /// Throws: as above. Real-time safety: setup path.
    percpu_threads(const rt_thread_options& one, Hooks& hooks)
        : percpu_threads(std::vector<rt_thread_options>{one}, one.name, hooks) {}

    ~percpu_threads() { stop(); }
    percpu_threads(const percpu_threads&) = delete;
    percpu_threads& operator=(const percpu_threads&) = delete;

    /// Effects: makes every thread leave its loop after its current pass, run its cleanup hook and
    /// exit; joins them. Idempotent. Progress: blocking. Real-time safety: teardown path.
    void stop() noexcept {
        // (PC3) release: pairs with acquire (PC4); unpark's own release/acquire also carries it.
        stop_.store(true, std::memory_order_release);
        for (rt_thread& t : threads_)
            if (t.joinable())
                (void)unpark(t.ctx());
        for (rt_thread& t : threads_)
            if (t.joinable())
                t.join();
    }

    /// Returns: the scheduling thread i got. Wait-free.
    [[nodiscard]] const sched_report& sched(std::size_t i) const noexcept { return threads_[i].sched_status(); }

private:
    static std::vector<rt_thread_options> per_cpu(const std::vector<int>& cpus, const percpu_thread_options& o) {
        std::vector<rt_thread_options> tos(cpus.size());
        for (std::size_t i = 0; i < cpus.size(); ++i) {
            tos[i].name = o.name + "/" + std::to_string(cpus[i]);
            tos[i].policy = o.policy;
            tos[i].priority = o.priority;
            tos[i].cpu = cpus[i];
            tos[i].lock_memory = o.lock_memory && i == 0;
            tos[i].require_rt = o.require_rt;
        }
        return tos;
    }

    percpu_threads(const std::vector<rt_thread_options>& tos, const std::string& who, Hooks& hooks)
        : hooks_(hooks), started_(std::make_unique<std::atomic<std::uint32_t>[]>(tos.size())) {
        threads_.reserve(tos.size());
        try {
            for (std::size_t i = 0; i < tos.size(); ++i) {
                threads_.emplace_back(tos[i], [this, i](thread_ctx& self) { main(i, self); });
                // (PC2) acquire: pairs with (PC1): what setup wrote is visible to us, and through our
                // publication of the owner to every other thread.
                std::uint32_t s;
                while ((s = started_[i].load(std::memory_order_acquire)) == 0)
                    started_[i].wait(0, std::memory_order_acquire);
                if (s != 1)
                    throw std::system_error(make_error_code(static_cast<status>(s - 1)),
                                            who + ": worker setup" +
                                                (tos[i].cpu >= 0 ? " on CPU " + std::to_string(tos[i].cpu) : ""));
            }
        } catch (...) {
            stop();
            throw;
        }
    }

    void main(std::size_t i, thread_ctx& self) noexcept {
        const status st = hooks_.setup(i, self);
        // (PC1) release: publishes what setup wrote to the constructor's acquire (PC2).
        started_[i].store(st == status::ok ? 1 : static_cast<std::uint32_t>(st) + 1, std::memory_order_release);
        started_[i].notify_all();
        if (st != status::ok)
            return; // the constructor throws `st`
        // The stop flag is read before each pass, as smpboot_thread_fn() checks kthread_should_stop()
        // before thread_fn: after stop() a pass in progress finishes, no new one begins (cleanup
        // drains).
        // (PC4) acquire, both loads: pair with release (PC3) in stop().
        while (!stop_.load(std::memory_order_acquire)) {
            hooks_.run(i, self);
            if (stop_.load(std::memory_order_acquire))
                break;
            if (hooks_.should_run(i))
                continue;
            // ok, timed_out or interrupted (a signal ran a hook): all mean "look again".
            (void)park_until(self, hooks_.park_deadline(i));
        }
        hooks_.cleanup(i, self);
    }

    Hooks& hooks_;
    std::unique_ptr<std::atomic<std::uint32_t>[]> started_; ///< 0 starting, 1 running, 1+status failed
    std::vector<rt_thread> threads_;
    std::atomic<bool> stop_{false};
};

} // namespace rtdefer::detail
