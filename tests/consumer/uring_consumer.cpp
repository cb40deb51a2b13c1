// tests/consumer/uring_consumer.cpp: uses an *installed* rtdefer's io_uring loop through the
// rtdefer::uring CMake target (or meson's rtdefer-uring dependency): the header is found, liburing
// links, and one turn runs (on io_uring, or on the futex fallback where io_uring is refused).
#include <rtdefer/uring.hpp>

#include <chrono>
#include <cstdio>

int main() {
    rtdefer::thread_ctx& self = rtdefer::attach_this_thread();
    rtdefer::uring_loop loop(self);
    const rtdefer::status st = loop.run_once_until(self, std::chrono::steady_clock::now());
    const bool ok = st == rtdefer::status::timed_out || st == rtdefer::status::ok;
    std::printf("rtdefer uring consumer: %s (backend %s: %s)\n", ok ? "OK" : "FAILED",
                loop.backend() == rtdefer::uring_backend::io_uring ? "io_uring" : "futex",
                rtdefer::to_string(loop.backend_status()));
    return ok ? 0 : 1;
}
