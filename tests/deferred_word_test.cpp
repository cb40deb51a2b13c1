// Unit tests for rtdefer/deferred_word.hpp: the callback table, ct_set_work inside and outside an
// isolated section (coalescing, exactly once at the exit), the interrupt fallback (work runs in the
// target's handler), a thread's requests to itself, the enter refusal while an interrupt is in
// flight (the work still runs there), an interrupt arriving during a run (no nesting, left to the
// drain), zero interrupts inside a section, the RAII section, and thread exit (pending work runs,
// later requests fail).
#include <rtdefer/deferred_word.hpp>

#include "async_cancel.hpp"
#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <random>
#include <thread>

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace rtdefer;

namespace {

// Bits used by this file (the table is process-global).
constexpr unsigned bit_a = 0, bit_b = 1, bit_nest = 2, bit_spin = 3, bit_self = 4;
constexpr unsigned A = 1u << bit_a, B = 1u << bit_b, NEST = 1u << bit_nest, SPIN = 1u << bit_spin,
                   SELF = 1u << bit_self;

std::atomic<int> runs_a{0}, runs_b{0}, runs_nest{0}, runs_spin{0}, runs_self{0};
std::atomic<int> a_in_interrupt{0};
std::atomic<thread_ctx*> a_ran_on{nullptr};
std::atomic<int> depth{0}, max_depth{0};
std::atomic<int> b_in_interrupt{-1};

void enter_cb() noexcept RTDEFER_NONBLOCKING {
    const int d = depth.fetch_add(1, std::memory_order_relaxed) + 1;
    int m = max_depth.load(std::memory_order_relaxed);
    while (d > m && !max_depth.compare_exchange_weak(m, d, std::memory_order_relaxed)) {
    }
}
void leave_cb() noexcept RTDEFER_NONBLOCKING { depth.fetch_sub(1, std::memory_order_relaxed); }

void cb_a(thread_ctx& self, unsigned work) noexcept RTDEFER_NONBLOCKING {
    enter_cb();
    if (work == A) {
        a_ran_on.store(&self, std::memory_order_relaxed);
        if (in_interrupt())
            a_in_interrupt.fetch_add(1, std::memory_order_relaxed);
        runs_a.fetch_add(1, std::memory_order_release);
    }
    leave_cb();
}
void cb_b(thread_ctx&, unsigned work) noexcept RTDEFER_NONBLOCKING {
    enter_cb();
    if (work == B) {
        b_in_interrupt.store(in_interrupt() ? 1 : 0, std::memory_order_relaxed);
        runs_b.fetch_add(1, std::memory_order_release);
    }
    leave_cb();
}
// Requests B for its own thread from inside a callback: must run after this one, not nested.
void cb_nest(thread_ctx& self, unsigned) noexcept RTDEFER_NONBLOCKING {
    enter_cb();
    const status s = ct_set_work_or_ipi(self, B);
    (void)s;
    runs_nest.fetch_add(1, std::memory_order_release);
    leave_cb();
}
// Spins until the thread has received one more interrupt than when it started (a helper sends it).
std::atomic<bool> spin_started{false};
void cb_spin(thread_ctx& self, unsigned) noexcept RTDEFER_NONBLOCKING {
    enter_cb();
    const std::uint64_t before = interrupts_received(self);
    spin_started.store(true, std::memory_order_release);
    while (interrupts_received(self) == before) {
        // TSan delivers a signal only at an intercepted call: give it one.
        RTDEFER_EFFECTS_TRUST_BEGIN
        detail::rtsan_trust trust;
        sched_yield();
        RTDEFER_EFFECTS_TRUST_END
    }
    runs_spin.fetch_add(1, std::memory_order_release);
    leave_cb();
}
void cb_self(thread_ctx&, unsigned) noexcept RTDEFER_NONBLOCKING { runs_self.fetch_add(1, std::memory_order_release); }

struct setup_once {
    setup_once() {
        REQUIRE(ct_work_setup() == status::ok);
        REQUIRE(ct_register_work(bit_a, &cb_a) == status::ok);
        REQUIRE(ct_register_work(bit_b, &cb_b) == status::ok);
        REQUIRE(ct_register_work(bit_nest, &cb_nest) == status::ok);
        REQUIRE(ct_register_work(bit_spin, &cb_spin) == status::ok);
        REQUIRE(ct_register_work(bit_self, &cb_self) == status::ok);
    }
};
void setup() { static setup_once once; }

void reset_counters() {
    for (auto* c : {&runs_a, &runs_b, &runs_nest, &runs_spin, &runs_self, &a_in_interrupt})
        c->store(0);
    a_ran_on.store(nullptr);
    depth.store(0);
    max_depth.store(0);
    b_in_interrupt.store(-1);
}

template <class Pred> void wait_until(Pred&& p) {
    while (!p())
        std::this_thread::yield();
}

/// A helper thread that is attached and does what `body(self)` says.
template <class F> void with_thread(F&& body) {
    std::thread t([&] { body(attach_this_thread()); });
    t.join();
}

/// Blocks/unblocks the interrupt signal on the calling thread.
void mask_interrupt(bool block) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, interrupt_signal());
    CHECK(pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr) == 0);
}


} // namespace

