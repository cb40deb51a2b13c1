// rtdefer benchmark harness: the producer -> owner hand-off rig, one timed round at a time.
//
// The owner (CPU b) announces round k and then waits its own way: the `owner` parameter (park,
// wait_for_work_until, an io_uring wait, a baseline spin). The producer (CPU a) sees the
// announcement, sleeps `gap` so the owner really is waiting, stamps t0, fires (the `waker`
// parameter: unpark, task_work_add, ...), stamps t1, and spins until the owner side calls
// arrived.mark() (the handed work ran there; it stamps t2). Recorded, after `warm` rounds:
//   handed  t0 -> t2   wake-to-run / add-to-run
//   fire    t0 -> t1   the producer's own call
// only in rounds where the waker says its fire really woke a waiting owner (woke()): a round in
// which the owner had not gone to sleep yet measures no wake, and is counted as not_woken.
//
//   handoff_rig rig(cfg);                                   // the futex baseline:
//   handoff_result r = rig.run(parked_owner{rig.arrived}, unpark_waker{});
//   // task_work add->run to an owner in wait_for_work_until (an arrival_item marks the arrival):
//   handoff_result r = measure_task_work_handoff(cfg, task_work_owner{});
//
// A waker has prepare(t) (untimed, before t0), bool fire(t) (false: the fire failed; the run stops)
// and bool woke(t) (after the arrival). An owner calls next() before each wait and returns when it
// is false. When the producer is done it sets stop and unpark()s the owner, so an owner waits on its
// park word (every rtdefer wait does) or, if it polls, checks stopped() in its poll loop.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include "latency.hpp"

