// rtdefer/config.hpp: compiler feature macros shared by every header.
//
// RTDEFER_NONBLOCKING marks hot paths: no allocation, no locks, no blocking syscall. With clang >= 20
// it is [[clang::nonblocking]], which -Wfunction-effects checks at compile time and RealtimeSanitizer
// (-fsanitize=realtime) checks at run time. Elsewhere it expands to nothing.
// Placement: after `noexcept`, e.g. `bool add(llist_node&) noexcept RTDEFER_NONBLOCKING;`.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#if defined(__has_cpp_attribute)
#if __has_cpp_attribute(clang::nonblocking)
#define RTDEFER_NONBLOCKING [[clang::nonblocking]]
#define RTDEFER_BLOCKING [[clang::blocking]]
#define RTDEFER_HAS_FUNCTION_EFFECTS 1
#endif
#endif
#ifndef RTDEFER_NONBLOCKING
#define RTDEFER_NONBLOCKING
#define RTDEFER_BLOCKING
#define RTDEFER_HAS_FUNCTION_EFFECTS 0
#endif

#if defined(__has_feature)
#if __has_feature(realtime_sanitizer)
#define RTDEFER_HAS_RTSAN 1
#endif
#endif
#ifndef RTDEFER_HAS_RTSAN
#define RTDEFER_HAS_RTSAN 0
#endif

#if RTDEFER_HAS_RTSAN
#include <sanitizer/rtsan_interface.h>
#endif

// Where a nonblocking function deliberately makes a syscall (the wake on empty→non-empty, an IPI),
// the call is wrapped in these: -Wfunction-effects is told to trust it and RealtimeSanitizer is paused.
// Inside the library only, and each use says why the call is safe; users have RTDEFER_TRUSTED_CALL.
#if RTDEFER_HAS_FUNCTION_EFFECTS
#define RTDEFER_EFFECTS_TRUST_BEGIN                                                                \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wfunction-effects\"")
#define RTDEFER_EFFECTS_TRUST_END _Pragma("clang diagnostic pop")
#else
#define RTDEFER_EFFECTS_TRUST_BEGIN
#define RTDEFER_EFFECTS_TRUST_END
#endif

/// Public: marks one call that the caller has audited as real-time safe, where -Wfunction-effects
/// cannot see it (a C library call with no annotation: jack_port_get_buffer, clock_gettime on the
/// vDSO, a driver's ioctl you know never blocks). It silences the compile-time check for that
/// expression only; RealtimeSanitizer still checks the call at run time, so a trusted call that does
/// allocate or lock is still reported there.
///
///   void process(jack_nframes_t n) noexcept RTDEFER_NONBLOCKING {
///       auto* out = RTDEFER_TRUSTED_CALL(static_cast<float*>(jack_port_get_buffer(port, n)));
///
/// The value of the expression is the value of the call. Expands to the expression itself where the
/// compiler has no function effects.
#define RTDEFER_TRUSTED_CALL(...) (RTDEFER_EFFECTS_TRUST_BEGIN(__VA_ARGS__) RTDEFER_EFFECTS_TRUST_END)

#define RTDEFER_LIKELY(x) __builtin_expect(!!(x), 1)
#define RTDEFER_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace rtdefer {

/// Destructive-interference size used to keep independently written words apart.
/// 64 on every x86-64 and most AArch64 parts; std::hardware_destructive_interference_size is
/// avoided because gcc warns that its value may differ between translation units.
inline constexpr std::size_t cacheline_size = 64;

namespace detail {

/// Reports a broken precondition (library misuse) and aborts. Cold, so never on a hot path's fast
/// side; async-signal-safe enough for misuse reporting (fputs to an unbuffered stderr, then abort).
[[noreturn, gnu::cold, gnu::noinline]] inline void assert_fail(const char* expr, const char* msg,
                                                              const char* file, int line) noexcept {
#if RTDEFER_HAS_RTSAN
    // The report must reach the user as ours, not as a sanitizer complaint about fprintf/abort
    // in a nonblocking caller: the process is going down either way.
    __rtsan_disable();
#endif
    std::fprintf(stderr, "rtdefer: %s:%d: %s (%s)\n", file, line, msg, expr);
    std::abort();
}

/// A full (seq_cst) fence, for store→load (Dekker) pairs; each call site names its partner.
/// GCC refuses std::atomic_thread_fence under -fsanitize=thread (-Wtsan: TSan does not model
/// fences); the builtin is the same instruction, and the synchronisation TSan must see goes through
/// the acquire/release operations around it.
inline void full_fence() noexcept RTDEFER_NONBLOCKING {
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

} // namespace detail
} // namespace rtdefer

/// Misuse check, active in every build type: misuse must be a clear message, never a hang or a
/// silent corruption. The check itself is a predictable branch; the report is out of line.
#define RTDEFER_ASSERT(cond, msg)                                                                  \
    do {                                                                                           \
        if (RTDEFER_UNLIKELY(!(cond))) {                                                           \
            RTDEFER_EFFECTS_TRUST_BEGIN                                                            \
            ::rtdefer::detail::assert_fail(#cond, msg, __FILE__, __LINE__);                        \
            RTDEFER_EFFECTS_TRUST_END                                                              \
        }                                                                                          \
    } while (0)
