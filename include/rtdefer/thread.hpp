// rtdefer/thread.hpp: the per-thread control block (the kernel's task_struct), counted references to
// it (get_task_struct/put_task_struct), real-time threads, and the park/wake pair that safe-point loops
// sleep on.
//
//   thread_ctx     one per attached thread; holds every subsystem's per-thread state.
//   thread_ref     counted reference: copy = get, destroy = put. A waiter that blocks on another
//                  thread's lock holds one, so the ctx cannot be freed under it.
//   rt_thread      a pthread with a name, SCHED_FIFO/RR/OTHER, priority, CPU, optional mlockall. When
//                  real-time scheduling is refused (EPERM) it runs SCHED_OTHER and says so in
//                  sched_status(), unless the caller required RT, in which case it throws. The lock
//                  is sized against RLIMIT_MEMLOCK (detail/memlock.hpp), so it never makes a later
//                  thread fail to start; sched_status().memory says what was locked.
//   park / unpark  a token parker on a futex: a wake before the park leaves a token, so the park
//                  returns at once (no lost wake-ups); unpark makes a syscall only when the owner is
//                  actually parked.
//
// Park word states (one 32-bit futex word per thread):
//
//   value        meaning                                  who moves it
//   EMPTY    0   no token, owner running                  park: EMPTY→PARKED (fetch_sub)
//   NOTIFIED 1   a token is waiting for the owner         unpark: any→NOTIFIED (exchange)
//   PARKED  ~0   owner is (about to be) in futex_wait     park: NOTIFIED→EMPTY on return
//
// unpark sees PARKED only if the owner committed to sleeping, and only then calls futex_wake.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/cpu_timer_state.hpp>
#include <rtdefer/detail/deferred_word_state.hpp>
#include <rtdefer/detail/exit_hooks.hpp>
#include <rtdefer/detail/expiry_lock_state.hpp>
#include <rtdefer/detail/memlock.hpp>
#include <rtdefer/detail/syscall.hpp>
#include <rtdefer/detail/task_work_state.hpp>
#include <rtdefer/status.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

namespace rtdefer {

struct thread_ctx;
thread_ctx& attach_this_thread();
void detach_this_thread() noexcept;

namespace detail {

/// Park word values (see the state table at the top of this file).
inline constexpr std::uint32_t park_empty = 0;
inline constexpr std::uint32_t park_notified = 1;
inline constexpr std::uint32_t park_parked = ~std::uint32_t{0};

struct park_state {
    // Own cache line: wakers on other CPUs write it; keep it off the owner's hot fields.
    alignas(cacheline_size) std::atomic<std::uint32_t> word{park_empty};
    // Statistics for benchmarks and tests. relaxed: counters, no ordering with anything.
    std::atomic<std::uint64_t> futex_wakes{0};
};

struct interrupt_state {
    // relaxed counter bumped by the interrupt handler on this thread; readers only want totals.
    std::atomic<std::uint64_t> received{0};
};

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
/// thread_ref is dropped after the thread exited. Subsystem headers own their members' protocols.
struct thread_ctx {
    thread_ctx(const thread_ctx&) = delete;
    thread_ctx& operator=(const thread_ctx&) = delete;

    pid_t tid = 0;          ///< kernel thread id (for tgkill)
    pid_t tgid = 0;         ///< process id
    pthread_t handle{};     ///< pthread handle (valid while the thread runs)

    detail::park_state park;             ///< futex word for park/unpark (this header)
    detail::interrupt_state irq;         ///< interrupt statistics (interrupt.hpp)
    detail::task_work_state task_work;   ///< task_work list (task_work.hpp)
    detail::deferred_word_state ct;      ///< deferred work word (deferred_word.hpp)
    detail::expiry_lock_state expiry;    ///< expiry lock (expiry_lock.hpp)
    detail::cpu_timer_state cpu_timer;   ///< CPU-time timers (cpu_timer.hpp)

    /// Returns: true once the thread has run its exit hooks (later adds must fail).
    /// acquire: pairs with release (T2) in detach: whoever sees `exited` sees the hooks' effects.
    [[nodiscard]] bool exited() const noexcept RTDEFER_NONBLOCKING {
        return life_.load(std::memory_order_acquire) == detail::life::exited;
    }

