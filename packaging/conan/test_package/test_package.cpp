// Builds and runs against the packaged headers: a smoke test of the core list and
// a thread, so a missing include path, C++ standard or -pthread fails here.
#include <rtdefer/rtdefer.hpp>

#include <cstdio>

int main() {
    static_assert(__cplusplus >= 202002L, "the package must be consumed as C++20");
    struct item {
        rtdefer::llist_node node;
    } a;
    rtdefer::llist_head list;
    const bool was_empty = list.add(a.node);
    const bool one = list.del_all() == &a.node && list.empty();

    rtdefer::rt_thread_options opts;
    opts.name = "test_package";
    opts.policy = rtdefer::sched_policy::other;
    int ran = 0;
    { rtdefer::rt_thread t(opts, [&ran](rtdefer::thread_ctx&) { ran = 1; }); }

    const bool ok = was_empty && one && ran == 1;
    std::printf("rtdefer test_package: %s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
