// rtdefer/detail/cpu_clock.hpp: nanosecond reads of CPU and monotonic clocks for cpu_timer, from
// thread or signal context. A thread CPU clock read is a real syscall (the vDSO does not serve CPU
// clocks, ~200 ns); CLOCK_MONOTONIC goes through the vDSO.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/syscall.hpp>

#include <cstdint>
#include <ctime>

#include <sys/syscall.h>
#include <time.h>

namespace rtdefer::detail {

inline std::uint64_t ts_ns(const timespec& ts) noexcept RTDEFER_NONBLOCKING {
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
inline timespec ns_ts(std::uint64_t ns) noexcept RTDEFER_NONBLOCKING {
    return timespec{static_cast<time_t>(ns / 1'000'000'000u), static_cast<long>(ns % 1'000'000'000u)};
}
/// Returns: `clk` now in ns (0 on failure). A real syscall for CPU clocks (~200 ns); async-signal-safe.
inline std::uint64_t clock_ns(clockid_t clk) noexcept RTDEFER_NONBLOCKING {
    timespec ts{};
    if (raw_syscall(SYS_clock_gettime, clk, &ts) != 0)
        return 0;
    return ts_ns(ts);
}
/// Returns: CLOCK_MONOTONIC in ns through the vDSO (no syscall). Async-signal-safe.
inline std::uint64_t mono_ns() noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts_ns(ts);
    RTDEFER_EFFECTS_TRUST_END
}

} // namespace rtdefer::detail
