// rtdefer/rt_thread.hpp: real-time threads.
//
//   rt_thread      a pthread with a name, SCHED_FIFO/RR/OTHER, priority, CPU, optional mlockall. When
//                  real-time scheduling is refused (EPERM) it runs SCHED_OTHER and says so in
//                  sched_status(), unless the caller required RT, in which case it throws. The lock
//                  is sized against RLIMIT_MEMLOCK (detail/memlock.hpp), so it never makes a later
//                  thread fail to start; sched_status().memory says what was locked.
//   rt_thread_options, sched_policy, sched_report   what is asked for and what the thread got.
//   rt_scheduling_permitted()   a one-time probe for tests and examples that skip without RT.
//
// The thread is attached (thread.hpp) before its function runs and detached when it returns.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/memlock.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <pthread.h>
#include <sched.h>

namespace rtdefer {

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
    // (RT1) release: pairs with the acquire wait (RT2) in rt_thread's constructor; the ctx and the
    // memlock result are published together. After this store the start block is the creator's again.
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
        // (RT2) acquire: pairs with the release store (RT1) in rt_trampoline().
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
