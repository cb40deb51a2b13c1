// rtdefer/deferred_word.hpp: defer small housekeeping jobs to an isolated thread's next exit from
// isolation instead of interrupting it — the userspace analogue of "context-tracking: Introduce
// work deferral infrastructure" (Valentin Schneider, Nicolas Saenz Julienne, Peter Zijlstra; RFC
// PATCH 11/14) and its later versions ("context_tracking,x86: Defer some IPIs until a
// user->kernel transition").
//
//   kernel                               rtdefer
//   CPU in user space (NOHZ_FULL)        thread inside an isolated section (busy-polling loop)
//   ct_kernel_enter_state()              ct_isolation_exit(): one fully ordered RMW, runs the work read
//   ct_kernel_exit_state() / work clear  ct_isolation_enter(): the word goes DISABLED -> 0 (accept)
//   ct_set_cpu_work(cpu, work)           ct_set_work(target, work): ok / not_accepting
//   on_each_cpu_cond(!ct_set_cpu_work)   ct_set_work_or_ipi(target, work): defer, else interrupt
//   arch_context_tracking_work(BIT(n))   the callback bound to work bit n (ct_register_work)
//
// Callbacks: async-signal-safe, nonblocking, idempotent and coalescable: setting a bit twice
// before it runs runs it once, after both requests. They run on the target thread: at its exit from
// isolation, in its interrupt handler, or at once when a thread requests work for itself.
// Callbacks never nest on one thread: an interrupt arriving during a run leaves its work to that run.
//
// Word layout (detail/deferred_word_state.hpp), one 32-bit atomic per thread:
//   [31 DISABLED][30 EXITED][29 INFLIGHT][23..12 IPI work][11..0 deferred work]
// Why one word with the state in it (the series' later "state-in-word" layout, not the RFC's
// separate work word + state): every decision a sender makes (defer, or interrupt) and every
// decision the owner makes (enter, exit) is a single CAS/RMW on the whole word, so it is judged
// against everything at once. The RFC's cover letter shows what a split costs: PeterZ's variant
// set the work bits in one word and the state flag in another; when the cmpxchg on the state
// failed the sender interrupted the CPU, yet the bit stayed set and ran a second time at the next
// flush (tests/model/deferred_word_flawed.pml lets spin find exactly that). The same review asked
// that success be judged by the whole word (the cmpxchg's result, not "is my bit set now?":
// another sender's bit, or ours from a CAS that then lost, says nothing about this request) and
// that the flush be fully ordered: both hold here. Unlike the kernel, DISABLED needs no separate
// RCU counter beside it, so the "state" is one bit; the interrupt's bits and its in-flight flag
// share the word for the same reason (see INFLIGHT below).
//
// State table (S = deferred work bits, I = IPI work bits):
//
//   word                      meaning                                      moved by
//   0 | S                     isolated, S deferred to the next exit        sender CAS: S -> S|b
//   DISABLED                  not isolated, nothing pending                exit: exchange(any isolated -> DISABLED)
//   DISABLED|INFLIGHT|I       not isolated; I requested by interrupt,      sender CAS: sets I (and INFLIGHT
//                             the signal is on its way                       if clear: that sender signals)
//   DISABLED|I                the handler came while the owner was         handler: clears INFLIGHT only;
//                             running work: I is left to that run's drain    drain: takes I
//   DISABLED|INFLIGHT         signal still on its way, I already drained   handler: clears INFLIGHT
//                             (by a drain, or by a foreign interrupt)      (foreign: takes I, keeps INFLIGHT)
//   DISABLED|EXITED           the thread has exited                        exit hook: exchange
//
//   enter:  DISABLED -> 0 only (a CAS from exactly DISABLED). With INFLIGHT set it refuses (busy):
//           that signal would otherwise land inside the section. (The kernel accepts that race —
//           "that stays racy by nature" in the v2 review; our contract is zero interrupts while
//           isolated, so the section waits for the signal instead.) I is drained and run first,
//           with or without INFLIGHT: requests never wait on a signal that is blocked or late.
//   exit:   exchange(DISABLED), seq_cst: reads S and shuts the door in one fully ordered RMW, then
//           runs S. While isolated the word holds nothing but S (no sender sets I without DISABLED),
//           so this equals the kernel's fetch_or(DISABLED) followed by its clear at the next
//           enter, with the clear folded in.
//
// Exactly once. Every accepted request is one successful CAS that ORs its bits into S (only while
// !DISABLED) or into I (only while DISABLED), or, for a thread's request to itself, a direct run.
//   - S is emptied only by exit's exchange (or the exit hook's) which takes all of S atomically
//     and runs what it took, once. No bit can enter S between that exchange and the next enter,
//     because setting S requires !DISABLED in the same CAS. A request whose bits were set while
//     isolated is therefore captured by the very next exit and runs inside it, before the thread
//     can re-enter; a re-entered section starts from 0.
//   - I is emptied only by fetch_and in the handler or a local drain (or the exit hook's
//     exchange); each RMW takes a disjoint set of bit occurrences and runs them once.
//   - Coalescing: a request whose bit is already pending is covered by the one take that follows
//     its CAS in the word's modification order, which runs after it (and sees its data, (DW1)).
//   - Never lost: S is taken at the next exit (or at thread exit); I with INFLIGHT has a signal
//     coming whose handler takes it or leaves it to a drain that loops until I is empty (and every
//     enter drains I too); I without INFLIGHT exists only inside a run (drained before it returns)
//     or after a failed send (drained at the next enter or by the next interrupt, of any source).
//   - Zero interrupts while isolated: INFLIGHT is set by the one sender that moves it from clear
//     to set (the "raise only on empty -> non-empty" rule: coalesced senders do not signal) and is
//     cleared only by the handler run for THAT signal (or withdrawn by its sender after a failed
//     send); enter needs it clear. So a signal sent by deferred_word is handled before the next
//     section begins. The handler knows the signal is ours by its tag: the sender queues it with
//     send_ipi(target, interrupt_source::deferred_word) (rt_tgsigqueueinfo, the tag in si_value),
//     and the hook clears INFLIGHT only for that source. Other interrupts of the same signal (task_work
//     notify::signal, hard irq_work, a plain tgkill, a timer) run the hook too: they may take and
//     run I (opportunistic, exactly once like any take) but leave INFLIGHT alone, so a sender between
//     its CAS and its send still holds the door shut. Foreign interrupts may of course arrive inside
//     a section; the guarantee is about the deferred word's own. Before tags the hook treated every
//     interrupt as its own and a foreign one cleared INFLIGHT early:
//     tests/model/deferred_word_foreign_flawed.pml is spin's trace of that; with tags,
//     tests/model/deferred_word_foreign_ok.pml verifies the guarantee under foreign interrupts.
//     Remaining limit: another sender that queues our tag (interrupt_tag(deferred_word)) with the
//     same signal would be taken for ours; the source is reserved for the library.
// tests/model/deferred_word_ok.pml checks all of this with spin (no request lost, none run twice,
// no run without a request, no nesting, no deferred_word interrupt inside a section).
//
// Concurrency table:
//   ct_set_work / ct_set_work_or_ipi    any thread, concurrently with everything (async-signal-safe)
//   ct_isolation_enter / _exit          the owner thread only (asserted), never from a callback
//                                       (asserted) nor from a signal handler (it could interrupt the
//                                       thread's own enter/exit, the only writer of DISABLED)
//   interrupt hook                      the owner thread, in signal context
//   ct_register_work / ct_work_setup    setup: before requests for that bit are made
//
// The word's CAS loops (the senders', enter's) and exit's RMWs are templates over the atomic type in
// detail/deferred_word_transitions.hpp, so tests can change the word between a load and its CAS.
//
// Memory orders (numbers used at each operation, here and in the transitions header):
//   (DW1) sender CAS, release       pairs with (DW3)/(DW5)/(DW6)/(DW7): the callback sees what the
//                                  sender wrote before requesting
//   (DW2) sender CAS failure/loads, relaxed: the value only seeds the next CAS; decisions are made by
//                                  a CAS on the whole word
//   (DW3) exit exchange, seq_cst    (or, with nothing deferred, a CAS 0 -> DISABLED: the same RMW)
//                                  the fully ordered flush the issue and the kernel's review ask
//                                  for. The protocol relies only on its acquire half (pairs with
//                                  (DW1)): every hand-off is a release CAS read by an acquiring RMW on
//                                  the one word. Its store->load half orders the DISABLED store only
//                                  before later seq_cst operations; plain or relaxed accesses after
//                                  the exit are ordered by the acquire alone (arm64 may perform a
//                                  later plain load before the store is visible). On x86 the
//                                  exchange costs the same either way (xchg is a full barrier)
//   (DW4) enter CAS, relaxed        only atomicity matters: the section's start publishes nothing
//   (DW5) handler fetch_and, acquire pairs with (DW1)
//   (DW6) drain fetch_and, acquire  pairs with (DW1)
//   (DW7) exit-hook exchange, acquire  pairs with (DW1); nothing to publish (a sender that reads
//                                  EXITED just fails)
//   (DW8) table store release / load acquire: a bound callback is seen fully by a runner
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/setup_lock.hpp>
#include <rtdefer/detail/cancel_hold.hpp>
#include <rtdefer/detail/deferred_word_state.hpp>
#include <rtdefer/detail/deferred_word_transitions.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>

