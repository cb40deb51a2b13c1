// rtdefer/interrupt.hpp: the library's "hard interrupt": one real-time signal, delivered to a chosen
// thread with tgkill (the IPI), whose handler runs every registered interrupt hook on that thread.
//
//   kernel                         rtdefer
//   arch_send_call_function_ipi    send_ipi(thread_ctx&)              (tgkill with the interrupt signal)
//   hard IRQ handler               interrupt hooks, in signal context (async-signal-safe code only)
//   in_hardirq()                   in_interrupt()
//
// The signal is installed without SA_RESTART, so a blocking syscall in the target returns EINTR and
// its safe-point loop comes round (task_work's notify::signal relies on this).
//
// Hooks are registered once at setup (irq_work runs the raised list, the deferred word runs its IPI
// work). Each hook must check its own pending state cheaply: every interrupt calls every hook, as
// the kernel's IPI handlers each check their own lists.
//
// The signal must be unblocked in threads that should receive interrupts (it is, unless the program
// blocks it: threads inherit the creator's mask).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <mutex>

#include <signal.h>

namespace rtdefer {

/// A function run in interrupt (signal) context on the interrupted thread. `self` is that thread's
/// ctx, or nullptr if the thread is not attached. Must be async-signal-safe and nonblocking.
using interrupt_hook = void (*)(thread_ctx* self) noexcept RTDEFER_NONBLOCKING;

namespace detail {

struct interrupt_globals {
    static constexpr std::size_t max_hooks = 16;
    // (I1) release on install / acquire in send_ipi: a sender that sees the signal number sees the
    // handler installed (sigaction happened before the store).
    std::atomic<int> signo{0};
    // Hooks are appended under `setup`; the handler reads `count` (acquire, pairs with release (I2)
    // in interrupt_register_hook) and then the slots, which are never rewritten once published.
    std::array<std::atomic<interrupt_hook>, max_hooks> hooks{};
    std::atomic<std::size_t> count{0};
    std::mutex setup;
};

/// constinit: constant-initialised before any code runs, so the handler may read it at any time.
constinit inline interrupt_globals interrupt_state_global{};

inline interrupt_globals& interrupts() noexcept RTDEFER_NONBLOCKING { return interrupt_state_global; }

/// Nesting depth of the interrupt handler on this thread (constant-initialised TLS int; see
/// tls_ctx in thread.hpp for why the access is trusted).
inline thread_local int interrupt_depth = 0;

inline int interrupt_depth_add(int d) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return interrupt_depth += d;
    RTDEFER_EFFECTS_TRUST_END
}

inline void interrupt_handler(int, siginfo_t*, void*) noexcept RTDEFER_NONBLOCKING {
    const int saved_errno = errno_load();
    interrupt_depth_add(1);
    thread_ctx* self = tls_ctx_load();
    if (self != nullptr)
        // relaxed: a statistic; tests read it after joining or with their own synchronisation.
        self->irq.received.fetch_add(1, std::memory_order_relaxed);
    auto& g = interrupts();
    // (I3) acquire: pairs with release (I2): every slot below `n` is published.
    const std::size_t n = g.count.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
        // relaxed: the slot was published before (I2); it is never written again.
        if (interrupt_hook hook = g.hooks[i].load(std::memory_order_relaxed))
            hook(self);
    }
    interrupt_depth_add(-1);
    errno_store(saved_errno);
}

} // namespace detail

/// Returns: the default interrupt signal, SIGRTMIN+4 (above the ones glibc and common libraries take).
[[nodiscard]] inline int default_interrupt_signal() noexcept { return SIGRTMIN + 4; }