TEST_CASE("ct_register_work validates and is idempotent") {
    setup();
    CHECK(ct_register_work(ct_work_max, &cb_a) == status::invalid_argument);
    CHECK(ct_register_work(7, nullptr) == status::invalid_argument);
    CHECK(ct_register_work(bit_a, &cb_a) == status::ok);   // same binding again
    CHECK(ct_register_work(bit_a, &cb_b) == status::busy); // a different one
    CHECK(ct_register_work(9, &cb_a) == status::ok);
    CHECK(ct_unregister_work(9) == status::ok);
    CHECK(ct_unregister_work(ct_work_max) == status::invalid_argument);
}

TEST_CASE("ct_set_work rejects empty and unbound work") {
    setup();
    thread_ctx& self = attach_this_thread();
    CHECK(ct_set_work(self, 0) == status::invalid_argument);
    CHECK(ct_set_work(self, 1u << 11) == status::invalid_argument); // bit 11 never bound
    CHECK(ct_set_work_or_ipi(self, 1u << 11) == status::invalid_argument);
}

TEST_CASE("ct_set_work refuses a thread outside an isolated section and changes nothing") {
    setup();
    reset_counters();
    thread_ctx& self = attach_this_thread();
    const std::uint32_t before = detail::ctx_access::ct(self).word.load();
    with_thread([&](thread_ctx&) { CHECK(ct_set_work(self, A) == status::not_accepting); });
    CHECK(detail::ctx_access::ct(self).word.load() == before);
    CHECK_FALSE(ct_isolated(self));
    CHECK(runs_a.load() == 0);
}

TEST_CASE("work set during an isolated section runs once at the exit, coalesced, on the owner") {
    setup();
    reset_counters();
    thread_ctx& self = attach_this_thread();
    REQUIRE(ct_isolation_enter(self) == status::ok);
    CHECK(ct_isolated(self));
    const std::uint64_t irqs = interrupts_received(self);
    with_thread([&](thread_ctx&) {
        CHECK(ct_set_work(self, A) == status::ok);
        CHECK(ct_set_work(self, A) == status::ok);         // coalesces with the first
        CHECK(ct_set_work_or_ipi(self, A | B) == status::ok); // isolated: deferred, no interrupt
    });
    CHECK(runs_a.load() == 0); // nothing runs before the exit
    CHECK(runs_b.load() == 0);
    CHECK(interrupts_received(self) == irqs);
    ct_isolation_exit(self);
    CHECK(runs_a.load() == 1); // three requests for A, one run after all of them
    CHECK(runs_b.load() == 1);
    CHECK(a_ran_on.load() == &self);
    CHECK(a_in_interrupt.load() == 0);
    CHECK(b_in_interrupt.load() == 0);
    CHECK_FALSE(ct_isolated(self));
    // The next section starts from an empty word: nothing runs twice.
    REQUIRE(ct_isolation_enter(self) == status::ok);
    ct_isolation_exit(self);
    CHECK(runs_a.load() == 1);
    CHECK(runs_b.load() == 1);
}

TEST_CASE("ct_set_work_or_ipi interrupts a thread that is not isolated; the handler runs the work there") {
    setup();
    reset_counters();
    std::atomic<thread_ctx*> target{nullptr};
    std::atomic<bool> stop{false};
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        target.store(&self, std::memory_order_release);
        while (!stop.load(std::memory_order_acquire))
            std::this_thread::yield(); // not isolated
    });
    wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
    thread_ctx& tgt = *target.load();
    CHECK(ct_set_work(tgt, A) == status::not_accepting);
    CHECK(ct_set_work_or_ipi(tgt, A) == status::ok);
    wait_until([&] { return runs_a.load(std::memory_order_acquire) == 1; });
    CHECK(a_ran_on.load() == &tgt);
    CHECK(a_in_interrupt.load() == 1);
    wait_until([&] { return (detail::ctx_access::ct(tgt).word.load() & detail::ct_inflight) == 0; });
    CHECK(detail::ctx_access::ct(tgt).word.load() == detail::ct_disabled); // acknowledged and drained
    stop.store(true, std::memory_order_release);
    t.join();
    CHECK(runs_a.load() == 1);
}