namespace rtdefer {

/// Number of work bits (callbacks) a program can bind: bits 0..ct_work_max-1.
inline constexpr unsigned ct_work_max = detail::ct_work_bits;

/// A work callback: runs on the target thread with `work` = the single bit (1u << n) it is bound to
/// (as arch_context_tracking_work(BIT(n))). Must be async-signal-safe, nonblocking and idempotent.
using ct_work_fn = void (*)(thread_ctx& self, unsigned work) noexcept RTDEFER_NONBLOCKING;

namespace detail {

struct ct_globals {
    std::array<std::atomic<ct_work_fn>, ct_work_max> fns{};
    std::atomic<std::uint32_t> bound{0};     ///< bits with a callback; (DW8) release/acquire
    std::atomic<bool> hook_ready{false};     ///< interrupt hook registered; release/acquire
    detail::setup_mutex setup;                        ///< serialises registration (setup path only)
};

/// constinit: usable from the signal handler at any time.
constinit inline ct_globals ct_global{};

inline ct_globals& ct() noexcept RTDEFER_NONBLOCKING { return ct_global; }

/// Runs the callback of each bit in `work`, lowest bit first.
inline void ct_run_bits(thread_ctx& self, std::uint32_t work) noexcept RTDEFER_NONBLOCKING {
    while (work != 0) {
        const unsigned bit = static_cast<unsigned>(std::countr_zero(work));
        work &= work - 1;
        // (DW8) acquire: pairs with the release store in ct_register_work().
        if (ct_work_fn fn = ct().fns[bit].load(std::memory_order_acquire))
            fn(self, 1u << bit);
    }
}

/// Takes the IPI field (owner thread or its handler). Returns the work bits taken (unshifted).
inline std::uint32_t ct_take_ipi(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    auto& word = detail::ctx_access::ct(self).word;
    // (DW2) relaxed hint: bits a handler left for us were read by that handler's RMW on this thread,
    // so coherence shows them to this later load; bits set after it come with INFLIGHT and a signal.
    if ((word.load(std::memory_order_relaxed) & ct_ipi_mask) == 0)
        return 0;
    // (DW6) acquire: pairs with the senders' release CAS (DW1).
    return (word.fetch_and(~ct_ipi_mask, std::memory_order_acquire) & ct_ipi_mask) >> ct_ipi_shift;
}

inline void ct_set_running(thread_ctx& self, bool v) noexcept RTDEFER_NONBLOCKING {
    // relaxed + signal fences: the flag is shared only with this thread's own signal handler; the
    // fences keep the compiler from moving callback code across the store.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    detail::ctx_access::ct(self).running.store(v, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// Runs `work` on the owner thread, then drains IPI work left by a handler that interrupted the run,
/// until none is left. Callbacks never nest: the handler sees `running` and only acknowledges.
/// Thread-context callers hold cancellation off around it (detail::cancel_hold, engaged before
/// their take); the interrupt hook does not need to: the handler runs with the cancellation signal
/// blocked (interrupt_install), so a cancel is acted on only after it returned.
[[gnu::noinline]] inline void ct_run_local(thread_ctx& self, std::uint32_t work) noexcept RTDEFER_NONBLOCKING {
    ct_set_running(self, true);
    for (;;) {
        ct_run_bits(self, work);
        work = ct_take_ipi(self);
        if (work != 0) {
            // relaxed: statistic (owner thread only).
            detail::ctx_access::ct(self).ipi_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
            continue;
        }
        ct_set_running(self, false);
        // A handler between the last take and the store above left its bits and saw `running`.
        work = ct_take_ipi(self);
        if (work == 0)
            return;
        detail::ctx_access::ct(self).ipi_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
        ct_set_running(self, true);
    }
}

/// The interrupt hook (tagged): runs the IPI work on the interrupted thread. Only a deferred_word
/// signal acknowledges INFLIGHT; any other interrupt (another subsystem's, a plain tgkill) may take
/// and run I but leaves INFLIGHT to the signal that is still coming for it.
inline void ct_interrupt_hook(thread_ctx* self, interrupt_source src) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr)
        return;
    auto& word = detail::ctx_access::ct(*self).word;
    const bool ours = src == interrupt_source::deferred_word;
    const std::uint32_t mine = ours ? (ct_inflight | ct_ipi_mask) : ct_ipi_mask;
    // (DW2) relaxed cheap check (every interrupt calls every hook): the sender's CAS precedes its
    // send, and the kernel's signal delivery (siglock taken by the sender, then by this thread's
    // dequeue) orders it before this load. For a foreign interrupt the check is opportunistic: bits it
    // misses have a signal of ours coming, or are drained at the next enter.
    if ((word.load(std::memory_order_relaxed) & mine) == 0)
        return;
    if (detail::ctx_access::ct(*self).running.load(std::memory_order_relaxed)) {
        // The thread is inside ct_run_local: acknowledge our signal, leave the bits to its drain.
        // relaxed: no bits are taken here, so nothing to acquire; the drain's (DW6) does that.
        if (ours)
            word.fetch_and(~ct_inflight, std::memory_order_relaxed);
        return;
    }
    // (DW5) acquire: pairs with (DW1). Takes I (and, for our signal, acknowledges it) in one RMW.
    const std::uint32_t old = word.fetch_and(~mine, std::memory_order_acquire);
    const std::uint32_t work = (old & ct_ipi_mask) >> ct_ipi_shift;
    if (work != 0) {
        detail::ctx_access::ct(*self).ipi_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
        ct_run_local(*self, work);
    }
}

/// Thread exit hook: closes the word for good and runs whatever was pending (deferred work of a
/// thread that exits inside a section, IPI work whose signal will never be handled).
inline void ct_thread_exit(thread_ctx& self) noexcept {
    // (DW7) acquire: pairs with (DW1); later requests see EXITED and fail (they read nothing else).
    const std::uint32_t old = detail::ctx_access::ct(self).word.exchange(ct_disabled | ct_exited, std::memory_order_acquire);
    const std::uint32_t work = (old & ct_disabled) ? 0 : (old & ct_work_mask);
    const std::uint32_t ipi = (old & ct_ipi_mask) >> ct_ipi_shift;
    if ((work | ipi) != 0)
        ct_run_local(self, work | ipi);
}

// Before task_work's hook (exit_order): a callback that queues task_work on its own thread still gets it run.
inline const bool ct_exit_registered = register_exit_hook(&ct_thread_exit, exit_order::deferred_word);

/// Validates a request. Returns ok or invalid_argument (empty, out of range, or unbound bits).
inline status ct_check_work(unsigned work) noexcept RTDEFER_NONBLOCKING {
    // (DW8) acquire: a bit seen bound has its callback visible to us (and, through (DW1), to the runner).
    const std::uint32_t bound = ct().bound.load(std::memory_order_acquire);
    if (RTDEFER_UNLIKELY(work == 0 || (work & ~bound) != 0))
        return status::invalid_argument;
    return status::ok;
}

/// The sender's CAS loop on `target`'s word (detail/deferred_word_transitions.hpp).
template <bool allow_ipi>
inline status ct_queue(thread_ctx& target, std::uint32_t work, ct_path& path) noexcept RTDEFER_NONBLOCKING {
    return ct_word_queue<allow_ipi>(detail::ctx_access::ct(target).word, work, path);
}

/// A thread's request to itself (ct_set_work_or_ipi with target == caller).
[[gnu::noinline]] inline status ct_set_work_self(thread_ctx& self, std::uint32_t work) noexcept RTDEFER_NONBLOCKING {
    auto& word = detail::ctx_access::ct(self).word;
    // relaxed: DISABLED and EXITED are written only by this thread.
    const std::uint32_t cur = word.load(std::memory_order_relaxed);
    if (cur & ct_exited)
        return status::exited;
    if ((cur & ct_disabled) == 0) {
        ct_path path;
        return ct_queue<false>(self, work, path); // isolated: runs at our own exit
    }
    if (detail::ctx_access::ct(self).running.load(std::memory_order_relaxed)) {
        // Called from a callback: queue for the running drain instead of nesting. No INFLIGHT: no
        // signal is involved. (DW1) release: as a sender's (only this thread reads it back).
        word.fetch_or(work << ct_ipi_shift, std::memory_order_release);
        return status::ok;
    }
    // The request is in hand from here until its callbacks returned: hold cancellation off
    // (detail/cancel_hold.hpp).
    cancel_hold hold;
    hold.engage();
    detail::ctx_access::ct(self).local_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
    ct_run_local(self, work);
    return status::ok;
}

/// Slow path of ct_set_work_or_ipi: the signal, tagged so that only its own handler run clears
/// INFLIGHT (a foreign interrupt must not open the door for a section while it is on its way).
[[gnu::noinline, gnu::cold]] inline status ct_signal(thread_ctx& target) noexcept RTDEFER_NONBLOCKING {
    const status s = send_ipi(target, interrupt_source::deferred_word);
    // exited: send_ipi saw the thread exited, i.e. its exit hook ran after our CAS (before it, our
    // CAS would have seen EXITED) and ran our bits.
    if (s == status::ok || s == status::exited)
        return status::ok;
    // No signal is coming (no_space: the signal queue is full; system_error): withdraw INFLIGHT so
    // the thread may isolate again; the bits (ours and any rider's) stay in I and run at its next
    // enter (drained there), the next interrupt of any source, or its exit. INFLIGHT is still the
    // one we set: only our own signal clears it, and we sent none.
    // relaxed: nothing published.
    detail::ctx_access::ct(target).word.fetch_and(~ct_inflight, std::memory_order_relaxed);
    return s;
}

} // namespace detail

