// Unit tests for rtdefer/thread.hpp (attach/detach and exit hooks, thread_ref lifetimes),
// rtdefer/rt_thread.hpp (scheduling checked from inside the thread, its EPERM fallback) and
// rtdefer/park.hpp (the futex parker).
#include <rtdefer/interrupt.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/thread.hpp>

#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <thread>
#include <vector>

#include <sys/mman.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

// Exit hooks run for every thread of the test process; they only record for the watched ctx.
std::atomic<thread_ctx*> watched{nullptr};
std::atomic<int> hook_sequence{0};
std::atomic<int> early_hook_seen{-1}, late_hook_seen{-1};
std::atomic<bool> hook_saw_exiting{false}, hook_saw_exited{true};

void early_hook(thread_ctx& ctx) noexcept {
    if (&ctx != watched.load(std::memory_order_acquire))
        return;
    early_hook_seen.store(hook_sequence.fetch_add(1), std::memory_order_relaxed);
    hook_saw_exiting.store(ctx.exiting(), std::memory_order_relaxed);
    hook_saw_exited.store(ctx.exited(), std::memory_order_relaxed);
}
void late_hook(thread_ctx& ctx) noexcept {
    if (&ctx != watched.load(std::memory_order_acquire))
        return;
    late_hook_seen.store(hook_sequence.fetch_add(1), std::memory_order_relaxed);
}
// Registered late-first to show that order, not registration order, decides.
const bool late_registered = detail::register_exit_hook(&late_hook, detail::exit_order::last);
const bool early_registered = detail::register_exit_hook(&early_hook, detail::exit_order::first);

} // namespace

TEST_CASE("attach_this_thread is idempotent and current_thread_ctx finds it") {
    thread_ctx* seen_before = reinterpret_cast<thread_ctx*>(1);
    thread_ctx* a = nullptr;
    thread_ctx* b = nullptr;
    pid_t tid = 0;
    std::thread t([&] {
        seen_before = current_thread_ctx();
        a = &attach_this_thread();
        b = &attach_this_thread();
        tid = static_cast<pid_t>(::syscall(SYS_gettid));
        CHECK(current_thread_ctx() == a);
        CHECK(a->is_current());
        CHECK(a->tid == tid);
        CHECK(a->tgid == ::getpid());
        CHECK_FALSE(a->exited());
    });
    t.join();
    CHECK(seen_before == nullptr);
    CHECK(a == b);
}

TEST_CASE("thread exit runs exit hooks in order, then marks the ctx exited") {
    REQUIRE(late_registered);
    REQUIRE(early_registered);
    hook_sequence.store(0);
    early_hook_seen.store(-1);
    late_hook_seen.store(-1);
    thread_ref ref;
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        ref = thread_ref(self);
        watched.store(&self, std::memory_order_release);
    }); // no explicit detach: the thread's exit does it
    t.join();
    watched.store(nullptr);
    REQUIRE(ref);
    CHECK(early_hook_seen.load() == 0);
    CHECK(late_hook_seen.load() == 1);
    CHECK(hook_saw_exiting.load());
    CHECK_FALSE(hook_saw_exited.load()); // hooks run before `exited`
    CHECK(ref->exited());
    CHECK(ref->ref_count() == 1); // only ours is left: the thread dropped its own
}

TEST_CASE("detach_this_thread detaches early; a later attach makes a fresh ctx") {
    std::thread t([] {
        thread_ctx& first = attach_this_thread();
        thread_ref keep(first);
        detach_this_thread();
        CHECK(keep->exited());
        CHECK(current_thread_ctx() == nullptr);
        thread_ctx& second = attach_this_thread();
        CHECK(&second != &first);
        CHECK_FALSE(second.exited());
        detach_this_thread(); // idempotent with the exit-time detach
    });
    t.join();
}

TEST_CASE("thread_ref: copy gets, destroy puts, the ctx outlives its thread while referenced") {
    thread_ref outer;
    std::thread t([&] { outer = thread_ref(attach_this_thread()); });
    t.join();
    REQUIRE(outer);
    CHECK(outer->ref_count() == 1);
    {
        thread_ref copy = outer;
        CHECK(outer->ref_count() == 2);
        thread_ref moved = std::move(copy);
        CHECK_FALSE(copy);
        CHECK(outer->ref_count() == 2);
    }
    CHECK(outer->ref_count() == 1);
    CHECK(outer->exited());
    outer.reset(); // the last put frees it (ASan would report a leak otherwise)
    CHECK_FALSE(outer);
}

