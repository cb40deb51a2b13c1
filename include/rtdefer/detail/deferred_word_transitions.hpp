// rtdefer/detail/deferred_word_transitions.hpp: the deferred word's lock-free transitions (the
// senders' CAS loop with its interrupt decision, enter, exit), each a template over the atomic
// type `Atom` so that a test can swap in one that changes the word between a load and the CAS
// (tests/support/injecting_atomic.hpp). deferred_word.hpp calls them on thread_ctx's std::atomic
// word (Atom deduced as std::atomic: the same code as before, no extra cost); its header holds the
// state table, the exactly-once argument and the memory-order numbering (DW1..DW8) used here.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/detail/deferred_word_state.hpp>
#include <rtdefer/status.hpp>

#include <atomic>
#include <cstdint>

namespace rtdefer::detail {

/// Which field a sender's request went to, and whether that sender owes the interrupt.
enum class ct_path {
    deferred,      ///< S: runs at the target's next exit from isolation
    ipi_signal,    ///< I, and this sender moved INFLIGHT from clear to set: it sends the signal
    ipi_coalesced, ///< I, riding on a signal another sender set INFLIGHT for
};

/// The sender's CAS loop on `word`. With `allow_ipi` false it stops at DISABLED (ct_set_work); with
/// it true a DISABLED word gets the bits in its IPI field instead. `path` says which field took
/// them and whether this caller moved INFLIGHT from clear to set (and so must send the signal).
/// Returns: ok, not_accepting (only without allow_ipi), exited.
/// Progress: lock-free: a retry means another sender or the owner changed the word.
template <bool allow_ipi, template <class> class Atom>
inline status ct_word_queue(Atom<std::uint32_t>& word, std::uint32_t work, ct_path& path) noexcept RTDEFER_NONBLOCKING {
    // (DW2) relaxed: a hint; the decision is the CAS below.
    const std::uint32_t seen = word.load(std::memory_order_relaxed);
    if (RTDEFER_UNLIKELY(seen & ct_exited))
        return status::exited; // EXITED is final
    // Bet on the isolated state even when the hint says DISABLED, so at least one CAS judges the
    // live word (v2 review: "You need at least one cmpxchg", or a thread that just entered its
    // section is missed — here, interrupted).
    std::uint32_t expected = (seen & ct_disabled) ? 0u : seen;
    for (;;) {
        std::uint32_t desired;
        if ((expected & ct_disabled) == 0) {
            desired = expected | work;
        } else if (expected & ct_exited) {
            return status::exited;
        } else if constexpr (!allow_ipi) {
            return status::not_accepting;
        } else {
            desired = expected | (work << ct_ipi_shift) | ct_inflight;
        }
        // (DW1) release on success: publishes the sender's data to the run. (DW2) relaxed on failure.
        // Success is judged by the whole word, never by "is my bit set now".
        if (word.compare_exchange_weak(expected, desired, std::memory_order_release, std::memory_order_relaxed)) {
            if ((expected & ct_disabled) == 0)
                path = ct_path::deferred;
            else
                path = (expected & ct_inflight) ? ct_path::ipi_coalesced : ct_path::ipi_signal;
            return status::ok;
        }
    }
}

/// What the enter transition found.
enum class ct_enter_step {
    entered, ///< DISABLED -> 0: isolated
    exited,  ///< EXITED: the thread's exit hooks ran
    ipi,     ///< I or INFLIGHT is set: the caller drains I, then refuses (INFLIGHT) or tries again
};

/// The owner's enter CAS loop: DISABLED -> 0, from exactly DISABLED. Owner thread only.
/// Progress: lock-free: a retry means a sender changed the word (and is then re-judged here).
template <template <class> class Atom>
inline ct_enter_step ct_word_enter(Atom<std::uint32_t>& word) noexcept RTDEFER_NONBLOCKING {
    // relaxed: DISABLED is written only by this thread; the rest is re-judged by the CAS.
    std::uint32_t cur = word.load(std::memory_order_relaxed);
    for (;;) {
        RTDEFER_ASSERT((cur & ct_disabled) != 0, "ct_isolation_enter() inside an isolated section");
        if (RTDEFER_UNLIKELY(cur & ct_exited))
            return ct_enter_step::exited;
        if (RTDEFER_UNLIKELY(cur & (ct_inflight | ct_ipi_mask)))
            return ct_enter_step::ipi;
        // (DW4) relaxed: only atomicity matters; a sender's CAS that sees 0 defers, one that saw
        // DISABLED made this CAS fail (INFLIGHT or I set) and is re-judged above.
        if (word.compare_exchange_weak(cur, 0, std::memory_order_relaxed, std::memory_order_relaxed))
            return ct_enter_step::entered;
    }
}

/// The owner's exit when nothing is deferred (the common case): a CAS 0 -> DISABLED.
/// Returns: true if the section was left (nothing taken); false if work is there (the word is
/// unchanged: the caller takes it with ct_word_exit_take). Progress: wait-free (one CAS).
template <template <class> class Atom>
inline bool ct_word_exit_idle(Atom<std::uint32_t>& word) noexcept RTDEFER_NONBLOCKING {
    // (DW3) seq_cst: the fully ordered flush (see deferred_word.hpp); with nothing deferred this
    // CAS is the same RMW as the exchange and takes nothing.
    std::uint32_t expected = 0;
    return word.compare_exchange_strong(expected, ct_disabled, std::memory_order_seq_cst,
                                        std::memory_order_relaxed); // relaxed: only says "work is there"
}

/// The owner's exit with work there: sets DISABLED and takes S in one exchange.
/// Returns: the deferred work bits taken. Progress: wait-free (one exchange).
template <template <class> class Atom>
inline std::uint32_t ct_word_exit_take(Atom<std::uint32_t>& word) noexcept RTDEFER_NONBLOCKING {
    // (DW3) seq_cst, as above; nothing else writes DISABLED, so this is still the one flush.
    // While isolated the word holds nothing but S, so the old value is the work.
    return word.exchange(ct_disabled, std::memory_order_seq_cst);
}

} // namespace rtdefer::detail
