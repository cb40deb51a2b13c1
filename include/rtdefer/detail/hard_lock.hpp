// rtdefer/detail/hard_lock.hpp: a lock for hard (signal) context: a raw PI futex word holding 0 or
// the holder's tid. The holder, an interrupt hook, only ever try-locks (one CAS, never waits, no
// syscall unless a waiter queued); a waiter in thread context blocks in FUTEX_LOCK_PI, so the kernel
// boosts the interrupted holder to the waiter's priority, as the rt_mutex of an expiry lock does.
// Used by cpu_timer: the hook holds it while it runs an urgent callback.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/syscall.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include <linux/futex.h>
#include <sys/syscall.h>

namespace rtdefer::detail {

/// The hard lock (a raw PI futex word). trylock: the hook's only way in (no syscall, never waits).
inline bool hard_trylock(std::atomic<std::uint32_t>& w, std::uint32_t tid) noexcept RTDEFER_NONBLOCKING {
    std::uint32_t e = 0;
    // (HL1) seq_cst: the hook's claim is ordered before its load of `urgent` (store→load, Dekker
    // with the canceller's unpublish (CT1) → its load of `hard`). relaxed on failure: we back off.
    return w.compare_exchange_strong(e, tid, std::memory_order_seq_cst, std::memory_order_relaxed);
}
inline void hard_unlock(std::atomic<std::uint32_t>& w, std::uint32_t tid) noexcept RTDEFER_NONBLOCKING {
    std::uint32_t e = tid;
    // release: pairs with the acquire of the next holder's claim (CAS or FUTEX_LOCK_PI). relaxed on
    // failure: FUTEX_WAITERS is set, the kernel hands the lock over (async-signal-safe syscall).
    if (!w.compare_exchange_strong(e, 0, std::memory_order_release, std::memory_order_relaxed))
        (void)raw_syscall(SYS_futex, futex_addr(w), FUTEX_UNLOCK_PI_PRIVATE, 0, nullptr, nullptr, 0);
}
/// Blocks (PI: boosts the holder) until the hook that holds `w` has left, by taking and dropping it.
inline void hard_wait(std::atomic<std::uint32_t>& w, std::uint32_t tid) noexcept RTDEFER_BLOCKING {
    std::uint32_t e = 0;
    // acquire: pairs with the hook's release in hard_unlock (its callback's writes are ours).
    if (!w.compare_exchange_strong(e, tid, std::memory_order_acquire, std::memory_order_relaxed)) {
        long r;
        do
            r = raw_syscall(SYS_futex, futex_addr(w), FUTEX_LOCK_PI_PRIVATE, 0, nullptr, nullptr, 0);
        while (r == -EINTR || r == -EAGAIN);
        RTDEFER_ASSERT(r == 0, "cpu_timer: FUTEX_LOCK_PI on the hard lock failed");
    }
    hard_unlock(w, tid);
}

} // namespace rtdefer::detail
