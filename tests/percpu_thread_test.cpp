// Unit tests for rtdefer/detail/percpu_thread.hpp alone (smpboot's analogue): the hooks in their
// documented order, the start handshake and a failing setup, the stop flag read before every pass,
// pinning in the per-CPU mode, the single mode, wake-ups racing the park, and teardown joins.
// The hooks write plain fields read by the test thread after the constructor or stop() returned, so
// TSan checks the handshake's and join's happens-before edges too.
#include <rtdefer/detail/percpu_thread.hpp>
#include <rtdefer/park.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

using namespace rtdefer;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using rtdefer_test::eventually;

namespace {

constexpr std::size_t max_threads = 64;

// What one thread's hooks saw. Plain fields, written by that thread only: the setup-only ones are
// read after the constructor returned (the start handshake orders them), `log` and
// `off_cpu_runs` only after stop() (the join orders them).
struct seen {
    std::string log;               // S setup, R run, Q should_run, P park_deadline, C cleanup
    int setups = 0;
    thread_ctx* self = nullptr;
    bool self_is_current = false;  // setup's `self` is the calling thread's ctx
    int setup_cpu = -1;            // sched_getcpu() in setup
    int off_cpu_runs = 0;          // runs on another CPU than setup's
    cpu_set_t affinity{};
    char name[16] = {};
    int policy = -1, priority = -1; // sched_getscheduler / param in setup
};

struct recording_hooks {
    std::array<seen, max_threads> at{};
    std::size_t fail_at = max_threads; // setup of this index returns `failure`
    status failure = status::no_space;
    std::atomic<int> more{0};          // should_run answers true while this is positive (then --)
    steady::time_point deadline = steady::time_point::max();

    status setup(std::size_t i, thread_ctx& self) noexcept {
        seen& s = at[i];
        s.log += 'S';
        ++s.setups;
        s.self = &self;
        s.self_is_current = self.is_current();
        s.setup_cpu = ::sched_getcpu();
        CPU_ZERO(&s.affinity);
        (void)::sched_getaffinity(0, sizeof(s.affinity), &s.affinity);
        (void)::pthread_getname_np(::pthread_self(), s.name, sizeof(s.name));
        sched_param sp{};
        s.policy = ::sched_getscheduler(0);
        (void)::sched_getparam(0, &sp);
        s.priority = sp.sched_priority;
        return i == fail_at ? failure : status::ok;
    }
    void run(std::size_t i, thread_ctx&) noexcept {
        at[i].log += 'R';
        if (::sched_getcpu() != at[i].setup_cpu)
            ++at[i].off_cpu_runs;
    }
    bool should_run(std::size_t i) noexcept {
        at[i].log += 'Q';
        // relaxed: only this thread decrements; the test sets it before starting or unparking us.
        int m = more.load(std::memory_order_relaxed);
        while (m > 0 && !more.compare_exchange_weak(m, m - 1, std::memory_order_relaxed)) {
        }
        return m > 0;
    }
    steady::time_point park_deadline(std::size_t i) noexcept {
        at[i].log += 'P';
        return deadline;
    }
    void cleanup(std::size_t i, thread_ctx&) noexcept { at[i].log += 'C'; }
};

detail::percpu_thread_options other_options(const char* name) {
    return {.name = name, .policy = sched_policy::other, .priority = 0};
}

// The park word says PARKED: the thread has committed to sleep (after park_deadline).
bool parked(thread_ctx& t) {
    return eventually([&] { return detail::ctx_access::park(t).word.load(std::memory_order_acquire) == detail::park_parked; },
                      60s);
}

cpu_set_t own_affinity() {
    cpu_set_t s;
    CPU_ZERO(&s);
    REQUIRE(::sched_getaffinity(0, sizeof(s), &s) == 0);
    return s;
}

cpu_set_t only(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return s;
}

} // namespace