TEST_CASE("a thread's request to itself runs at once outside a section and at the exit inside one") {
    setup();
    reset_counters();
    thread_ctx& self = attach_this_thread();
    const std::uint64_t irqs = interrupts_received(self);
    CHECK(ct_set_work_or_ipi(self, SELF) == status::ok);
    CHECK(runs_self.load() == 1);
    CHECK(ct_set_work(self, SELF) == status::not_accepting);
    REQUIRE(ct_isolation_enter(self) == status::ok);
    CHECK(ct_set_work_or_ipi(self, SELF) == status::ok);
    CHECK(runs_self.load() == 1);
    ct_isolation_exit(self);
    CHECK(runs_self.load() == 2);
    CHECK(interrupts_received(self) == irqs); // never by signal
}

TEST_CASE("work requested from inside a callback runs after it, never nested") {
    setup();
    reset_counters();
    thread_ctx& self = attach_this_thread();
    CHECK(ct_set_work_or_ipi(self, NEST) == status::ok); // cb_nest requests B for this thread
    CHECK(runs_nest.load() == 1);
    CHECK(runs_b.load() == 1);
    CHECK(max_depth.load() == 1);
    CHECK(b_in_interrupt.load() == 0);
    CHECK(detail::ctx_access::ct(self).word.load() == detail::ct_disabled);
}

TEST_CASE("enter is refused while an interrupt is in flight, yet runs the work; the signal never lands inside a section") {
    setup();
    reset_counters();
    std::atomic<thread_ctx*> target{nullptr};
    std::atomic<int> phase{0};
    status first = status::ok, second = status::busy;
    std::uint64_t irq_inside = 0, refused = 0, irq_at_unmask = 0;
    int a_at_refusal = -1, b_at_refusal = -1;
    std::uint32_t word_at_refusal = 0, word_after_signal = 0;
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        mask_interrupt(true); // the signal stays pending: "in flight" (a thread that blocks it)
        target.store(&self, std::memory_order_release);
        wait_until([&] { return phase.load(std::memory_order_acquire) == 1; });
        first = ct_isolation_enter(self); // INFLIGHT is set: must refuse, but runs A and B here
        a_at_refusal = runs_a.load();
        b_at_refusal = runs_b.load();
        word_at_refusal = detail::ctx_access::ct(self).word.load();
        const std::uint64_t irq0 = interrupts_received(self);
        mask_interrupt(false);            // the pending signal is delivered here
        irq_at_unmask = interrupts_received(self) - irq0;
        word_after_signal = detail::ctx_access::ct(self).word.load();
        second = ct_isolation_enter(self);
        const std::uint64_t before = interrupts_received(self);
        if (second == status::ok) {
            ct_isolation_exit(self);
            irq_inside = interrupts_received(self) - before;
        }
        refused = detail::ctx_access::ct(self).enter_refused.load(); // the ctx is freed when this thread exits
    });
    wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
    thread_ctx& tgt = *target.load();
    CHECK(ct_set_work_or_ipi(tgt, A) == status::ok);
    CHECK((detail::ctx_access::ct(tgt).word.load() & detail::ct_inflight) != 0);
    CHECK(ct_set_work_or_ipi(tgt, B) == status::ok); // coalesced onto the same signal
    phase.store(1, std::memory_order_release);
    t.join();
    CHECK(first == status::busy);
    CHECK(second == status::ok);
    CHECK(irq_inside == 0);
    // Both requests ran once, at the refused enter (thread context), not held back by the blocked
    // signal; INFLIGHT stayed set until the one coalesced signal was handled, which found nothing left.
    CHECK(a_at_refusal == 1);
    CHECK(b_at_refusal == 1);
    CHECK(word_at_refusal == (detail::ct_disabled | detail::ct_inflight));
    CHECK(irq_at_unmask == 1); // one signal for both requests
    CHECK(word_after_signal == detail::ct_disabled);
    CHECK(runs_a.load() == 1);
    CHECK(runs_b.load() == 1);
    CHECK(a_in_interrupt.load() == 0);
    CHECK(b_in_interrupt.load() == 0);
    CHECK(max_depth.load() == 1);
    CHECK(refused >= 1);
}

