// rtdefer/status.hpp: the one result type of every rtdefer operation, with std::error_code interop.
//
// Hot paths return `status` by value ([[nodiscard]] at each function) instead of throwing: a status
// is one register, to_string() is a table lookup, and neither allocates. Setup paths that may throw
// say so in their docs and throw std::system_error carrying a status or an errno.
#pragma once

#include <rtdefer/config.hpp>

#include <string>
#include <system_error>
#include <type_traits>

namespace rtdefer {

/// Every value has exactly one meaning, given here and nowhere else; a function's Returns lists
/// which values it returns. tests/status_test.cpp reaches each value through a real library call.
enum class status : int {
    ok = 0,           ///< done as asked
    already_queued,   ///< the item is already queued/in flight; the earlier queueing will run it
    exited,           ///< the target (thread, loop) has exited; the item is untouched and still the caller's
    would_deadlock,   ///< the wait would never end: waiting on yourself (e.g. cancel_sync from the item's own callback)
    not_accepting,    ///< deferred word: the target is not in an isolated section (nothing was set)
    cancelling,       ///< a cancel_sync of this item is in progress: the (re)arm was refused
    timed_out,        ///< a deadline passed (or a baseline spin wait was told to give up)
    interrupted,      ///< a signal interrupted a wait (EINTR)
    removed,          ///< cancel: the item was pending and has been removed before it ran
    moved,            ///< arm: the item was pending; that expiry was replaced by the new one (mod_timer's 1)
    waited,           ///< cancel_sync: the callback was running; it has finished
    idle,             ///< cancel/wait: the item was neither pending nor running: nothing to do
    busy,             ///< what was asked for is held by another user (a bit bound to another callback,
                      ///< an item still queued, an IPI still in flight)
    signal_in_use,    ///< the interrupt signal already has a handler that is not rtdefer's
    not_installed,    ///< the facility this needs (interrupt signal, work bit, hook) is not installed
    invalid_argument, ///< a bad argument (CPU out of range, bad signal number, null callback, ...)
    not_permitted,    ///< EPERM/EACCES: refused by policy (e.g. io_uring disabled by sysctl or seccomp)
    no_space,         ///< a bounded table or queue is full (or the kernel's EAGAIN/ENOMEM for one)
    not_supported,    ///< the facility is missing here (e.g. no io_uring: the futex backend cannot do it)
    system_error,     ///< an unexpected errno from the OS
};

/// Returns: a short, stable, lower-case name ("already_queued"). Wait-free, async-signal-safe.
/// The switch is exhaustive (no default), so -Wswitch flags a value added without a name.
constexpr const char* to_string(status s) noexcept RTDEFER_NONBLOCKING {
    switch (s) {
    case status::ok: return "ok";
    case status::already_queued: return "already_queued";
    case status::exited: return "exited";
    case status::would_deadlock: return "would_deadlock";
    case status::not_accepting: return "not_accepting";
    case status::cancelling: return "cancelling";
    case status::timed_out: return "timed_out";
    case status::interrupted: return "interrupted";
    case status::removed: return "removed";
    case status::moved: return "moved";
    case status::waited: return "waited";
    case status::idle: return "idle";
    case status::busy: return "busy";
    case status::signal_in_use: return "signal_in_use";
    case status::not_installed: return "not_installed";
    case status::invalid_argument: return "invalid_argument";
    case status::not_permitted: return "not_permitted";
    case status::no_space: return "no_space";
    case status::not_supported: return "not_supported";
    case status::system_error: return "system_error";
    }
    return "unknown_status";
}

/// Returns: true for the outcomes that mean "the operation did what was asked": ok, arm's moved,
/// and the cancel outcomes (removed, waited, idle).
constexpr bool succeeded(status s) noexcept RTDEFER_NONBLOCKING {
    return s == status::ok || s == status::moved || s == status::removed || s == status::waited ||
           s == status::idle;
}

namespace detail {

class status_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "rtdefer"; }
    std::string message(int v) const override { return to_string(static_cast<status>(v)); }
    std::error_condition default_error_condition(int v) const noexcept override {
        switch (static_cast<status>(v)) {
        case status::would_deadlock: return std::errc::resource_deadlock_would_occur;
        case status::timed_out: return std::errc::timed_out;
        case status::interrupted: return std::errc::interrupted;
        case status::busy: return std::errc::device_or_resource_busy;
        case status::invalid_argument: return std::errc::invalid_argument;
        case status::not_permitted: return std::errc::operation_not_permitted;
        case status::no_space: return std::errc::no_buffer_space;
        case status::not_supported: return std::errc::not_supported;
        case status::exited: return std::errc::no_such_process;
        default: return std::error_condition(v, *this);
        }
    }
};

} // namespace detail

/// Returns: the error category of `status` (a function-local static: thread-safe, no allocation
/// after first use; call it from setup code first if a hot path will need it).
inline const std::error_category& status_category() noexcept {
    static const detail::status_category_impl category;
    return category;
}

/// std::error_code interop: `std::error_code ec = status::exited;`.
inline std::error_code make_error_code(status s) noexcept {
    return {static_cast<int>(s), status_category()};
}

} // namespace rtdefer

template <> struct std::is_error_code_enum<rtdefer::status> : std::true_type {};