/// Effects: binds work bit `bit` to `fn`. Setup path: call before any request for that bit.
/// Returns: ok (also when `fn` is already bound to `bit`); invalid_argument for a bit >= ct_work_max
/// or a null fn; busy if a different callback is bound to it.
/// Progress: blocking (setup lock). Real-time safety: setup path.
[[nodiscard]] inline status ct_register_work(unsigned bit, ct_work_fn fn) noexcept {
    if (bit >= ct_work_max || fn == nullptr)
        return status::invalid_argument;
    auto& g = detail::ct();
    detail::setup_guard guard(g.setup);
    // relaxed: writers are serialised by `setup`.
    const ct_work_fn cur = g.fns[bit].load(std::memory_order_relaxed);
    if (cur == fn)
        return status::ok;
    if (cur != nullptr)
        return status::busy;
    // (DW8) release: pairs with the acquire loads in ct_run_bits()/ct_check_work().
    g.fns[bit].store(fn, std::memory_order_release);
    g.bound.fetch_or(1u << bit, std::memory_order_release);
    return status::ok;
}

/// Effects: unbinds `bit` (tests, reconfiguration). Precondition: no request for it is pending
/// anywhere; later requests for it return invalid_argument.
/// Returns: ok, or invalid_argument for a bit out of range. Progress: blocking. Real-time safety: setup.
[[nodiscard]] inline status ct_unregister_work(unsigned bit) noexcept {
    if (bit >= ct_work_max)
        return status::invalid_argument;
    auto& g = detail::ct();
    detail::setup_guard guard(g.setup);
    g.bound.fetch_and(~(1u << bit), std::memory_order_release);
    g.fns[bit].store(nullptr, std::memory_order_release);
    return status::ok;
}

