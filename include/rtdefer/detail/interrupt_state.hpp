// rtdefer/detail/interrupt_state.hpp: the per-thread interrupt statistics (thread_ctx's interrupt
// state). The signal and its handler live in interrupt.hpp; this header only defines the storage, so
// thread.hpp can embed it without pulling the handler in.
#pragma once

#include <atomic>
#include <cstdint>

namespace rtdefer::detail {

struct interrupt_state {
    // relaxed counter bumped by the interrupt handler on this thread; readers only want totals.
    std::atomic<std::uint64_t> received{0};
};

} // namespace rtdefer::detail
