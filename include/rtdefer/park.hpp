// rtdefer/park.hpp: the park/wake pair that safe-point loops sleep on.
//
//   park / unpark  a token parker on a futex: a wake before the park leaves a token, so the park
//                  returns at once (no lost wake-ups); unpark makes a syscall only when the owner is
//                  actually parked.
//   park_until     park with a deadline; its halves (detail::park_commit, park_try_consume,
//                  park_abandon) serve waits that are not a plain futex_wait (the io_uring loop).
//
// Park word states (one 32-bit futex word per thread, detail/park_state.hpp):
//
//   value        meaning                                  who moves it
//   EMPTY    0   no token, owner running                  park: EMPTY→PARKED (fetch_sub)
//   NOTIFIED 1   a token is waiting for the owner         unpark: any→NOTIFIED (exchange)
//   PARKED  ~0   owner is (about to be) in futex_wait     park: NOTIFIED→EMPTY on return
//
// unpark sees PARKED only if the owner committed to sleeping, and only then calls futex_wake.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/park_state.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>

namespace rtdefer {

/// Effects: sets the wake token of `target`; if its owner is parked, wakes it (one futex_wake).
/// Returns: true if a syscall was made (the owner was parked).
/// Progress: wait-free apart from that syscall. Real-time safety: no allocation, no lock; the only
/// syscall is the wake of a parked owner; async-signal-safe.
inline bool unpark(thread_ctx& target) noexcept RTDEFER_NONBLOCKING {
    auto& word = detail::ctx_access::park(target).word;
    // Cheap test first: a token already waiting makes this wake redundant, and a plain load keeps
    // the line shared instead of bouncing it. This is a store→load (Dekker) pair against the owner:
    //   waker: publish work; (PK5) fence; load word == NOTIFIED → skip
    //   owner: consume token (RMW on word); (PK6) fence; load work
    // (PK5) seq_cst fence: pairs with (PK6) in park_consumed(). Without the pair, both loads could
    // read the old values (ARM, the C++ model): the waker skips, the owner misses the work and sleeps.
    // With it, if our load saw the token before the owner consumed it, the owner sees our work.
    detail::full_fence();
    // relaxed: ordered by (PK5); a stale NOTIFIED is covered by the argument above.
    if (word.load(std::memory_order_relaxed) == detail::park_notified)
        return false;
    // (PK2) release: everything the waker wrote (the work) happens-before the owner's acquire (PK1)/(PK3)
    // that consumes this token. acquire: if we see PARKED we must see the owner's commit to sleep.
    if (word.exchange(detail::park_notified, std::memory_order_acq_rel) != detail::park_parked)
        return false;
    // relaxed: statistics only.
    detail::ctx_access::park(target).futex_wakes.fetch_add(1, std::memory_order_relaxed);
    (void)detail::futex_wake(word, 1);
    return true;
}

namespace detail {

// The halves of park_until(), for waits that are not a plain futex_wait (the io_uring loop waits
// on the park word with an in-ring FUTEX_WAIT). Every token consumption returns through
// park_consumed(), so (PK6) is on each path.

/// (PK6) seq_cst fence: orders a token's consumption before the caller's next look at its work.
/// Pairs with (PK5) in unpark().
inline bool park_consumed() noexcept RTDEFER_NONBLOCKING {
    full_fence();
    return true;
}

/// Effects: first half of a park. Consumes a waiting token, or commits to sleeping (EMPTY→PARKED):
/// an unpark after this sees PARKED and makes the futex_wake.
/// Returns: true if a token was consumed (do not sleep), false if the word is now PARKED.
inline bool park_commit(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (PK1) acquire: NOTIFIED→EMPTY consumes a token and pairs with release (PK2) in unpark().
    if (ctx_access::park(self).word.fetch_sub(1, std::memory_order_acquire) == park_notified)
        return park_consumed();
    return false;
}

/// Effects: after a wait on PARKED returned: consumes the token if one arrived (NOTIFIED→EMPTY).
/// Returns: true if consumed; false if the word is still PARKED (spurious wake, keep waiting).
inline bool park_try_consume(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (PK3) acquire: pairs with (PK2); a successful NOTIFIED→EMPTY consumes the token.
    std::uint32_t expected = park_notified;
    if (ctx_access::park(self).word.compare_exchange_strong(expected, park_empty, std::memory_order_acquire,
                                                            std::memory_order_relaxed))
        return park_consumed();
    return false;
}

/// Effects: leaves the parked state without sleeping further (timeout, signal, other event).
/// Returns: true if a token raced in (it is consumed), false otherwise.
inline bool park_abandon(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (PK4) acquire, as (PK3): a token that raced in is consumed here.
    if (ctx_access::park(self).word.exchange(park_empty, std::memory_order_acquire) == park_notified)
        return park_consumed();
    return false;
}

} // namespace detail

/// Effects: blocks the calling thread (which must own `self`) until a token arrives (unpark), the
/// deadline passes, or a signal interrupts the wait. A token set before the call makes it return at
/// once. Returns: ok (token consumed), timed_out, or interrupted (EINTR: the interrupt signal or
/// another handler ran). Progress: blocking. Real-time safety: blocking by design (the safe point).
[[nodiscard]] inline status park_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(self.is_current(), "park_until() called on another thread's ctx");
    if (detail::park_commit(self))
        return status::ok;
    const bool timed = deadline != std::chrono::steady_clock::time_point::max();
    const timespec abs = detail::to_timespec(deadline);
    for (;;) {
        const int rc =
            detail::futex_wait(detail::ctx_access::park(self).word, detail::park_parked, timed ? &abs : nullptr);
        if (detail::park_try_consume(self))
            return status::ok;
        if (rc == -ETIMEDOUT || rc == -EINTR)
            return detail::park_abandon(self) ? status::ok
                   : rc == -ETIMEDOUT         ? status::timed_out
                                              : status::interrupted;
        // 0 (woken for someone else / spurious) or -EAGAIN (word changed): re-check and wait again.
        if (timed && std::chrono::steady_clock::now() >= deadline)
            return detail::park_abandon(self) ? status::ok : status::timed_out;
    }
}

/// Effects, returns: as park_until() with no deadline (ok or interrupted).
[[nodiscard]] inline status park(thread_ctx& self) noexcept RTDEFER_BLOCKING {
    return park_until(self, std::chrono::steady_clock::time_point::max());
}

/// Returns: how many futex_wakes unpark() has made for `ctx`'s owner so far (the wakes that found it
/// parked): statistics for tests and benchmarks. Progress: wait-free. Real-time safety: yes.
[[nodiscard]] inline std::uint64_t park_futex_wakes(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
    // relaxed: a statistics counter; callers order it by their own synchronisation.
    return detail::ctx_access::park(ctx).futex_wakes.load(std::memory_order_relaxed);
}

} // namespace rtdefer
