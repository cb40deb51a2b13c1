// rtdefer/uring.hpp: an event loop whose wait is io_uring and whose top is the safe point.
//
// A uring_loop belongs to one thread (its owner, an ordinary thread_ctx). Each turn runs
// task_work_run(self), submits the SQEs its owner prepared, and waits for completions or a
// deadline in one io_uring_enter. The wait goes through the owner's park word, with an in-ring
// IORING_OP_FUTEX_WAIT expecting PARKED: every existing waker (unpark, task_work_add with
// notify::resume or signal, an irq_work or timer callback that adds task_work, a signal handler)
// wakes the loop unchanged, with the same single futex_wake, no eventfd and no fd.
//
// Needs liburing (the rtdefer-uring dependency / pkg-config module, CMake rtdefer::uring); the
// umbrella rtdefer.hpp does not include this header. Where io_uring is missing or refused
// (seccomp, kernel.io_uring_disabled, an old kernel, a missing opcode) the same API runs on the
// futex parker: backend_status() says why, and submit() reports not_supported instead of hanging.
//
// The turn, with the park word protocol of thread.hpp:
//
//   run task_work; reap ready CQEs       work done → submit what is queued (no wait), return ok
//   park_commit: token? → consume it     (the token is the armed state: an add after the run
//                                         above left it or sees PARKED and futex_wakes)
//   arm FUTEX_WAIT(word, PARKED) if not armed (it stays armed across turns until it completes)
//   io_uring_enter(submit, wait 1, timeout)   → the FUTEX_WAIT completes on unpark's futex_wake,
//                                               or -EAGAIN at once if the word left PARKED
//   reap CQEs; consume the token (park_try_consume) or leave PARKED (park_abandon); run task_work
//
// Operation states (uring_op::pending_, owner thread only):
//
//   pending  meaning                                    moved by
//   0        idle: the caller owns the object           submit: 0→1 (2 with a linked timeout)
//   1..2     in flight: the kernel may write its buffer  each CQE for it: -1; the callback runs
//                                                       after the last, and the loop never touches
//                                                       the object after calling it
//
// Concurrency: everything here is owner-only (the ring is SINGLE_ISSUER); other threads reach the
// loop through task_work_add / unpark, which is the point. While a loop exists its owner must wait
// only through run_once (a park_until elsewhere would compete with the in-ring waiter for the
// single futex_wake of unpark).
#pragma once

#if !__has_include(<liburing.h>)
#error "rtdefer/uring.hpp needs liburing (<liburing.h> not found): install liburing (Debian: liburing-dev)"
#elif !defined(RTDEFER_HAVE_LIBURING)
#error "rtdefer/uring.hpp needs liburing linked: use the rtdefer-uring dependency (meson), pkg-config module rtdefer-uring or CMake target rtdefer::uring, which define RTDEFER_HAVE_LIBURING"
#endif

#include <rtdefer/config.hpp>
#include <rtdefer/detail/uring_setup.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <liburing.h>

namespace rtdefer {

class uring_loop;

/// A caller-owned completion object: one in-flight operation at a time, no allocation. The loop
/// calls `fn(op, res, cqe_flags)` once per CQE; with IORING_CQE_F_MORE in cqe_flags (multishot)
/// the op stays in flight, otherwise it is idle again and the loop has let go of it: the callback
/// may resubmit, reuse or free it. res is the kernel's (bytes, or -errno); a cancelled op gets
/// -ECANCELED, one whose linked timeout expired gets -ETIME.
class uring_op {
public:
    using callback = void (*)(uring_op& op, int res, std::uint32_t cqe_flags) noexcept;

    explicit uring_op(callback fn) noexcept : fn_(fn) {}
    uring_op(const uring_op&) = delete;
    uring_op& operator=(const uring_op&) = delete;

