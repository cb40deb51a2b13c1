// Placeholder: the task_work engineer owns this file and fills in the per-thread state.
#pragma once

namespace rtdefer::detail {

/// Per-thread task_work state, embedded in thread_ctx.
struct task_work_state {};

} // namespace rtdefer::detail