TEST_CASE("rt_thread gets SCHED_FIFO, its priority, CPU and name, checked from inside") {
    RTDEFER_REQUIRE_RT_OR_SKIP();
    const int cpu = std::thread::hardware_concurrency() > 1 ? 1 : 0;
    int policy = -1, prio = -1, ran_on = -1;
    char name[16] = {};
    thread_ctx* inside = nullptr;
    rt_thread t({"rtd-test", sched_policy::fifo, 7, cpu}, [&](thread_ctx& self) {
        sched_param sp{};
        ::pthread_getschedparam(::pthread_self(), &policy, &sp);
        prio = sp.sched_priority;
        ran_on = ::sched_getcpu();
        ::pthread_getname_np(::pthread_self(), name, sizeof name);
        inside = &self;
        CHECK(current_thread_ctx() == &self);
    });
    t.join();
    CHECK(policy == SCHED_FIFO);
    CHECK(prio == 7);
    CHECK(ran_on == cpu);
    CHECK(std::string(name) == "rtd-test");
    CHECK(inside == &t.ctx());
    CHECK(t.ctx().exited());
    CHECK_FALSE(t.sched_status().degraded());
    CHECK(t.sched_status().actual == sched_policy::fifo);
    CHECK(t.sched_status().error == 0);
}

TEST_CASE("rt_thread SCHED_OTHER and plain callables") {
    int policy = -1;
    bool ran = false;
    rt_thread t({"rtd-other", sched_policy::other, 0, -1}, [&] {
        sched_param sp{};
        ::pthread_getschedparam(::pthread_self(), &policy, &sp);
        ran = true;
    });
    t.join();
    CHECK(ran);
    CHECK(policy == SCHED_OTHER);
    CHECK_FALSE(t.sched_status().degraded());
}

TEST_CASE("rt_thread rejects a bad CPU or priority with a clear error") {
    CHECK_THROWS_AS(rt_thread({"bad-cpu", sched_policy::other, 0, CPU_SETSIZE + 5}, [] {}), std::system_error);
    CHECK_THROWS_AS(rt_thread({"bad-prio", sched_policy::fifo, 1000, -1}, [] {}), std::system_error);
}

TEST_CASE("when SCHED_FIFO is refused (EPERM), rt_thread falls back and reports, or throws if RT is required") {
    // In a child: RLIMIT_RTPRIO 0, and as root also drop to an unprivileged uid (losing
    // CAP_SYS_NICE), which is exactly the non-root container case.
    const int rc = rtdefer_test::in_child([] {
        rlimit rl{0, 0};
        if (::setrlimit(RLIMIT_RTPRIO, &rl) != 0)
            return 10;
        if (::geteuid() == 0 && (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0))
            return 11;
        int policy = -1;
        rt_thread t({"fallback", sched_policy::fifo, 10, -1}, [&] {
            sched_param sp{};
            ::pthread_getschedparam(::pthread_self(), &policy, &sp);
        });
        t.join();
        if (!t.sched_status().degraded() || t.sched_status().error != EPERM)
            return 12;
        if (t.sched_status().actual != sched_policy::other || policy != SCHED_OTHER)
            return 13;
        try {
            rt_thread strict({"strict", sched_policy::fifo, 10, -1, false, true}, [] {});
            return 14; // must not get here
        } catch (const std::system_error& e) {
            if (e.code().value() != EPERM || std::strstr(e.what(), "strict") == nullptr)
                return 15;
        }
        return rt_scheduling_permitted() ? 16 : 0;
    });
    CHECK(rc == 0);
}

