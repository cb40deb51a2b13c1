// rtdefer/detail/percpu_thread.hpp: one pinned real-time thread per CPU, each running a
// run / should_run / park loop: the userspace analogue of the kernel's smpboot (kernel/smpboot.c,
// struct smp_hotplug_thread), which owns the irq_work/N threads so that irq_work.c need not. Knows
// nothing of irq_work: any service thread can sit on it, also a single one that is not per-CPU
// (timer_service's expiry thread: the second constructor, its rt_thread_options as given).
//
// The owner supplies Hooks (the smp_hotplug_thread callbacks), called on the CPU's thread with the
// CPU's index i (position in the constructor's `cpus`; 0 for the single thread), `self` that
// thread's ctx. Threads call them concurrently for different i; all are noexcept in effect (an
// exception escaping one terminates):
//   status setup(std::size_t i, thread_ctx& self)   once, before the thread counts as started
//                                                   (setup); not ok: the constructor throws it,
//                                                   and this thread exits with no pass, no cleanup
//   void run(std::size_t i, thread_ctx& self)       one pass over the work (thread_fn)
//   bool should_run(std::size_t i)                  after each pass not followed by stop: more
//                                                   work now, run again without parking
//                                                   (thread_should_run)
//   steady_clock::time_point park_deadline(std::size_t i)   after should_run said false: park until
//                                                   then, or until an unpark(self)
//   void cleanup(std::size_t i, thread_ctx& self)   once, after stop(): drain and unregister
//                                                   (cleanup); the thread exits after it
//
// So each thread's hooks run in the order  setup (run should_run* park_deadline?)* cleanup: the
// first pass begins at once, without a wake-up. The stop flag is read before each pass (also on
// waking from a park): after stop() the pass in progress is the last, and cleanup follows.
// No lost wake-up: an unpark(self) after should_run's false (the work's producer unparks after
// publishing it) leaves a token that makes the following park return at once (park.hpp), so the
// loop looks again. A park may also return early (timeout, a signal): the loop just looks again.
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

/// Effects: none beyond reading the calling thread's affinity when `cpus` is empty.
/// Returns: `cpus` sorted and deduplicated, or every CPU the calling thread may run on if it is empty.
/// Throws: std::system_error: the sched_getaffinity errno; invalid_argument for an empty set or a CPU
/// outside 0..CPU_SETSIZE-1 (its what() starts with `who`). Progress: bounded.
/// Real-time safety: setup path (allocates, one syscall).
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
    /// Effects: starts one thread per entry of `cpus` (pinned to it, named name/N, with o's policy,
    /// priority and require_rt; memory locked from the first if o.lock_memory), one after the other,
    /// each only once the previous one has run its setup hook. Returns (the constructor) once every
    /// thread has run setup: what setup wrote is visible to the caller. `hooks` must outlive this.
    /// Throws: std::system_error: rt_thread's errors, or the status a setup hook returned, with the
    /// CPU in what(); the threads started before it are stopped (cleanup runs) and joined first,
    /// later ones never start. Progress: blocking (thread creation, a wait per thread).
    /// Real-time safety: setup path (allocates, creates threads).
    percpu_threads(const std::vector<int>& cpus, const percpu_thread_options& o, Hooks& hooks)
        : percpu_threads(per_cpu(cpus, o), o.name, hooks) {}

    /// Effects: starts a single thread with exactly `one` (its name, no /N suffix; pinned to one.cpu,
    /// or not at all for -1), its index i 0, and returns once it has run its setup hook (as above).
    /// `hooks` must outlive this object.
    /// Throws: as above. Progress: blocking. Real-time safety: setup path.
    percpu_threads(const rt_thread_options& one, Hooks& hooks)
        : percpu_threads(std::vector<rt_thread_options>{one}, one.name, hooks) {}

    /// Effects: stop(). Progress: blocking (join). Real-time safety: teardown path.
    ~percpu_threads() { stop(); }
    percpu_threads(const percpu_threads&) = delete;
    percpu_threads& operator=(const percpu_threads&) = delete;

    /// Effects: makes every thread leave its loop after its current pass (a parked one wakes and begins
    /// none), run its cleanup hook and exit; joins them, so every thread has exited (its thread_local
    /// destructors included) when this returns. Idempotent. Not from a hook (it would join itself).
    /// Returns: nothing. Progress: blocking, bounded by the passes in progress and the cleanups.
    /// Real-time safety: teardown path (futex wakes, joins).
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

    /// Returns: the scheduling thread i got (i < the number of threads; also after stop()).
    /// Progress: wait-free. Real-time safety: no allocation, no syscall.
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
