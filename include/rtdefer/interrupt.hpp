// rtdefer/interrupt.hpp: the library's "hard interrupt": one real-time signal, delivered to a chosen
// thread (the IPI), whose handler runs every registered interrupt hook on that thread.
//
//   kernel                         rtdefer
//   arch_send_call_function_ipi    send_ipi(thread_ctx&)              (tgkill with the interrupt signal)
//   IPI vector (which handler)     send_ipi(thread_ctx&, source)      (rt_tgsigqueueinfo, tag in si_value)
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
// Tags. One signal serves every subsystem, so a hook that must know whether an interrupt is its own
// (the deferred word clears its INFLIGHT flag only for its own signal) needs the sender to say so:
// send_ipi(target, src) queues the signal with rt_tgsigqueueinfo, si_code SI_QUEUE, si_pid/si_uid
// ours and si_value.sival_int = interrupt_tag(src); the handler decodes it and passes the source
// to tagged hooks (interrupt_tagged_hook). A POSIX timer whose sigev_value.sival_int is
// interrupt_tag(src) (si_code SI_TIMER) is decoded the same way. Everything else is `untagged`:
// send_ipi(target) (tgkill: the cheaper send, for subsystems whose hooks only check their own
// lists), a foreign sigqueue, a timer with another sigev_value. Hooks with the old signature
// (interrupt_hook) run on every interrupt whatever its source, as before.
//
// Queueing and coalescing. Real-time signals queue; they are never coalesced: each pending one holds
// one slot of the receiving user's RLIMIT_SIGPENDING until it is handled, whether it was sent with
// rt_tgsigqueueinfo or with tgkill (both carry siginfo; the kernel fails both with EAGAIN when no
// slot is left, rather than deliver without information). So n sends to a thread that has the
// signal blocked (or has not run yet) cost n handler runs later, and a flood can exhaust the limit
// for every thread of that user. rtdefer's senders signal only on an empty→non-empty transition,
// which bounds them to one pending signal per subsystem and target; send_ipi returns no_space on
// EAGAIN and sends nothing: the caller falls back to its own non-signal path (the deferred word
// leaves the work pending for the target's next enter, interrupt or exit; irq_work's worker
// interrupts itself from its loop). There is no silent fallback to an untagged send: with the queue
// full it would fail the same way.
//
// The signal must be unblocked in threads that should receive interrupts (it is, unless the program
// blocks it: threads inherit the creator's mask).
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/setup_lock.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>

#include <signal.h>

