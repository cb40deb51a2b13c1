// rtdefer/task_work.hpp: per-thread deferred callbacks run at the owner's safe point, the userspace
// twin of the kernel's task_work (kernel/task_work.c, include/linux/task_work.h).
//
// Any thread, or a signal handler, hands a callback_head to a target thread with task_work_add();
// the target runs it when it next calls task_work_run(self) at a point where it holds no locks (the
// top of its loop: our "return to user space"), or when it exits. This is how the posix CPU timer
// patch ("posix-cpu-timers: Provide mechanisms to defer timer handling to task_work") splits timer expiry into a quick check in interrupt context and the
// real work in thread context.
//
//   kernel                              rtdefer
//   task->task_works                    thread_ctx::task_work.works (LIFO stack, one CAS per add)
//   work_exited                         detail::task_work_exited() sentinel, installed at exit
//   TASK_WORK_DEQUEUED                  detail::task_work_dequeued(): item->next when not queued
//   TWA_NONE / TWA_RESUME / TWA_SIGNAL  notify::none / resume (unpark) / signal (unpark + IPI)
//   TIF_NOTIFY_RESUME                   task_work.resume_pending (one unpark until the owner runs)
//   TIF_NOTIFY_SIGNAL                   task_work.signal_pending (one IPI until the owner runs)
//   task->pi_lock in cancel/run         cancel_lock (PI mutex, cancellers only) + cancel_seq
//                                       handshake: the owner never takes the lock in task_work_run
//
// Concurrency table. A row's operation may run concurrently with a column's operation on the same
// thread_ctx: "-" needs nothing, "O" only the owner thread may call it, "x" must not overlap.
//
//                 | add | run | cancel | exit | pending
//   add           |  -  |  -  |   -    |  -   |   -        (async-signal-safe, lock-free)
//   run           |     |  O  |   -    |  x   |   -        (owner only; not nested)
//   cancel        |     |     |   -    |  -   |   -        (serialised by cancel_lock; blocking)
//   exit          |     |     |        |  O   |   -        (the exit hook, on the owner)
//
// Item states, in callback_head::next (the kernel's TASK_WORK_DEQUEUED scheme, made atomic so that
// concurrent adds of one item cannot corrupt the list):
//
//   next                 meaning                                moved by
//   DEQUEUED             idle: the caller owns the item         add: DEQUEUED→link (CAS (A1) claims it)
//   link (ptr/nullptr)   queued on exactly one thread's list    run: →DEQUEUED before the call (R6)
//                                                               cancel: →DEQUEUED after unlink (C6)
//                                                               add on `exited`: →DEQUEUED (A4)
//
// An item is released (R6) before its callback runs, as in the kernel: the callback may re-queue or
// free it. inline_task_work adds a run count around its callable and a done() query (its table is at
// the class).
//
// Run vs cancel, the kernel's argument and ours. A canceller walks the shared list and unlinks with
// cmpxchg(pprev, work, work->next). The runner detaches the whole list with one exchange; the
// canceller can then no longer remove the first entry (its cmpxchg on the head fails), but it may
// still be reading, or unlinking from, the detached chain. The kernel's runner therefore does
// lock/unlock of pi_lock after the exchange: once it has the lock no canceller that could have seen
// the chain is still inside, and only then may callbacks run (and free items). In userspace that
// would block a SCHED_FIFO owner on a mutex held by a lower-priority canceller (PI would bound it,
// but task_work_run would still sleep). Instead:
//
//   canceller:  lock(cancel_lock); cancel_seq += 1 (odd) (C1); walk from works (C2..C3);
//               cancel_seq += 1 (even) (C4); if (deferred) unpark(owner) (C5); unlock
//   runner:     w = exchange(works, nullptr) (R2); s = cancel_seq (R3);
//               s even → no canceller can be looking at w: run it;
//               s odd  → park w in `deferred` (R4), do not touch it, and return without blocking;
//                        it runs on a later pass once cancel_seq != s (R7), i.e. that canceller left.
//
// (R2)→(R3) and (C1)→(C2) are the store→load (Dekker) pair, all seq_cst: either the runner sees the
// canceller's odd count, or the canceller's first load of works comes after the exchange and cannot
// reach w. A canceller that was inside and has left is seen through its (C4), which releases all its
// reads and unlinks to the runner's acquire. So callbacks never run (and never free an item) while a
// canceller may hold a pointer into their chain, and the owner never waits: a slow canceller delays
// only the work it might be looking at. A waiting owner (wait_for_work_until, thread exit) takes the PI
// lock to boost such a canceller; task_work_run never does. Items in `deferred` have left the shared
// list: like the kernel's detached chain they are committed to run and cancel no longer finds them.
// The same rule rules out ABA on the canceller's head CAS: an item it may be looking at cannot run,
// so it cannot be dequeued and re-added in between. tests/model/task_work_ok.pml checks run vs
// cancel vs exit with spin; task_work_flawed.pml (no handshake) is refuted (use after free).
//
// Ordering: the stack is LIFO; each chain is reversed before it runs, so items run in the order
// their adds linearised (hence FIFO per producer, and across producers in CAS order). A deferred
// chain is older than anything still on the list, so it runs first and new adds wait behind it.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cancel_hold.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/task_work_state.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include <pthread.h>

