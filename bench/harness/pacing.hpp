// rtdefer benchmark harness: a bench thread's load and pace in real time and CPU time.
//
//   mono_ns()          CLOCK_MONOTONIC in ns (vDSO)
//   thread_cpu_ns()    the calling thread's CPU time in ns (a syscall, ~200 ns)
//   burn_cpu(ns)       spin until the calling thread has used `ns` more CPU time (a callback's
//                      "1 ms of work" that preemption stretches in wall time but not in CPU time)
//   sleep_ns(ns)       sleep `ns` on CLOCK_MONOTONIC (no spinning on the sleeper's CPU)
//   pacer              absolute-deadline periods on CLOCK_MONOTONIC: no drift from late wake-ups
// Busy-waits on the bench clock (spin_for_ns, spin_until) are in latency.hpp.
#pragma once

#include <cerrno>
#include <cstdint>

#include <time.h>

namespace rtdefer_bench {

inline std::int64_t mono_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

inline std::int64_t thread_cpu_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

inline void burn_cpu(std::int64_t ns) noexcept {
    const std::int64_t start = thread_cpu_ns();
    while (thread_cpu_ns() - start < ns) {
    }
}

inline void sleep_ns(std::int64_t ns) noexcept {
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
}

/// Periods of `period_ns` from construction; wait() sleeps to the next period's start (an absolute
/// deadline, so a late wake-up does not push the later ones back).
class pacer {
public:
    explicit pacer(long period_ns) : period_ns_(period_ns) { clock_gettime(CLOCK_MONOTONIC, &next_); }
    void wait() noexcept {
        next_.tv_nsec += period_ns_;
        while (next_.tv_nsec >= 1'000'000'000L) {
            next_.tv_nsec -= 1'000'000'000L;
            ++next_.tv_sec;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next_, nullptr) == EINTR) {
        }
    }

private:
    timespec next_{};
    long period_ns_;
};

}  // namespace rtdefer_bench