TEST_CASE("an interrupt that arrives during a run is left to the run's drain (no nesting)") {
    setup();
    reset_counters();
    spin_started.store(false);
    std::atomic<thread_ctx*> target{nullptr};
    thread_ref keep; // our send_ipi may still read the ctx while the thread exits
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        CHECK(ct_isolation_enter(self) == status::ok);
        keep = thread_ref(self);
        target.store(&self, std::memory_order_release);
        wait_until([&] { return (detail::ctx_access::ct(self).word.load(std::memory_order_acquire) & SPIN) != 0; });
        ct_isolation_exit(self); // runs cb_spin, which waits for the interrupt below
    });
    wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
    thread_ctx& tgt = *target.load();
    CHECK(ct_set_work(tgt, SPIN) == status::ok);
    wait_until([&] { return spin_started.load(std::memory_order_acquire); });
    // The target is inside its exit's run: not isolated, so this goes by interrupt; the handler
    // finds `running` set and leaves B to the drain.
    CHECK(ct_set_work_or_ipi(tgt, B) == status::ok);
    t.join();
    CHECK(runs_spin.load() == 1);
    CHECK(runs_b.load() == 1);
    CHECK(b_in_interrupt.load() == 0); // run by the drain, in thread context
    CHECK(max_depth.load() == 1);
}

TEST_CASE("isolated_section: RAII enter/exit, early exit, refusal reported") {
    setup();
    reset_counters();
    thread_ctx& self = attach_this_thread();
    {
        isolated_section sec(self);
        REQUIRE(sec.entered());
        CHECK(sec.result() == status::ok);
        CHECK(ct_isolated(self));
        with_thread([&](thread_ctx&) { CHECK(ct_set_work(self, A) == status::ok); });
        CHECK(runs_a.load() == 0);
    }
    CHECK(runs_a.load() == 1);
    CHECK_FALSE(ct_isolated(self));
    {
        isolated_section sec(self);
        REQUIRE(sec);
        with_thread([&](thread_ctx&) { CHECK(ct_set_work(self, A) == status::ok); });
        sec.exit();
        CHECK(runs_a.load() == 2);
        CHECK_FALSE(sec.entered());
        CHECK(sec.result() == status::ok); // what the enter returned, not "left"
    } // no second exit
    CHECK(runs_a.load() == 2);
}

TEST_CASE("thread exit inside a section runs the pending work; later requests return exited") {
    setup();
    reset_counters();
    std::atomic<thread_ctx*> target{nullptr};
    std::atomic<bool> go{false};
    thread_ref ref;
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        CHECK(ct_isolation_enter(self) == status::ok);
        ref = thread_ref(self);
        target.store(&self, std::memory_order_release);
        wait_until([&] { return go.load(std::memory_order_acquire); });
        // exits without leaving the section
    });
    wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
    CHECK(ct_set_work(*ref, A) == status::ok);
    go.store(true, std::memory_order_release);
    t.join();
    CHECK(runs_a.load() == 1);
    CHECK(a_ran_on.load() == &*ref);
    CHECK(ct_set_work(*ref, A) == status::exited);
    CHECK(ct_set_work_or_ipi(*ref, A) == status::exited);
    CHECK(runs_a.load() == 1);
}

TEST_CASE("ct_set_work_or_ipi before ct_work_setup would report not_installed (checked via the flag)") {
    setup();
    // The hook is registered by setup(); simulate a program that never called ct_work_setup().
    detail::ct().hook_ready.store(false);
    thread_ctx& self = attach_this_thread();
    CHECK(ct_set_work_or_ipi(self, A) == status::not_installed);
    detail::ct().hook_ready.store(true);
    CHECK(ct_set_work_or_ipi(self, A) == status::ok);
}

TEST_CASE("misuse is an assertion, not a hang: exit outside a section, enter inside one") {
    setup();
    using rtdefer_test::aborted;
    CHECK(aborted(rtdefer_test::in_child(
        [] {
            thread_ctx& self = attach_this_thread();
            ct_isolation_exit(self); // not isolated
            return 0;
        },
        /*quiet=*/true)));
    CHECK(aborted(rtdefer_test::in_child(
        [] {
            thread_ctx& self = attach_this_thread();
            (void)ct_isolation_enter(self);
            (void)ct_isolation_enter(self); // already isolated
            return 0;
        },
        /*quiet=*/true)));
}

