// tests/support/lock_waiter.hpp: is a thread queued, in the kernel, on a given PI mutex?
//
// An expiry lock's waiter count (expiry_lock_state::waiters) is raised BEFORE the waiter calls
// pthread_mutex_lock, as the kernel's timer_waiters is raised before spin_lock(expiry_lock). The
// expirer's drop and retake between callbacks (expiry_sync_wait_running) is a handoff only for a
// waiter the kernel has already queued: one still between its count and its futex call finds the
// lock retaken and waits for the next drop. A test that waits for the count and then expects the
// waiter through at the next drop races with that window; it waits for blocked_on_lock() instead.
//
//   rtdefer_test::blocked_on_lock(tid, m)   queued: thread `tid` of this process sleeps in
//                                           futex(FUTEX_LOCK_PI or LOCK_PI2) on a word inside the
//                                           object `m` (futex_lock_pi() sets FUTEX_WAITERS and
//                                           enqueues the rt_mutex waiter before it sleeps, so the
//                                           owner's next unlock hands the lock over);
//                                           not_queued: anything else (running, another syscall);
//                                           unobservable: /proc/self/task/<tid>/syscall unreadable.
//   rtdefer_test::lock_waits_observable()   whether this kernel shows that file (tests skip if not).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace rtdefer_test {

enum class lock_wait { queued, not_queued, unobservable };

namespace detail {
// The first line of /proc/self/task/<tid>/syscall ("running", or "<nr> <arg0> <arg1> ...") into
// buf. Plain syscalls: callers may be noexcept callbacks on real-time threads.
inline bool read_task_syscall(pid_t tid, char* buf, std::size_t size) noexcept {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", static_cast<int>(tid));
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    const ssize_t n = ::read(fd, buf, size - 1);
    ::close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}
} // namespace detail

/// Returns: whether thread `tid` sleeps in FUTEX_LOCK_PI(2) on a futex word inside [lock, lock+size).
inline lock_wait blocked_on_lock(pid_t tid, const void* lock, std::size_t size) noexcept {
    char buf[256];
    if (!detail::read_task_syscall(tid, buf, sizeof(buf)))
        return lock_wait::unobservable;
    long nr = -1;
    unsigned long uaddr = 0, op = 0;
    if (std::sscanf(buf, "%ld %lx %lx", &nr, &uaddr, &op) != 3 || nr != SYS_futex)
        return lock_wait::not_queued; // "running", or "-1 sp pc" (preempted outside a syscall)
    const unsigned long cmd = op & FUTEX_CMD_MASK;
    const auto lo = reinterpret_cast<std::uintptr_t>(lock);
    const bool inside = uaddr >= lo && uaddr < lo + size;
    return inside && (cmd == FUTEX_LOCK_PI || cmd == FUTEX_LOCK_PI2) ? lock_wait::queued : lock_wait::not_queued;
}

/// As above, for the object `m` (a detail::pi_mutex: its pthread_mutex_t holds the futex word).
template <class Mutex>
lock_wait blocked_on_lock(pid_t tid, const Mutex& m) noexcept {
    return blocked_on_lock(tid, &m, sizeof(m));
}

/// Returns: whether /proc/self/task/<tid>/syscall can be read here (tried on the calling thread).
inline bool lock_waits_observable() noexcept {
    char buf[256];
    return detail::read_task_syscall(static_cast<pid_t>(::syscall(SYS_gettid)), buf, sizeof(buf));
}

} // namespace rtdefer_test