TEST_SUITE("unit") {

TEST_CASE("percpu_cpu_set: sorted and deduplicated; empty means every CPU we may run on; bad CPUs throw") {
    CHECK(detail::percpu_cpu_set({3, 1, 3, 0, 1}, "t") == std::vector<int>{0, 1, 3});
    const cpu_set_t mine = own_affinity();
    const std::vector<int> all = detail::percpu_cpu_set({}, "t");
    REQUIRE_FALSE(all.empty());
    CHECK(static_cast<int>(all.size()) == CPU_COUNT(&mine));
    for (int c : all)
        CHECK(CPU_ISSET(c, &mine));
    for (const std::vector<int>& bad : {std::vector<int>{-1}, std::vector<int>{0, CPU_SETSIZE}}) {
        try {
            (void)detail::percpu_cpu_set(bad, "t");
            FAIL("no exception for a CPU outside 0..CPU_SETSIZE-1");
        } catch (const std::system_error& e) {
            CHECK(e.code() == make_error_code(status::invalid_argument));
            CHECK(std::string(e.what()).find("t: bad CPU list") != std::string::npos);
        }
    }
}

TEST_CASE("percpu_threads: one thread per CPU, pinned, named name/N; setup, run while should_run, park, cleanup") {
    const std::vector<int> cpus = detail::percpu_cpu_set({}, "test");
    REQUIRE(cpus.size() <= max_threads);
    recording_hooks h;
    h.more.store(0, std::memory_order_relaxed);
    {
        detail::percpu_threads<recording_hooks> pt(cpus, other_options("pct"), h);
        for (std::size_t i = 0; i < cpus.size(); ++i) {
            const seen& s = h.at[i]; // setup's writes: published by the start handshake
            CHECK(s.setups == 1);
            CHECK(s.self_is_current);
            CHECK(s.setup_cpu == cpus[i]);
            const cpu_set_t want = only(cpus[i]);
            CHECK(CPU_EQUAL(&s.affinity, &want));
            CHECK(std::string(s.name) == "pct/" + std::to_string(cpus[i]));
            CHECK(s.policy == SCHED_OTHER);
            CHECK(pt.sched(i).actual == sched_policy::other);
            // The first pass runs without a wake-up; should_run is false, so the thread parks.
            REQUIRE(parked(*s.self));
        }
        // Three more passes without parking, then one park: should_run is asked after each pass.
        h.more.store(3, std::memory_order_relaxed);
        (void)unpark(*h.at[0].self);
        REQUIRE(parked(*h.at[0].self)); // NOTIFIED at once, PARKED again after the passes
        pt.stop();
        pt.stop(); // idempotent
        for (std::size_t i = 0; i < cpus.size(); ++i) {
            const seen& s = h.at[i]; // ordered by the join in stop()
            // After the last park, stop()'s wake-up begins no pass: cleanup comes next.
            CHECK(s.log == (i == 0 ? "SRQP" "RQRQRQRQP" "C" : "SRQPC"));
            CHECK(s.off_cpu_runs == 0);
        }
    } // the destructor after stop(): nothing left to do
}

TEST_CASE("percpu_threads: the constructor returns after every thread ran its setup; a failing setup throws") {
    const std::vector<int> cpus = detail::percpu_cpu_set({}, "test");
    REQUIRE(cpus.size() <= max_threads);
    SUBCASE("every setup ran (and its writes are visible) when the constructor returns") {
        struct slow_setup : recording_hooks {
            status setup(std::size_t i, thread_ctx& self) noexcept {
                std::this_thread::sleep_for(20ms); // a constructor that did not wait would return first
                return recording_hooks::setup(i, self);
            }
        } h;
        detail::percpu_threads<slow_setup> pt(cpus, other_options("pct-slow"), h);
        for (std::size_t i = 0; i < cpus.size(); ++i)
            CHECK(h.at[i].setups == 1);
    }
    SUBCASE("setup of the last thread fails: the status is thrown, the threads before it clean up") {
        recording_hooks h;
        h.fail_at = cpus.size() - 1;
        h.failure = status::no_space;
        bool threw = false;
        try {
            detail::percpu_threads<recording_hooks> pt(cpus, other_options("pct-fail"), h);
        } catch (const std::system_error& e) {
            threw = true;
            CHECK(e.code() == make_error_code(status::no_space));
            CHECK(std::string(e.what()).find("pct-fail: worker setup on CPU " + std::to_string(cpus.back())) !=
                  std::string::npos);
        }
        REQUIRE(threw);
        // Every thread is joined when the constructor has thrown: the logs are final.
        for (std::size_t i = 0; i + 1 < cpus.size(); ++i) {
            const std::string& log = h.at[i].log;
            CHECK(log.front() == 'S');
            CHECK(log.back() == 'C'); // stopped before or after its first pass
            CHECK(log.find('C') == log.size() - 1);
        }
        CHECK(h.at[cpus.size() - 1].log == "S"); // a failed setup: no pass, no cleanup
    }
    SUBCASE("setup of the single thread fails: thrown, no pass, no cleanup") {
        recording_hooks h;
        h.fail_at = 0;
        h.failure = status::invalid_argument;
        const rt_thread_options one{.name = "pct-one", .policy = sched_policy::other};
        CHECK_THROWS_AS(detail::percpu_threads<recording_hooks>(one, h), std::system_error);
        CHECK(h.at[0].log == "S");
    }
}

TEST_CASE("percpu_threads: no pass begins after stop(): not after the pass in progress, not after a park") {
    SUBCASE("should_run says more work, but stop() came during the pass: that pass is the last") {
        struct stopped_during_pass : recording_hooks {
            std::atomic<bool> in_pass{false};
            bool saw_stop = false;
            void run(std::size_t i, thread_ctx& self) noexcept {
                recording_hooks::run(i, self);
                if (in_pass.exchange(true, std::memory_order_acq_rel))
                    return; // a second pass: the log shows it
                // stop() sets the flag, then unparks us: wait for that token.
                saw_stop = eventually(
                    [&] { return detail::ctx_access::park(self).word.load(std::memory_order_acquire) == detail::park_notified; },
                    60s);
            }
        } h;
        h.more.store(1000, std::memory_order_relaxed);
        detail::percpu_threads<stopped_during_pass> pt(rt_thread_options{.name = "pct-stop", .policy = sched_policy::other}, h);
        REQUIRE(eventually([&] { return h.in_pass.load(std::memory_order_acquire); }, 60s));
        pt.stop(); // returns once the pass has ended and cleanup ran
        CHECK(h.saw_stop);
        const std::string& log = h.at[0].log;
        CHECK(std::count(log.begin(), log.end(), 'R') == 1); // without the check: 1000 passes
        CHECK(log.find('P') == std::string::npos);
        CHECK(log.back() == 'C');
    }
    SUBCASE("parked with nothing to do: stop()'s wake-up runs cleanup, not a pass") {
        recording_hooks h;
        detail::percpu_threads<recording_hooks> pt(rt_thread_options{.name = "pct-stop", .policy = sched_policy::other}, h);
        REQUIRE(parked(*h.at[0].self));
        pt.stop();
        CHECK(h.at[0].log == "SRQPC");
    }
}

TEST_CASE("percpu_threads: a wake-up between should_run's false and the park is not lost") {
    // should_run has said "nothing"; work and its unpark arrive before the thread sleeps (here: while
    // it asks for its deadline). The park must return at once, for the token, and run the work.
    struct racing_wake : recording_hooks {
        std::atomic<bool> work{false};
        std::atomic<bool> deciding{false}, woken{false};
        std::atomic<int> done{0};
        void run(std::size_t i, thread_ctx& self) noexcept {
            recording_hooks::run(i, self);
            if (work.exchange(false, std::memory_order_acquire))
                done.fetch_add(1, std::memory_order_release);
        }
        bool should_run(std::size_t i) noexcept {
            recording_hooks::should_run(i);
            return work.load(std::memory_order_acquire);
        }
        steady::time_point park_deadline(std::size_t i) noexcept {
            recording_hooks::park_deadline(i);
            if (!deciding.exchange(true, std::memory_order_acq_rel))
                (void)eventually([&] { return woken.load(std::memory_order_acquire); }, 60s);
            return steady::time_point::max(); // a lost wake-up sleeps until stop()
        }
    } h;
    detail::percpu_threads<racing_wake> pt(rt_thread_options{.name = "pct-wake", .policy = sched_policy::other}, h);
    REQUIRE(eventually([&] { return h.deciding.load(std::memory_order_acquire); }, 60s));
    h.work.store(true, std::memory_order_release);
    (void)unpark(*h.at[0].self);
    h.woken.store(true, std::memory_order_release);
    CHECK(eventually([&] { return h.done.load(std::memory_order_acquire) == 1; }));
    pt.stop();
    CHECK(h.at[0].log.substr(0, 7) == "SRQPRQP"); // the second pass came from the token
}

TEST_CASE("percpu_threads: a park deadline wakes the thread for another pass without any unpark") {
    struct counting : recording_hooks {
        std::atomic<int> runs{0};
        void run(std::size_t i, thread_ctx& self) noexcept {
            recording_hooks::run(i, self);
            runs.fetch_add(1, std::memory_order_relaxed); // relaxed: a progress count only
        }
    } h;
    h.deadline = steady::now() + 5ms; // then in the past: each park returns timed_out at once
    detail::percpu_threads<counting> pt(rt_thread_options{.name = "pct-dl", .policy = sched_policy::other}, h);
    // Passes on the deadline alone (nobody unparks it); stop() ends them.
    CHECK(eventually([&] { return h.runs.load(std::memory_order_relaxed) >= 3; }));
    pt.stop();
    const std::string& log = h.at[0].log; // ordered by the join
    CHECK(log.substr(0, 4) == "SRQP");
    CHECK(log.find("PRQP") != std::string::npos); // a pass after a park that nobody woke
    CHECK(log.back() == 'C');
}

TEST_CASE("percpu_threads: the single mode: index 0, the name as given, unpinned for cpu -1, pinned for a CPU") {
    const cpu_set_t mine = own_affinity();
    {
        recording_hooks h;
        detail::percpu_threads<recording_hooks> pt(rt_thread_options{.name = "pct-single", .policy = sched_policy::other}, h);
        CHECK(h.at[0].setups == 1); // index 0, and no other
        CHECK(h.at[1].setups == 0);
        CHECK(std::string(h.at[0].name) == "pct-single");
        CHECK(CPU_EQUAL(&h.at[0].affinity, &mine)); // the creator's CPUs
        CHECK(pt.sched(0).actual == sched_policy::other);
    }
    const int cpu = detail::percpu_cpu_set({}, "test").back();
    recording_hooks h;
    detail::percpu_threads<recording_hooks> pt(rt_thread_options{.name = "pct-pinned", .policy = sched_policy::other, .cpu = cpu}, h);
    const cpu_set_t want = only(cpu);
    CHECK(CPU_EQUAL(&h.at[0].affinity, &want));
    CHECK(h.at[0].setup_cpu == cpu);
}

TEST_CASE("percpu_threads: the default options ask for SCHED_FIFO 1; sched(i) reports what each thread got") {
    const std::vector<int> cpus = detail::percpu_cpu_set({}, "test");
    recording_hooks h;
    detail::percpu_thread_options o{.name = "pct-fifo"};
    detail::percpu_threads<recording_hooks> pt(cpus, o, h);
    for (std::size_t i = 0; i < cpus.size(); ++i) {
        const sched_report& r = pt.sched(i);
        CHECK(r.requested == sched_policy::fifo);
        CHECK(r.requested_priority == 1);
        // Whatever it got (FIFO, or SCHED_OTHER where refused), the report is what the thread runs at.
        CHECK(h.at[i].policy == (r.actual == sched_policy::fifo ? SCHED_FIFO : SCHED_OTHER));
        CHECK(h.at[i].priority == r.priority);
    }
}

TEST_CASE("percpu_threads: stop() and the destructor join: every thread has exited when they return") {
    // A thread_local's destructor runs as its thread exits, after cleanup; stop() must wait for it.
    static std::atomic<int> exited{0};
    struct exit_marker {
        bool armed = false;
        ~exit_marker() {
            if (armed)
                exited.fetch_add(1, std::memory_order_release);
        }
    };
    struct slow_exit : recording_hooks {
        status setup(std::size_t i, thread_ctx& self) noexcept {
            thread_local exit_marker m;
            m.armed = true;
            return recording_hooks::setup(i, self);
        }
        void cleanup(std::size_t i, thread_ctx& self) noexcept {
            std::this_thread::sleep_for(20ms); // a stop() that did not join would return first
            recording_hooks::cleanup(i, self);
        }
    };
    const std::vector<int> cpus = detail::percpu_cpu_set({}, "test");
    exited.store(0, std::memory_order_relaxed);
    {
        slow_exit h;
        detail::percpu_threads<slow_exit> pt(cpus, other_options("pct-join"), h);
        pt.stop();
        CHECK(exited.load(std::memory_order_acquire) == static_cast<int>(cpus.size()));
    }
    exited.store(0, std::memory_order_relaxed);
    {
        slow_exit h;
        detail::percpu_threads<slow_exit> pt(rt_thread_options{.name = "pct-join1", .policy = sched_policy::other}, h);
    } // the destructor stops and joins
    CHECK(exited.load(std::memory_order_acquire) == 1);
}

} // TEST_SUITE
