// Placeholder: the deferred_word engineer owns this file and fills in the per-thread state.
#pragma once

namespace rtdefer::detail {

/// Per-thread deferred_word state, embedded in thread_ctx.
struct deferred_word_state {};

} // namespace rtdefer::detail