/// Effects: installs the interrupt signal if nothing is installed yet (interrupt_install()) and
/// registers deferred_word's interrupt hook. Needed by ct_set_work_or_ipi only.
/// Returns: ok, or what interrupt_install()/interrupt_register_hook() refused with.
/// Progress: blocking. Real-time safety: setup path.
[[nodiscard]] inline status ct_work_setup() noexcept {
    if (interrupt_signal() == 0) {
        const status s = interrupt_install();
        if (s != status::ok && s != status::busy)
            return s;
    }
    const status s = interrupt_register_hook(&detail::ct_interrupt_hook);
    if (s != status::ok)
        return s;
    // release: pairs with the acquire in ct_set_work_or_ipi().
    detail::ct().hook_ready.store(true, std::memory_order_release);
    return status::ok;
}

/// Effects: if `target` is inside an isolated section, ORs `work` into its word: each bit's callback
/// runs once at the target's next exit from the section, after this call (coalesced with other
/// requests for the same bit). Otherwise changes nothing.
/// Returns: ok (deferred); not_accepting (not isolated: judged by a CAS on the live word, never by a
/// stale read); exited; invalid_argument (empty work or an unbound bit).
/// Progress: lock-free (CAS loop; a retry means another sender or the owner changed the word).
/// Real-time safety: no allocation, no lock, no syscall; async-signal-safe.
[[nodiscard]] inline status ct_set_work(thread_ctx& target, unsigned work) noexcept RTDEFER_NONBLOCKING {
    if (const status s = detail::ct_check_work(work); s != status::ok)
        return s;
    detail::ct_path path;
    return detail::ct_queue<false>(target, work, path);
}

