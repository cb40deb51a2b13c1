// rtdefer/thread.hpp: the per-thread control block (the kernel's task_struct), counted references to
// it (get_task_struct/put_task_struct), and attaching/detaching the calling thread.
//
//   thread_ctx     one per attached thread; holds every subsystem's per-thread state.
//   thread_ref     counted reference: copy = get, destroy = put. A waiter that blocks on another
//                  thread's lock holds one, so the ctx cannot be freed under it.
//   attach / detach  attach_this_thread(), try_attach_this_thread(), detach_this_thread(),
//                  current_thread_ctx(); a thread's exit runs the exit hooks (detail/exit_hooks.hpp).
//
// The rest of the thread layer lives in its own headers:
//   <rtdefer/park.hpp>       park / unpark / park_until: the token parker safe-point loops sleep on
//   <rtdefer/rt_thread.hpp>  rt_thread, rt_thread_options, sched_policy, sched_report,
//                            rt_scheduling_permitted()
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cpu_timer_state.hpp>
#include <rtdefer/detail/deferred_word_state.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/interrupt_state.hpp>
#include <rtdefer/detail/park_state.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/detail/task_work_state.hpp>

#include <atomic>
#include <cstdint>
#include <new>
#include <utility>

#include <pthread.h>
#include <unistd.h>

namespace rtdefer {

struct thread_ctx;
thread_ctx& attach_this_thread();
void detach_this_thread() noexcept;

namespace detail {

struct ctx_access;

/// Lifecycle of a thread_ctx.
enum class life : std::uint32_t { alive, exiting, exited };

/// The calling thread's ctx. Constant-initialised and trivially destructible, so access compiles to a
/// plain TLS load in the executable (no wrapper call, no allocation): safe in the signal handler.
/// -Wfunction-effects rejects every thread_local access, because a TLS access in a shared object
/// can allocate on first use (__tls_get_addr); these two are the audited exceptions, reached only
/// through tls_ctx_load/store below. Hot paths still take an explicit thread_ctx&.
inline thread_local thread_ctx* tls_ctx = nullptr;

inline thread_ctx* tls_ctx_load() noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return tls_ctx;
    RTDEFER_EFFECTS_TRUST_END
}

void release_ctx(thread_ctx* ctx) noexcept;

/// Returns: whether `h` is the calling thread. pthread_self()/pthread_equal are register reads and
/// a compare in glibc; not annotated, hence trusted here.
inline bool same_thread(pthread_t h) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    return ::pthread_equal(::pthread_self(), h) != 0;
    RTDEFER_EFFECTS_TRUST_END
}

} // namespace detail

/// Per-thread control block (task_struct). Created by attach_this_thread(), freed when the last
/// thread_ref is dropped after the thread exited. Subsystem headers own their members' protocols and
/// reach them through detail::ctx_access; users observe them through each subsystem's public
/// functions (park_futex_wakes(), interrupts_received(), task_work_pending(), ct_isolated(), ...).
struct thread_ctx {
    thread_ctx(const thread_ctx&) = delete;
    thread_ctx& operator=(const thread_ctx&) = delete;

    pid_t tid = 0;          ///< kernel thread id (for tgkill)
    pid_t tgid = 0;         ///< process id
    pthread_t handle{};     ///< pthread handle (valid while the thread runs)

private:
    friend struct detail::ctx_access;
    detail::park_state park;             ///< futex word for park/unpark (park.hpp)
    detail::interrupt_state irq;         ///< interrupt statistics (interrupt.hpp)
    detail::task_work_state task_work;   ///< task_work list (task_work.hpp)
    detail::deferred_word_state ct;      ///< deferred work word (deferred_word.hpp)
    detail::expiry_lock_state expiry;    ///< expiry lock (expiry_lock.hpp)
    detail::cpu_timer_state cpu_timer;   ///< CPU-time timers (cpu_timer.hpp)

public:
    /// Returns: true once the thread has run its exit hooks (later adds must fail).
    /// acquire: pairs with release (TH2) in detach: whoever sees `exited` sees the hooks' effects.
    [[nodiscard]] bool exited() const noexcept RTDEFER_NONBLOCKING {
        return life_.load(std::memory_order_acquire) == detail::life::exited;
    }

    /// Returns: true while the thread runs its exit hooks or after.
    [[nodiscard]] bool exiting() const noexcept RTDEFER_NONBLOCKING {
        // acquire: as exited(); pairs with release (TH1) in detach.
        return life_.load(std::memory_order_acquire) != detail::life::alive;
    }

    /// Returns: whether the calling thread is this ctx's thread. No TLS access (hot paths assert it):
    /// pthread_self() reads the thread pointer register. A pthread handle may be reused after its
    /// thread ends, so an exited ctx never matches.
    [[nodiscard]] bool is_current() const noexcept RTDEFER_NONBLOCKING {
        return detail::same_thread(handle) && !exited();
    }

