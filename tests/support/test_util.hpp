// tests/support/test_util.hpp: helpers shared by the unit and stress tests.
//
//   rtdefer_test::stress_scale()        RTDEFER_STRESS_SCALE (default 1.0); sanitizer runs lower it.
//   rtdefer_test::scaled(n)             n * stress_scale(), never below a sane minimum.
//   RTDEFER_REQUIRE_RT_OR_SKIP();       in a TEST_CASE body: when SCHED_FIFO is refused, prints
//                                       `SKIP: <test>: SCHED_FIFO refused (EPERM): <why>` (doctest
//                                       MESSAGE and stdout) and returns, so an RT test never passes
//                                       silently. Set RTDEFER_TEST_NO_RT=1 to exercise that path.
//   rtdefer_test::skip_test(why)        the same report for any other reason; then `return`.
//   rtdefer_test::tsan_build, asan_build, mlockall_intercepted
//                                       what this build's sanitizers change (GCC's __SANITIZE_*__
//                                       and clang's __has_feature, asked in one place).
//   rtdefer_test::cpu_relax()           one spin-wait pause (nonblocking: usable in callbacks).
//   rtdefer_test::burn_cpu(d)           spins until the calling thread has used `d` of CPU time.
//
// A skipped test case still counts as passed for doctest; tests/main.cpp lists the skips at the end
// of the run (`RTDEFER-SKIPPED: <test>: <reason>`, counted by scripts/test) and exits 77 (meson:
// SKIP) when every test case of the executable skipped.
#pragma once

#include <rtdefer/config.hpp>

#include <doctest/doctest.h>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <csignal>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

// GCC (before 14) has no __has_feature; clang has no __SANITIZE_*__: ask both.
#if defined(__has_feature)
#define RTDEFER_TEST_HAS_FEATURE(x) __has_feature(x)
#else
#define RTDEFER_TEST_HAS_FEATURE(x) 0
#endif

namespace rtdefer_test {

#if defined(__SANITIZE_THREAD__) || RTDEFER_TEST_HAS_FEATURE(thread_sanitizer)
inline constexpr bool tsan_build = true;
#else
inline constexpr bool tsan_build = false;
#endif
#if defined(__SANITIZE_ADDRESS__) || RTDEFER_TEST_HAS_FEATURE(address_sanitizer)
inline constexpr bool asan_build = true;
#else
inline constexpr bool asan_build = false;
#endif
/// ASan and TSan intercept mlockall and do nothing (sanitizer_common), so nothing is locked there.
inline constexpr bool mlockall_intercepted = asan_build || tsan_build;

/// One pause of a spin-wait (PAUSE on x86; elsewhere nothing). No syscall: usable inside callbacks
/// that run under RealtimeSanitizer or -Wfunction-effects.
inline void cpu_relax() noexcept RTDEFER_NONBLOCKING {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// Effects: spins until the calling thread has used `d` of CPU time (CLOCK_THREAD_CPUTIME_ID, not
/// wall time: a preempted thread still has work left when it runs again).
inline void burn_cpu(std::chrono::nanoseconds d) noexcept {
    const auto cpu_ns = [] {
        timespec t{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
        return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
    };
    const std::int64_t start = cpu_ns();
    while (cpu_ns() - start < d.count()) {
    }
}

// Defined in tests/main.cpp (linked into every test executable).
const char* current_test_name() noexcept;
void note_skip(const std::string& reason); // records the current test case as skipped, once

/// Polls `pred` every 100 µs until it holds or `limit` passes. Returns: whether it held. For waiting
/// on another thread's progress; the limit only bounds a hang (never a timing assertion).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
}

/// Returns: the lowest CPU the calling thread may run on, or -1 if the affinity cannot be read
/// (tests that pin several threads to one CPU to force an inversion).
inline int first_allowed_cpu() {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &allowed))
            return cpu;
    return -1;
}

/// RTDEFER_STRESS_SCALE as a positive double; 1.0 when unset or malformed (with a warning).
inline double stress_scale() {
    static const double scale = [] {
        const char* env = std::getenv("RTDEFER_STRESS_SCALE");
        if (env == nullptr || *env == '\0') return 1.0;
        char* end = nullptr;
        const double v = std::strtod(env, &end);
        if (end == env || *end != '\0' || !std::isfinite(v) || v <= 0.0) {
            std::fprintf(stderr, "warning: ignoring malformed RTDEFER_STRESS_SCALE=%s\n", env);
            return 1.0;
        }
        return v;
    }();
    return scale;
}

/// n scaled by stress_scale(), but never below min(n, minimum): a low scale shortens a stress
/// test without reducing it to nothing.
inline std::size_t scaled(std::size_t n, std::size_t minimum = 64) {
    const double v = static_cast<double>(n) * stress_scale();
    const std::size_t s = v >= 1.0 ? static_cast<std::size_t>(v) : 0;
    return std::max(s, std::min(n, minimum));
}