/// Effects: as ct_set_work(); if the target is not isolated, the work runs on the target by
/// interrupt instead: the bits go to the word's IPI field and the first such sender sends the
/// interrupt signal (send_ipi tagged interrupt_source::deferred_word), whose handler runs them; a
/// sender that finds a signal already in flight does not send another (its bits ride on that one).
/// If `target` is the calling thread and it is not isolated, the work runs at once (or, from inside
/// a callback, right after it).
/// Returns: ok (deferred, delivered by interrupt, or run); exited; invalid_argument; not_installed
/// (ct_work_setup() has not run); no_space (the target's signal queue is full, RLIMIT_SIGPENDING) or
/// system_error (the send failed): no signal was sent, the work stays pending and runs at the
/// target's next enter or interrupt (of any source), or at its exit. A request that rode on another
/// sender's signal has returned ok; if that send fails, its work waits the same way (never lost,
/// later).
/// Progress: lock-free CAS loop, plus at most one syscall (rt_tgsigqueueinfo). Real-time safety: no
/// allocation, no lock; the only syscall is the interrupt; async-signal-safe.
[[nodiscard]] inline status ct_set_work_or_ipi(thread_ctx& target, unsigned work) noexcept RTDEFER_NONBLOCKING {
    if (const status s = detail::ct_check_work(work); s != status::ok)
        return s;
    // acquire: pairs with the release in ct_work_setup(): the hook is registered.
    if (RTDEFER_UNLIKELY(!detail::ct().hook_ready.load(std::memory_order_acquire) || interrupt_signal() == 0))
        return status::not_installed;
    if (target.is_current())
        return detail::ct_set_work_self(target, work);
    detail::ct_path path;
    const status s = detail::ct_queue<true>(target, work, path);
    if (s != status::ok || path != detail::ct_path::ipi_signal)
        return s;
    return detail::ct_signal(target);
}

