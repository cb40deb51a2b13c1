// Compiled (never run) by scripts/check_unused_result, where liburing is found: as
// contract_nodiscard.cpp, for uring_loop's hot paths.
#include <rtdefer/uring.hpp>

#include <chrono>

using namespace rtdefer;

void discard_uring(uring_loop& loop, uring_op& op, thread_ctx& t) {
    auto prep = [](io_uring_sqe&) noexcept {};
    loop.submit(op, prep); // EXPECT: warning here
    loop.cancel(op); // EXPECT: warning here
    loop.run_once(t); // EXPECT: warning here
    loop.run_once_until(t, std::chrono::steady_clock::time_point{}); // EXPECT: warning here
}
