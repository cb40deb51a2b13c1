// tests/support/injecting_atomic.hpp: an `Atom` for the lock-free cores' Atom template parameter
// (detail/deferred_word_transitions.hpp, task_work's list transitions) that runs a competing
// operation once, right before its N-th operation. A test stops a CAS loop between its load and its
// CAS, changes the word there (another sender, the owner's enter or exit, an add, a run), and checks
// what the loop does with the changed word: the interleaving that a stress test hits by luck, made
// deterministic, on one thread.
//
//   rtdefer_test::injecting_atomic<std::uint32_t> word{detail::ct_disabled};
//   auto enter = [&] { (void)detail::ct_word_enter(word); };
//   word.inject_before(1, enter); // op 0: the sender's load; op 1: its CAS
//   detail::ct_word_queue<false>(word, bits, path);
//   CHECK(word.fired());
// or, for every position at once, rtdefer_test::interleave(word, at, primary, competitor).
//
// Every operation a core uses is overridden (hiding std::atomic's): an operation that a core calls
// and this type does not list would not count, and the test would say so through ops()/fired().
// Single-threaded use only (the counters are plain).
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <concepts>

namespace rtdefer_test {

template <class T> struct injecting_atomic : std::atomic<T> {
    using base = std::atomic<T>;
    using base::base;

    /// Arms the injection: `competitor()` runs once, right before operation number `at` on this
    /// atomic (0 = the next one). The competitor's own operations on it pass through uncounted.
    template <class F> void inject_before(int at, F& competitor) noexcept {
        fn_ = [](void* c) noexcept { (*static_cast<F*>(c))(); };
        ctx_ = &competitor;
        at_ = at;
        ops_ = 0;
        fired_ = false;
        rmws_ = 0;
        passthrough_ = false;
    }
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

    T load(std::memory_order o) const noexcept RTDEFER_NONBLOCKING {
        step();
        return base::load(o);
    }
    void store(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING {
        step();
        base::store(v, o);
    }
    T exchange(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING {
        step(true);
        return base::exchange(v, o);
    }
    bool compare_exchange_weak(T& e, T d, std::memory_order s, std::memory_order f) noexcept RTDEFER_NONBLOCKING {
        step(true);
        return base::compare_exchange_weak(e, d, s, f);
    }
    bool compare_exchange_strong(T& e, T d, std::memory_order s, std::memory_order f) noexcept RTDEFER_NONBLOCKING {
        step(true);
        return base::compare_exchange_strong(e, d, s, f);
    }
    T fetch_and(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        step(true);
        return base::fetch_and(v, o);
    }
    T fetch_or(T v, std::memory_order o) noexcept RTDEFER_NONBLOCKING
        requires std::integral<T>
    {
        step(true);
        return base::fetch_or(v, o);
    }

private:
    void step(bool rmw = false) const noexcept RTDEFER_NONBLOCKING {
        if (passthrough_)
            return;
        rmws_ += rmw;
        const int n = ops_++;
        if (fn_ == nullptr || n != at_)
            return;
        void (*fn)(void*) noexcept = fn_;
        fn_ = nullptr;
        fired_ = true;
        passthrough_ = true;
        // The competitor is the test's own code (atomic operations on this word): trusted.
        RTDEFER_EFFECTS_TRUST_BEGIN
        fn(ctx_);
        RTDEFER_EFFECTS_TRUST_END
        passthrough_ = false;
    }

    mutable void (*fn_)(void*) noexcept = nullptr;
    mutable void* ctx_ = nullptr;
    mutable int at_ = 0;
    mutable int ops_ = 0;
    mutable int rmws_ = 0;
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