/// Effects: enters an isolated section on the calling thread (`self` must be its ctx): the word goes
/// DISABLED -> 0 and requests are deferred from now on. IPI work already in the word runs here first
/// (whether or not its signal is still coming). If a deferred_word interrupt is still on its way to
/// this thread, the section is not entered (the signal would land inside it).
/// Returns: ok (isolated); busy (not entered: an interrupt is in flight; the thread is still
/// interruptible; try again later, e.g. at the next loop iteration); exited (called after exit hooks).
/// Progress: lock-free; bounded unless work is run. busy lasts until the signal is handled: while the
/// thread blocks the interrupt signal, or while a sender sits preempted between its CAS and its
/// tgkill (e.g. a lower-priority sender on this thread's CPU), every enter is refused; requests still
/// run at each refused enter, so nothing waits on the signal.
/// Real-time safety: no allocation, no lock, no syscall.
[[nodiscard]] inline status ct_isolation_enter(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_ASSERT(self.is_current(), "ct_isolation_enter() on another thread's ctx");
    // relaxed: `running` is this thread's own flag.
    RTDEFER_ASSERT(!detail::ctx_access::ct(self).running.load(std::memory_order_relaxed), "ct_isolation_enter() from a work callback");
    auto& word = detail::ctx_access::ct(self).word;
    for (;;) {
        switch (detail::ct_word_enter(word)) {
        case detail::ct_enter_step::entered:
            return status::ok;
        case detail::ct_enter_step::exited:
            return status::exited;
        case detail::ct_enter_step::ipi:
            break;
        }
        // IPI work runs here, at a safe point, even while its signal is still coming: a signal
        // blocked in this thread, or a sender preempted between its CAS and its send, must not
        // hold the requests back. The handler, when it comes, takes only what is left (disjoint).
        // Cancellation is held off from the take until the run is done (detail/cancel_hold.hpp);
        // a request acted on at the restore finds nothing in hand.
        detail::cancel_hold hold;
        hold.engage();
        if (const std::uint32_t work = detail::ct_take_ipi(self)) {
            detail::ctx_access::ct(self).ipi_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
            detail::ct_run_local(self, work);
        }
        // relaxed: INFLIGHT is cleared on this thread (its handler) or withdrawn by a failed sender;
        // a stale set bit only refuses this enter, a clear one is re-judged by the CAS.
        if (word.load(std::memory_order_relaxed) & detail::ct_inflight) {
            // relaxed: statistic (owner thread only).
            detail::ctx_access::ct(self).enter_refused.fetch_add(1, std::memory_order_relaxed);
            return status::busy;
        }
    }
}