namespace rtdefer {

/// A function run in interrupt (signal) context on the interrupted thread. `self` is that thread's
/// ctx, or nullptr if the thread is not attached. Must be async-signal-safe and nonblocking.
/// Runs on every interrupt, whatever its source.
using interrupt_hook = void (*)(thread_ctx* self) noexcept RTDEFER_NONBLOCKING;

/// Who sent an interrupt (the tag in si_value; see "Tags" above). The values are part of the ABI
/// between senders and hooks of one program; `cpu_timer` is reserved for the CPU-time timer, whose
/// POSIX timers carry sigev_value.sival_int = interrupt_tag(interrupt_source::cpu_timer).
enum class interrupt_source : std::uint8_t {
    untagged = 0,      ///< tgkill (send_ipi without a source), or a signal without a valid tag
    task_work = 1,     ///< task_work's notify::signal
    irq_work = 2,      ///< irq_work's hard raise
    deferred_word = 3, ///< the deferred word's IPI (its hook clears INFLIGHT only for these)
    cpu_timer = 4,     ///< reserved: CPU-time timer expiry (SI_TIMER with the tag as sigev_value)
    user = 5,          ///< the application's own interrupts
};
inline constexpr std::size_t interrupt_source_count = 6;

/// A hook that is told the interrupt's source (untagged when the signal carries no valid tag).
/// Same rules as interrupt_hook; runs on every interrupt and decides by `src` what to do.
using interrupt_tagged_hook = void (*)(thread_ctx* self, interrupt_source src) noexcept RTDEFER_NONBLOCKING;

/// Returns: the si_value.sival_int (or sigev_value.sival_int) that tags an interrupt from `src`: a
/// fixed marker in the upper 16 bits (so a stray value is not taken for a tag), the source below.
/// Progress: wait-free, constexpr. Real-time safety: yes.
[[nodiscard]] constexpr int interrupt_tag(interrupt_source src) noexcept {
    return 0x52440000 | static_cast<int>(src); // 0x5244 = "RD"
}

/// Returns: the source a tag value stands for; untagged for a value interrupt_tag() never returns.
/// Progress: wait-free, constexpr. Real-time safety: yes; async-signal-safe.
[[nodiscard]] constexpr interrupt_source interrupt_source_of_tag(int value) noexcept {
    const unsigned v = static_cast<unsigned>(value);
    if ((v & 0xFFFF0000u) != 0x52440000u || (v & 0xFFFFu) >= interrupt_source_count)
        return interrupt_source::untagged;
    return static_cast<interrupt_source>(v & 0xFFFFu);
}

namespace detail {

struct interrupt_globals {
    static constexpr std::size_t max_hooks = 16;
    // (I1) release on install / acquire in send_ipi: a sender that sees the signal number sees the
    // handler installed (sigaction happened before the store).
    std::atomic<int> signo{0};
    // The uid at install, for si_uid of tagged sends (getuid() would be a syscall per send);
    // relaxed: written before (I1) and read after it.
    std::atomic<uid_t> uid{0};
    // Hooks are appended under `setup`; the handler reads `count` (acquire, pairs with release (I2)
    // in interrupt_register_hook) and then the slots, which are never rewritten once published.
    // A slot holds a plain hook or a tagged one, never both.
    std::array<std::atomic<interrupt_hook>, max_hooks> hooks{};
    std::array<std::atomic<interrupt_tagged_hook>, max_hooks> tagged{};
    std::atomic<std::size_t> count{0};
    setup_mutex setup;
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

/// glibc's cancellation signal (SIGCANCEL) is the kernel's first real-time signal. glibc hides it:
/// sigaddset() refuses it, but sigaction() passes sa_mask to the kernel as given.
inline constexpr int glibc_sigcancel = 32;

/// Adds `signo` to `set` by its bit, as the kernel reads a sigset (glibc's and musl's sigset_t are
/// arrays of unsigned long, signal n at bit n-1). For signals sigaddset() will not touch.
inline void sigset_add_raw(sigset_t& set, int signo) noexcept {
    constexpr int bits = 8 * static_cast<int>(sizeof(unsigned long));
    auto* words = reinterpret_cast<unsigned long*>(&set);
    words[(signo - 1) / bits] |= 1ul << ((signo - 1) % bits);
}

/// The source of a delivered interrupt: a tag is believed only from a queued signal sent by this
/// process (SI_QUEUE, si_pid = our tgid as our senders set it) or from a POSIX timer (SI_TIMER:
/// timers signal only the process that created them). Async-signal-safe.
inline interrupt_source interrupt_source_of(const siginfo_t* info, const thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (info == nullptr)
        return interrupt_source::untagged;
    if (info->si_code == SI_QUEUE) {
        if (self != nullptr && info->si_pid != self->tgid)
            return interrupt_source::untagged;
    } else if (info->si_code != SI_TIMER) {
        return interrupt_source::untagged; // tgkill (SI_TKILL), kill (SI_USER), ...
    }
    return interrupt_source_of_tag(info->si_value.sival_int);
}

inline void interrupt_handler(int, siginfo_t* info, void*) noexcept RTDEFER_NONBLOCKING {
    const int saved_errno = errno_load();
    interrupt_depth_add(1);
    thread_ctx* self = tls_ctx_load();
    const interrupt_source src = interrupt_source_of(info, self);
    if (self != nullptr)
        // relaxed: a statistic; tests read it after joining or with their own synchronisation.
        detail::ctx_access::irq(*self).received.fetch_add(1, std::memory_order_relaxed);
    auto& g = interrupts();
    // (I3) acquire: pairs with release (I2): every slot below `n` is published.
    const std::size_t n = g.count.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
        // relaxed: the slot was published before (I2); it is never written again.
        if (interrupt_hook hook = g.hooks[i].load(std::memory_order_relaxed))
            hook(self);
        else if (interrupt_tagged_hook th = g.tagged[i].load(std::memory_order_relaxed))
            th(self, src);
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
    detail::setup_guard guard(g.setup);
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
    // Block glibc's cancellation signal while the hooks run: a hook that has taken work (the deferred
    // word's IPI bits, irq_work's raised list) finishes it before an asynchronous cancellation is
    // acted on, after sigreturn, in the interrupted code (which holds it off itself where it has
    // work in hand: detail/cancel_hold.hpp). Hooks need no cancel_hold of their own.
    detail::sigset_add_raw(sa.sa_mask, detail::glibc_sigcancel);
    if (::sigaction(signo, &sa, nullptr) != 0)
        return status::system_error;
    g.uid.store(::getuid(), std::memory_order_relaxed); // relaxed: published by (I1)
    // (I1) release: pairs with acquire in send_ipi()/interrupt_signal().
    g.signo.store(signo, std::memory_order_release);
    return status::ok;
}

/// Returns: the installed interrupt signal, or 0 if none.
[[nodiscard]] inline int interrupt_signal() noexcept RTDEFER_NONBLOCKING {
    // (I1) acquire: pairs with the release store in interrupt_install().
    return detail::interrupts().signo.load(std::memory_order_acquire);
}

namespace detail {

/// Appends `hook` to `table` (a plain or a tagged slot; the other stays null) unless it is there.
template <class Hook>
status interrupt_add_hook(std::array<std::atomic<Hook>, interrupt_globals::max_hooks>& table, Hook hook) noexcept {
    if (hook == nullptr)
        return status::invalid_argument;
    auto& g = interrupts();
    detail::setup_guard guard(g.setup);
    // relaxed: writers are serialised by `setup`.
    const std::size_t n = g.count.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i)
        if (table[i].load(std::memory_order_relaxed) == hook)
            return status::ok;
    if (n == interrupt_globals::max_hooks)
        return status::no_space;
    // relaxed: published by the release below.
    table[n].store(hook, std::memory_order_relaxed);
    // (I2) release: pairs with acquire (I3) in the handler.
    g.count.store(n + 1, std::memory_order_release);
    return status::ok;
}

} // namespace detail

/// Effects: adds `hook` to the hooks every interrupt runs (of any source). Registering the same hook
/// twice is a no-op.
/// Returns: ok, invalid_argument for a null hook, or no_space when the fixed table (16 hooks, plain
/// and tagged together) is full.
/// Progress: blocking (setup lock). Real-time safety: setup path.
[[nodiscard]] inline status interrupt_register_hook(interrupt_hook hook) noexcept {
    return detail::interrupt_add_hook(detail::interrupts().hooks, hook);
}

/// Returns: invalid_argument (a null hook; this overload keeps `interrupt_register_hook(nullptr)`
/// unambiguous beside the tagged overload). Progress: wait-free. Real-time safety: yes.
[[nodiscard]] inline status interrupt_register_hook(std::nullptr_t) noexcept { return status::invalid_argument; }

/// Effects: adds a tagged hook: it runs on every interrupt, with the interrupt's source (see "Tags"
/// at the top), so it can act on its own interrupts only. Registering it twice is a no-op.
/// Returns: as the untagged overload. Progress: blocking (setup lock). Real-time safety: setup path.
[[nodiscard]] inline status interrupt_register_hook(interrupt_tagged_hook hook) noexcept {
    return detail::interrupt_add_hook(detail::interrupts().tagged, hook);
}

/// Effects: raises the interrupt on `target`'s thread: its handler runs the hooks there, and a
/// blocking syscall in that thread returns EINTR. With `src` untagged (the default) the signal is
/// sent with tgkill and tagged hooks see `untagged`; otherwise it is queued with rt_tgsigqueueinfo
/// carrying interrupt_tag(src) (see "Tags" at the top; one more siginfo copy in the kernel).
/// Returns: ok; not_installed if interrupt_install() has not run; exited if the thread is gone;
/// no_space if the signal queue is full (EAGAIN, RLIMIT_SIGPENDING: nothing was sent; see "Queueing"
/// at the top); system_error for any other failure.
/// Progress: one syscall. Real-time safety: no allocation, no lock; async-signal-safe.
/// Note: the tid is checked against `exited` first; a thread that exits in between may have its tid
/// reused by a new thread of this process, which then runs the (idempotent) hooks spuriously.
[[nodiscard]] inline status send_ipi(thread_ctx& target, interrupt_source src = interrupt_source::untagged) noexcept
    RTDEFER_NONBLOCKING {
    const int signo = interrupt_signal();
    if (signo == 0)
        return status::not_installed;
    if (target.exited())
        return status::exited;
    const int rc = src == interrupt_source::untagged
                       ? detail::tgkill(target.tgid, target.tid, signo)
                       // relaxed: uid was published with the signal number (I1), acquired above.
                       : detail::tgsigqueue(target.tgid, target.tid, signo, interrupt_tag(src),
                                            detail::interrupts().uid.load(std::memory_order_relaxed));
    if (rc == 0)
        return status::ok;
    if (rc == -ESRCH)
        return status::exited;
    return rc == -EAGAIN ? status::no_space : status::system_error;
}

/// Returns: true while the calling thread runs the interrupt handler (hard interrupt context).
[[nodiscard]] inline bool in_interrupt() noexcept RTDEFER_NONBLOCKING { return detail::interrupt_depth_add(0) > 0; }

/// Returns: how many interrupt signals `ctx`'s thread has handled.
[[nodiscard]] inline std::uint64_t interrupts_received(const thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
    // relaxed: a statistic; see interrupt_handler().
    return detail::ctx_access::irq(ctx).received.load(std::memory_order_relaxed);
}

} // namespace rtdefer
