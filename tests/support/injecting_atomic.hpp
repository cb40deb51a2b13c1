// tests/support/injecting_atomic.hpp: an `Atom` for the lock-free cores' Atom template parameter
// (detail/deferred_word_transitions.hpp, detail/task_work_transitions.hpp, irq_work's item flags in
// detail/irq_work_item.hpp) that runs a competing operation once, right before or right after its
// N-th operation. A test stops a CAS loop between its load and its CAS (or a waiter between its
// check and its sleep), changes the word there (another sender, the owner's enter or exit, an add, a
// run's end), and checks what the loop does with the changed word: the interleaving that a stress
// test hits by luck, made deterministic.
//
//   rtdefer_test::injecting_atomic<std::uint32_t> word{detail::ct_disabled};
//   auto enter = [&] { (void)detail::ct_word_enter(word); };
//   word.inject_before(1, enter); // op 0: the sender's load; op 1: its CAS
//   detail::ct_word_queue<false>(word, bits, path);
//   CHECK(word.fired());
// or, for every position at once, rtdefer_test::interleave(word, at, primary, competitor).
// inject_after(n, f) runs f right after op n (a waiter's check has read the word, it has not slept);
// a competitor may arm the next one with then_before/then_after, counted from the same start.
//
// Every operation a core uses is overridden (hiding std::atomic's): an operation that a core calls
// and this type does not list would not count, and the test would say so through ops()/fired().
// One thread at a time (the counters are plain): arm before starting the thread that runs the
// operations, read the counts after joining it. The competitor runs with RealtimeSanitizer paused
// (it may wake a futex from inside a nonblocking core) and is trusted by -Wfunction-effects.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/syscall.hpp>

#include <atomic>
#include <concepts>

