// Compile-time contract of the hot paths: each is noexcept and returns the documented type (status
// unless its Returns says otherwise), and the wait-policy template parameter is constrained by
// rtdefer::wait_policy. [[nodiscard]] cannot be asked of a function in C++20: it is checked by
// tests/contract_nodiscard.cpp (scripts/check_unused_result: each discarded call must warn).
// A failing contract is a build error of this file; the runtime cases only keep doctest's main happy
// and check the concept's verdicts once more where a mistake would not fail the build.
#include <rtdefer/baseline/spin_wait.hpp>
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/deferred_word.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/irq_work.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/timer.hpp>
#if RTDEFER_HAVE_LIBURING
#include <rtdefer/uring.hpp>
#endif

#include "test_util.hpp"

#include <chrono>
#include <cstddef>
#include <type_traits>
#include <utility>

using namespace rtdefer;

namespace {

template <class T> T& ref() noexcept; // unevaluated operands only
using steady_tp = std::chrono::steady_clock::time_point;

/// Asserts that the expression is noexcept and of type R (one line per contract).
#define RTDEFER_CONTRACT(R, ...)                                                                   \
    static_assert(noexcept(__VA_ARGS__), "not noexcept: " #__VA_ARGS__);                           \
    static_assert(std::is_same_v<decltype(__VA_ARGS__), R>, "not returning " #R ": " #__VA_ARGS__)


// task_work
RTDEFER_CONTRACT(status, task_work_add(ref<thread_ctx>(), ref<callback_head>()));
RTDEFER_CONTRACT(status, task_work_add(ref<thread_ctx>(), ref<callback_head>(), notify::signal));
RTDEFER_CONTRACT(std::size_t, task_work_run(ref<thread_ctx>())); // a count: discarding it is fine
RTDEFER_CONTRACT(bool, task_work_pending(ref<const thread_ctx>()));
RTDEFER_CONTRACT(bool, task_work_cancel(ref<thread_ctx>(), ref<callback_head>()));
RTDEFER_CONTRACT(status, wait_for_work_until(ref<thread_ctx>(), ref<steady_tp>()));

// irq_work
RTDEFER_CONTRACT(status, irq_work_queue(ref<irq_work_domain>(), ref<irq_work>()));
RTDEFER_CONTRACT(status, irq_work_queue_on(ref<irq_work_domain>(), ref<irq_work>(), 0));
RTDEFER_CONTRACT(status, ref<irq_work_producer>().queue(ref<irq_work>()));
RTDEFER_CONTRACT(std::size_t, irq_work_run(ref<irq_work_domain>()));
RTDEFER_CONTRACT(status, irq_work_sync_until(ref<irq_work>(), ref<steady_tp>()));

// deferred word
RTDEFER_CONTRACT(status, ct_set_work(ref<thread_ctx>(), 1u));
RTDEFER_CONTRACT(status, ct_set_work_or_ipi(ref<thread_ctx>(), 1u));
RTDEFER_CONTRACT(status, ct_isolation_enter(ref<thread_ctx>()));
RTDEFER_CONTRACT(void, ct_isolation_exit(ref<thread_ctx>()));
RTDEFER_CONTRACT(bool, ct_isolated(ref<const thread_ctx>()));

// thread parking and interrupts
RTDEFER_CONTRACT(status, park_until(ref<thread_ctx>(), ref<steady_tp>()));
RTDEFER_CONTRACT(bool, unpark(ref<thread_ctx>()));
RTDEFER_CONTRACT(status, send_ipi(ref<thread_ctx>()));

// expiry lock and timers
RTDEFER_CONTRACT(status, wait_running(ref<const expiry_item>(), ref<thread_ctx>()));
RTDEFER_CONTRACT(status, wait_running<baseline::spin>(ref<const expiry_item>(), ref<thread_ctx>()));
using service = timer_service<>;
RTDEFER_CONTRACT(status, ref<service>().arm(ref<timer>(), ref<steady_tp>(), service::callback{}));
RTDEFER_CONTRACT(bool, ref<service>().cancel(ref<timer>()));
RTDEFER_CONTRACT(status, ref<service>().cancel_sync(ref<timer>(), ref<thread_ctx>()));
RTDEFER_CONTRACT(std::size_t, ref<service>().run_expired(ref<steady_tp>(), ref<thread_ctx>()));
RTDEFER_CONTRACT(status, ref<cpu_timer>().arm(0u, cpu_timer::callback{}));
RTDEFER_CONTRACT(status, ref<cpu_timer>().arm_after(ref<std::chrono::nanoseconds>(), cpu_timer::callback{}));
RTDEFER_CONTRACT(bool, ref<cpu_timer>().cancel());
RTDEFER_CONTRACT(status, ref<cpu_timer>().cancel_sync(ref<thread_ctx>()));
RTDEFER_CONTRACT(status, ref<process_cpu_timer>().arm(ref<thread_ctx>(), 0u, process_cpu_timer::callback{}));
RTDEFER_CONTRACT(bool, ref<process_cpu_timer>().cancel());
RTDEFER_CONTRACT(status, ref<process_cpu_timer>().cancel_sync(ref<thread_ctx>()));

#if RTDEFER_HAVE_LIBURING
// io_uring loop
struct nop_prep {
    void operator()(io_uring_sqe&) const noexcept {}
};
RTDEFER_CONTRACT(status, ref<uring_loop>().submit(ref<uring_op>(), nop_prep{}));
RTDEFER_CONTRACT(status, ref<uring_loop>().submit(ref<uring_op>(), nop_prep{}, ref<std::chrono::nanoseconds>()));
RTDEFER_CONTRACT(status, ref<uring_loop>().cancel(ref<uring_op>()));
RTDEFER_CONTRACT(status, ref<uring_loop>().run_once(ref<thread_ctx>()));
RTDEFER_CONTRACT(status, ref<uring_loop>().run_once_until(ref<thread_ctx>(), ref<steady_tp>()));
#endif

// The wait-policy concept: the library's policies and the baselines satisfy it...
static_assert(wait_policy<pi_block>);
static_assert(wait_policy<sleep_poll>);
static_assert(wait_policy<baseline::spin>);
static_assert(wait_policy<baseline::spin_yield>);

// ...and these do not (so timer_service<T> / wait_running<T> refuse them).
struct no_name {
    template <class R> status wait(thread_ctx&, R&&) const noexcept { return status::ok; }
};
struct throwing_wait {
    static constexpr const char* name = "throwing_wait";
    template <class R> status wait(thread_ctx&, R&&) const { return status::ok; }
};
struct bool_wait {
    static constexpr const char* name = "bool_wait";
    template <class R> bool wait(thread_ctx&, R&&) const noexcept { return true; }
};
static_assert(!wait_policy<int>);
static_assert(!wait_policy<no_name>);
static_assert(!wait_policy<throwing_wait>);
static_assert(!wait_policy<bool_wait>);

template <class P> concept service_accepts = requires { typename timer_service<P>; };
static_assert(service_accepts<baseline::spin>);
static_assert(!service_accepts<bool_wait>);

} // namespace

TEST_SUITE("unit") {

TEST_CASE("contracts: the hot-path contract is checked at compile time (this file built)") {
    // The verdicts again at run time, so a concept that is accidentally always true shows up here
    // as well as in the static_asserts above.
    CHECK(wait_policy<pi_block>);
    CHECK(wait_policy<baseline::spin>);
    CHECK_FALSE(wait_policy<bool_wait>);
    CHECK_FALSE(wait_policy<throwing_wait>);
}

} // TEST_SUITE
