// Stress test for rtdefer/uring.hpp: two producers hand 10^6 task_work items (scaled by
// RTDEFER_STRESS_SCALE) to a loop that waits in io_uring while it also serves a pipe fed by a
// writer thread. Every item is counted: 0 lost, 0 duplicated; every byte written is read once.
#include <rtdefer/park.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/uring.hpp>

#include "ledger.hpp"
#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

using namespace rtdefer;
using namespace std::chrono_literals;

namespace {

struct item : callback_head {
    std::uint32_t seq = 0;
    std::atomic<bool> busy{false};
};

rtdefer_test::ledger* g_seen = nullptr; // every sequence number once
std::atomic<std::size_t> g_ran{0};

void run_item(callback_head* cb) noexcept {
    auto* it = static_cast<item*>(cb);
    (void)g_seen->record(it->seq);
    // relaxed: progress counter, read by the loop itself.
    g_ran.fetch_add(1, std::memory_order_relaxed);
    // release: the producer's acquire load sees the item finished before reusing it.
    it->busy.store(false, std::memory_order_release);
}

struct reader : uring_op {
    reader() : uring_op(&done) {}
    char buf[4096];
    std::size_t bytes = 0;
    int last = 0;
    static void done(uring_op& op, int res, std::uint32_t) noexcept {
        auto& r = static_cast<reader&>(op);
        r.last = res;
        if (res > 0)
            r.bytes += static_cast<std::size_t>(res);
    }
};

} // namespace

TEST_SUITE("stress") {

TEST_CASE("uring stress: 10^6 task_work adds to a loop in io_uring, with pipe I/O, none lost") {
    thread_ctx& self = attach_this_thread();
    uring_loop loop(self);
    if (loop.backend() != uring_backend::io_uring) {
        rtdefer_test::skip_test(std::string("io_uring unavailable: ") + to_string(loop.backend_status()));
        return;
    }
    const std::size_t total = rtdefer_test::scaled(1'000'000, 20'000);
    const std::size_t per_producer = total / 2;
    rtdefer_test::ledger seen(per_producer * 2, 1);
    g_seen = &seen;
    g_ran.store(0, std::memory_order_relaxed);

    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    const std::size_t io_bytes = rtdefer_test::scaled(8u << 20, 1u << 20);

    constexpr std::size_t pool = 512;
    std::vector<std::unique_ptr<item[]>> pools;
    std::vector<std::thread> producers;
    for (std::size_t p = 0; p < 2; ++p) // all pools first: a producer must not see the vector grow
        pools.emplace_back(new item[pool]);
    for (std::size_t p = 0; p < 2; ++p) {
        producers.emplace_back([&, items = pools[p].get(), p] {
            for (std::size_t i = 0; i < per_producer; ++i) {
                item& it = items[i % pool];
                // acquire: pairs with the release in run_item before the item is reused.
                while (it.busy.load(std::memory_order_acquire))
                    std::this_thread::yield();
                it.busy.store(true, std::memory_order_relaxed); // relaxed: published by the add (A2)
                it.seq = static_cast<std::uint32_t>(p * per_producer + i);
                init_task_work(it, &run_item);
                REQUIRE(task_work_add(self, it, notify::resume) == status::ok);
            }
        });
    }
    std::thread writer([&] {
        std::vector<char> chunk(1500, 'x');
        std::size_t left = io_bytes;
        while (left > 0) {
            const std::size_t n = left < chunk.size() ? left : chunk.size();
            const ssize_t w = ::write(fds[1], chunk.data(), n);
            REQUIRE(w > 0);
            left -= static_cast<std::size_t>(w);
        }
    });

    reader rd;
    const auto give_up = std::chrono::steady_clock::now() + 240s;
    const auto prep = [&](io_uring_sqe& sqe) noexcept { io_uring_prep_read(&sqe, fds[0], rd.buf, sizeof rd.buf, 0); };
    REQUIRE(loop.submit(rd, prep) == status::ok);
    std::size_t turns = 0;
    while ((g_ran.load(std::memory_order_relaxed) < per_producer * 2 || rd.bytes < io_bytes) &&
           std::chrono::steady_clock::now() < give_up) {
        (void)loop.run_once_until(self, std::chrono::steady_clock::now() + 100ms);
        ++turns;
        if (!rd.in_flight() && rd.last > 0 && rd.bytes < io_bytes)
            REQUIRE(loop.submit(rd, prep) == status::ok);
    }
    for (auto& t : producers)
        t.join();
    writer.join();
    (void)task_work_run(self);
    ::close(fds[0]);
    ::close(fds[1]);

    const rtdefer_test::ledger::report r = seen.count();
    g_seen = nullptr;
    INFO(r.str());
    MESSAGE(total << " items, " << io_bytes << " bytes, " << turns << " turns, " << loop.enters()
                  << " enters, " << rtdefer::park_futex_wakes(self) << " futex wakes");
    CHECK(r.lost == 0);
    CHECK(r.duplicated == 0);
    CHECK(rd.bytes == io_bytes);
}

} // TEST_SUITE