/// Effects: leaves the isolated section (`self` must be the calling thread's ctx and isolated): one
/// fully ordered exchange sets DISABLED and takes the deferred work, whose callbacks then run here,
/// once each, followed by any interrupt work that arrived meanwhile.
/// Cancellation: with work to run, pthread cancellation is held off from the take until the last
/// callback returned (detail/cancel_hold.hpp); a request that came meanwhile is acted on at the end.
/// Returns: nothing. Progress: wait-free plus the callbacks. Real-time safety: no allocation, no lock,
/// no syscall (callbacks are nonblocking; the hold is two CAS each way on the thread's descriptor).
inline void ct_isolation_exit(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_ASSERT(self.is_current(), "ct_isolation_exit() on another thread's ctx");
    // relaxed: `running` is this thread's own flag.
    RTDEFER_ASSERT(!detail::ctx_access::ct(self).running.load(std::memory_order_relaxed), "ct_isolation_exit() from a work callback");
    auto& word = detail::ctx_access::ct(self).word;
    // relaxed: DISABLED is written only by this thread.
    RTDEFER_ASSERT((word.load(std::memory_order_relaxed) & detail::ct_disabled) == 0,
                   "ct_isolation_exit() outside an isolated section");
    // The fully ordered flush (DW3), whose acquire pairs with (DW1) (see the table at the top).
    // Nothing deferred (the common case): a CAS 0 -> DISABLED takes nothing, so no cancellation
    // hold is needed.
    if (detail::ct_word_exit_idle(word))
        return;
    // Work is there: hold cancellation off before taking it, until its callbacks returned
    // (detail/cancel_hold.hpp: an asynchronous cancel must not lose what the exchange took).
    detail::cancel_hold hold;
    hold.engage();
    const std::uint32_t work = detail::ct_word_exit_take(word);
    if (work != 0) {
        detail::ctx_access::ct(self).deferred_runs.fetch_add(static_cast<unsigned>(std::popcount(work)), std::memory_order_relaxed);
        detail::ct_run_local(self, work);
    }
}