TEST_CASE("memlock decision: MCL_FUTURE only with room for later mappings") {
    constexpr std::uint64_t mib = std::uint64_t{1} << 20;
    memlock_inputs in;
    in.limit = 8 * mib; // the unprivileged default
    in.mapped = 30 * mib;
    in.margin = 512 * mib;
    CHECK(detail::decide_memlock(in) == memlock_level::none); // MCL_CURRENT alone would be ENOMEM
    in.limit = 64 * mib;
    CHECK(detail::decide_memlock(in) == memlock_level::current);
    in.limit = 30 * mib + detail::memlock_slack - 1;
    CHECK(detail::decide_memlock(in) == memlock_level::none);
    in.limit = 542 * mib;
    CHECK(detail::decide_memlock(in) == memlock_level::current_and_future);
    in.limit = 8 * mib;
    in.unlimited = true;
    CHECK(detail::decide_memlock(in) == memlock_level::current_and_future);
    in.unlimited = false;
    in.privileged = true; // CAP_IPC_LOCK: the limit does not apply
    CHECK(detail::decide_memlock(in) == memlock_level::current_and_future);
    CHECK(detail::memlock_margin() >= 256 * mib);
}

TEST_CASE("rt_thread lock_memory locks what the limit allows and reports it") {
    const int rc = rtdefer_test::in_child([] {
        const memlock_level expect = detail::decide_memlock(detail::current_memlock_inputs(detail::memlock_margin()));
        rt_thread t({"mlock", sched_policy::other, 0, -1, true}, [] {});
        t.join();
        const memlock_result& m = t.sched_status().memory;
        if (m.planned != expect)
            return 20;
        if (m.error != 0 || t.sched_status().mlock_error != 0 || m.locked != m.planned)
            return 21;
        if (::geteuid() == 0 && m.locked != memlock_level::current_and_future)
            return 22; // root has CAP_IPC_LOCK here (the suite runs as root or unprivileged, not in between)
        return m.describe().find("mlockall") != std::string::npos || m.locked == memlock_level::none ? 0 : 23;
    });
    CHECK(rc == 0);
}

