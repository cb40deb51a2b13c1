// Unit tests for the host-thread contract (docs/host_threads.md): attaching a thread the library did
// not create without exceptions, handing a reference to a real-time thread's ctx out of its callback,
// and a host callback that uses task_work the way the JACK example does.
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using namespace rtdefer;
using namespace std::chrono_literals;

TEST_CASE("try_attach_this_thread attaches like attach_this_thread, without throwing") {
    std::atomic<thread_ctx*> seen{nullptr};
    std::atomic<bool> same{false}, current{false};
    std::thread t([&] {
        thread_ctx* a = try_attach_this_thread();
        thread_ctx* b = try_attach_this_thread(); // idempotent
        same = a != nullptr && a == b && a == &attach_this_thread();
        current = a != nullptr && a->is_current() && current_thread_ctx() == a;
        seen = a;
    });
    t.join();
    CHECK(seen.load() != nullptr);
    CHECK(same.load());
    CHECK(current.load());
    static_assert(noexcept(try_attach_this_thread()), "the host contract needs a nonthrowing attach");
}

namespace {
void host_late(callback_head*) noexcept {}
} // namespace

TEST_CASE("thread_ref::acquire_raw / adopt: a reference handed out of a callback keeps the ctx alive") {
    std::atomic<thread_ctx*> handed{nullptr};
    std::atomic<bool> go_exit{false};
    std::thread host([&] {
        thread_ctx& self = attach_this_thread();
        const std::uint32_t before = self.ref_count();
        thread_ctx* raw = thread_ref::acquire_raw(self); // what a real-time callback does
        CHECK(raw == &self);
        CHECK(self.ref_count() == before + 1);
        handed.store(raw, std::memory_order_release);
        while (!go_exit.load(std::memory_order_acquire))
            std::this_thread::sleep_for(1ms);
    }); // the host thread exits: its own reference is dropped, ours keeps the ctx
    thread_ctx* raw = nullptr;
    while ((raw = handed.load(std::memory_order_acquire)) == nullptr)
        std::this_thread::sleep_for(1ms);
    thread_ref ref = thread_ref::adopt(raw);
    const std::uint32_t held = ref->ref_count();
    CHECK(held >= 2); // the thread's own and ours (adopt did not add one)
    go_exit.store(true, std::memory_order_release);
    host.join();
    REQUIRE(ref);
    CHECK(ref->exited());
    CHECK(ref->ref_count() == 1); // ours alone: adopt took over the raw reference exactly once
    callback_head late(&host_late);
    CHECK(task_work_add(*ref, late, notify::none) == status::exited);
    CHECK_FALSE(thread_ref::adopt(nullptr));
}

namespace {
std::atomic<int> host_applied{0};
void host_apply(callback_head*) noexcept { // real-time context: count only (no free here)
    host_applied.fetch_add(1, std::memory_order_relaxed);
}
} // namespace

TEST_CASE("a host-driven callback resolves its ctx in its first cycle and runs task_work at its top") {
    // A stand-in for a host's process thread: it attaches in its thread-init step, the callback
    // finds its ctx with current_thread_ctx() on its first call and publishes a raw reference.
    std::atomic<thread_ctx*> published{nullptr};
    std::atomic<bool> stop{false};
    std::atomic<int> cycles{0};
    auto callback = [&](bool& resolved, thread_ctx*& self) noexcept {
        if (!resolved) {
            resolved = true;
            self = current_thread_ctx();
            if (self != nullptr)
                published.store(thread_ref::acquire_raw(*self), std::memory_order_release);
        }
        if (self != nullptr)
            (void)task_work_run(*self);
        cycles.fetch_add(1, std::memory_order_relaxed);
    };
    std::thread host([&] {
        CHECK(try_attach_this_thread() != nullptr); // thread-init (no REQUIRE off the main thread)
        bool resolved = false;
        thread_ctx* self = nullptr;
        while (!stop.load(std::memory_order_acquire)) {
            callback(resolved, self);
            std::this_thread::sleep_for(100us); // the host's own wait between cycles
        }
    });
    thread_ctx* raw = nullptr;
    while ((raw = published.load(std::memory_order_acquire)) == nullptr)
        std::this_thread::sleep_for(1ms);
    thread_ref rt = thread_ref::adopt(raw);
    const int n = static_cast<int>(rtdefer_test::scaled(2000, 200));
    std::unique_ptr<callback_head[]> items(new callback_head[static_cast<std::size_t>(n)]);
    int ok = 0;
    for (int i = 0; i < n; ++i) {
        init_task_work(items[static_cast<std::size_t>(i)], &host_apply);
        // notify::none: the host comes round anyway
        if (task_work_add(*rt, items[static_cast<std::size_t>(i)], notify::none) == status::ok)
            ++ok;
    }
    CHECK(ok == n);
    // Teardown order: producers stopped (above), wait for the items in flight, then stop the host.
    while (host_applied.load(std::memory_order_relaxed) != ok)
        std::this_thread::sleep_for(1ms);
    stop.store(true, std::memory_order_release);
    host.join();
    CHECK(host_applied.load() == ok);
    CHECK(rt->exited());
}