/// Effects: none (one relaxed load).
/// Returns: whether `ctx` is inside an isolated section (a racy snapshot unless asked by the owner).
/// Progress: wait-free. Real-time safety: no allocation, no lock, no syscall; async-signal-safe.
[[nodiscard]] inline bool ct_isolated(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
    // relaxed: a snapshot; decisions are made by the CAS in ct_set_work().
    return (detail::ctx_access::ct(ctx).word.load(std::memory_order_relaxed) & detail::ct_disabled) == 0;
}

/// RAII isolated section: tries to enter on construction, exits (running deferred work) on
/// destruction or exit(). Check entered(): a section refused with busy is not isolated.
/// Every member: owner thread only; Progress and Real-time safety as ct_isolation_enter/_exit
/// (the accessors are wait-free loads of a plain member).
class isolated_section {
public:
    /// Effects: ct_isolation_enter(self) (may run IPI work). Returns: see result().
    explicit isolated_section(thread_ctx& self) noexcept RTDEFER_NONBLOCKING
        : self_(&self), result_(ct_isolation_enter(self)) {}
    isolated_section(const isolated_section&) = delete;
    isolated_section& operator=(const isolated_section&) = delete;
    /// Effects: exit() if still entered (runs the deferred work).
    ~isolated_section() noexcept RTDEFER_NONBLOCKING { exit(); }

    /// Effects: leaves the section now (ct_isolation_exit) if it was entered and not yet left.
    void exit() noexcept RTDEFER_NONBLOCKING {
        if (entered()) {
            left_ = true;
            ct_isolation_exit(*self_);
        }
    }
    /// Returns: whether the section is entered (and not yet left).
    [[nodiscard]] bool entered() const noexcept RTDEFER_NONBLOCKING { return result_ == status::ok && !left_; }
    explicit operator bool() const noexcept RTDEFER_NONBLOCKING { return entered(); }
    /// Returns: what the enter returned (ok, busy, exited); unchanged by exit() (see entered()).
    [[nodiscard]] status result() const noexcept RTDEFER_NONBLOCKING { return result_; }

private:
    thread_ctx* self_;
    status result_;
    bool left_ = false;
};

} // namespace rtdefer