namespace rtdefer_bench {

/// A thread's rtdefer ctx handed to another thread: the target calls attach_and_publish() on
/// itself; the other side wait()s for it. The counted reference keeps the ctx alive until this object
/// dies, so unpark()/send_ipi() stay safe even after the target has exited.
class published_ctx {
public:
    rtdefer::thread_ctx& attach_and_publish() {
        rtdefer::thread_ctx& self = rtdefer::attach_this_thread();
        ref_ = rtdefer::thread_ref(self);
        ptr_.store(&self, std::memory_order_release);  // release: publishes ref_ and the attached ctx
        return self;
    }
    rtdefer::thread_ctx& wait() const {
        rtdefer::thread_ctx* p;
        while ((p = ptr_.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();  // pairs with the release above
        return *p;
    }

private:
    std::atomic<rtdefer::thread_ctx*> ptr_{nullptr};
    rtdefer::thread_ref ref_;
};

struct handoff_config {
    int cpu_a = -1;  ///< producer (waker)
    int cpu_b = -1;  ///< owner (woken)
    int priority = 80;
    bool fifo = true;  ///< both threads; harness-wide --no-rt still turns it off
    std::chrono::microseconds gap{50};
    std::size_t samples = 1000;  ///< rounds after the warm-up (fewer are recorded if some did not wake)
    double timeout_ns = 2e9;     ///< per wait: for the announcement, for the arrival

    /// Warm-up rounds, not recorded: 50, or a tenth of a short run.
    std::size_t warm() const { return std::min<std::size_t>(50, samples / 10); }
    std::size_t rounds() const { return samples + warm(); }
};

struct handoff_result {
    std::shared_ptr<histogram> handed = std::make_shared<histogram>();  ///< t0 -> t2, ns
    std::shared_ptr<histogram> fire = std::make_shared<histogram>();    ///< t0 -> t1, ns
    rt_outcome producer, owner;
    std::uint64_t fired = 0;      ///< fire() calls that returned true
    std::uint64_t arrivals = 0;   ///< arrived.mark() calls until the producer stopped
    /// mark() calls after the producer stopped: an owner that marks after each wait marks once more
    /// for the rig's final unpark(); a callback-driven owner must show 0 (no run without an add).
    std::uint64_t late_arrivals = 0;
    std::uint64_t not_woken = 0;  ///< rounds skipped: the owner was not asleep yet
    std::uint64_t timeouts = 0;   ///< an announcement or an arrival that did not come in time
    std::uint64_t failed = 0;     ///< fire() returned false
    std::string refused;          ///< non-empty: the owner refused (why); nothing was measured

    /// Every round completed and every fire arrived exactly once.
    bool complete() const { return refused.empty() && timeouts == 0 && failed == 0 && arrivals == fired; }
    /// complete(), and nothing arrived after the producer stopped: for owners whose arrival is the
    /// handed work itself (a callback), which must never run without a fire.
    bool exactly_once() const { return complete() && late_arrivals == 0; }
};

/// The owner's side of a run, handed to the owner function on its own (pinned, FIFO) thread.
class handoff_owner {
public:
    rtdefer::thread_ctx& self() const noexcept { return *self_; }
    /// Announce the next round; false once the producer has finished (return then).
    bool next() noexcept {
        if (stop_->load(std::memory_order_acquire)) return false;  // pairs with the producer's release of stop
        ready_->store(++k_, std::memory_order_release);  // release: pairs with the producer's acquire of ready
        return true;
    }
    /// The round announced last (1, 2, ...; 0 before the first next()).
    std::uint64_t round() const noexcept { return k_; }
    /// The producer has finished: an owner that polls instead of waiting on its park word (a
    /// baseline spin) checks this in its poll loop.
    bool stopped() const noexcept { return stop_->load(std::memory_order_acquire); }  // pairs as in next()
    /// Instead of serving (call before the first next(), then return): nothing is measured.
    void refuse(std::string why) {
        *refused_ = std::move(why);
        refusing_->store(true, std::memory_order_release);  // release: publishes *refused_
    }

private:
    friend class handoff_rig;
    handoff_owner(rtdefer::thread_ctx& self, std::atomic<std::uint64_t>& ready, const std::atomic<bool>& stop,
                  std::atomic<bool>& refusing, std::string& refused)
        : self_(&self), ready_(&ready), stop_(&stop), refusing_(&refusing), refused_(&refused) {}
    rtdefer::thread_ctx* self_;
    std::atomic<std::uint64_t>* ready_;
    const std::atomic<bool>* stop_;
    std::atomic<bool>* refusing_;
    std::string* refused_;
    std::uint64_t k_ = 0;
};

/// A waker whose fire counts as a wake when the owner's park word counted a FUTEX_WAKE during it
/// (rtdefer::park_futex_wakes): for fires that wake through the park word (task_work_add with
/// notify::resume), whatever the owner waits in.
template <class Fire>
class park_word_waker {
public:
    explicit park_word_waker(Fire f) : fire_(std::move(f)) {}
    void prepare(rtdefer::thread_ctx& t) noexcept { wakes0_ = rtdefer::park_futex_wakes(t); }
    bool fire(rtdefer::thread_ctx& t) noexcept { return fire_(t); }
    bool woke(rtdefer::thread_ctx& t) const noexcept { return rtdefer::park_futex_wakes(t) != wakes0_; }

private:
    Fire fire_;
    std::uint64_t wakes0_ = 0;
};

/// The plain futex wake: rtdefer::unpark(); a wake when unpark() issued FUTEX_WAKE (returned true).
struct unpark_waker {
    void prepare(rtdefer::thread_ctx&) noexcept {}
    bool fire(rtdefer::thread_ctx& t) noexcept {
        woke_ = rtdefer::unpark(t);
        return true;
    }
    bool woke(rtdefer::thread_ctx&) const noexcept { return woke_; }
    bool woke_ = false;
};

/// The plain parked owner (the futex baseline): park() each round, and mark `arrived` when it returns.
/// A token left by an unpark() that found it not yet parked makes park() return at once; the waker
/// then says the round did not wake it (unpark_waker: unpark() returned false).
struct parked_owner {
    event_stamp& arrived;
    void operator()(handoff_owner& o) const {
        while (o.next()) {
            rtdefer::status st;
            do {
                st = rtdefer::park_until(o.self(), std::chrono::steady_clock::now() + std::chrono::seconds(2));
            } while (st == rtdefer::status::interrupted);
            arrived.mark();
        }
    }
};

/// A task_work item whose callback marks `ev` (a rig's arrived): the handed work of an add->run
/// measurement, stamped where the callback runs.
struct arrival_item : rtdefer::callback_head {
    explicit arrival_item(event_stamp& ev) : ev_(&ev) { rtdefer::init_task_work(*this, &run); }
    static void run(rtdefer::callback_head* h) noexcept { static_cast<arrival_item*>(h)->ev_->mark(); }
    event_stamp* ev_;
};

/// Fires by task_work_add(item, notify::resume): the add->run hand-off to an owner waiting on its
/// park word (task_work_owner, a uring_loop); woke() as park_word_waker says.
inline auto task_work_waker(arrival_item& item) {
    return park_word_waker([&item](rtdefer::thread_ctx& t) noexcept {
        return rtdefer::task_work_add(t, item, rtdefer::notify::resume) == rtdefer::status::ok;
    });
}

/// The task_work owner: waits in wait_for_work_until() each round, which runs the added item.
struct task_work_owner {
    void operator()(handoff_owner& o) const {
        while (o.next())
            (void)rtdefer::wait_for_work_until(o.self(), std::chrono::steady_clock::now() + std::chrono::seconds(2));
    }
};

class handoff_rig {
public:
    explicit handoff_rig(const handoff_config& c) : c_(c) {}
    handoff_rig(const handoff_rig&) = delete;
    handoff_rig& operator=(const handoff_rig&) = delete;

    /// Marked by the owner side when the handed work runs (a callback, or the owner after its wait).
    event_stamp arrived;

    /// One run of c.rounds() rounds. Setup-time allocation only (threads, histograms); the timed
    /// region records into preallocated histograms.
    template <class Owner, class Waker>
    handoff_result run(Owner&& owner, Waker&& waker) {
        lock_memory_once();
        handoff_result r;
        published_ctx target;  // declared before the threads: outlives them
        std::atomic<std::uint64_t> ready{0};
        std::atomic<bool> stop{false}, refusing{false};
        const std::uint64_t arrivals0 = arrived.count();
        const std::size_t warm = c_.warm(), total = c_.rounds();
        bench_thread owner_thread({.fifo = c_.fifo, .priority = c_.priority, .cpu = c_.cpu_b}, [&] {
            handoff_owner o(target.attach_and_publish(), ready, stop, refusing, r.refused);
            owner(o);
        });
        r.owner = owner_thread.outcome();
        r.producer = run_measured({.fifo = c_.fifo, .priority = c_.priority, .cpu = c_.cpu_a}, [&] {
            rtdefer::thread_ctx& t = target.wait();
            for (std::uint64_t k = 1; k <= total; ++k) {
                bool refused = false;
                if (!spin_until(
                        [&] {
                            refused = refusing.load(std::memory_order_acquire);  // pairs with refuse()
                            return refused || ready.load(std::memory_order_acquire) >= k;  // pairs with next()
                        },
                        c_.timeout_ns)) {
                    ++r.timeouts;
                    break;
                }
                if (refused) break;
                std::this_thread::sleep_for(c_.gap);  // let the owner reach its wait
                waker.prepare(t);
                const std::uint64_t armed = arrived.arm();
                const std::uint64_t t0 = bench_clock::now();
                if (!waker.fire(t)) {
                    ++r.failed;
                    break;
                }
                const std::uint64_t t1 = bench_clock::now_end();
                ++r.fired;
                std::uint64_t t2 = 0;
                if (!arrived.wait(armed, t2, c_.timeout_ns)) {
                    ++r.timeouts;
                    break;
                }
                if (!waker.woke(t)) {
                    ++r.not_woken;
                    continue;
                }
                if (k > warm) {
                    r.handed->record(clock().delta_ns(t0, t2));
                    r.fire->record(clock().delta_ns(t0, t1));
                }
            }
            r.arrivals = arrived.count() - arrivals0;
            stop.store(true, std::memory_order_release);  // release: pairs with next()'s acquire
            (void)rtdefer::unpark(t);  // `target` keeps the ctx alive even if the owner has exited
        });
        owner_thread.join();
        r.late_arrivals = arrived.count() - arrivals0 - r.arrivals;
        return r;
    }

private:
    handoff_config c_;
};

/// add -> run of one task_work item (task_work_add with notify::resume) to `owner`, which waits on
/// its park word (task_work_owner, a uring_loop): the rig with an arrival_item and task_work_waker.
template <class Owner>
handoff_result measure_task_work_handoff(const handoff_config& c, Owner&& owner) {
    handoff_rig rig(c);
    arrival_item item(rig.arrived);
    return rig.run(std::forward<Owner>(owner), task_work_waker(item));
}

}  // namespace rtdefer_bench
