// tests/consumer/consumer.cpp: a tiny program that uses an *installed* rtdefer, built three ways by
// scripts/test: CMake find_package(rtdefer 0.1 CONFIG), pkg-config, and a meson subproject.
// It checks that the headers are found, C++20 is on, and threads link; it exits 0 on success.
#if __has_include(<rtdefer/rtdefer.hpp>)
#include <rtdefer/rtdefer.hpp>
#else
#include <rtdefer/llist.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/thread.hpp>
#endif

#include <cstdio>

namespace {

struct item {
    rtdefer::llist_node node;
    int value = 0;
};

} // namespace

int main() {
    static_assert(__cplusplus >= 202002L, "the package must request C++20");

    rtdefer::llist_head list;
    item a, b;
    a.value = 1;
    b.value = 2;
    const bool first_was_empty = list.add(a.node);
    const bool second_was_empty = list.add(b.node);
    int sum = 0;
    int count = 0;
    for (rtdefer::llist_node* n = list.del_all(); n != nullptr; n = n->next) {
        sum += rtdefer::llist_entry<item, &item::node>(n)->value;
        ++count;
    }

    // A thread with its own control block: exercises -pthread / Threads::Threads.
    rtdefer::rt_thread_options opts;
    opts.name = "consumer";
    opts.policy = rtdefer::sched_policy::other;
    int ran = 0;
    {
        rtdefer::rt_thread t(opts, [&ran](rtdefer::thread_ctx&) { ran = 1; });
    }

    const bool ok = first_was_empty && !second_was_empty && count == 2 && sum == 3 && ran == 1 &&
                    list.empty();
    std::printf("rtdefer consumer: %s (status::ok is \"%s\")\n", ok ? "OK" : "FAILED",
                rtdefer::to_string(rtdefer::status::ok));
    return ok ? 0 : 1;
}