TEST_CASE("a full signal queue (EAGAIN) is no_space: INFLIGHT withdrawn, the work runs at the target's next enter") {
    setup();
    // RLIMIT_SIGPENDING 0 makes queueing a real-time signal fail with EAGAIN (in a child only).
    const int rc = rtdefer_test::in_child([] {
        reset_counters();
        rlimit zero{0, 0};
        if (setrlimit(RLIMIT_SIGPENDING, &zero) != 0)
            return 10;
        std::atomic<thread_ctx*> target{nullptr};
        std::atomic<int> phase{0};
        status entered = status::busy;
        int runs_before_enter = -1;
        std::thread t([&] {
            thread_ctx& self = attach_this_thread();
            target.store(&self, std::memory_order_release);
            wait_until([&] { return phase.load(std::memory_order_acquire) == 1; });
            runs_before_enter = runs_a.load();
            entered = ct_isolation_enter(self); // drains A (no signal is coming), then enters
            if (entered == status::ok)
                ct_isolation_exit(self);
        });
        wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
        thread_ctx& tgt = *target.load();
        const status s = ct_set_work_or_ipi(tgt, A);
        const std::uint32_t w = detail::ctx_access::ct(tgt).word.load();
        phase.store(1, std::memory_order_release);
        t.join();
        if (s != status::no_space)
            return 11;
        if ((w & detail::ct_inflight) != 0 || (w & (A << detail::ct_ipi_shift)) == 0)
            return 12;
        if (runs_before_enter != 0 || entered != status::ok || runs_a.load() != 1 || a_in_interrupt.load() != 0)
            return 13;
        return 0;
    });
    CHECK(rc == 0);
}

TEST_CASE("a foreign interrupt takes IPI work but leaves INFLIGHT to the deferred_word signal still coming") {
    setup();
    reset_counters();
    // The sender's window between its CAS and its send, made deterministic: the test sets the word
    // as a sender's CAS would (INFLIGHT|A in the IPI field), then sends foreign interrupts (another
    // subsystem's tag, a plain tgkill) before the deferred_word signal itself.
    std::atomic<thread_ctx*> target{nullptr};
    std::atomic<int> phase{0};
    status while_in_flight = status::ok, after_signal = status::busy;
    std::uint64_t irq_inside = 0;
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        target.store(&self, std::memory_order_release);
        wait_until([&] { return phase.load(std::memory_order_acquire) == 1; });
        while_in_flight = ct_isolation_enter(self); // our signal is still coming: refused
        if (while_in_flight == status::ok)
            ct_isolation_exit(self);
        phase.store(2, std::memory_order_release);
        wait_until([&] { return phase.load(std::memory_order_acquire) == 3; });
        after_signal = ct_isolation_enter(self);
        const std::uint64_t before = interrupts_received(self);
        if (after_signal == status::ok) {
            ct_isolation_exit(self);
            irq_inside = interrupts_received(self) - before;
        }
    });
    wait_until([&] { return target.load(std::memory_order_acquire) != nullptr; });
    thread_ctx& tgt = *target.load();
    // The handler counts an interrupt before it runs the hooks: wait for the effect, not the count
    // (bounded: a wrong hook shows as a failed CHECK below, not a hang).
    auto interrupt_and_wait = [&](auto send, auto done) {
        const std::uint64_t r0 = interrupts_received(tgt);
        REQUIRE(send() == status::ok);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!(interrupts_received(tgt) > r0 && done()) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::yield();
        // One more pass lets a hook that is still running finish (it changes nothing we check then).
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    // release: publishes like the sender's CAS (DW1).
    detail::ctx_access::ct(tgt).word.fetch_or(detail::ct_inflight | (A << detail::ct_ipi_shift), std::memory_order_release);
    interrupt_and_wait([&] { return send_ipi(tgt, interrupt_source::task_work); },
                       [&] { return runs_a.load(std::memory_order_acquire) == 1; });
    const std::uint32_t after_foreign = detail::ctx_access::ct(tgt).word.load();
    const int a_after_foreign = runs_a.load(std::memory_order_acquire);
    interrupt_and_wait([&] { return send_ipi(tgt); }, [] { return true; }); // untagged: not ours either
    const std::uint32_t after_plain = detail::ctx_access::ct(tgt).word.load();
    phase.store(1, std::memory_order_release);
    wait_until([&] { return phase.load(std::memory_order_acquire) == 2; });
    interrupt_and_wait([&] { return detail::ct_signal(tgt); }, // the sender's tagged send
                       [&] { return detail::ctx_access::ct(tgt).word.load() == detail::ct_disabled; });
    const std::uint32_t after_ours = detail::ctx_access::ct(tgt).word.load();
    phase.store(3, std::memory_order_release);
    t.join();
    CHECK(a_after_foreign == 1); // the foreign interrupt ran A, in interrupt context
    CHECK(a_in_interrupt.load() == 1);
    CHECK(after_foreign == (detail::ct_disabled | detail::ct_inflight));
    CHECK(after_plain == (detail::ct_disabled | detail::ct_inflight));
    CHECK(while_in_flight == status::busy);
    CHECK(after_ours == detail::ct_disabled);
    CHECK(after_signal == status::ok);
    CHECK(irq_inside == 0);
    CHECK(runs_a.load() == 1);
}

