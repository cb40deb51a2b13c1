// rtdefer/detail/deferred_word_state.hpp: the per-thread deferred work word (thread_ctx::ct) and its
// layout. The protocol, its state table and the memory-order numbering live in deferred_word.hpp
// (its CAS loops in detail/deferred_word_transitions.hpp); this header only defines the storage, so
// thread.hpp can embed it without pulling the protocol in.
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <cstdint>

namespace rtdefer::detail {

// One 32-bit word per thread (see the state table in deferred_word.hpp):
//
//   bit 31       DISABLED   the thread is not in an isolated section: deferred work is refused
//   bit 30       EXITED     the thread has exited (DISABLED stays set): every request fails
//   bit 29       INFLIGHT   a deferred_word interrupt is on its way to the thread
//   bits 12..23  IPI work   work requested by interrupt, run by the handler (or a local drain)
//   bits  0..11  work       work deferred to the next exit from the isolated section
inline constexpr unsigned ct_work_bits = 12;
inline constexpr std::uint32_t ct_work_mask = (std::uint32_t{1} << ct_work_bits) - 1;
inline constexpr unsigned ct_ipi_shift = 12;
inline constexpr std::uint32_t ct_ipi_mask = ct_work_mask << ct_ipi_shift;
inline constexpr std::uint32_t ct_inflight = std::uint32_t{1} << 29;
inline constexpr std::uint32_t ct_exited = std::uint32_t{1} << 30;
inline constexpr std::uint32_t ct_disabled = std::uint32_t{1} << 31;

/// Per-thread deferred_word state, embedded in thread_ctx.
struct deferred_word_state {
    /// The word. Written by every sender (CAS) and by the owner (enter/exit): its own cache line,
    /// so the owner's other fields do not bounce with it. A thread starts outside isolation.
    alignas(cacheline_size) std::atomic<std::uint32_t> word{ct_disabled};

    /// True while the owner runs work (ct_run_local). Shared only between the owner and its own
    /// signal handler: a handler that interrupts a run leaves its work to the run's drain instead of
    /// nesting callbacks. Accessed relaxed with atomic_signal_fence (same thread).
    alignas(cacheline_size) std::atomic<bool> running{false};

    // Statistics, written on the owner's thread only (the thread or its handler); relaxed
    // fetch_add because the handler may interrupt the thread between a load and a store.
    std::atomic<std::uint64_t> deferred_runs{0};  ///< work bits run at an exit from isolation
    std::atomic<std::uint64_t> ipi_runs{0};       ///< work bits run from the IPI field
    std::atomic<std::uint64_t> local_runs{0};     ///< work bits a thread requested for itself, run at once
    std::atomic<std::uint64_t> enter_refused{0};  ///< enters refused because an interrupt was in flight
};

} // namespace rtdefer::detail
