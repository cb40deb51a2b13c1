// rtdefer/detail/memlock.hpp: how much of the process to mlockall, decided against RLIMIT_MEMLOCK.
//
// mlockall(MCL_FUTURE) succeeds under any limit, and then every later mapping must fit in what is
// left of it: a thread stack (8 MiB by default) or a malloc arena (64 MiB reserved) that does not fit
// fails with EAGAIN/ENOMEM. Under the unprivileged default (8 MiB) the next pthread_create after it
// fails. So a lock is taken only where it leaves room for what comes after:
//
//   privilege / limit                                   locks
//   CAP_IPC_LOCK (root) or RLIMIT_MEMLOCK unlimited     MCL_CURRENT | MCL_FUTURE
//   limit >= VmSize + margin                            MCL_CURRENT | MCL_FUTURE
//   VmSize + slack <= limit < VmSize + margin           MCL_CURRENT only (later mappings unlocked)
//   limit < VmSize + slack                              nothing (MCL_CURRENT would fail: ENOMEM)
//
// The kernel checks MCL_CURRENT against the whole mapped size (VmSize), not the resident set, so
// VmSize is what is compared. The margin (memlock_margin()) is a judgement, not a proof: room for 32
// default thread stacks and 256 MiB of heap mappings; a process that maps more after locking still
// hits the limit, with or without rtdefer.
//
// One mlockall() replaces the previous flags: a call that decides MCL_CURRENT only also ends an
// earlier MCL_FUTURE, which is what a process that has outgrown its margin needs.
#pragma once

#include <rtdefer/config.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>

namespace rtdefer {

/// What a memory lock covers.
enum class memlock_level : std::uint8_t {
    none,               ///< nothing locked
    current,            ///< mlockall(MCL_CURRENT): the pages mapped now; later mappings are not locked
    current_and_future, ///< mlockall(MCL_CURRENT|MCL_FUTURE)
};

/// Returns: the level's name. Progress: wait-free. Real-time safety: safe (no allocation).
[[nodiscard]] constexpr const char* to_string(memlock_level l) noexcept {
    return l == memlock_level::current_and_future ? "MCL_CURRENT|MCL_FUTURE"
           : l == memlock_level::current          ? "MCL_CURRENT only"
                                                  : "nothing";
}

/// The inputs of the decision (from the running process, or given by a test).
struct memlock_inputs {
    bool privileged = false;          ///< CAP_IPC_LOCK in the effective set: the limit does not apply
    bool unlimited = false;           ///< RLIMIT_MEMLOCK soft limit is RLIM_INFINITY
    std::uint64_t limit = 0;          ///< RLIMIT_MEMLOCK soft limit in bytes (when not unlimited)
    std::uint64_t mapped = 0;         ///< VmSize in bytes
    std::uint64_t margin = 0;         ///< room to leave for later mappings under MCL_FUTURE
};

/// What was decided and done, for reports (rt_thread's sched_report, the bench header).
struct memlock_result {
    memlock_level planned = memlock_level::none; ///< what the decision allowed
    memlock_level locked = memlock_level::none;  ///< what is in force after the call
    int error = 0;                               ///< errno of a failed mlockall, else 0
    memlock_inputs in;