struct rt_probe_result {
    bool permitted = false;
    int error = 0;   // errno from pthread_setschedparam, 0 when permitted
    std::string why; // human-readable reason when refused
};

namespace detail {

inline const char* errno_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case ENOTSUP: return "ENOTSUP";
    case ESRCH: return "ESRCH";
    case EAGAIN: return "EAGAIN";
    default: return "errno";
    }
}

// CAP_SYS_NICE (bit 23) in the effective capability set, from /proc/self/status.
inline bool has_cap_sys_nice() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("CapEff:", 0) == 0) {
            unsigned long long caps = 0;
            std::istringstream(line.substr(7)) >> std::hex >> caps;
            return (caps >> 23) & 1ULL;
        }
    }
    return false;
}

inline std::string explain_refusal(int error) {
    if (error != EPERM) return std::string("pthread_setschedparam: ") + std::strerror(error);
    if (geteuid() != 0) {
        rlimit rl{};
        if (getrlimit(RLIMIT_RTPRIO, &rl) == 0 && rl.rlim_cur == 0)
            return "not root and RLIMIT_RTPRIO is 0 (run as root, or raise rtprio in "
                   "/etc/security/limits.conf)";
        return "not root and RLIMIT_RTPRIO is below the requested priority";
    }
    if (!has_cap_sys_nice())
        return "root without CAP_SYS_NICE (container started without --cap-add=SYS_NICE?)";
    return "root with CAP_SYS_NICE, so the cgroup has no real-time bandwidth (cpu.rt_runtime_us 0?)";
}

} // namespace detail

/// Can this process run a thread under SCHED_FIFO? Probed once, on a throwaway thread (so the
/// test thread's own policy is untouched).
inline const rt_probe_result& rt_probe() {
    static const rt_probe_result result = [] {
        rt_probe_result r;
        const char* force = std::getenv("RTDEFER_TEST_NO_RT");
        if (force != nullptr && *force != '\0' && std::strcmp(force, "0") != 0) {
            r.error = EPERM;
            r.why = "RTDEFER_TEST_NO_RT is set";
            return r;
        }
        int err = 0;
        std::thread probe([&err] {
            sched_param sp{};
            sp.sched_priority = sched_get_priority_min(SCHED_FIFO);
            err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
        });
        probe.join();
        r.permitted = err == 0;
        r.error = err;
        if (err != 0) r.why = detail::explain_refusal(err);
        return r;
    }();
    return result;
}

/// Report the current test case as skipped: `SKIP: <test>: <reason>` to stdout and as a doctest
/// MESSAGE. The caller returns right after.
inline void skip_test(const std::string& reason) {
    const std::string line = std::string("SKIP: ") + current_test_name() + ": " + reason;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    MESSAGE(line);
    note_skip(reason);
}

/// True when SCHED_FIFO is permitted; otherwise reports the skip and returns false.
inline bool require_rt() {
    const rt_probe_result& p = rt_probe();
    if (p.permitted) return true;
    skip_test(std::string("SCHED_FIFO refused (") + detail::errno_name(p.error) + "): " + p.why);
    return false;
}

/// Runs `fn` in a forked child, so a test may change process-wide state (signal dispositions,
/// rlimits, uid) or die on purpose. `quiet` silences the child's stdout and stderr (for children
/// meant to abort). Returns: the child's exit code, or 128 + the signal that killed it.
/// tests/main.cpp resets the fatal signals to SIG_DFL in every child (pthread_atfork).
template <class F> int in_child(F&& fn, bool quiet = false) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (quiet) {
            (void)std::freopen("/dev/null", "w", stderr);
            (void)std::freopen("/dev/null", "w", stdout);
        }
        ::_exit(fn());
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/// Effects: installs a seccomp filter on the calling thread (and what it creates) that makes system
/// call `nr` fail with `err` and allows everything else. For in_child() bodies only: it cannot be
/// undone. Returns: whether the filter is in place.
inline bool refuse_syscall(long nr, int err) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0;
}

/// Returns: whether an in_child() result is an abort (RTDEFER_ASSERT). Under RealtimeSanitizer a
/// violation the sanitizer sees first exits with its own code, 43.
inline bool aborted(int rc) {
    if (RTDEFER_HAS_RTSAN && rc == 43) return true;
    return rc == 128 + SIGABRT;
}

} // namespace rtdefer_test

/// In a TEST_CASE body: return (reported as a skip) unless SCHED_FIFO is permitted.
#define RTDEFER_REQUIRE_RT_OR_SKIP()                                                               \
    do {                                                                                           \
        if (!::rtdefer_test::require_rt()) return;                                                 \
    } while (false)
