// rtdefer/detail/syscall.hpp: the only place rtdefer makes raw syscalls.
//
// The wrappers marked RTDEFER_NONBLOCKING make a syscall on purpose (a futex wake, a tgkill or
// rt_tgsigqueueinfo): the documented exception to "no syscall on a hot path", paid only on an
// empty→non-empty transition or an explicit interrupt. They are exempted from -Wfunction-effects and
// RealtimeSanitizer here, once, instead of at every call site. Every wrapper is async-signal-safe
// and preserves errno.
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace rtdefer::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "futex words must be plain lock-free 32-bit atomics");

/// Pauses RealtimeSanitizer for one deliberate syscall (no-op without it).
struct [[maybe_unused]] rtsan_trust {
#if RTDEFER_HAS_RTSAN
    rtsan_trust() noexcept { __rtsan_disable(); }
    ~rtsan_trust() { __rtsan_enable(); }
#endif
    rtsan_trust(const rtsan_trust&) = delete;
    rtsan_trust& operator=(const rtsan_trust&) = delete;
#if !RTDEFER_HAS_RTSAN
    rtsan_trust() noexcept = default;
#endif
};

/// errno access for signal handlers, which must save and restore it. errno is a TLS location reached
/// through __errno_location(), a libc function that never allocates or blocks.
inline int errno_load() noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return errno;
    RTDEFER_EFFECTS_TRUST_END
}
inline void errno_store(int v) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    errno = v;
    RTDEFER_EFFECTS_TRUST_END
}

/// Raw syscall returning -errno on failure; errno is preserved (signal handlers call this).
template <class... A> inline long raw_syscall(long nr, A... args) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    [[maybe_unused]] rtsan_trust trust;
    const int saved = errno;
    long r = ::syscall(nr, args...);
    if (r == -1)
        r = -errno;
    errno = saved;
    return r;
    RTDEFER_EFFECTS_TRUST_END
}

inline std::uint32_t* futex_addr(std::atomic<std::uint32_t>& word) noexcept RTDEFER_NONBLOCKING {
    // std::atomic<uint32_t> is standard-layout with the value as its only member (asserted above).
    return reinterpret_cast<std::uint32_t*>(&word);
}

/// Effects: wakes up to `n` threads blocked in futex_wait on `word` (process-private futex).
/// Returns: the number woken, or -errno.
/// Progress: one syscall, bounded. Real-time safety: no allocation, no lock; the intended syscall.
inline int futex_wake(std::atomic<std::uint32_t>& word, int n) noexcept RTDEFER_NONBLOCKING {
    return static_cast<int>(raw_syscall(SYS_futex, futex_addr(word), FUTEX_WAKE_PRIVATE, n,
                                        nullptr, nullptr, 0));
}

/// Effects: blocks while `word == expected`, until woken, a signal arrives, or the absolute
/// CLOCK_MONOTONIC deadline `abs` (nullptr: none) passes.
/// Returns: 0 when woken (or spuriously), -EAGAIN if the word did not match, -ETIMEDOUT, -EINTR.
/// Progress: blocking. Real-time safety: blocks by design; the caller holds no lock.
inline int futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      const timespec* abs) noexcept RTDEFER_BLOCKING {
    // FUTEX_WAIT_BITSET takes an absolute timeout (FUTEX_WAIT's is relative); without
    // FUTEX_CLOCK_REALTIME it is CLOCK_MONOTONIC, which is what steady_clock reads on Linux.
    const int saved = errno;
    long r = ::syscall(SYS_futex, futex_addr(word), FUTEX_WAIT_BITSET_PRIVATE, expected, abs,
                       nullptr, FUTEX_BITSET_MATCH_ANY);
    if (r == -1)
        r = -errno;
    errno = saved;
    return static_cast<int>(r);
}

/// Returns: the calling thread's kernel thread id. Async-signal-safe.
inline pid_t gettid() noexcept RTDEFER_NONBLOCKING {
    return static_cast<pid_t>(raw_syscall(SYS_gettid));
}

/// Effects: sends `sig` to thread `tid` of thread group `tgid`. Returns: 0 or -errno.
/// Real-time safety: one syscall, async-signal-safe (used to raise an interrupt).
inline int tgkill(pid_t tgid, pid_t tid, int sig) noexcept RTDEFER_NONBLOCKING {
    return static_cast<int>(raw_syscall(SYS_tgkill, tgid, tid, sig));
}

/// Effects: queues `sig` for thread `tid` of thread group `tgid` (our own process) with
/// rt_tgsigqueueinfo: si_code SI_QUEUE, si_pid = tgid and si_uid = `uid` (ours, as sigqueue() sets
/// them), si_value.sival_int = `value`. Returns: 0 or -errno (-EAGAIN: RLIMIT_SIGPENDING reached).
/// Real-time safety: one syscall, async-signal-safe (the siginfo is on our stack).
inline int tgsigqueue(pid_t tgid, pid_t tid, int sig, int value, uid_t uid) noexcept RTDEFER_NONBLOCKING {
    siginfo_t info;
    __builtin_memset(&info, 0, sizeof info); // the kernel copies all of it
    info.si_signo = sig;
    info.si_code = SI_QUEUE;
    info.si_pid = tgid;
    info.si_uid = uid;
    info.si_value.sival_int = value;
    return static_cast<int>(raw_syscall(SYS_rt_tgsigqueueinfo, tgid, tid, sig, &info));
}

/// Returns: the CPU the caller runs on, or 0 if unknown. Uses glibc's sched_getcpu, which reads the
/// rseq area registered by glibc >= 2.35 or the vDSO: no real syscall on this path.
inline int current_cpu() noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    [[maybe_unused]] rtsan_trust trust;
    const int saved = errno;
    const int cpu = ::sched_getcpu();
    errno = saved;
    return cpu < 0 ? 0 : cpu;
    RTDEFER_EFFECTS_TRUST_END
}

/// Converts a steady_clock time point to the absolute CLOCK_MONOTONIC timespec futex_wait takes.
inline timespec to_timespec(std::chrono::steady_clock::time_point tp) noexcept RTDEFER_NONBLOCKING {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
    if (ns <= 0)
        return timespec{0, 0};
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

} // namespace rtdefer::detail