    /// Returns: whether the op is in flight (owner thread only). Wait-free.
    [[nodiscard]] bool in_flight() const noexcept RTDEFER_NONBLOCKING { return pending_ != 0; }

private:
    friend class uring_loop;
    callback fn_;
    std::uint8_t pending_ = 0;      // CQEs still to come (see the state table)
    bool timed_out_ = false;        // the linked timeout fired (-ETIME)
    int res_ = 0;                   // the op's own result, kept until its timeout's CQE arrived
    __kernel_timespec timeout_{};   // read by the kernel when the linked timeout is submitted
};

/// Which wait a loop runs on.
enum class uring_backend : std::uint8_t { io_uring, futex };

struct uring_options {
    unsigned entries = 256;     ///< SQ ring size (the CQ is twice that)
    bool force_futex = false;   ///< run on the futex parker even where io_uring works (measurement)
};

class uring_loop {
public:
    /// Effects: creates the ring on the calling thread, which must own `self` (SINGLE_ISSUER binds
    /// the ring to it), probing flags and opcodes; falls back to the futex parker if io_uring is
    /// missing or refused. Never throws. Progress: blocking. Real-time safety: setup path.
    explicit uring_loop(thread_ctx& self, uring_options opts = {}) noexcept : owner_(self) {
        RTDEFER_ASSERT(self.is_current(), "uring_loop must be created on its owner thread");
        const int err = opts.force_futex ? ENOSYS : detail::uring_setup(ring_, opts.entries);
        setup_errno_ = err;
        backend_ = err == 0 ? uring_backend::io_uring : uring_backend::futex;
    }

    /// Effects: cancels every operation in flight (IORING_ASYNC_CANCEL_ANY), waits for their CQEs
    /// and runs their callbacks (-ECANCELED, or the result they reached first), then closes the ring.
    /// Precondition: on the owner thread if operations are in flight. Progress: blocking (until
    /// the kernel has let go of every buffer). Real-time safety: teardown path.
    ~uring_loop() {
        if (backend_ != uring_backend::io_uring)
            return;
        closing_ = true;
        if (cqes_due_ != 0) {
            RTDEFER_ASSERT(owner_.is_current(), "uring_loop destroyed off its owner thread with operations in flight");
            io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
            if (sqe == nullptr) { // SQ full: hand those in first
                (void)io_uring_submit(&ring_);
                sqe = io_uring_get_sqe(&ring_);
            }
            if (sqe != nullptr) {
                io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
                sqe->user_data = tag_cancel;
                ++cqes_due_;
            }
            while (cqes_due_ != 0) {
                const int rc = io_uring_submit_and_wait(&ring_, 1);
                if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
                    break; // the ring is unusable; queue_exit below still cancels in the kernel
                (void)reap();
            }
        }
        io_uring_queue_exit(&ring_);
    }
    uring_loop(const uring_loop&) = delete;
    uring_loop& operator=(const uring_loop&) = delete;

    /// Returns: the backend in use. Wait-free.
    [[nodiscard]] uring_backend backend() const noexcept RTDEFER_NONBLOCKING { return backend_; }
    /// Returns: ok on io_uring; otherwise why not: not_permitted (EPERM/EACCES: seccomp,
    /// io_uring_disabled), not_supported (ENOSYS, EINVAL, a missing opcode or feature, or
    /// force_futex), system_error (another errno, see setup_errno()). Wait-free.
    [[nodiscard]] status backend_status() const noexcept RTDEFER_NONBLOCKING { return detail::uring_setup_status(setup_errno_); }
    /// Returns: the errno that made setup fall back (0 on io_uring). Wait-free.
    [[nodiscard]] int setup_errno() const noexcept RTDEFER_NONBLOCKING { return setup_errno_; }
    /// Returns: the ring's setup flags (IORING_SETUP_*), 0 on the futex backend. Wait-free.
    [[nodiscard]] unsigned setup_flags() const noexcept RTDEFER_NONBLOCKING {
        return backend_ == uring_backend::io_uring ? ring_.flags : 0u;
    }
    /// Returns: the owner's ctx. Wait-free.
    [[nodiscard]] thread_ctx& owner() const noexcept RTDEFER_NONBLOCKING { return owner_; }
    /// Returns: the number of user operations in flight. Wait-free.
    [[nodiscard]] std::size_t ops_in_flight() const noexcept RTDEFER_NONBLOCKING { return ops_in_flight_; }
    /// Returns: the io_uring_enter calls made by turns so far (statistics). Wait-free.
    [[nodiscard]] std::uint64_t enters() const noexcept RTDEFER_NONBLOCKING { return enters_; }

