// Unit tests for rtdefer/interrupt.hpp: installation statuses, hooks running in signal context on
// the target thread, EINTR of blocking syscalls, statistics, and sending to an exited thread.
#include <rtdefer/interrupt.hpp>
#include <rtdefer/rt_thread.hpp>

#include "test_util.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

std::atomic<thread_ctx*> hook_self{nullptr};
std::atomic<bool> hook_in_interrupt{false};
std::atomic<int> hook_calls{0};

void recording_hook(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    hook_self.store(self, std::memory_order_relaxed);
    hook_in_interrupt.store(in_interrupt(), std::memory_order_relaxed);
    hook_calls.fetch_add(1, std::memory_order_release);
}

void noop_hook(thread_ctx*) noexcept RTDEFER_NONBLOCKING {}

// Distinct bodies, so identical-code folding cannot merge them into one address.
std::atomic<int> filler_sink{0};
template <int N> void filler(thread_ctx*) noexcept RTDEFER_NONBLOCKING {
    filler_sink.store(N, std::memory_order_relaxed);
}

void foreign_handler(int) {}

// Tagged hook: counts, per source, the interrupts of the thread in `tag_target`; the plain hook
// beside it counts that thread's interrupts of every source.
std::atomic<thread_ctx*> tag_target{nullptr};
std::array<std::atomic<int>, interrupt_source_count> tag_seen{};
std::atomic<int> plain_seen{0};

void tag_hook(thread_ctx* self, interrupt_source src) noexcept RTDEFER_NONBLOCKING {
    if (self != nullptr && self == tag_target.load(std::memory_order_relaxed))
        tag_seen[static_cast<std::size_t>(src)].fetch_add(1, std::memory_order_release);
}
void plain_count_hook(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self != nullptr && self == tag_target.load(std::memory_order_relaxed))
        plain_seen.fetch_add(1, std::memory_order_release);
}

} // namespace

static_assert(interrupt_source_of_tag(interrupt_tag(interrupt_source::deferred_word)) ==
              interrupt_source::deferred_word);
static_assert(interrupt_source_of_tag(interrupt_tag(interrupt_source::cpu_timer)) == interrupt_source::cpu_timer);
static_assert(interrupt_source_of_tag(0) == interrupt_source::untagged);
static_assert(interrupt_source_of_tag(static_cast<int>(interrupt_source::deferred_word)) ==
              interrupt_source::untagged); // no marker: a stray small value is not a tag
static_assert(interrupt_source_of_tag(interrupt_tag(interrupt_source::user) + 1) == interrupt_source::untagged);

TEST_CASE("interrupt_install: ok, idempotent, busy for a second signal, invalid outside the RT range") {
    REQUIRE(interrupt_install() == status::ok);
    CHECK(interrupt_install() == status::ok);
    CHECK(interrupt_signal() == default_interrupt_signal());
    CHECK(interrupt_install(default_interrupt_signal() + 1) == status::busy);
    CHECK(interrupt_install(SIGUSR1) == status::invalid_argument);
    CHECK(interrupt_install(SIGRTMAX + 1) == status::invalid_argument);
}

TEST_CASE("interrupt_install refuses a signal with a foreign handler; send_ipi before install says not_installed") {
    const int rc = rtdefer_test::in_child([] {
        // A fresh process as far as rtdefer is concerned (the parent may have installed already).
        detail::interrupts().signo.store(0, std::memory_order_release);
        ::signal(default_interrupt_signal(), SIG_DFL);
        thread_ctx& self = attach_this_thread();
        if (send_ipi(self) != status::not_installed)
            return 10;
        struct sigaction sa {};
        sa.sa_handler = &foreign_handler;
        ::sigaction(default_interrupt_signal(), &sa, nullptr);
        if (interrupt_install() != status::signal_in_use)
            return 11;
        if (interrupt_signal() != 0)
            return 12;
        // Another free signal still works, and SIG_IGN counts as free.
        ::signal(default_interrupt_signal() + 1, SIG_IGN);
        if (interrupt_install(default_interrupt_signal() + 1) != status::ok)
            return 13;
        return 0;
    });
    CHECK(rc == 0);
}

TEST_CASE("hook registration is idempotent and bounded") {
    const int rc = rtdefer_test::in_child([] {
        if (interrupt_register_hook(nullptr) != status::invalid_argument)
            return 10;
        // The child inherited this process's hooks; fill the table with distinct functions.
        static constexpr interrupt_hook fillers[] = {
            &filler<1>,  &filler<2>,  &filler<3>,  &filler<4>,  &filler<5>,  &filler<6>,
            &filler<7>,  &filler<8>,  &filler<9>,  &filler<10>, &filler<11>, &filler<12>,
            &filler<13>, &filler<14>, &filler<15>, &filler<16>, &filler<17>};
        bool full = false;
        for (interrupt_hook h : fillers) {
            const status s = interrupt_register_hook(h);
            if (s == status::no_space) {
                full = true;
                break;
            }
            if (s != status::ok || interrupt_register_hook(h) != status::ok) // idempotent
                return 11;
        }
        return full ? 0 : 12;
    });
    CHECK(rc == 0);
}