namespace {

// In a child: RLIMIT_MEMLOCK 8 MiB (the unprivileged default), and as root drop to an unprivileged uid,
// which loses CAP_IPC_LOCK (the limit then applies to root's child as to any user). Returns 0 or an
// error code.
int enter_small_memlock_limit() {
    rlimit rl{8u << 20, 8u << 20};
    if (::setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
        return 30;
    if (::geteuid() == 0 && (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0))
        return 31;
    return 0;
}

// Maps (and unmaps) 16 MiB, more than the whole limit, as a new thread stack or malloc arena would.
// Returns: 0, or the errno of the failed mmap.
int fresh_mapping_fails_with() {
    constexpr std::size_t size = std::size_t{16} << 20;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    ::munmap(p, size);
    return 0;
}

} // namespace

TEST_CASE("under an 8 MiB RLIMIT_MEMLOCK, an unconditional MCL_FUTURE stops the next thread from starting") {
    // The failure the memlock decision exists to avoid: if this ever starts passing, the kernel's
    // accounting changed and detail/memlock.hpp should be revisited.
    if (rtdefer_test::mlockall_intercepted) {
        rtdefer_test::skip_test("the ASan/TSan runtime makes mlockall a no-op (its shadow memory would not fit)");
        return;
    }
    const int rc = rtdefer_test::in_child([] {
        if (const int e = enter_small_memlock_limit(); e != 0)
            return e;
        if (::mlockall(MCL_FUTURE) != 0)
            return 32;
        if (fresh_mapping_fails_with() != EAGAIN)
            return 33;
        // A stack larger than the default: glibc cannot reuse a cached stack of an exited thread.
        pthread_attr_t attr;
        ::pthread_attr_init(&attr);
        ::pthread_attr_setstacksize(&attr, std::size_t{16} << 20);
        pthread_t th;
        const int err = ::pthread_create(&th, &attr, [](void*) -> void* { return nullptr; }, nullptr);
        ::pthread_attr_destroy(&attr);
        if (err == 0)
            ::pthread_join(th, nullptr);
        return err == EAGAIN ? 0 : 34;
    });
    CHECK(rc == 0);
}

TEST_CASE("under an 8 MiB RLIMIT_MEMLOCK, rt_thread lock_memory leaves later threads free to start") {
    const int rc = rtdefer_test::in_child([] {
        if (const int e = enter_small_memlock_limit(); e != 0)
            return e;
        rt_thread first({"mlock-first", sched_policy::other, 0, -1, true}, [] {});
        first.join();
        const memlock_result& m = first.sched_status().memory;
        if (m.in.privileged || m.in.unlimited || m.in.limit != (8u << 20))
            return 40; // the child did not get the limit it set up
        if (m.planned == memlock_level::current_and_future || m.locked == memlock_level::current_and_future)
            return 41; // MCL_FUTURE under 8 MiB: the threads below would fail
        if (m.describe().find("RLIMIT_MEMLOCK 8 MiB") == std::string::npos)
            return 42;
        if (fresh_mapping_fails_with() != 0)
            return 45; // what the test above shows failing after an unconditional MCL_FUTURE
        // More threads, each locking again (as several rt_threads with lock_memory would), each
        // allocating 1 MiB (malloc maps it: it would fail under MCL_FUTURE): all must start.
        std::atomic<int> ran{0}; // relaxed below: each thread is joined before `ran` is read
        for (int i = 0; i < 8; ++i) {
            rt_thread more({"mlock-more", sched_policy::other, 0, -1, true}, [&] {
                std::vector<char> block(std::size_t{1} << 20, 'x');
                ran.fetch_add(block[4096] == 'x' ? 1 : 0, std::memory_order_relaxed);
            });
            more.join();
            if (more.sched_status().memory.locked == memlock_level::current_and_future)
                return 43;
        }
        std::thread plain([&] { ran.fetch_add(1, std::memory_order_relaxed); });
        plain.join();
        return ran.load(std::memory_order_relaxed) == 9 ? 0 : 44;
    });
    CHECK(rc == 0);
}

TEST_CASE("park: a token set before park makes it return at once; unpark of a running owner makes no syscall") {
    thread_ctx& self = attach_this_thread();
    CHECK_FALSE(unpark(self)); // owner not parked: no syscall
    CHECK_FALSE(unpark(self)); // token already there
    CHECK(rtdefer::park_futex_wakes(self) == 0);
    CHECK(park_until(self, std::chrono::steady_clock::now() + 10s) == status::ok); // returns at once
    CHECK(park_until(self, std::chrono::steady_clock::now() + 1ms) == status::timed_out);
    CHECK(park_until(self, std::chrono::steady_clock::now() - 1s) == status::timed_out); // past deadline
}

TEST_CASE("unpark wakes a parked owner with one syscall; nothing is lost across many rounds") {
    std::atomic<int> produced{0};
    std::atomic<bool> stop{false};
    int consumed = 0;
    rt_thread owner({"parker", sched_policy::other, 0, -1}, [&](thread_ctx& self) {
        for (;;) {
            // acquire: pairs with the producer's release increment.
            while (consumed < produced.load(std::memory_order_acquire))
                ++consumed;
            if (stop.load(std::memory_order_acquire) && consumed == produced.load(std::memory_order_acquire))
                return;
            (void)park(self);
        }
    });
    const int rounds = static_cast<int>(rtdefer_test::scaled(20000, 1000));
    for (int i = 0; i < rounds; ++i) {
        produced.fetch_add(1, std::memory_order_release);
        (void)unpark(owner.ctx());
    }
    stop.store(true, std::memory_order_release);
    (void)unpark(owner.ctx());
    owner.join();
    CHECK(consumed == rounds);
    // Syscalls only for parked owners: never more wakes than unparks.
    CHECK(rtdefer::park_futex_wakes(owner.ctx()) <= static_cast<std::uint64_t>(rounds) + 1);
}

TEST_CASE("a parked owner returns `interrupted` when the interrupt signal arrives without a token") {
    REQUIRE(interrupt_install() == status::ok);
    std::atomic<bool> parked{false};
    status result = status::ok;
    rt_thread owner({"parked", sched_policy::other, 0, -1}, [&](thread_ctx& self) {
        parked.store(true, std::memory_order_release);
        result = park_until(self, std::chrono::steady_clock::now() + 30s);
    });
    while (!parked.load(std::memory_order_acquire))
        std::this_thread::yield();
    // Keep interrupting until it has left the park (early signals land before it sleeps).
    while (!owner.ctx().exited()) {
        (void)send_ipi(owner.ctx());
        std::this_thread::sleep_for(1ms);
    }
    owner.join();
    CHECK(result == status::interrupted);
}

namespace {
// Deliberately breaks the nonblocking contract (hidden from -Wfunction-effects) so the test can
// check that RealtimeSanitizer really watches functions marked RTDEFER_NONBLOCKING.
int* volatile escaped = nullptr; // the allocation escapes, so the compiler cannot elide it
[[gnu::noinline]] int allocate_in_nonblocking(int n) noexcept RTDEFER_NONBLOCKING {
    RTDEFER_EFFECTS_TRUST_BEGIN
    escaped = new int[static_cast<std::size_t>(n)];
    escaped[0] = n;
    const int v = escaped[0];
    delete[] escaped;
    return v;
    RTDEFER_EFFECTS_TRUST_END
}
} // namespace

TEST_CASE("RealtimeSanitizer build: an allocation inside RTDEFER_NONBLOCKING is caught") {
    if (!RTDEFER_HAS_RTSAN) {
        rtdefer_test::skip_test("not a -fsanitize=realtime build (the clang-22 configuration runs this)");
        return;
    }
    // In a child: RealtimeSanitizer aborts the process on the violation.
    const int rc = rtdefer_test::in_child([] {
        ::close(2); // keep the expected report out of the test log
        return allocate_in_nonblocking(3) == 3 ? 0 : 1;
    });
    CHECK(rc != 0);
}

TEST_CASE("thread_ref::get() is usable on a non-const reference") {
    thread_ref ref(attach_this_thread());
    thread_ctx* p = ref.get();
    CHECK(p == current_thread_ctx());
    const thread_ref& cref = ref;
    CHECK(cref.get() == p);
}

TEST_CASE("RTDEFER_ASSERT reports misuse with its own message and aborts, also under RealtimeSanitizer") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::signal(SIGABRT, SIG_DFL); // not doctest's crash reporter: the parent judges the abort
        ::dup2(fds[1], 2);
        thread_ctx& self = attach_this_thread();
        std::thread other([&] { (void)park_until(self, std::chrono::steady_clock::now()); }); // not the owner
        other.join();
        ::_exit(0);
    }
    ::close(fds[1]);
    std::string err;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
        err.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st));
    CHECK(WTERMSIG(st) == SIGABRT);
    CHECK(err.find("park_until() called on another thread's ctx") != std::string::npos);
}