namespace rtdefer {

/// A task_work callback. It receives its own item; the item is already marked dequeued, so the
/// callback may re-queue it or free it (and must not touch it after freeing). Callbacks run on the
/// owner thread inside task_work_run (a nonblocking hot path) or its exit: on a real-time owner they
/// must be real-time safe themselves. -Wfunction-effects cannot see through the pointer;
/// RealtimeSanitizer still checks each callback at run time.
struct callback_head;
using task_work_func_t = void (*)(callback_head*) noexcept;

namespace detail {
/// TASK_WORK_DEQUEUED: the value of `next` while the item is not queued. Never dereferenced.
inline callback_head* task_work_dequeued() noexcept RTDEFER_NONBLOCKING {
    return reinterpret_cast<callback_head*>(~std::uintptr_t{0});
}
} // namespace detail

/// The intrusive work item (the kernel's struct callback_head). Caller-owned memory; while it is
/// queued the library owns its `next` and the caller must neither free it nor re-initialise it.
struct callback_head {
    callback_head() noexcept = default;
    explicit callback_head(task_work_func_t fn) noexcept : func(fn) {}
    callback_head(const callback_head&) = delete;
    callback_head& operator=(const callback_head&) = delete;

    /// Link while queued; detail::task_work_dequeued() while idle (see the state table above).
    std::atomic<callback_head*> next{detail::task_work_dequeued()};
    task_work_func_t func = nullptr;
};

namespace detail {

inline std::size_t task_work_run_chain(callback_head* lifo) noexcept;

/// The non-template part of inline_task_work: its run counter and the one trampoline all
/// instantiations share, so that the runner recognises an inline item by its func and counts it
/// as running before it releases the item at (R6). See inline_task_work for the states.
class inline_task_work_base : public callback_head {
protected:
    inline_task_work_base() noexcept = default;
    ~inline_task_work_base() = default;

    /// Runs of this item that have been released at (R6) and whose callable has not returned.
    std::atomic<std::uint32_t> running_{0};
    /// Calls the stored callable (set by inline_task_work::emplace with the callable's type).
    void (*invoke_)(inline_task_work_base*) noexcept = nullptr;

    static void trampoline(callback_head* h) noexcept {
        auto* self = static_cast<inline_task_work_base*>(h);
        self->invoke_(self);
        // (IW2) release: the callable's effects and every read of the item by this run (func,
        // invoke_, the storage) happen-before a done() that reads 0 at (ITW1). The run's last access
        // to the item: once the count is 0 its owner may re-emplace or free it.
        self->running_.fetch_sub(1, std::memory_order_release);
    }

    friend std::size_t task_work_run_chain(callback_head* lifo) noexcept;
};

} // namespace detail

/// How task_work_add tells the owner (TWA_NONE, TWA_RESUME, TWA_SIGNAL).
enum class notify : std::uint8_t {
    none,   ///< queue only: it runs at the owner's next safe point, whenever that is
    resume, ///< also wake the owner if it is parked at its safe point (syscall only then)
    signal, ///< also raise the interrupt signal, so a blocking syscall in the owner returns EINTR
};

namespace detail {

/// work_exited: the sentinel that closes a thread's list at exit. Only its address is used.
inline callback_head task_work_exited_storage;
inline callback_head* task_work_exited() noexcept RTDEFER_NONBLOCKING { return &task_work_exited_storage; }

} // namespace detail
} // namespace rtdefer