TEST_CASE("send_ipi runs the hooks on the target thread, in interrupt context") {
    REQUIRE(interrupt_install() == status::ok);
    REQUIRE(interrupt_register_hook(&recording_hook) == status::ok);
    REQUIRE(interrupt_register_hook(&noop_hook) == status::ok);
    std::atomic<bool> stop{false};
    std::atomic<bool> outside_interrupt{true};
    rt_thread target({"ipi-target", sched_policy::other, 0, -1}, [&](thread_ctx&) {
        while (!stop.load(std::memory_order_acquire))
            if (in_interrupt()) // the thread's own code never sees interrupt context
                outside_interrupt.store(false);
    });
    const int before = hook_calls.load(std::memory_order_acquire);
    const auto received_before = interrupts_received(target.ctx());
    REQUIRE(send_ipi(target.ctx()) == status::ok);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (hook_calls.load(std::memory_order_acquire) == before && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    stop.store(true, std::memory_order_release);
    target.join();
    CHECK(hook_calls.load() > before);
    CHECK(hook_self.load() == &target.ctx());
    CHECK(hook_in_interrupt.load());
    CHECK(outside_interrupt.load());
    CHECK(interrupts_received(target.ctx()) == received_before + 1);
    CHECK_FALSE(in_interrupt());
}

TEST_CASE("the interrupt makes a blocking syscall in the target return EINTR") {
    REQUIRE(interrupt_install() == status::ok);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::atomic<bool> blocked{false};
    ssize_t got = 0;
    int err = 0;
    rt_thread target({"ipi-eintr", sched_policy::other, 0, -1}, [&](thread_ctx&) {
        char c;
        blocked.store(true, std::memory_order_release);
        got = ::read(fds[0], &c, 1); // nobody writes: only a signal ends this
        err = errno;
    });
    while (!blocked.load(std::memory_order_acquire))
        std::this_thread::yield();
    // Repeat: the first signal may arrive before the thread entered read().
    while (!target.ctx().exited()) {
        const status s = send_ipi(target.ctx());
        REQUIRE((s == status::ok || s == status::exited));
        std::this_thread::sleep_for(2ms);
    }
    target.join();
    ::close(fds[0]);
    ::close(fds[1]);
    CHECK(got == -1);
    CHECK(err == EINTR);
}

TEST_CASE("send_ipi to an exited thread reports exited") {
    REQUIRE(interrupt_install() == status::ok);
    rt_thread gone({"ipi-gone", sched_policy::other, 0, -1}, [] {});
    gone.join();
    CHECK(send_ipi(gone.ctx()) == status::exited);
}

TEST_CASE("tagged hooks see each interrupt's source; plain hooks still run for every source") {
    REQUIRE(interrupt_install() == status::ok);
    REQUIRE(interrupt_register_hook(&tag_hook) == status::ok);
    REQUIRE(interrupt_register_hook(&tag_hook) == status::ok); // idempotent, like plain hooks
    REQUIRE(interrupt_register_hook(&plain_count_hook) == status::ok);
    std::atomic<bool> stop{false};
    rt_thread target({"ipi-tags", sched_policy::other, 0, -1}, [&](thread_ctx&) {
        while (!stop.load(std::memory_order_acquire))
            std::this_thread::yield(); // TSan delivers signals at intercepted calls
    });
    tag_target.store(&target.ctx(), std::memory_order_relaxed);
    for (auto& c : tag_seen)
        c.store(0);
    plain_seen.store(0);
    auto wait_for = [](std::atomic<int>& c, int n) {
        const auto deadline = std::chrono::steady_clock::now() + 10s; // hang guard only
        while (c.load(std::memory_order_acquire) < n && std::chrono::steady_clock::now() < deadline)
            std::this_thread::yield();
        return c.load(std::memory_order_acquire);
    };
    auto seen = [](interrupt_source s) -> std::atomic<int>& { return tag_seen[static_cast<std::size_t>(s)]; };

    REQUIRE(send_ipi(target.ctx()) == status::ok); // tgkill: untagged
    CHECK(wait_for(seen(interrupt_source::untagged), 1) == 1);
    for (interrupt_source s : {interrupt_source::task_work, interrupt_source::irq_work,
                               interrupt_source::deferred_word, interrupt_source::user}) {
        REQUIRE(send_ipi(target.ctx(), s) == status::ok); // rt_tgsigqueueinfo with the tag
        CHECK(wait_for(seen(s), 1) == 1);
    }
    // A POSIX timer aimed at the thread with a tag as its sigev_value (what the CPU-time timer does).
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = interrupt_signal();
    sev.sigev_value.sival_int = interrupt_tag(interrupt_source::cpu_timer);
#ifdef sigev_notify_thread_id
    sev.sigev_notify_thread_id = target.ctx().tid;
#else
    sev._sigev_un._tid = target.ctx().tid;
#endif
    timer_t timer{};
    REQUIRE(::timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0);
    itimerspec once{};
    once.it_value.tv_nsec = 1'000'000;
    REQUIRE(::timer_settime(timer, 0, &once, nullptr) == 0);
    CHECK(wait_for(seen(interrupt_source::cpu_timer), 1) == 1);
    ::timer_delete(timer);

    stop.store(true, std::memory_order_release);
    target.join();
    int tagged_total = 0;
    for (auto& c : tag_seen)
        tagged_total += c.load();
    CHECK(tagged_total == 6); // each interrupt seen once, with its own source
    CHECK(plain_seen.load() == 6);
    tag_target.store(nullptr, std::memory_order_relaxed);
}

TEST_CASE("send_ipi: a full signal queue is no_space, tagged or not (nothing is sent)") {
    const int rc = rtdefer_test::in_child([] {
        if (interrupt_install() != status::ok)
            return 10;
        // RLIMIT_SIGPENDING 0: the kernel refuses to queue any real-time signal with EAGAIN.
        rlimit zero{0, 0};
        if (::setrlimit(RLIMIT_SIGPENDING, &zero) != 0)
            return 11;
        thread_ctx& self = attach_this_thread();
        const std::uint64_t before = interrupts_received(self);
        if (send_ipi(self, interrupt_source::user) != status::no_space)
            return 12;
        if (send_ipi(self) != status::no_space) // tgkill of a real-time signal queues too
            return 13;
        return interrupts_received(self) == before ? 0 : 14;
    });
    CHECK(rc == 0);
}