/// Effects: installs the interrupt handler for `signo` (process-wide).
/// Returns: ok (also if already installed for this signo); signal_in_use if the signal has a
/// handler that is not ours (nothing is changed); busy if another signal is already rtdefer's
/// interrupt signal; invalid_argument for a signal outside SIGRTMIN..SIGRTMAX; system_error if
/// sigaction fails. Progress: blocking (setup lock). Real-time safety: setup path.
[[nodiscard]] inline status interrupt_install(int signo = default_interrupt_signal()) noexcept {
    if (signo < SIGRTMIN || signo > SIGRTMAX)
        return status::invalid_argument;
    auto& g = detail::interrupts();
    std::lock_guard<std::mutex> guard(g.setup);
    // relaxed: writers are serialised by `setup`.
    const int current = g.signo.load(std::memory_order_relaxed);
    if (current == signo)
        return status::ok;
    if (current != 0)
        return status::busy;
    struct sigaction old {};
    if (::sigaction(signo, nullptr, &old) != 0)
        return status::system_error;
    const bool foreign = (old.sa_flags & SA_SIGINFO) != 0 ? old.sa_sigaction != nullptr
                                                           : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
    if (foreign)
        return status::signal_in_use;
    struct sigaction sa {};
    sa.sa_sigaction = &detail::interrupt_handler;
    sa.sa_flags = SA_SIGINFO; // no SA_RESTART: blocking syscalls must return EINTR
    sigemptyset(&sa.sa_mask);
    if (::sigaction(signo, &sa, nullptr) != 0)
        return status::system_error;
    // (I1) release: pairs with acquire in send_ipi()/interrupt_signal().
    g.signo.store(signo, std::memory_order_release);
    return status::ok;
}

/// Returns: the installed interrupt signal, or 0 if none.
[[nodiscard]] inline int interrupt_signal() noexcept RTDEFER_NONBLOCKING {
    // (I1) acquire: pairs with the release store in interrupt_install().
    return detail::interrupts().signo.load(std::memory_order_acquire);
}

/// Effects: adds `hook` to the hooks every interrupt runs. Registering the same hook twice is a no-op.
/// Returns: ok, or no_space when the fixed table (16 hooks) is full.
/// Progress: blocking (setup lock). Real-time safety: setup path.
[[nodiscard]] inline status interrupt_register_hook(interrupt_hook hook) noexcept {
    if (hook == nullptr)
        return status::invalid_argument;
    auto& g = detail::interrupts();
    std::lock_guard<std::mutex> guard(g.setup);
    // relaxed: writers are serialised by `setup`.
    const std::size_t n = g.count.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i)
        if (g.hooks[i].load(std::memory_order_relaxed) == hook)
            return status::ok;
    if (n == detail::interrupt_globals::max_hooks)
        return status::no_space;
    // relaxed: published by the release below.
    g.hooks[n].store(hook, std::memory_order_relaxed);
    // (I2) release: pairs with acquire (I3) in the handler.
    g.count.store(n + 1, std::memory_order_release);
    return status::ok;
}

/// Effects: raises the interrupt on `target`'s thread (tgkill): its handler runs the hooks there,
/// and a blocking syscall in that thread returns EINTR.
/// Returns: ok; not_installed if interrupt_install() has not run; exited if the thread is gone;
/// system_error for any other tgkill failure.
/// Progress: one syscall. Real-time safety: no allocation, no lock; async-signal-safe.
/// Note: the tid is checked against `exited` first; a thread that exits in between may have its tid
/// reused by a new thread of this process, which then runs the (idempotent) hooks spuriously.
[[nodiscard]] inline status send_ipi(thread_ctx& target) noexcept RTDEFER_NONBLOCKING {
    const int signo = interrupt_signal();
    if (signo == 0)
        return status::not_installed;
    if (target.exited())
        return status::exited;
    const int rc = detail::tgkill(target.tgid, target.tid, signo);
    if (rc == 0)
        return status::ok;
    return rc == -ESRCH ? status::exited : status::system_error;
}

/// Returns: true while the calling thread runs the interrupt handler (hard interrupt context).
[[nodiscard]] inline bool in_interrupt() noexcept RTDEFER_NONBLOCKING { return detail::interrupt_depth_add(0) > 0; }

/// Returns: how many interrupt signals `ctx`'s thread has handled.
[[nodiscard]] inline std::uint64_t interrupts_received(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
    // relaxed: a statistic; see interrupt_handler().
    return ctx.irq.received.load(std::memory_order_relaxed);
}

} // namespace rtdefer