// ---------------------------------------------------------------------------------------------
// Asynchronous cancellation of a host thread (as jack2 cancels its real-time thread)
// ---------------------------------------------------------------------------------------------

namespace {

constexpr unsigned bit_cancel = 5;
constexpr unsigned CANCEL = 1u << bit_cancel;
std::atomic<std::uint64_t> cancel_runs{0};

// Spins (~2 µs) so that cancellation often arrives while work is in hand (inside the hold).
void cb_cancel(thread_ctx&, unsigned) noexcept RTDEFER_NONBLOCKING {
    for (int i = 0; i < 5000; ++i)
        asm volatile("" ::: "memory");
    cancel_runs.fetch_add(1, std::memory_order_release);
}

std::atomic<thread_ctx*> cancel_target{nullptr};
thread_ref cancel_target_ref; // taken by the thread itself, before it turns asynchronous

// The host's loop: a plain function (no destructors, not noexcept) so that the forced unwind of an
// asynchronous cancellation may pass through it; it calls nothing but rtdefer's section functions.
void* cancelled_host(void*) {
    thread_ctx& self = attach_this_thread();
    cancel_target_ref = thread_ref(self);
    int old = 0;
    ::pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    cancel_target.store(&self, std::memory_order_release);
    for (;;) {
        if (ct_isolation_enter(self) == status::ok) {
            for (int i = 0; i < 300; ++i)
                asm volatile("" ::: "memory");
            ct_isolation_exit(self);
        }
    }
    return nullptr;
}

} // namespace

TEST_CASE("asynchronous cancellation at random points never aborts and never loses an accepted request") {
    setup();
    if (const char* why = rtdefer_test::async_cancel_unsupported()) {
        rtdefer_test::skip_test(why);
        return;
    }
    REQUIRE(ct_register_work(bit_cancel, &cb_cancel) == status::ok);
    const std::size_t rounds = rtdefer_test::scaled(200, 20);
    const int rc = rtdefer_test::in_child([rounds] {
        std::mt19937 rng(12345);
        std::uint64_t total_accepted = 0;
        for (std::size_t r = 0; r < rounds; ++r) {
            cancel_runs.store(0);
            cancel_target.store(nullptr);
            pthread_t host;
            if (::pthread_create(&host, nullptr, &cancelled_host, nullptr) != 0)
                return 10;
            wait_until([] { return cancel_target.load(std::memory_order_acquire) != nullptr; });
            thread_ctx& tgt = *cancel_target.load();
            std::atomic<bool> stop{false};
            std::uint64_t accepted = 0, bad = 0;
            // One request outstanding at a time: every accepted request is one run (no coalescing).
            std::thread sender([&] {
                while (!stop.load(std::memory_order_acquire)) {
                    const status s = ct_set_work_or_ipi(tgt, CANCEL);
                    if (s == status::exited)
                        return;
                    if (s != status::ok) {
                        ++bad;
                        return;
                    }
                    ++accepted;
                    while (cancel_runs.load(std::memory_order_acquire) < accepted && !tgt.exited())
                        std::this_thread::yield();
                }
            });
            const rtdefer_test::cancel_outcome c = rtdefer_test::cancel_and_join(host, std::chrono::microseconds(rng() % 3000));
            stop.store(true, std::memory_order_release);
            sender.join();
            if (c.cancel_rc != 0)
                return 11;
            if (!c.cancelled()) {
                std::fprintf(stderr, "round %zu: pthread_join %d, result %p\n", r, c.join_rc, c.result);
                return 12;
            }
            // The host exited: its exit hook ran whatever was still in the word.
            if (bad != 0)
                return 13;
            if (cancel_runs.load() != accepted) {
                std::fprintf(stderr, "round %zu: %llu accepted, %llu run; word %#x, runs deferred %llu ipi %llu local %llu\n",
                             r, (unsigned long long)accepted, (unsigned long long)cancel_runs.load(),
                             detail::ctx_access::ct(tgt).word.load(), (unsigned long long)detail::ctx_access::ct(tgt).deferred_runs.load(),
                             (unsigned long long)detail::ctx_access::ct(tgt).ipi_runs.load(), (unsigned long long)detail::ctx_access::ct(tgt).local_runs.load());
                return 14;
            }
            total_accepted += accepted;
            cancel_target_ref.reset();
        }
        std::printf("async cancel: %zu rounds, %llu accepted requests, each run once\n", rounds,
                    (unsigned long long)total_accepted);
        std::fflush(stdout); // the child leaves with _exit()
        return total_accepted > 0 ? 0 : 15;
    });
    CHECK(rc == 0);
    CHECK(ct_unregister_work(bit_cancel) == status::ok);
}