// The list transitions behind the contract (templates over the head's atomic type).
#define RTDEFER_TASK_WORK_CONTRACT 1
#include <rtdefer/detail/task_work_transitions.hpp>

namespace rtdefer {
namespace detail {

/// Returns: whether the owner's deferred chain is still held back by the canceller that was
/// inside when it was detached (see "Run vs cancel" above).
inline bool task_work_deferred_blocked(const task_work_state& s) noexcept RTDEFER_NONBLOCKING {
    // acquire: pairs with the release part of (R4); deferred_seq is written before it.
    if (s.deferred.load(std::memory_order_acquire) == nullptr)
        return false;
    // relaxed: deferred_seq is published by (R4), whose acquire load is just above.
    const std::uint32_t blocked_by = s.deferred_seq.load(std::memory_order_relaxed);
    // (R7) seq_cst (acquire would do for the owner's walk; seq_cst also orders it after (R4) for
    // the owner's park-or-not decision, Dekker with (C4)→(C5)). Pairs with (C4).
    return s.cancel_seq.load(std::memory_order_seq_cst) == blocked_by;
}

/// Reverses a detached LIFO chain in place (it is private to the runner now) and runs it oldest
/// first. Returns: the number of callbacks run.
inline std::size_t task_work_run_chain(callback_head* lifo) noexcept {
    callback_head* fifo = nullptr;
    while (lifo != nullptr) {
        // relaxed (this loop and the next): the chain is private to the runner; its contents were
        // acquired by (R2)/(X1) and, after a canceller, by (R3)/(R7).
        callback_head* next = lifo->next.load(std::memory_order_relaxed);
        lifo->next.store(fifo, std::memory_order_relaxed);
        fifo = lifo;
        lifo = next;
    }
    std::size_t n = 0;
    while (fifo != nullptr) {
        callback_head* next = fifo->next.load(std::memory_order_relaxed);
        // Read func before releasing the item: once it reads DEQUEUED its owner may reuse or free it.
        const task_work_func_t fn = fifo->func;
        // (IW1) an inline item counts as running before it reads DEQUEUED. relaxed: the release of
        // (R6) orders it before that store, so a done() whose acquire load of `next` sees (R6)
        // also sees the count raised; the decrement (IW2) comes after it (same item, RMWs).
        if (fn == &detail::inline_task_work_base::trampoline)
            static_cast<detail::inline_task_work_base*>(fifo)->running_.fetch_add(1, std::memory_order_relaxed);
        // (R6) release: pairs with acquire (A1) of the next add of this item, so a re-add (and a
        // re-init of func) happens after our reads of it; and with inline_task_work::done().
        fifo->next.store(task_work_dequeued(), std::memory_order_release);
        fn(fifo); // may re-queue or free *fifo: not touched again
        fifo = next;
        ++n;
    }
    return n;
}

/// PI lock helpers (setup/blocking paths only).
/// Failures follow detail::pi_mutex's policy (asserted).
inline void task_work_lock(task_work_state& s) noexcept RTDEFER_BLOCKING { s.cancel_lock.lock(); }
inline void task_work_unlock(task_work_state& s) noexcept RTDEFER_BLOCKING { s.cancel_lock.unlock(); }

/// The owner found a canceller inside after detaching `w` (cold: cancels are rare).
/// Returns: true if `w` was parked in `deferred`; false if the canceller left meanwhile and `w`
/// may run now.
[[gnu::cold, gnu::noinline]] inline bool task_work_defer(task_work_state& s, callback_head* w,
                                                         std::uint32_t seq) noexcept RTDEFER_NONBLOCKING {
    // relaxed: published by the seq_cst (release) store (R4) below.
    s.deferred_seq.store(seq, std::memory_order_relaxed);
    // (R4) seq_cst: store→load with (R5): either we see the canceller's (C4), or its (C5) sees this
    // store and unparks us. Release part: pairs with the acquire in task_work_deferred_blocked().
    s.deferred.store(w, std::memory_order_seq_cst);
    // (R5) seq_cst: see (R4). If the canceller already left, run now instead of waiting for a wake.
    if (s.cancel_seq.load(std::memory_order_seq_cst) != seq) {
        // relaxed: owner-only word; readers tolerate a stale non-null (they re-check cancel_seq).
        s.deferred.store(nullptr, std::memory_order_relaxed);
        return false;
    }
    return true;
}

} // namespace detail

/// Effects: sets `cb`'s callback to `fn` and marks it dequeued (init_task_work).
/// Precondition: `cb` is not queued (asserted). Progress: wait-free. Real-time safety: yes.
inline void init_task_work(callback_head& cb, task_work_func_t fn) noexcept RTDEFER_NONBLOCKING {
    // relaxed: a check for misuse; a racing add of an item being initialised is itself misuse.
    RTDEFER_ASSERT(cb.next.load(std::memory_order_relaxed) == detail::task_work_dequeued(),
                   "init_task_work on a queued item");
    cb.func = fn;
}

/// Returns: whether `cb` is queued (task_work_queued). Inherently racy if another thread may
/// queue it or the owner may run it concurrently. Not queued is not finished: the runner releases
/// an item before its callback runs (so that the callback may re-queue or free it); whether an
/// inline_task_work and its callable are done is inline_task_work::done().
/// Progress: wait-free. Real-time safety: yes.
[[nodiscard]] inline bool task_work_queued(const callback_head& cb) noexcept RTDEFER_NONBLOCKING {
    // acquire: pairs with (R6)/(C6)/(A4): seeing "not queued" means the list no longer holds it (a
    // run may still be in its callback: inline_task_work::done() covers that).
    return cb.next.load(std::memory_order_acquire) != detail::task_work_dequeued();
}

/// Effects: queues `w` on `target`'s list, to run in target's task_work_run() or at its exit, and
/// notifies the owner per `n` (see notify). `w->func` must be set.
/// Returns: ok; already_queued if `w` is queued (on any thread; nothing changes, the earlier add
/// will run it); exited once target's exit drained its list (the item is untouched and still
/// the caller's); not_installed for notify::signal without interrupt_install() (not queued).
/// Progress: lock-free: one CAS on the item (its own line, uncontended unless the same item is
/// added concurrently) and one CAS on the list head, which fails only when another add/run/cancel
/// succeeded. Real-time safety: no allocation, no lock; a syscall only for a parked owner
/// (resume: futex wake, at most once per run pass) or an interrupt (signal: tgkill, once per run
/// pass); async-signal-safe.
/// Cancellation: not held off (a hold would cost the hot path two more CASes). A caller cancelled
/// asynchronously between its claim of `w` and the push leaves `w` claimed: it never runs and every
/// later add of it returns already_queued. A thread with PTHREAD_CANCEL_ASYNCHRONOUS on adds with
/// cancellation disabled around the call (docs/host_threads.md, "Asynchronous cancellation").
/// The caller must hold a reference to `target` (the ctx must outlive the call).
[[nodiscard]] inline status task_work_add(thread_ctx& target, callback_head& w, notify n = notify::resume) noexcept RTDEFER_NONBLOCKING {
    auto& s = detail::ctx_access::task_work(target);
    if (n == notify::signal && RTDEFER_UNLIKELY(interrupt_signal() == 0))
        return status::not_installed;
    if (const status st = detail::task_work_push(s.works, w); st != status::ok)
        return st;
    if (n != notify::none) {
        // (A3) acq_rel: pairs with the owner's (R1). The first add after a run pass started sees
        // false and wakes the owner; later ones ride on that wake. If we see true, the owner's (R1)
        // has not consumed the flag yet; when it does, it acquires our (A2) and then detaches w.
        // Unlike "wake only on empty→non-empty", a resume add after a notify::none add still wakes.
        if (!s.resume_pending.exchange(true, std::memory_order_acq_rel))
            (void)unpark(target);
        // (A3) likewise for the interrupt: one IPI per run pass.
        if (n == notify::signal && !s.signal_pending.exchange(true, std::memory_order_acq_rel))
            (void)send_ipi(target, interrupt_source::task_work); // exited: the exit hook drains w
    }
    return status::ok;
}

/// Effects: runs every item queued on the calling thread's list, oldest first, each exactly once;
/// items queued by those callbacks run in the same call (keep re-queueing bounded). Each item is
/// marked dequeued before its callback runs. If a canceller is walking the list, the chain it
/// might see is held back (not run, not blocked on) and runs on a later call.
/// Returns: the number of callbacks run.
/// Precondition: `self` is the caller's own ctx; not called from a task_work callback.
/// Progress: wait-free apart from the callbacks (one exchange per chain, no CAS loop, no waiting).
/// Real-time safety: no allocation, no lock, no syscall in the library; the callbacks' own cost.
/// Cancellation: a request (even asynchronous) is held off from the first detach to the end of
/// the pass and acted on in the restore, with nothing in hand; the exit hook runs what is left.
inline std::size_t task_work_run(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    auto& s = detail::ctx_access::task_work(self);
    // relaxed: an emptiness hint. An add we miss comes with its own notification (token or signal),
    // so the owner is back at a safe point; the items themselves are taken by the exchange (R2).
    // A set notify flag takes the slow path even on an empty list: it must be consumed, or later
    // adds would ride on a wake that was already used.
    if (s.works.load(std::memory_order_relaxed) == nullptr &&
        s.deferred.load(std::memory_order_relaxed) == nullptr &&
        !s.resume_pending.load(std::memory_order_relaxed) && !s.signal_pending.load(std::memory_order_relaxed))
        return 0;
    RTDEFER_ASSERT(self.is_current(), "task_work_run() called on another thread's ctx");
    RTDEFER_ASSERT(!s.running, "task_work_run() called from a task_work callback");
    s.running = true;
    // (R1) acq_rel: consume the notify flags before detaching, so an add that comes after our
    // exchange (R2) sees false and notifies again. Pairs with (A3). relaxed pre-loads (and the
    // relaxed hints above): a flag we miss was set by an add whose wake is not lost: either its
    // unpark left a new token (or IPI), which brings the owner back here, or it found a token not
    // yet consumed, and the consumption (park's fence (PK6), paired with unpark's (PK5)) orders the
    // owner's next pass after the flag and the item.
    if (s.resume_pending.load(std::memory_order_relaxed))
        (void)s.resume_pending.exchange(false, std::memory_order_acq_rel);
    if (s.signal_pending.load(std::memory_order_relaxed))
        (void)s.signal_pending.exchange(false, std::memory_order_acq_rel);
    // Cancellation is held off from the first detach until the pass is over and `running` is
    // false (see detail/cancel_hold.hpp): a host's asynchronous cancel (jack2) must neither lose a
    // detached chain nor unwind through a callback. The restore, in the destructor after the
    // return value is computed, is where a pending request is acted on.
    detail::cancel_hold hold;
    std::size_t n = 0;
    for (;;) {
        // relaxed: `deferred` is written only by this thread.
        if (callback_head* d = s.deferred.load(std::memory_order_relaxed); RTDEFER_UNLIKELY(d != nullptr)) {
            if (detail::task_work_deferred_blocked(s))
                break; // newer items wait behind it (FIFO); the canceller's (C5) wakes us
            hold.engage(); // until here the chain is in `deferred`, where the exit hook finds it
            // relaxed: owner-only word; readers re-check cancel_seq.
            s.deferred.store(nullptr, std::memory_order_relaxed);
            RTDEFER_EFFECTS_TRUST_BEGIN // callbacks: see task_work_func_t
            n += detail::task_work_run_chain(d);
            RTDEFER_EFFECTS_TRUST_END
            continue;
        }
        // relaxed: hint only, as above.
        callback_head* w = s.works.load(std::memory_order_relaxed);
        if (w == nullptr || w == detail::task_work_exited())
            break;
        hold.engage();
        // The detach (R2): a seq_cst exchange, ordered before (R3).
        w = detail::task_work_detach(s.works);
        if (w == nullptr)
            break; // a canceller took the last item between our load and the exchange
        // (R3) seq_cst: pairs with (C1) (Dekker) and, when even, acquires the last canceller's (C4).
        const std::uint32_t seq = s.cancel_seq.load(std::memory_order_seq_cst);
        if (RTDEFER_UNLIKELY((seq & 1U) != 0) && detail::task_work_defer(s, w, seq))
            break;
        RTDEFER_EFFECTS_TRUST_BEGIN // callbacks: see task_work_func_t
        n += detail::task_work_run_chain(w);
        RTDEFER_EFFECTS_TRUST_END
    }
    s.running = false;
    return n;
}

/// Returns: whether `ctx` has work that task_work_run could run now (task_work_pending). False
/// after exit, and while the only work is held back by an active canceller (the canceller wakes the
/// owner when it leaves). Racy by nature when read by another thread.
/// Progress: wait-free. Real-time safety: yes; async-signal-safe.
[[nodiscard]] inline bool task_work_pending(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
    const auto& s = detail::ctx_access::task_work(ctx);
    // acquire (both): a true answer lets the owner rely on seeing the items (and pairs with (A2)/(R4)).
    if (s.deferred.load(std::memory_order_acquire) != nullptr)
        return !detail::task_work_deferred_blocked(s);
    callback_head* w = s.works.load(std::memory_order_acquire);
    return w != nullptr && w != detail::task_work_exited();
}

/// Effects: removes the most recently queued item of `target` for which `match(callback_head&)`
/// is true, so it never runs (task_work_cancel_match). The removed item is marked dequeued and
/// belongs to the caller again. Items the owner has already detached (running, or held back behind
/// this very canceller) are committed to run and are not found.
/// Returns: the removed item, or nullptr.
/// Progress: blocking (the PI cancel lock, held for one walk of the list; never held while a
/// callback runs); the walk is bounded by the list length plus concurrent adds.
/// Real-time safety: takes a PI mutex; no allocation. Not async-signal-safe: never call it from a
/// signal handler (asserted). `match` runs under the lock and must not call task_work functions.
/// Cancellation: a request (even asynchronous) is held off from before the lock to after the
/// unlock and acted on in the restore at the return, with the list consistent and the lock free
/// (a cancel inside would leave the lock held and cancel_seq odd, stalling the owner for good, or an
/// unlinked item not yet marked dequeued); the removed item is then the caller's, idle.
template <class Match>
[[nodiscard]] callback_head* task_work_cancel_match(thread_ctx& target, Match&& match) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(!in_interrupt(), "task_work_cancel from a signal handler");
    auto& s = detail::ctx_access::task_work(target);
    {
        // acquire: a hint (kernel: likely(!task_work_pending())); the walk below re-reads.
        callback_head* w = s.works.load(std::memory_order_acquire);
        if (w == nullptr || w == detail::task_work_exited())
            return nullptr;
    }
    detail::cancel_hold hold; // see "Cancellation" above and detail/cancel_hold.hpp
    hold.engage();
    detail::task_work_lock(s);
    // (C1) seq_cst: odd = a canceller is inside. Store→load before (C2): Dekker with (R2)→(R3).
    s.cancel_seq.fetch_add(1, std::memory_order_seq_cst);
    callback_head* work = detail::task_work_unlink_match(s.works, match); // (C2)..(C3), (C6)
    // (C4) seq_cst: even = we left. Release part: our reads and unlinks happen-before the runner's
    // (R3)/(R7) that observe this count, before any chain we might have seen runs.
    s.cancel_seq.fetch_add(1, std::memory_order_seq_cst);
    // (C5) seq_cst: Dekker with (R4)→(R5): if the owner held a chain back because of us, wake it.
    if (s.deferred.load(std::memory_order_seq_cst) != nullptr)
        (void)unpark(target);
    detail::task_work_unlock(s);
    return work;
}