namespace rtdefer_test {

template <class T> struct injecting_atomic : std::atomic<T> {
    using base = std::atomic<T>;
    using base::base;

    /// Arms the injection: `competitor()` runs once, right before operation number `at` on this
    /// atomic (0 = the next one), and resets the counts. The competitor's own operations on it pass
    /// through uncounted.
    template <class F> void inject_before(int at, F& competitor) noexcept {
        reset();
        then_before(at, competitor);
    }
    /// As inject_before, but `competitor()` runs right after operation `at` (on its result's heels:
    /// the caller has read the word and not yet acted on it).
    template <class F> void inject_after(int at, F& competitor) noexcept {
        reset();
        then_after(at, competitor);
    }
    /// Arms another injection without resetting the counts (`at` counts from the last inject_*):
    /// a competitor calls it to chain the next one. Replaces one that has not run.
    template <class F> void then_before(int at, F& competitor) noexcept { arm(at, false, competitor); }
    /// As then_before, after operation `at`.
    template <class F> void then_after(int at, F& competitor) noexcept { arm(at, true, competitor); }
    /// Disarms a competitor that has not run (so it can run afterwards, uninjected) and freezes
    /// the counts: ops() and rmws() stay those of the operation under test.
    void disarm() noexcept {
        fn_ = nullptr;
        passthrough_ = true;
    }
    /// Returns: whether the competitor ran.
    [[nodiscard]] bool fired() const noexcept { return fired_; }
    /// Returns: operations since inject_before (the competitor's not counted).
    [[nodiscard]] int ops() const noexcept { return ops_; }
    /// Returns: read-modify-writes (CAS, exchange, fetch_*) among them.
    [[nodiscard]] int rmws() const noexcept { return rmws_; }
    /// Returns: compare-exchanges among them that failed (the word had moved: the loop retries).
    [[nodiscard]] int cas_failures() const noexcept { return cas_failures_; }

    T load(std::memory_order o) const noexcept RTDEFER_NONBLOCKING {
        return counted(false, [&]() noexcept RTDEFER_NONBLOCKING { return base::load(o); });
    }
    void store(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING {
        counted(false, [&]() noexcept RTDEFER_NONBLOCKING {
            base::store(v, o);
            return true;
        });
    }
    T exchange(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING {
        return counted(true, [&]() noexcept RTDEFER_NONBLOCKING { return base::exchange(v, o); });
    }
    bool compare_exchange_weak(T& e, T d, std::memory_order s, std::memory_order f) noexcept RTDEFER_NONBLOCKING {
        return cas_counted([&]() noexcept RTDEFER_NONBLOCKING { return base::compare_exchange_weak(e, d, s, f); });
    }
    bool compare_exchange_strong(T& e, T d, std::memory_order s, std::memory_order f) noexcept RTDEFER_NONBLOCKING {
        return cas_counted([&]() noexcept RTDEFER_NONBLOCKING { return base::compare_exchange_strong(e, d, s, f); });
    }
    T fetch_add(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        return counted(true, [&]() noexcept RTDEFER_NONBLOCKING { return base::fetch_add(v, o); });
    }
    T fetch_sub(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        return counted(true, [&]() noexcept RTDEFER_NONBLOCKING { return base::fetch_sub(v, o); });
    }
    T fetch_and(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        return counted(true, [&]() noexcept RTDEFER_NONBLOCKING { return base::fetch_and(v, o); });
    }
    T fetch_or(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        return counted(true, [&]() noexcept RTDEFER_NONBLOCKING { return base::fetch_or(v, o); });
    }

private:
    static constexpr int uncounted = -1; // a competitor's operation (or a disarmed atomic's)

    void reset() noexcept {
        ops_ = 0;
        rmws_ = 0;
        cas_failures_ = 0;
        fired_ = false;
        passthrough_ = false;
    }
    template <class F> void arm(int at, bool after, F& competitor) noexcept {
        fn_ = [](void* c) noexcept { (*static_cast<F*>(c))(); };
        ctx_ = &competitor;
        at_ = at;
        after_ = after;
    }
    /// Runs `op` (one operation on the word) between the injection points around operation n.
    template <class Op> auto counted(bool rmw, Op op) const noexcept RTDEFER_NONBLOCKING {
        const int n = before(rmw);
        const auto r = op();
        after(n);
        return r;
    }
    /// counted() for a compare-exchange, which also counts its failures.
    template <class Op> bool cas_counted(Op op) const noexcept RTDEFER_NONBLOCKING {
        const int n = before(true);
        const bool ok = op();
        cas_failures_ += n != uncounted && !ok;
        after(n);
        return ok;
    }
    /// Counts the operation about to run; runs a competitor armed before it. Returns: its number.
    int before(bool rmw = false) const noexcept RTDEFER_NONBLOCKING {
        if (passthrough_)
            return uncounted;
        rmws_ += rmw;
        const int n = ops_++;
        if (!after_)
            fire(n);
        return n;
    }
    /// Runs a competitor armed after operation `n` (which has run).
    void after(int n) const noexcept RTDEFER_NONBLOCKING {
        if (n != uncounted && after_)
            fire(n);
    }
    void fire(int n) const noexcept RTDEFER_NONBLOCKING {
        if (fn_ == nullptr || n != at_)
            return;
        void (*fn)(void*) noexcept = fn_;
        fn_ = nullptr; // before the call: the competitor may arm the next one
        fired_ = true;
        passthrough_ = true;
        // The competitor is the test's own code (operations on this word, a wake): trusted.
        RTDEFER_EFFECTS_TRUST_BEGIN
        {
            [[maybe_unused]] rtdefer::detail::rtsan_trust trust;
            fn(ctx_);
        }
        RTDEFER_EFFECTS_TRUST_END
        passthrough_ = false;
    }

    mutable void (*fn_)(void*) noexcept = nullptr;
    mutable void* ctx_ = nullptr;
    mutable int at_ = 0;
    mutable int ops_ = 0;
    mutable int rmws_ = 0;
    mutable int cas_failures_ = 0;
    mutable bool after_ = false;
    mutable bool fired_ = false;
    mutable bool passthrough_ = false;
};

/// Runs `primary` with `competitor` injected before operation `at` on `a`, or after `primary` if
/// it never reached that operation. Returns: whether the competitor came before (injected).
template <class T, class P, class C> bool interleave(injecting_atomic<T>& a, int at, P primary, C& competitor) {
    a.inject_before(at, competitor);
    primary();
    if (a.fired())
        return true;
    a.disarm();
    competitor();
    return false;
}

} // namespace rtdefer_test
