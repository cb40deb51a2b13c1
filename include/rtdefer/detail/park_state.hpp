// rtdefer/detail/park_state.hpp: the per-thread park word (thread_ctx's park state) and its values.
// The protocol, its state table and the memory-order numbering live in park.hpp; this header only
// defines the storage, so thread.hpp can embed it without pulling the protocol in.
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <cstdint>

namespace rtdefer::detail {

/// Park word values (see the state table in park.hpp).
inline constexpr std::uint32_t park_empty = 0;
inline constexpr std::uint32_t park_notified = 1;
inline constexpr std::uint32_t park_parked = ~std::uint32_t{0};

struct park_state {
    // Own cache line: wakers on other CPUs write it; keep it off the owner's hot fields.
    alignas(cacheline_size) std::atomic<std::uint32_t> word{park_empty};
    // Statistics for benchmarks and tests. relaxed: counters, no ordering with anything.
    std::atomic<std::uint64_t> futex_wakes{0};
};

} // namespace rtdefer::detail