/// Effects: as task_work_cancel_match, matching items whose func is `fn` (the kernel's
/// task_work_cancel_func). Returns: the removed item or nullptr. Progress, safety: as above.
[[nodiscard]] inline callback_head* task_work_cancel_func(thread_ctx& target, task_work_func_t fn) noexcept RTDEFER_BLOCKING {
    return task_work_cancel_match(target, [fn](const callback_head& cb) noexcept { return cb.func == fn; });
}

/// Effects: removes `w` from `target`'s list if it is queued there (task_work_cancel).
/// Returns: true if removed (it will not run; the caller owns it again); false if it was not
/// queued on `target`, or is already running or committed to run. Progress, safety: as above.
inline bool task_work_cancel(thread_ctx& target, callback_head& w) noexcept RTDEFER_BLOCKING {
    return task_work_cancel_match(target, [&w](const callback_head& cb) noexcept { return &cb == &w; }) != nullptr;
}

/// Effects: the owner's safe-point wait. Runs pending work; if none ran, parks until an add with
/// notify::resume/signal, a signal, or `deadline`, then runs work again. If a canceller holds work
/// back, blocks on the PI cancel lock (boosting it) instead of parking. No lost wake-ups: an add
/// after the last run either leaves the park token (park returns at once) or sees the owner parked
/// and wakes it.
/// Returns: ok if work ran or the owner was unparked (also by a wake whose work had already run:
/// callers loop, re-checking their own conditions); timed_out at `deadline` without work;
/// interrupted if a signal interrupted the park and no work was pending.
/// Precondition: `self` is the caller's own ctx. Progress: blocking (until work or the deadline).
/// Real-time safety: blocks by design (futex park, PI lock); no allocation.
[[nodiscard]] inline status wait_for_work_until(thread_ctx& self,
                                          std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(self.is_current(), "wait_for_work_until() called on another thread's ctx");
    auto& s = detail::ctx_access::task_work(self);
    for (;;) {
        if (task_work_run(self) != 0)
            return status::ok;
        if (detail::task_work_deferred_blocked(s)) {
            // The canceller that holds our chain back is inside cancel_lock: wait for it there, with
            // priority inheritance, rather than parking behind it at its own priority. Cancellation
            // is held off while we own the lock: the exit hook takes it again.
            detail::cancel_hold hold;
            hold.engage();
            detail::task_work_lock(s);
            detail::task_work_unlock(s);
            continue;
        }
        // "Check pending after arming": the park token is the armed state. An add after the run
        // above either is seen here or leaves a token / sees PARKED, and park returns.
        if (task_work_pending(self))
            continue;
        const status st = park_until(self, deadline);
        if (task_work_run(self) != 0)
            return status::ok;
        // ok without work: an unpark() (the caller may have other conditions to check), a token
        // left by an add whose item already ran, or a cancelled item: the caller's loop decides.
        return st;
    }
}