// ---- The word's transitions with an injecting Atom (detail/deferred_word_transitions.hpp) ----
// Each case runs one transition on a test word, with a competing transition injected right before
// its operation number `at`, for every `at` the transition reaches (the competitor runs after it
// when `at` is past its end), and checks the outcome of that interleaving: who got which field,
// who owes the signal, no bit lost or taken twice.
#include "injecting_atomic.hpp"

namespace {
using rtdefer_test::injecting_atomic;
using word_t = injecting_atomic<std::uint32_t>;
constexpr std::uint32_t I_A = A << detail::ct_ipi_shift, I_B = B << detail::ct_ipi_shift;
constexpr int max_ops = 6; // more than any transition here performs

using rtdefer_test::interleave;
} // namespace

TEST_CASE("deferred word transitions: ct_set_work while the target enters isolation") {
    for (int at = 0; at < max_ops; ++at) {
        CAPTURE(at);
        word_t word{detail::ct_disabled};
        detail::ct_enter_step step{};
        auto enter = [&] { step = detail::ct_word_enter(word); };
        detail::ct_path path{};
        status s{};
        const bool before = interleave(word, at, [&] { s = detail::ct_word_queue<false>(word, A, path); }, enter);
        CHECK(step == detail::ct_enter_step::entered);
        if (before) {
            // The thread entered between the sender's load (DISABLED) and its CAS: deferred.
            CHECK(s == status::ok);
            CHECK(path == detail::ct_path::deferred);
            CHECK(word.load(std::memory_order_relaxed) == A);
        } else {
            CHECK(s == status::not_accepting);
            // Judged by a CAS on the live word (an RMW reads the latest value), never by the load.
            CHECK(word.rmws() >= 1);
            CHECK(word.load(std::memory_order_relaxed) == 0);
        }
    }
}

TEST_CASE("deferred word transitions: a sender while the target exits isolation") {
    for (const bool ipi : {false, true}) {
        for (int at = 0; at < max_ops; ++at) {
            CAPTURE(ipi);
            CAPTURE(at);
            word_t word{A}; // isolated, A already deferred by an earlier sender
            std::uint32_t taken = ~0u;
            auto exit = [&] { taken = detail::ct_word_exit_idle(word) ? 0 : detail::ct_word_exit_take(word); };
            detail::ct_path path{};
            status s{};
            const bool before = interleave(word, at, [&] {
                s = ipi ? detail::ct_word_queue<true>(word, B, path) : detail::ct_word_queue<false>(word, B, path);
            }, exit);
            const std::uint32_t w = word.load(std::memory_order_relaxed);
            if (s == status::ok && path == detail::ct_path::deferred) {
                // Deferred before the exit: the exit took A and B, once, and left nothing in S.
                CHECK_FALSE(before);
                CHECK(taken == (A | B));
                CHECK(w == detail::ct_disabled);
            } else {
                // The exit came between the sender's load and its CAS: it took A only; B went to
                // the IPI field (this sender owes the signal) or was refused.
                CHECK(before);
                CHECK(taken == A);
                if (ipi) {
                    CHECK(s == status::ok);
                    CHECK(path == detail::ct_path::ipi_signal);
                    CHECK(w == (detail::ct_disabled | detail::ct_inflight | I_B));
                } else {
                    CHECK(s == status::not_accepting);
                    CHECK(w == detail::ct_disabled);
                }
            }
        }
    }
}