    /// Returns: e.g. "mlockall(MCL_CURRENT only) in force: RLIMIT_MEMLOCK 64 MiB < mapped 30 MiB +
    /// margin 512 MiB, so no MCL_FUTURE". Progress: blocking (allocates). Real-time safety: reporting only.
    [[nodiscard]] std::string describe() const;
};

namespace detail {

/// Slack MCL_CURRENT needs above VmSize: the kernel checks the size at the call, and another thread
/// may map a little between our look at /proc and the call. Small, because MCL_CURRENT alone costs
/// later mappings nothing: a bench of 6 MiB under the 8 MiB default still gets its pages locked.
inline constexpr std::uint64_t memlock_slack = std::uint64_t{1} << 20;

/// Returns: what may be locked given `in` (the table at the top of this file). Pure: tests feed it
/// chosen limits. Progress: wait-free. Real-time safety: safe.
[[nodiscard]] constexpr memlock_level decide_memlock(const memlock_inputs& in) noexcept {
    if (in.privileged || in.unlimited)
        return memlock_level::current_and_future;
    if (in.limit >= in.mapped + in.margin)
        return memlock_level::current_and_future;
    if (in.limit >= in.mapped + memlock_slack)
        return memlock_level::current;
    return memlock_level::none;
}

/// Returns: the default margin: 32 default thread stacks plus 256 MiB for heap mappings.
/// Progress: blocking (glibc takes a lock). Real-time safety: setup path only.
inline std::uint64_t memlock_margin() noexcept {
    std::size_t stack = std::size_t{8} << 20;
    pthread_attr_t attr;
    if (::pthread_getattr_default_np(&attr) == 0) {
        (void)::pthread_attr_getstacksize(&attr, &stack);
        ::pthread_attr_destroy(&attr);
    }
    return std::uint64_t{32} * stack + (std::uint64_t{256} << 20);
}

/// Effects: reads VmSize (bytes) and CAP_IPC_LOCK from /proc/self/status. Returns: false if
/// unreadable. Progress: blocking (file I/O). Real-time safety: setup path only.
inline bool read_proc_status(std::uint64_t& vm_size, bool& cap_ipc_lock) noexcept {
    std::FILE* f = std::fopen("/proc/self/status", "re");
    if (f == nullptr)
        return false;
    char line[256];
    bool have_size = false;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        unsigned long long v = 0;
        if (std::sscanf(line, "VmSize: %llu kB", &v) == 1) {
            vm_size = static_cast<std::uint64_t>(v) << 10;
            have_size = true;
        } else if (std::sscanf(line, "CapEff: %llx", &v) == 1) {
            cap_ipc_lock = ((v >> 14) & 1ULL) != 0; // CAP_IPC_LOCK is capability 14
        }
    }
    std::fclose(f);
    return have_size;
}

/// Returns: the decision inputs for the calling process, with `margin`. Progress: blocking (reads
/// /proc). Real-time safety: setup path only.
inline memlock_inputs current_memlock_inputs(std::uint64_t margin) noexcept {
    memlock_inputs in;
    in.margin = margin;
    rlimit rl{};
    if (::getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        in.unlimited = rl.rlim_cur == RLIM_INFINITY;
        in.limit = in.unlimited ? 0 : static_cast<std::uint64_t>(rl.rlim_cur);
    }
    if (!read_proc_status(in.mapped, in.privileged))
        in.mapped = ~std::uint64_t{0} >> 1; // unknown: assume too big to lock unless privileged/unlimited
    return in;
}

/// Effects: decides from the process's limit, size and privilege, then mlockall()s accordingly (a
/// `none` decision calls nothing). Returns: the result. Progress: blocking (reads /proc, faults pages
/// in). Real-time safety: setup path only.
inline memlock_result lock_process_memory(std::uint64_t margin = memlock_margin()) noexcept {
    memlock_result r;
    r.in = current_memlock_inputs(margin);
    r.planned = decide_memlock(r.in);
    if (r.planned == memlock_level::none)
        return r;
    const int flags = r.planned == memlock_level::current_and_future ? (MCL_CURRENT | MCL_FUTURE) : MCL_CURRENT;
    if (::mlockall(flags) == 0)
        r.locked = r.planned;
    else
        r.error = errno;
    return r;
}

} // namespace detail

inline std::string memlock_result::describe() const {
    const auto mib = [](std::uint64_t b) { return std::to_string((b + (1u << 19)) >> 20) + " MiB"; };
    std::string s = "mlockall(" + std::string(to_string(planned)) + ")";
    if (planned == memlock_level::none)
        s = "memory not locked";
    else if (error != 0)
        s += " failed: " + std::string(std::strerror(error)) + "; this call locked nothing";
    else
        s += " in force";
    if (in.privileged)
        s += " (CAP_IPC_LOCK: no limit applies)";
    else if (in.unlimited)
        s += " (RLIMIT_MEMLOCK unlimited)";
    else if (planned == memlock_level::current_and_future)
        s += " (RLIMIT_MEMLOCK " + mib(in.limit) + " >= mapped " + mib(in.mapped) + " + margin " + mib(in.margin) + ")";
    else
        s += ": RLIMIT_MEMLOCK " + mib(in.limit) + " < mapped " + mib(in.mapped) +
             (planned == memlock_level::current ? " + margin " + mib(in.margin) + ", so no MCL_FUTURE"
                                                : " + " + mib(detail::memlock_slack) + " slack");
    return s;
}

} // namespace rtdefer