    /// Returns: true while the thread runs its exit hooks or after.
    [[nodiscard]] bool exiting() const noexcept RTDEFER_NONBLOCKING {
        // acquire: as exited(); pairs with release (T1) in detach.
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
inline void release_ctx(thread_ctx* ctx) noexcept {
    // (R2) acq_rel: release publishes this holder's last accesses; acquire on the final put makes
    // every other holder's accesses happen-before the delete. Pairs with every other (R2).
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
        // (R1) relaxed, as acquire() below.
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
        // (R1) relaxed: a new reference is always derived from an existing one, which keeps the
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

} // namespace detail

/// Effects: creates the calling thread's thread_ctx on first call; later calls return the same one.
/// The thread's exit (or detach_this_thread()) runs the exit hooks and marks it exited.
/// Returns: the ctx. Throws: std::bad_alloc. Progress: blocking (allocates). Real-time safety: setup
/// path only: call it before entering a real-time loop, then pass the ctx explicitly.
inline thread_ctx& attach_this_thread() {
    if (detail::tls_ctx != nullptr)
        return *detail::tls_ctx;
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
    // (T1) release: orders the thread's earlier work before `exiting`; pairs with acquire in exiting().
    ctx->life_.store(detail::life::exiting, std::memory_order_release);
    detail::run_exit_hooks(*ctx);
    // (T2) release: the hooks' effects (e.g. task_work's exited sentinel) happen-before anyone who
    // reads `exited` with acquire (exited()).
    ctx->life_.store(detail::life::exited, std::memory_order_release);
    ::pthread_setspecific(detail::exit_key(), nullptr);
    detail::tls_ctx = nullptr;
    detail::release_ctx(ctx);
}

// ---------------------------------------------------------------------------------------------
// park / unpark
// ---------------------------------------------------------------------------------------------

/// Effects: sets the wake token of `target`; if its owner is parked, wakes it (one futex_wake).
/// Returns: true if a syscall was made (the owner was parked).
/// Progress: wait-free apart from that syscall. Real-time safety: no allocation, no lock; the only
/// syscall is the wake of a parked owner; async-signal-safe.
inline bool unpark(thread_ctx& target) noexcept RTDEFER_NONBLOCKING {
    auto& word = target.park.word;
    // Cheap test first: a token already waiting makes this wake redundant, and a plain load keeps
    // the line shared instead of bouncing it. This is a store→load (Dekker) pair against the owner:
    //   waker: publish work; (F1) fence; load word == NOTIFIED → skip
    //   owner: consume token (RMW on word); (F2) fence; load work
    // (F1) seq_cst fence: pairs with (F2) in park_until(). Without the pair, both loads could read
    // the old values (ARM, the C++ model): the waker skips, the owner misses the work and sleeps.
    // With it, if our load saw the token before the owner consumed it, the owner sees our work.
    detail::full_fence();
    // relaxed: ordered by (F1); a stale NOTIFIED is covered by the argument above.
    if (word.load(std::memory_order_relaxed) == detail::park_notified)
        return false;
    // (P2) release: everything the waker wrote (the work) happens-before the owner's acquire (P1)/(P3)
    // that consumes this token. acquire: if we see PARKED we must see the owner's commit to sleep.
    if (word.exchange(detail::park_notified, std::memory_order_acq_rel) != detail::park_parked)
        return false;
    // relaxed: statistics only.
    target.park.futex_wakes.fetch_add(1, std::memory_order_relaxed);
    (void)detail::futex_wake(word, 1);
    return true;
}

namespace detail {

// The halves of park_until(), for waits that are not a plain futex_wait (the io_uring loop waits
// on the park word with an in-ring FUTEX_WAIT). Every token consumption returns through
// park_consumed(), so (F2) is on each path.

/// (F2) seq_cst fence: orders a token's consumption before the caller's next look at its work.
/// Pairs with (F1) in unpark().
inline bool park_consumed() noexcept RTDEFER_NONBLOCKING {
    full_fence();
    return true;
}

/// Effects: first half of a park. Consumes a waiting token, or commits to sleeping (EMPTY→PARKED):
/// an unpark after this sees PARKED and makes the futex_wake.
/// Returns: true if a token was consumed (do not sleep), false if the word is now PARKED.
inline bool park_commit(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (P1) acquire: NOTIFIED→EMPTY consumes a token and pairs with release (P2) in unpark().
    if (self.park.word.fetch_sub(1, std::memory_order_acquire) == park_notified)
        return park_consumed();
    return false;
}

/// Effects: after a wait on PARKED returned: consumes the token if one arrived (NOTIFIED→EMPTY).
/// Returns: true if consumed; false if the word is still PARKED (spurious wake, keep waiting).
inline bool park_try_consume(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (P3) acquire: pairs with (P2); a successful NOTIFIED→EMPTY consumes the token.
    std::uint32_t expected = park_notified;
    if (self.park.word.compare_exchange_strong(expected, park_empty, std::memory_order_acquire,
                                               std::memory_order_relaxed))
        return park_consumed();
    return false;
}

/// Effects: leaves the parked state without sleeping further (timeout, signal, other event).
/// Returns: true if a token raced in (it is consumed), false otherwise.
inline bool park_abandon(thread_ctx& self) noexcept RTDEFER_NONBLOCKING {
    // (P4) acquire, as (P3): a token that raced in is consumed here.
    if (self.park.word.exchange(park_empty, std::memory_order_acquire) == park_notified)
        return park_consumed();
    return false;
}

} // namespace detail

/// Effects: blocks the calling thread (which must own `self`) until a token arrives (unpark), the
/// deadline passes, or a signal interrupts the wait. A token set before the call makes it return at
/// once. Returns: ok (token consumed), timed_out, or interrupted (EINTR: the interrupt signal or
/// another handler ran). Progress: blocking. Real-time safety: blocking by design (the safe point).
inline status park_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING {
    RTDEFER_ASSERT(self.is_current(), "park_until() called on another thread's ctx");
    if (detail::park_commit(self))
        return status::ok;
    const bool timed = deadline != std::chrono::steady_clock::time_point::max();
    const timespec abs = detail::to_timespec(deadline);
    for (;;) {
        const int rc = detail::futex_wait(self.park.word, detail::park_parked, timed ? &abs : nullptr);
        if (detail::park_try_consume(self))
            return status::ok;
        if (rc == -ETIMEDOUT || rc == -EINTR)
            return detail::park_abandon(self) ? status::ok
                   : rc == -ETIMEDOUT         ? status::timed_out
                                              : status::interrupted;
        // 0 (woken for someone else / spurious) or -EAGAIN (word changed): re-check and wait again.
        if (timed && std::chrono::steady_clock::now() >= deadline)
            return detail::park_abandon(self) ? status::ok : status::timed_out;
    }
}

/// Effects, returns: as park_until() with no deadline (ok or interrupted).
inline status park(thread_ctx& self) noexcept RTDEFER_BLOCKING {
    return park_until(self, std::chrono::steady_clock::time_point::max());
}

// ---------------------------------------------------------------------------------------------
// rt_thread
// ---------------------------------------------------------------------------------------------

enum class sched_policy { other, fifo, rr };

[[nodiscard]] constexpr const char* to_string(sched_policy p) noexcept {
    return p == sched_policy::fifo ? "SCHED_FIFO" : p == sched_policy::rr ? "SCHED_RR" : "SCHED_OTHER";
}

struct rt_thread_options {
    std::string name;                          ///< thread name (truncated to 15 characters)
    sched_policy policy = sched_policy::fifo;  ///< requested policy
    int priority = 10;                         ///< 1..99 for fifo/rr; ignored for other
    int cpu = -1;                              ///< pin to this CPU; -1: no pinning
    bool lock_memory = false;                  ///< mlockall as RLIMIT_MEMLOCK allows (process-wide)
    bool require_rt = false;                   ///< throw instead of falling back to SCHED_OTHER
};

/// What the thread actually got.
struct sched_report {
    sched_policy requested = sched_policy::other;
    sched_policy actual = sched_policy::other;
    int priority = 0;        ///< actual priority (0 for SCHED_OTHER)
    int requested_priority = 0; ///< the priority asked for
    int error = 0;           ///< 0, or the errno that made it fall back (EPERM)
    int mlock_error = 0;     ///< 0, or the errno of a failed mlockall
    memlock_result memory;   ///< with lock_memory: what was decided and locked (describe() says why)
    [[nodiscard]] bool degraded() const noexcept { return requested != actual; }
    /// Returns: what the thread got, e.g. "SCHED_FIFO 50" or "SCHED_OTHER (SCHED_FIFO 50 refused:
    /// Operation not permitted)". For headers and reports: print this, not the request.
    /// Progress: blocking (allocates). Real-time safety: setup and reporting paths only.
    [[nodiscard]] std::string describe() const {
        std::string s = to_string(actual);
        if (actual != sched_policy::other)
            s += " " + std::to_string(priority);
        if (degraded())
            s += std::string(" (") + to_string(requested) + " " + std::to_string(requested_priority) +
                 " refused: " + std::strerror(error) + ")";
        return s;
    }
};

namespace detail {

inline int to_native(sched_policy p) noexcept {
    return p == sched_policy::fifo ? SCHED_FIFO : p == sched_policy::rr ? SCHED_RR : SCHED_OTHER;
}

struct rt_start_block {
    std::function<void(thread_ctx&)> fn;
    std::string name;
    bool lock_memory = false;
    memlock_result memory;
    thread_ref creator_ref; // taken by the child for the creator, before the child can exit
    std::atomic<thread_ctx*> ctx{nullptr};
};

inline void* rt_trampoline(void* arg) {
    auto* sb = static_cast<rt_start_block*>(arg);
    thread_ctx& self = attach_this_thread();
    if (!sb->name.empty())
        ::pthread_setname_np(::pthread_self(), sb->name.substr(0, 15).c_str());
    // Sized against RLIMIT_MEMLOCK: an unconditional MCL_FUTURE would make the next thread's
    // stack mapping fail (EAGAIN) under the unprivileged default limit.
    if (sb->lock_memory)
        sb->memory = detail::lock_process_memory();
    auto fn = std::move(sb->fn);
    // The creator's reference is taken here, not after the handshake: a short fn could otherwise
    // finish and drop the thread's own (last) reference before the creator got one.
    sb->creator_ref = thread_ref(self);
    // release: pairs with the acquire wait in rt_thread's constructor; the ctx and the memlock
    // result are published together. After this store the start block belongs to the creator again.
    sb->ctx.store(&self, std::memory_order_release);
    sb->ctx.notify_one();
    try {
        fn(self);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rtdefer: rt_thread: uncaught exception: %s\n", e.what());
        std::terminate();
    }
    detach_this_thread();
    return nullptr;
}

} // namespace detail

/// A joinable pthread with real-time attributes, attached before its function runs.
class rt_thread {
public:
    rt_thread() noexcept = default;

    /// Effects: starts a thread running `fn(self)` (or `fn()`), with the requested name, policy,
    /// priority, CPU and memory locking. If SCHED_FIFO/RR is refused (EPERM) it falls back to
    /// SCHED_OTHER and records that in sched_status(), unless opts.require_rt.
    /// Throws: std::system_error (EPERM with require_rt; EINVAL for a bad priority or CPU; EAGAIN).
    /// Progress: blocking until the thread is attached. Real-time safety: setup path (allocates).
    template <class F>
    rt_thread(rt_thread_options opts, F&& fn) {
        auto sb = std::make_unique<detail::rt_start_block>();
        if constexpr (std::is_invocable_v<F&, thread_ctx&>)
            sb->fn = std::forward<F>(fn);
        else
            sb->fn = [f = std::forward<F>(fn)](thread_ctx&) mutable { f(); };
        sb->name = opts.name;
        sb->lock_memory = opts.lock_memory;
        report_.requested = opts.policy;
        report_.requested_priority = opts.policy == sched_policy::other ? 0 : opts.priority;

        int rc = create(opts, opts.policy, sb.get());
        if (rc == EPERM && opts.policy != sched_policy::other) {
            if (opts.require_rt)
                throw std::system_error(EPERM, std::generic_category(),
                                        "rtdefer::rt_thread '" + opts.name + "': " + to_string(opts.policy) +
                                            " priority " + std::to_string(opts.priority) +
                                            " refused; run as root or grant CAP_SYS_NICE / RLIMIT_RTPRIO");
            report_.error = EPERM;
            rc = create(opts, sched_policy::other, sb.get());
        }
        if (rc != 0)
            throw std::system_error(rc, std::generic_category(),
                                    "rtdefer::rt_thread '" + opts.name + "': pthread_create");
        // acquire: pairs with the release store in rt_trampoline().
        while (sb->ctx.load(std::memory_order_acquire) == nullptr)
            sb->ctx.wait(nullptr, std::memory_order_acquire);
        ref_ = std::move(sb->creator_ref);
        report_.memory = sb->memory;
        report_.mlock_error = sb->memory.error;
        start_ = std::move(sb);
    }

    rt_thread(rt_thread&& o) noexcept
        : handle_(o.handle_), joinable_(std::exchange(o.joinable_, false)), ref_(std::move(o.ref_)),
          report_(o.report_), start_(std::move(o.start_)) {}
    rt_thread& operator=(rt_thread&& o) noexcept {
        if (this != &o) {
            join();
            handle_ = o.handle_;
            joinable_ = std::exchange(o.joinable_, false);
            ref_ = std::move(o.ref_);
            report_ = o.report_;
            start_ = std::move(o.start_);
        }
        return *this;
    }
    ~rt_thread() { join(); }

    /// Effects: waits for the thread to finish (no-op if not joinable).
    void join() noexcept {
        if (joinable_) {
            ::pthread_join(handle_, nullptr);
            joinable_ = false;
        }
    }
    [[nodiscard]] bool joinable() const noexcept { return joinable_; }

    /// Returns: the thread's ctx (stays valid while this object lives, even after the thread exits).
    [[nodiscard]] thread_ctx& ctx() const noexcept { return *ref_; }
    [[nodiscard]] thread_ref ref() const noexcept { return ref_; }
    [[nodiscard]] pid_t tid() const noexcept { return ref_ ? ref_->tid : 0; }
    [[nodiscard]] pthread_t native_handle() const noexcept { return handle_; }
    /// Returns: the scheduling the thread got (policy, priority, the errno of a fallback).
    [[nodiscard]] const sched_report& sched_status() const noexcept { return report_; }

private:
    int create(const rt_thread_options& opts, sched_policy policy, detail::rt_start_block* sb) {
        pthread_attr_t attr;
        ::pthread_attr_init(&attr);
        struct attr_guard {
            pthread_attr_t* a;
            ~attr_guard() { ::pthread_attr_destroy(a); }
        } guard{&attr};
        if (policy != sched_policy::other) {
            ::pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
            if (::pthread_attr_setschedpolicy(&attr, detail::to_native(policy)) != 0)
                return EINVAL;
            sched_param sp{};
            sp.sched_priority = opts.priority;
            if (::pthread_attr_setschedparam(&attr, &sp) != 0)
                return EINVAL;
        } else {
            // Explicit SCHED_OTHER: do not inherit a real-time policy from the creator.
            ::pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
            ::pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
            sched_param sp{};
            ::pthread_attr_setschedparam(&attr, &sp);
        }
        if (opts.cpu >= 0) {
            if (opts.cpu >= CPU_SETSIZE)
                return EINVAL;
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(opts.cpu, &set);
            if (::pthread_attr_setaffinity_np(&attr, sizeof(set), &set) != 0)
                return EINVAL;
        }
        const int rc = ::pthread_create(&handle_, &attr, &detail::rt_trampoline, sb);
        if (rc == 0) {
            joinable_ = true;
            report_.actual = policy;
            report_.priority = policy == sched_policy::other ? 0 : opts.priority;
        }
        return rc;
    }

    pthread_t handle_{};
    bool joinable_ = false;
    thread_ref ref_;
    sched_report report_;
    std::unique_ptr<detail::rt_start_block> start_;
};

/// Returns: whether this process may create SCHED_FIFO threads (probed once by creating one).
/// For tests and examples that skip with a message where real-time scheduling is refused.
[[nodiscard]] inline bool rt_scheduling_permitted() noexcept {
    static const bool permitted = [] {
        pthread_attr_t attr;
        ::pthread_attr_init(&attr);
        ::pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
        ::pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
        sched_param sp{};
        sp.sched_priority = 1;
        ::pthread_attr_setschedparam(&attr, &sp);
        pthread_t t;
        const int rc = ::pthread_create(&t, &attr, [](void*) -> void* { return nullptr; }, nullptr);
        ::pthread_attr_destroy(&attr);
        if (rc == 0)
            ::pthread_join(t, nullptr);
        return rc == 0;
    }();
    return permitted;
}

} // namespace rtdefer