TEST_CASE("deferred word transitions: the exit's CAS while a sender defers") {
    for (int at = 0; at < max_ops; ++at) {
        CAPTURE(at);
        word_t word{0}; // isolated, nothing deferred
        detail::ct_path path{};
        status s{};
        auto sender = [&] { s = detail::ct_word_queue<false>(word, B, path); };
        std::uint32_t taken = ~0u;
        const bool before = interleave(word, at, [&] {
            taken = detail::ct_word_exit_idle(word) ? 0 : detail::ct_word_exit_take(word);
        }, sender);
        CHECK(word.load(std::memory_order_relaxed) == detail::ct_disabled);
        if (before) {
            CHECK(s == status::ok);
            CHECK(path == detail::ct_path::deferred);
            CHECK(taken == B); // the exit runs it, once
        } else {
            CHECK(s == status::not_accepting);
            CHECK(taken == 0);
        }
    }
}

TEST_CASE("deferred word transitions: the enter's CAS while a sender sets interrupt work") {
    for (int at = 0; at < max_ops; ++at) {
        CAPTURE(at);
        word_t word{detail::ct_disabled};
        detail::ct_path path{};
        status s{};
        auto sender = [&] { s = detail::ct_word_queue<true>(word, A, path); };
        detail::ct_enter_step step{};
        const bool before = interleave(word, at, [&] { step = detail::ct_word_enter(word); }, sender);
        const std::uint32_t w = word.load(std::memory_order_relaxed);
        REQUIRE(s == status::ok);
        if (before) {
            // The sender saw DISABLED: A is interrupt work and its signal is coming, so the enter
            // must not isolate (the signal would land inside) and must leave A in the word.
            CHECK(step == detail::ct_enter_step::ipi);
            CHECK(path == detail::ct_path::ipi_signal);
            CHECK(w == (detail::ct_disabled | detail::ct_inflight | I_A));
        } else {
            CHECK(step == detail::ct_enter_step::entered);
            CHECK(path == detail::ct_path::deferred);
            CHECK(w == A);
        }
    }
}

TEST_CASE("deferred word transitions: two senders, one interrupt (INFLIGHT goes to exactly one)") {
    for (int at = 0; at < max_ops; ++at) {
        CAPTURE(at);
        word_t word{detail::ct_disabled};
        detail::ct_path path_a{}, path_b{};
        status sb{};
        auto other = [&] { sb = detail::ct_word_queue<true>(word, B, path_b); };
        status sa{};
        (void)interleave(word, at, [&] { sa = detail::ct_word_queue<true>(word, A, path_a); }, other);
        CHECK(sa == status::ok);
        CHECK(sb == status::ok);
        CHECK(word.load(std::memory_order_relaxed) == (detail::ct_disabled | detail::ct_inflight | I_A | I_B));
        const int signals = (path_a == detail::ct_path::ipi_signal) + (path_b == detail::ct_path::ipi_signal);
        const int riders = (path_a == detail::ct_path::ipi_coalesced) + (path_b == detail::ct_path::ipi_coalesced);
        CHECK(signals == 1);
        CHECK(riders == 1);
    }
}

TEST_CASE("deferred word transitions: a sender while the thread exits for good") {
    for (const bool ipi : {false, true}) {
        for (const std::uint32_t start : {std::uint32_t{0}, detail::ct_disabled}) {
            for (int at = 0; at < max_ops; ++at) {
                CAPTURE(ipi);
                CAPTURE(start);
                CAPTURE(at);
                word_t word{start};
                // The exit hook's transition (ct_thread_exit): closes the word for good.
                auto thread_exit = [&] { (void)word.exchange(detail::ct_disabled | detail::ct_exited, std::memory_order_acquire); };
                detail::ct_path path{};
                status s{};
                const bool before = interleave(word, at, [&] {
                    s = ipi ? detail::ct_word_queue<true>(word, A, path) : detail::ct_word_queue<false>(word, A, path);
                }, thread_exit);
                if (before) {
                    CHECK(s == status::exited); // nothing set in a closed word
                    CHECK(word.load(std::memory_order_relaxed) == (detail::ct_disabled | detail::ct_exited));
                } else {
                    CHECK(s == (ipi || start == 0 ? status::ok : status::not_accepting));
                }
            }
        }
    }
}