    /// Returns: the current reference count (diagnostics and tests).
    [[nodiscard]] std::uint32_t ref_count() const noexcept RTDEFER_NONBLOCKING {
        // relaxed: a snapshot for tests; lifetime decisions use the RMWs in thread_ref.
        return refs_.load(std::memory_order_relaxed);
    }

private:
    thread_ctx() = default;
    ~thread_ctx() = default;

    friend class thread_ref;
    friend thread_ctx& attach_this_thread();
    friend void detach_this_thread() noexcept;
    friend void detail::release_ctx(thread_ctx*) noexcept;

    std::atomic<std::uint32_t> refs_{1}; // the thread's own reference, dropped by detach
    std::atomic<detail::life> life_{detail::life::alive};
};

namespace detail {

/// The way into a thread_ctx's subsystem state, for the subsystem headers (and white-box tests) only.
/// Each accessor returns the member its subsystem's header documents; no locking, no ordering.
struct ctx_access {
    static park_state& park(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.park; }
    static const park_state& park(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.park; }
    static interrupt_state& irq(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.irq; }
    static const interrupt_state& irq(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.irq; }
    static task_work_state& task_work(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.task_work; }
    static const task_work_state& task_work(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING {
        return c.task_work;
    }
    static deferred_word_state& ct(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.ct; }
    static const deferred_word_state& ct(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.ct; }
    static expiry_lock_state& expiry(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.expiry; }
    static const expiry_lock_state& expiry(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING {
        return c.expiry;
    }
    static cpu_timer_state& cpu_timer(thread_ctx& c) noexcept RTDEFER_NONBLOCKING { return c.cpu_timer; }
    static const cpu_timer_state& cpu_timer(const thread_ctx& c) noexcept RTDEFER_NONBLOCKING {
        return c.cpu_timer;
    }
};

inline void release_ctx(thread_ctx* ctx) noexcept {
    // (TH4) acq_rel: release publishes this holder's last accesses; acquire on the final put makes
    // every other holder's accesses happen-before the delete. Pairs with every other (TH4).
    if (ctx->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
        delete ctx;
}
} // namespace detail

/// Counted reference to a thread_ctx: copy = get_task_struct, destroy = put_task_struct.
/// Copying and destroying are wait-free. The last put frees the ctx; that happens only after the
/// thread has exited, so a real-time thread holding references to live threads never frees.
class thread_ref {
public:
    thread_ref() noexcept = default;

    /// Effects: takes a reference. Precondition: the caller already holds one (or is the thread).
    explicit thread_ref(thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING : ctx_(&ctx) { acquire(); }
    thread_ref(const thread_ref& o) noexcept RTDEFER_NONBLOCKING : ctx_(o.ctx_) { acquire(); }
    thread_ref(thread_ref&& o) noexcept RTDEFER_NONBLOCKING : ctx_(std::exchange(o.ctx_, nullptr)) {}
    /// Assignment drops the old reference, which may free an exited thread's ctx: not nonblocking.
    thread_ref& operator=(thread_ref o) noexcept {
        std::swap(ctx_, o.ctx_);
        return *this;
    }
    /// The last put after the thread exited frees the ctx: destruction is not nonblocking.
    ~thread_ref() { reset(); }

    /// Effects: drops the reference (may free the ctx if it was the last and the thread exited).
    void reset() noexcept {
        if (ctx_ != nullptr)
            detail::release_ctx(std::exchange(ctx_, nullptr));
    }

    /// Effects: takes one reference to `ctx` and returns it as a plain pointer (get_task_struct()
    /// without an owning object), so a thread that must not run destructors can pass a reference
    /// on: a host's real-time callback stores it in an atomic, another thread takes it over with
    /// adopt(). Precondition: as the constructor (the caller holds a reference, or is the thread).
    /// Returns: &ctx. Progress: wait-free (one relaxed increment). Real-time safety: yes; async-signal-safe.
    [[nodiscard]] static thread_ctx* acquire_raw(thread_ctx& ctx) noexcept RTDEFER_NONBLOCKING {
        // (TH3) relaxed, as acquire() below.
        ctx.refs_.fetch_add(1, std::memory_order_relaxed);
        return &ctx;
    }

    /// Returns: a thread_ref owning a reference taken by acquire_raw() (no count change; nullptr gives an
    /// empty ref). Progress: wait-free. Real-time safety: no atomic operation; not annotated nonblocking
    /// only because returning an object with a destructor counts as a possible destruction for clang.
    [[nodiscard]] static thread_ref adopt(thread_ctx* raw) noexcept { return thread_ref(raw, adopt_tag{}); }

    [[nodiscard]] thread_ctx* get() const noexcept RTDEFER_NONBLOCKING { return ctx_; }
    thread_ctx& operator*() const noexcept RTDEFER_NONBLOCKING { return *ctx_; }
    thread_ctx* operator->() const noexcept RTDEFER_NONBLOCKING { return ctx_; }
    explicit operator bool() const noexcept RTDEFER_NONBLOCKING { return ctx_ != nullptr; }

private:
    struct adopt_tag {};
    thread_ref(thread_ctx* ctx, adopt_tag) noexcept RTDEFER_NONBLOCKING : ctx_(ctx) {}

    void acquire() noexcept RTDEFER_NONBLOCKING {
        // (TH3) relaxed: a new reference is always derived from an existing one, which keeps the
        // object alive; no ordering is needed to increment (as in std::shared_ptr / refcount_inc).
        if (ctx_ != nullptr)
            ctx_->refs_.fetch_add(1, std::memory_order_relaxed);
    }

    thread_ctx* ctx_ = nullptr;
};

namespace detail {

/// pthread key whose destructor detaches threads that exit without calling detach_this_thread().
/// pthread key destructors run after C++ thread_local destructors, so a thread's own thread_local
/// objects may still use its ctx while they are destroyed.
inline pthread_key_t exit_key() noexcept {
    static const pthread_key_t key = [] {
        pthread_key_t k;
        const int rc = pthread_key_create(&k, [](void* p) {
            if (p != nullptr && detail::tls_ctx == static_cast<thread_ctx*>(p))
                detach_this_thread();
        });
        RTDEFER_ASSERT(rc == 0, "pthread_key_create failed");
        return k;
    }();
    return key;
}

/// fork() child handler: the forking thread lives on in the child under a new kernel thread id and
/// process id. Its ctx keeps them current, or every tgkill aimed at it (interrupt-notified
/// task_work, irq_work's IPI fallback, the deferred word's) would name the parent's thread and fail
/// with ESRCH: the wake-up would be lost. The other threads' ctxs are not touched: their threads do
/// not exist in the child (POSIX), so nothing they queue for those runs there.
/// Async-signal-safe (gettid/getpid/pthread_self).
inline void refresh_ctx_after_fork() noexcept {
    if (thread_ctx* ctx = tls_ctx) {
        ctx->tid = gettid();
        ctx->tgid = ::getpid();
        ctx->handle = ::pthread_self();
    }
}

/// Registers refresh_ctx_after_fork once per process. Asserted: pthread_atfork fails only on ENOMEM.
inline void register_fork_refresh() noexcept {
    static const bool registered = ::pthread_atfork(nullptr, nullptr, &refresh_ctx_after_fork) == 0;
    RTDEFER_ASSERT(registered, "pthread_atfork failed");
}

} // namespace detail

/// Effects: creates the calling thread's thread_ctx on first call; later calls return the same one.
/// The thread's exit (or detach_this_thread()) runs the exit hooks and marks it exited. In a fork()
/// child the forking thread's ctx carries the child's tid and pid (the others' threads are gone).
/// Returns: the ctx. Throws: std::bad_alloc. Progress: blocking (allocates). Real-time safety: setup
/// path only: call it before entering a real-time loop, then pass the ctx explicitly.
inline thread_ctx& attach_this_thread() {
    if (detail::tls_ctx != nullptr)
        return *detail::tls_ctx;
    detail::register_fork_refresh();
    const pthread_key_t key = detail::exit_key();
    auto* ctx = new thread_ctx();
    ctx->tid = detail::gettid();
    ctx->tgid = ::getpid();
    ctx->handle = ::pthread_self();
    detail::tls_ctx = ctx;
    ::pthread_setspecific(key, ctx);
    return *ctx;
}

/// Effects: as attach_this_thread(), but reports failure instead of throwing: for threads the
/// library does not own, whose creator calls us from C frames an exception must not cross (a JACK or
/// PipeWire thread-init callback, a C framework's worker hook).
/// Returns: the ctx, or nullptr when it could not be allocated (nothing changed; call it again
/// later). Progress: blocking (allocates once per thread). Real-time safety: setup path only.
[[nodiscard]] inline thread_ctx* try_attach_this_thread() noexcept {
    try {
        return &attach_this_thread();
    } catch (const std::bad_alloc&) { // the only thing it throws; a cancellation unwind passes on
        return nullptr;
    }
}

/// Returns: the calling thread's ctx, or nullptr if it is not attached. A TLS load: fine for setup
/// paths and the interrupt handler; hot paths take an explicit thread_ctx& instead.
[[nodiscard]] inline thread_ctx* current_thread_ctx() noexcept RTDEFER_NONBLOCKING { return detail::tls_ctx_load(); }

/// Effects: detaches the calling thread now, as its exit would: runs the exit hooks (pending
/// task_work runs there), marks the ctx exited, drops the thread's own reference. No-op if not attached.
/// Progress: runs callbacks; blocking. Real-time safety: exit path.
inline void detach_this_thread() noexcept {
    thread_ctx* ctx = detail::tls_ctx;
    if (ctx == nullptr)
        return;
    // (TH1) release: orders the thread's earlier work before `exiting`; pairs with acquire in exiting().
    ctx->life_.store(detail::life::exiting, std::memory_order_release);
    detail::run_exit_hooks(*ctx);
    // (TH2) release: the hooks' effects (e.g. task_work's exited sentinel) happen-before anyone who
    // reads `exited` with acquire (exited()).
    ctx->life_.store(detail::life::exited, std::memory_order_release);
    ::pthread_setspecific(detail::exit_key(), nullptr);
    detail::tls_ctx = nullptr;
    detail::release_ctx(ctx);
}

} // namespace rtdefer
