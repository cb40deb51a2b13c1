// rtdefer/detail/cancel_hold.hpp: hold pthread cancellation off while a run loop has work in hand.
//
// Hosts cancel their threads (jack2's jack_deactivate() cancels its real-time thread with
// PTHREAD_CANCEL_ASYNCHRONOUS). Cancellation acted on inside a run loop would lose the chain the loop
// has detached (nothing else knows of it) and would unwind through frames that may not be unwound.
// So every run loop that detaches work (task_work_run, irq_work_run, the deferred word's flush)
// holds cancellation off from the detach until the last callback of the chain has returned:
//
//   loop:    hold.engage()  (state → DISABLE, type → DEFERRED)  detach chain  run every item
//            ~cancel_hold (restore the state, then the type)
//   cancel:  a request that arrives meanwhile stays pending; it is acted on by the restore, i.e.
//            between passes, with nothing in hand. The thread then exits, and its exit hooks run
//            whatever was queued after the pass (task_work_exit), so every accepted item runs once.
//
// Why the restore may unwind. With the old state ENABLE and type ASYNCHRONOUS, glibc acts on a pending
// request inside pthread_setcancelstate() itself, and the forced unwind leaves through our frame. A
// frame is unwound safely only if it has no exception table, or its table covers the call: glibc
// declares pthread_setcancelstate as possibly throwing, so a call from a noexcept function would
// carry a must-not-throw region and std::terminate would run. We call it through a nothrow
// declaration of the same symbol instead, so our run loops (whose calls are all nothrow) need no
// exception table at all and the unwinder passes through them, as it passes through C frames. The
// caller's own frames must be unwindable, as for any asynchronous cancellation (POSIX allows it only
// in async-cancel-safe code; a C++ frame with cleanups is not, with or without rtdefer).
//
// Why the type too. DISABLE alone does not hold off an asynchronous cancel whose SIGCANCEL is already
// on its way when the hold engages: glibc 2.36's SIGCANCEL handler acts whenever the type is
// ASYNCHRONOUS, whatever the state (measured: 18 of 300 cancels landed inside a DISABLE-only hold;
// 0 of 300 with the type switched too). So engage() also sets the type to DEFERRED, and the restore
// puts the state back first (no action: still deferred), then the type, where glibc acts on a pending
// request (and sets the thread's result to PTHREAD_CANCELED; a state restore acting does not).
// A SIGCANCEL between engage()'s two calls acts with nothing in hand yet (engage precedes the take).
//
// Cost: glibc >= 2.34 implements pthread_setcancelstate and pthread_setcanceltype each as a
// compare-and-swap on the thread's own cancelhandling word: no syscall (verified with strace: 0
// syscalls over 10^5 engage/restore cycles), no lock, async-signal-safe in practice (they touch only
// the calling thread's descriptor). Four CASes per pass that has work; none for an empty pass.
#pragma once

#include <rtdefer/config.hpp>

#include <pthread.h>

// The same symbol as pthread_setcancelstate, declared nothrow (see above). GCC and Clang bind it
// with an assembler label; the function is not called through a pointer of another type.
extern "C" int rtdefer_pthread_setcancelstate(int state, int* oldstate) noexcept __asm__("pthread_setcancelstate");
extern "C" int rtdefer_pthread_setcanceltype(int type, int* oldtype) noexcept __asm__("pthread_setcanceltype");

namespace rtdefer::detail {

/// Effects: sets the calling thread's cancelability state; `old` (if non-null) gets the previous one.
/// A pending asynchronous cancellation may be acted on here when the new state is ENABLE.
/// Progress: wait-free (one CAS on the thread's own descriptor; no syscall). Real-time safety: yes.
inline int set_cancel_state(int state, int* old) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return rtdefer_pthread_setcancelstate(state, old);
    RTDEFER_EFFECTS_TRUST_END
}

/// Effects: sets the calling thread's cancelability type; `old` (if non-null) gets the previous one.
/// A pending cancellation may be acted on here when the new type is ASYNCHRONOUS (state ENABLE).
/// Progress: wait-free (one CAS on the thread's own descriptor). Real-time safety: yes.
inline int set_cancel_type(int type, int* old) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return rtdefer_pthread_setcanceltype(type, old);
    RTDEFER_EFFECTS_TRUST_END
}

/// Holds cancellation off from engage() until destruction (see the top of this file). Engaging is
/// lazy so that a pass that finds nothing to run costs nothing. Owner thread only; not copyable.
class cancel_hold {
public:
    cancel_hold() noexcept = default;
    cancel_hold(const cancel_hold&) = delete;
    cancel_hold& operator=(const cancel_hold&) = delete;

    /// Effects: disables cancellation and makes it deferred (once; later calls are no-ops),
    /// remembering the old state and type.
    /// Progress: wait-free. Real-time safety: no allocation, no lock, no syscall.
    void engage() noexcept RTDEFER_NONBLOCKING {
        if (!engaged_) {
            (void)set_cancel_state(PTHREAD_CANCEL_DISABLE, &old_);
            (void)set_cancel_type(PTHREAD_CANCEL_DEFERRED, &old_type_);
            engaged_ = true;
        }
    }

    /// Returns: whether engage() ran (diagnostics). Wait-free.
    [[nodiscard]] bool engaged() const noexcept RTDEFER_NONBLOCKING { return engaged_; }

    /// Effects: restores the state, then the type, saved by engage(). A cancellation requested
    /// meanwhile is acted on here (asynchronous type) or at the caller's next cancellation point
    /// (deferred type).
    ~cancel_hold() noexcept RTDEFER_NONBLOCKING {
        if (engaged_) {
            (void)set_cancel_state(old_, nullptr);
            (void)set_cancel_type(old_type_, nullptr);
        }
    }

private:
    int old_ = PTHREAD_CANCEL_ENABLE;
    int old_type_ = PTHREAD_CANCEL_DEFERRED;
    bool engaged_ = false;
};

} // namespace rtdefer::detail