namespace detail {

/// exit_task_work(): runs on the exiting owner before it is marked exited. Drains the list, then
/// installs the exited sentinel, but only when the list is empty: a callback that adds more work
/// makes the loop go round again (kernel: "work->func() can do task_work_add(), do not set
/// work_exited unless the list is empty"). The detach happens under cancel_lock, so no canceller is
/// inside and nothing needs deferring; callbacks run after the unlock (they may cancel).
/// Cancellation: during a cancelled thread's teardown (the pthread key destructor) glibc has marked
/// the thread exiting and acts on no further request; an explicit detach_this_thread() holds it off
/// here until the list is closed and drained, so no chain is lost and the lock is not left held.
inline void task_work_exit(thread_ctx& self) noexcept {
    auto& s = detail::ctx_access::task_work(self);
    cancel_hold hold;
    hold.engage();
    for (;;) {
        task_work_lock(s);
        // relaxed: owner-only word; any canceller that made us defer it has released the lock we
        // now hold, so its accesses happen-before ours.
        callback_head* d = s.deferred.exchange(nullptr, std::memory_order_relaxed);
        // The close (X1): the sentinel goes in only on an empty list with nothing held back.
        callback_head* w = task_work_close(s.works, d != nullptr);
        task_work_unlock(s);
        if (d == nullptr && w == nullptr)
            return; // sentinel installed: later adds return status::exited
        s.running = true;
        task_work_run_chain(d);
        task_work_run_chain(w);
        s.running = false;
    }
}

} // namespace detail

/// Registers the exit hook, early (exit_order), as exit_task_work() is in do_exit(); hooks with a
/// higher order that queue task_work on the exiting thread get status::exited.
inline const bool task_work_exit_registered = detail::register_exit_hook(&detail::task_work_exit, detail::exit_order::task_work);

} // namespace rtdefer

// inline_task_work: a callback_head with its callable stored inline, and done().
#include <rtdefer/inline_task_work.hpp>
