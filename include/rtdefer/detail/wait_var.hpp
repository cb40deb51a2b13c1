// rtdefer/detail/wait_var.hpp: wait for a condition on a variable without a wait queue in the
// variable, the kernel's wait_var_event()/wake_up_var() (include/linux/wait_bit.h,
// kernel/sched/wait_bit.c). A fixed table of futex words, indexed by a hash of the variable's
// *address*, stands in for the kernel's bit_wait_table. The table has static storage duration and
// outlives every variable, and neither side ever dereferences the address: a waker may call
// wake_up_var(p) after its last access to *p, when the waiter may already have seen the condition,
// returned and freed *p (the use-after-free that an rcuwait inside the object invites). Generic over
// the variable and the condition; irq_work_sync() is one user.
//
// Ordering (store buffering, all four in the single total order S):
//   waker:  store that makes the condition true (seq_cst, the caller's)  →  (WV3) load waiters
//   waiter: (WV1) waiters+1  →  (WV2) seq snapshot  →  condition's load (seq_cst, the caller's)
// Either the waiter's condition load sees the waker's store, or the waker's (WV3) sees the
// registration (WV1) and bumps seq (WV4) after the snapshot (WV2): the futex_wait then fails
// (EAGAIN) or is woken. So the caller's store and the condition's load MUST be seq_cst (an RMW
// counts); in irq_work they are (IQS1) and (IQS5).
//
// Several variables share a bucket (64 of them): a wake of one wakes the other's waiters too, who
// re-check their condition and sleep again. Spurious wakes cost a re-check, never a lost wake.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/status.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <ctime>

namespace rtdefer::detail {

/// One bucket of the table: a futex word and the number of waiters that may sleep on it.
struct alignas(cacheline_size) wait_var_bucket {
    std::atomic<std::uint32_t> seq{0};     ///< futex word: bumped by every wake of this bucket
    std::atomic<std::uint32_t> waiters{0}; ///< wait_var_event callers registered here
    /// futex_wake calls made for this bucket (a statistic, for tests: a wake with no waiter makes
    /// none). relaxed: a count; bumped only next to the syscall it counts.
    std::atomic<std::uint64_t> futex_wakes{0};
};

inline constexpr std::size_t wait_var_bucket_bits = 6;
/// bit_wait_table. Constant-initialised: no guard, usable from signal handlers.
inline std::array<wait_var_bucket, std::size_t{1} << wait_var_bucket_bits> wait_var_table{};

/// Returns: the bucket of `var` (__var_waitqueue; Fibonacci hashing of the address, which is never
/// dereferenced). Progress: wait-free. Real-time safety: arithmetic only; async-signal-safe.
[[nodiscard]] inline wait_var_bucket& var_waitqueue(const volatile void* var) noexcept RTDEFER_NONBLOCKING {
    const auto addr = reinterpret_cast<std::uintptr_t>(var);
    const std::uint64_t h = (static_cast<std::uint64_t>(addr) >> 4) * 0x9E3779B97F4A7C15ull;
    return wait_var_table[static_cast<std::size_t>(h >> (64 - wait_var_bucket_bits))];
}

/// wake_up_var's slow path, out of line: a waiter is registered in `b`.
[[gnu::noinline, gnu::cold]] inline void wake_up_var_bucket(wait_var_bucket& b) noexcept RTDEFER_NONBLOCKING {
    // (WV4) seq_cst: after (WV3) in S, so after the waiter's snapshot (WV2) whenever its condition
    //      load missed the caller's store: its futex_wait(seq, snapshot) fails or is woken.
    b.seq.fetch_add(1, std::memory_order_seq_cst);
    b.futex_wakes.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic (see the field)
    (void)futex_wake(b.seq, INT_MAX);
}

/// Effects: wakes every wait_var_event caller of `var`'s bucket, if there is one (wake_up_var).
/// Call it after the seq_cst store that makes the waiters' condition true; `var` is only hashed, so
/// the caller may no longer own *var. Progress: wait-free. Real-time safety: no allocation, no
/// lock; one futex_wake only when a waiter is registered in the bucket; async-signal-safe.
inline void wake_up_var(const volatile void* var) noexcept RTDEFER_NONBLOCKING {
    wait_var_bucket& b = var_waitqueue(var);
    // (WV3) seq_cst load: the waker's half of the store→load pair against (WV1)→condition: either
    //      the waiter's condition load sees the caller's store, or this load sees the registration
    //      (WV1). Without seq_cst both could read old values and the waiter would sleep forever.
    if (RTDEFER_UNLIKELY(b.waiters.load(std::memory_order_seq_cst) != 0))
        wake_up_var_bucket(b);
}

/// The default `round` of wait_var_event_until: nothing to do before a check.
struct wait_var_no_round {
    void operator()() const noexcept {}
};

/// Effects: returns at once if `cond()` holds; otherwise registers in `var`'s bucket and sleeps on
/// its futex until `cond()` holds after a wake (wait_var_event_timeout), or `deadline` passes.
/// Before each check it calls `round()` (e.g. help run the work it waits for), and with a non-zero
/// `poll` it re-checks at least that often even without a wake. `cond` must read with a seq_cst load
/// (or RMW) what the waker writes with a seq_cst store (or RMW) before wake_up_var(var); it may be
/// called many times (spurious wakes from the other variables of the bucket).
/// Returns: ok (cond() held); timed_out (it still did not hold at `deadline`, checked one last time).
/// Progress: blocking. Real-time safety: blocking (futex_wait); no allocation, no lock.
template <class Cond, class Round = wait_var_no_round>
[[nodiscard]] status wait_var_event_until(const volatile void* var, Cond&& cond,
                                          std::chrono::steady_clock::time_point deadline, Round&& round = {},
                                          std::chrono::nanoseconds poll = std::chrono::nanoseconds::zero()) noexcept
    RTDEFER_BLOCKING {
    if (cond())
        return status::ok;
    wait_var_bucket& b = var_waitqueue(var);
    // (WV1) seq_cst: the registration precedes the condition's load in S; pairs with (WV3).
    b.waiters.fetch_add(1, std::memory_order_seq_cst);
    status result = status::ok;
    for (;;) {
        round();
        // (WV2) seq_cst: the futex snapshot precedes the condition's load; pairs with (WV4).
        const std::uint32_t seq = b.seq.load(std::memory_order_seq_cst);
        if (cond())
            break;
        auto until = deadline;
        if (poll > std::chrono::nanoseconds::zero())
            until = std::min(until, std::chrono::steady_clock::now() + poll);
        const bool timed = until != std::chrono::steady_clock::time_point::max();
        const timespec abs = to_timespec(until);
        const int rc = futex_wait(b.seq, seq, timed ? &abs : nullptr);
        if (rc == -ETIMEDOUT && std::chrono::steady_clock::now() >= deadline) {
            if (!cond()) // one last look: the condition may have come true exactly now
                result = status::timed_out;
            break;
        }
    }
    // relaxed: the count only gates wakes; a stale non-zero costs a spurious futex_wake.
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    return result;
}

} // namespace rtdefer::detail