TEST_CASE("is_current: true only on the ctx's own live thread") {
    thread_ctx& mine = attach_this_thread();
    CHECK(mine.is_current());
    thread_ref other_ref;
    bool other_saw_itself = false, other_saw_mine = true;
    std::thread t([&] {
        thread_ctx& other = attach_this_thread();
        other_ref = thread_ref(other);
        other_saw_itself = other.is_current();
        other_saw_mine = mine.is_current();
    });
    t.join();
    CHECK(other_saw_itself);
    CHECK_FALSE(other_saw_mine);
    CHECK_FALSE(other_ref->is_current()); // exited: never current, even if its handle is reused
}

TEST_CASE("fork: the forking thread's ctx carries the child's tid and pid, so signals reach it") {
    REQUIRE(interrupt_install() == status::ok);
    // Forked from a second thread, so its tid differs from the process id on both sides.
    int rc = -1;
    std::thread t([&] {
        thread_ctx& self = attach_this_thread();
        const pid_t parent_tid = self.tid;
        rc = rtdefer_test::in_child([&] {
            // Checked before anything is sent: a stale tid would aim the signal at the parent.
            if (self.tid != rtdefer::detail::gettid() || self.tgid != ::getpid() || self.tid == parent_tid)
                return 1;
            if (current_thread_ctx() != &self || !self.is_current())
                return 2;
            const std::uint64_t before = interrupts_received(self);
            if (send_ipi(self) != status::ok)
                return 3;
            // A signal a thread sends itself is delivered before tgkill returns (it is not blocked).
            return interrupts_received(self) == before + 1 ? 0 : 4;
        });
        CHECK(self.tid == parent_tid); // the parent's ctx is untouched
    });
    t.join();
    CHECK(rc == 0);
}