    /// Effects: takes an SQE, lets `prep(io_uring_sqe&)` fill it with liburing's helpers
    /// (io_uring_prep_recv, ...), and queues it for the next turn's io_uring_enter, with `op` as
    /// its completion object. prep may set sqe.flags but not IOSQE_IO_LINK, nor user_data.
    /// Returns: ok; already_queued if `op` is in flight; no_space if the SQ is full (run a turn);
    /// not_supported on the futex backend; exited while the loop is being destroyed.
    /// Precondition: on the owner thread. Progress: wait-free. Real-time safety: no allocation,
    /// no lock, no syscall (the turn submits).
    template <class Prep>
    [[nodiscard]] status submit(uring_op& op, Prep&& prep) noexcept RTDEFER_NONBLOCKING {
        const status st = can_submit(op, 1);
        if (st != status::ok)
            return st;
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) // not after can_submit's space check; keeps the compiler's null path honest
            return status::no_space;
        prep(*sqe);
        start(op, *sqe, 1);
        return status::ok;
    }

    /// Effects: as submit(op, prep), with a linked timeout (IORING_OP_LINK_TIMEOUT): if `op` has
    /// not completed `timeout` after it started, the kernel cancels it and its callback gets -ETIME.
    /// Returns, progress, safety: as submit(op, prep); no_space needs two free SQEs;
    /// invalid_argument for a negative timeout.
    template <class Prep>
    [[nodiscard]] status submit(uring_op& op, Prep&& prep, std::chrono::nanoseconds timeout) noexcept RTDEFER_NONBLOCKING {
        if (timeout < std::chrono::nanoseconds::zero())
            return status::invalid_argument;
        const status st = can_submit(op, 2);
        if (st != status::ok)
            return st;
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) // as above
            return status::no_space;
        prep(*sqe);
        sqe->flags |= IOSQE_IO_LINK;
        start(op, *sqe, 2);
        op.timeout_.tv_sec = timeout.count() / 1'000'000'000;
        op.timeout_.tv_nsec = timeout.count() % 1'000'000'000;
        io_uring_sqe* tsqe = io_uring_get_sqe(&ring_);
        RTDEFER_ASSERT(tsqe != nullptr, "uring_loop: SQ space vanished between check and use");
        io_uring_prep_link_timeout(tsqe, &op.timeout_, 0);
        tsqe->user_data = reinterpret_cast<std::uintptr_t>(&op) | tag_timeout_bit;
        return status::ok;
    }

    /// Effects: asks the kernel to cancel `op` (IORING_OP_ASYNC_CANCEL, submitted by the next
    /// turn). Its callback then runs with -ECANCELED, or with the result it reached first.
    /// Returns: ok (cancel queued); idle if `op` is not in flight; no_space if the SQ is full.
    /// Precondition: on the owner thread. Progress: wait-free. Real-time safety: no allocation,
    /// no lock, no syscall.
    [[nodiscard]] status cancel(uring_op& op) noexcept RTDEFER_NONBLOCKING {
        RTDEFER_ASSERT(owner_.is_current(), "uring_loop::cancel off the owner thread");
        if (op.pending_ == 0)
            return status::idle;
        if (io_uring_sq_space_left(&ring_) < 1)
            return status::no_space;
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr)
            return status::no_space;
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(&op), 0);
        sqe->user_data = tag_cancel;
        ++cqes_due_;
        return status::ok;
    }

    /// Effects: one turn (see the table at the top): runs task_work, reaps completions (running
    /// their callbacks), submits, and if nothing was done waits in one io_uring_enter for a
    /// completion, a wake of the owner (unpark / task_work_add) or `deadline`; then reaps and runs
    /// task_work again. On the futex backend: wait_for_work_until(self, deadline).
    /// Returns: ok (work ran, a completion arrived, or the owner was woken: callers loop and check
    /// their own conditions); timed_out at `deadline`; interrupted if a signal ended the wait;
    /// system_error if io_uring_enter failed unexpectedly.
    /// Precondition: `self` is the owner, on its thread; not nested (not from a callback).
    /// Progress: blocking (until something happens or the deadline). Real-time safety: blocks by
    /// design (the safe point); no allocation; a turn with nothing to submit or collect makes no
    /// syscall unless it waits.
    [[nodiscard]] status run_once_until(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept
        RTDEFER_BLOCKING {
        RTDEFER_ASSERT(&self == &owner_ && self.is_current(), "uring_loop::run_once_until off the owner thread");
        if (backend_ != uring_backend::io_uring)
            return wait_for_work_until(self, deadline);
        RTDEFER_ASSERT(!in_turn_, "uring_loop::run_once_until nested in a callback");
        in_turn_ = true;
        const status st = turn(self, deadline);
        in_turn_ = false;
        return st;
    }
    /// Effects, returns, progress, real-time safety: run_once_until(self, time_point::max()) (no
    /// deadline: never timed_out).
    [[nodiscard]] status run_once(thread_ctx& self) noexcept RTDEFER_BLOCKING {
        return run_once_until(self, std::chrono::steady_clock::time_point::max());
    }

private:
    // user_data: an op's address (8-byte aligned) for its own CQE, | tag_timeout_bit for its linked
    // timeout's; values below 8 are the loop's own SQEs.
    static constexpr std::uint64_t tag_timeout_bit = 1;
    static constexpr std::uint64_t tag_futex = 2;
    static constexpr std::uint64_t tag_cancel = 4;
    static_assert(alignof(uring_op) >= 8);

    [[nodiscard]] status can_submit(const uring_op& op, unsigned sqes) noexcept RTDEFER_NONBLOCKING {
        if (backend_ != uring_backend::io_uring)
            return status::not_supported;
        RTDEFER_ASSERT(owner_.is_current(), "uring_loop::submit off the owner thread");
        if (closing_)
            return status::exited;
        if (op.pending_ != 0)
            return status::already_queued;
        if (io_uring_sq_space_left(&ring_) < sqes)
            return status::no_space;
        return status::ok;
    }

    void start(uring_op& op, io_uring_sqe& sqe, std::uint8_t cqes) noexcept RTDEFER_NONBLOCKING {
        sqe.user_data = reinterpret_cast<std::uintptr_t>(&op);
        op.pending_ = cqes;
        op.timed_out_ = false;
        op.res_ = 0;
        cqes_due_ += cqes;
        ++ops_in_flight_;
    }

    /// Effects: runs the callback of every ready CQE. Returns: how many CQEs were consumed.
    std::size_t reap() noexcept RTDEFER_NONBLOCKING {
        std::size_t n = 0;
        io_uring_cqe* cqe = nullptr;
        while (__io_uring_peek_cqe(&ring_, &cqe, nullptr) == 0 && cqe != nullptr) {
            const std::uint64_t ud = cqe->user_data;
            const int res = cqe->res;
            const std::uint32_t flags = cqe->flags;
            io_uring_cqe_seen(&ring_, cqe); // the CQ slot is free before any callback runs
            ++n;
            if ((flags & IORING_CQE_F_MORE) == 0)
                --cqes_due_;
            if (ud == tag_futex) {
                futex_armed_ = false;
                continue;
            }
            if (ud < 8)
                continue; // our cancel's own result: the cancelled op reports through its CQE
            auto* op = reinterpret_cast<uring_op*>(ud & ~tag_timeout_bit);
            if ((ud & tag_timeout_bit) != 0)
                op->timed_out_ = res == -ETIME;
            else
                op->res_ = res;
            if ((flags & IORING_CQE_F_MORE) != 0) {
                RTDEFER_EFFECTS_TRUST_BEGIN // user callback: real-time safe by contract (as task_work)
                op->fn_(*op, res, flags);
                RTDEFER_EFFECTS_TRUST_END
                continue;
            }
            if (--op->pending_ != 0)
                continue; // the op or its linked timeout is still to come
            --ops_in_flight_;
            const int r = op->timed_out_ && op->res_ == -ECANCELED ? -ETIME : op->res_;
            const uring_op::callback fn = op->fn_;
            RTDEFER_EFFECTS_TRUST_BEGIN // user callback; the op is the caller's from here on
            fn(*op, r, (ud & tag_timeout_bit) != 0 ? 0u : flags);
            RTDEFER_EFFECTS_TRUST_END
        }
        return n;
    }

    /// Returns: whether the kernel holds completions that only an io_uring_enter delivers. Queued
    /// SQEs alone do not count: the wait submits them in the same enter.
    [[nodiscard]] bool completions_held() const noexcept RTDEFER_NONBLOCKING {
        // relaxed: a hint written by the kernel; a flag missed here is acted on by the next enter
        // (each wait enters with GETEVENTS, which runs the kernel's pending completions).
        const unsigned kflags = __atomic_load_n(ring_.sq.kflags, __ATOMIC_RELAXED);
        return (kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
    }

    status turn(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING {
        for (;;) {
            std::size_t done = task_work_run(self) + reap();
            if (done == 0 && completions_held()) {
                ++enters_;
                (void)io_uring_submit_and_get_events(&ring_);
                done = reap();
            }
            if (done != 0) {
                if (io_uring_sq_ready(&ring_) != 0) { // hand in what the callbacks queued
                    ++enters_;
                    (void)io_uring_submit(&ring_);
                }
                return status::ok;
            }
            if (detail::task_work_deferred_blocked(detail::ctx_access::task_work(self))) {
                // As wait_for_work_until: wait for the canceller holding our chain back on its PI lock.
                detail::task_work_lock(detail::ctx_access::task_work(self));
                detail::task_work_unlock(detail::ctx_access::task_work(self));
                continue;
            }
            if (task_work_pending(self))
                continue;
            return wait(self, deadline);
        }
    }

    status wait(thread_ctx& self, std::chrono::steady_clock::time_point deadline) noexcept RTDEFER_BLOCKING {
        if (detail::park_commit(self)) { // a token: hand in our SQEs, do not sleep
            if (io_uring_sq_ready(&ring_) != 0) {
                ++enters_;
                (void)io_uring_submit(&ring_);
            }
            return status::ok;
        }
        if (!futex_armed_) {
            if (io_uring_sq_space_left(&ring_) < 1) {
                ++enters_;
                (void)io_uring_submit(&ring_);
            }
            io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
            if (sqe == nullptr) { // the submit above failed (-EBUSY: CQ backlog): reap first
                (void)detail::park_abandon(self);
                return status::ok;
            }
            detail::uring_prep_futex_wait(*sqe, detail::futex_addr(detail::ctx_access::park(self).word), detail::park_parked, tag_futex);
            futex_armed_ = true;
            ++cqes_due_;
        }
        int rc;
        io_uring_cqe* cqe = nullptr;
        ++enters_;
        if (deadline == std::chrono::steady_clock::time_point::max()) {
            rc = io_uring_submit_and_wait(&ring_, 1);
        } else {
            const auto left = deadline - std::chrono::steady_clock::now();
            const auto ns = left.count() <= 0 ? std::int64_t{0}
                                              : std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            __kernel_timespec ts{};
            ts.tv_sec = ns / 1'000'000'000;
            ts.tv_nsec = ns % 1'000'000'000;
            rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        }
        const std::size_t reaped = reap();
        const bool token = detail::park_try_consume(self) || detail::park_abandon(self);
        const std::size_t ran = task_work_run(self);
        if (token || reaped != 0 || ran != 0 || rc >= 0)
            return status::ok;
        if (rc == -ETIME)
            return status::timed_out;
        if (rc == -EINTR)
            return status::interrupted;
        if (rc == -EAGAIN || rc == -EBUSY)
            return status::ok; // CQ backlog: the next turn reaps it
        return status::system_error;
    }

    thread_ctx& owner_;
    io_uring ring_{};
    uring_backend backend_ = uring_backend::futex;
    int setup_errno_ = 0;
    bool futex_armed_ = false;  // our FUTEX_WAIT on the park word is in the ring
    bool in_turn_ = false;
    bool closing_ = false;
    std::size_t cqes_due_ = 0;       // CQEs the kernel still owes us (ops, timeouts, futex, cancels)
    std::size_t ops_in_flight_ = 0;  // user ops in flight
    std::uint64_t enters_ = 0;
};

} // namespace rtdefer
