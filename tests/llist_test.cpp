// Unit tests for rtdefer/llist.hpp: single-thread semantics, concurrent producers with a draining
// consumer, and adds from a signal handler interleaved with del_all in the interrupted thread.
#include <rtdefer/interrupt.hpp>
#include <rtdefer/llist.hpp>

#include "test_util.hpp"

#include <atomic>
#include <thread>
#include <vector>

using namespace rtdefer;

namespace {

struct item {
    int value = 0;
    llist_node node;
};

item* entry(llist_node* n) { return llist_entry<item, &item::node>(n); }

std::vector<int> values(llist_node* chain) {
    std::vector<int> out;
    llist_for_each_safe(chain, [&](llist_node& n) { out.push_back(entry(&n)->value); });
    return out;
}

/// An atomic that counts successful CAS operations: shows the Atom parameter is honoured.
template <class T> struct counting_atomic : std::atomic<T> {
    using std::atomic<T>::atomic;
    inline static std::atomic<int> cas_calls{0};
    bool compare_exchange_weak(T& e, T d, std::memory_order s, std::memory_order f) noexcept {
        cas_calls.fetch_add(1, std::memory_order_relaxed);
        return std::atomic<T>::compare_exchange_weak(e, d, s, f);
    }
};

/// Every item was seen exactly once: 0 lost, 0 duplicated.
void check_exactly_once(const std::vector<int>& seen) {
    std::size_t lost = 0, duplicated = 0;
    for (int s : seen) {
        lost += s == 0;
        duplicated += s > 1;
    }
    CHECK(lost == 0);
    CHECK(duplicated == 0);
}

} // namespace

TEST_CASE("add reports empty->non-empty, del_all returns newest first") {
    llist_head head;
    item a{1, {}}, b{2, {}}, c{3, {}};
    CHECK(head.empty());
    CHECK(head.del_all() == nullptr);
    CHECK(head.add(a.node));  // empty -> non-empty
    CHECK_FALSE(head.add(b.node));
    CHECK_FALSE(head.add(c.node));
    CHECK_FALSE(head.empty());
    CHECK(head.first() == &c.node);
    llist_node* chain = head.del_all();
    CHECK(head.empty());
    CHECK(llist_count(chain) == 3);
    CHECK(values(chain) == std::vector<int>{3, 2, 1});
    CHECK(head.add(a.node)); // empty again after del_all
    CHECK(head.del_all() == &a.node);
}

TEST_CASE("llist_reverse_order gives FIFO order") {
    llist_head head;
    item it[5];
    for (int i = 0; i < 5; ++i) {
        it[i].value = i;
        (void)head.add(it[i].node);
    }
    CHECK(values(llist_reverse_order(head.del_all())) == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(llist_reverse_order(nullptr) == nullptr);
}

TEST_CASE("add_batch pushes a pre-linked chain in one step") {
    llist_head head;
    item a{1, {}}, b{2, {}}, c{3, {}}, d{4, {}};
    CHECK(head.add(d.node));
    a.node.next = &b.node;
    b.node.next = &c.node;
    CHECK_FALSE(head.add_batch(a.node, c.node));
    CHECK(values(head.del_all()) == std::vector<int>{1, 2, 3, 4});
    CHECK(head.add_batch(a.node, c.node)); // reports empty -> non-empty too
    CHECK(values(head.del_all()) == std::vector<int>{1, 2, 3});
}

TEST_CASE("del_first pops newest first and reports empty") {
    llist_head head;
    item a{1, {}}, b{2, {}};
    CHECK(head.del_first() == nullptr);
    (void)head.add(a.node);
    (void)head.add(b.node);
    llist_node* n = head.del_first();
    REQUIRE(n == &b.node);
    CHECK(n->next == nullptr); // detached node carries no stale link
    CHECK(head.del_first() == &a.node);
    CHECK(head.empty());
}

TEST_CASE("llist_for_each_safe lets the callback re-queue the node it visits") {
    llist_head head, other;
    item it[3];
    for (int i = 0; i < 3; ++i) {
        it[i].value = i;
        (void)head.add(it[i].node);
    }
    int visited = 0;
    llist_for_each_safe(head.del_all(), [&](llist_node& n) {
        ++visited;
        (void)other.add(n); // overwrites n.next: safe because next was read before the call
    });
    CHECK(visited == 3);
    CHECK(llist_count(other.del_all()) == 3);
}

TEST_CASE("the Atom template parameter is used for the head") {
    basic_llist_head<counting_atomic> head;
    item a{1, {}}, b{2, {}};
    const int before = counting_atomic<llist_node*>::cas_calls.load();
    (void)head.add(a.node);
    (void)head.add(b.node);
    CHECK(counting_atomic<llist_node*>::cas_calls.load() - before >= 2);
    CHECK(llist_count(head.del_all()) == 2);
}

TEST_CASE("producers and a draining consumer: every item seen exactly once") {
    constexpr int producers = 3;
    const int per_producer = static_cast<int>(rtdefer_test::scaled(20000, 1000));
    std::vector<item> items(static_cast<std::size_t>(producers * per_producer));
    for (std::size_t i = 0; i < items.size(); ++i)
        items[i].value = static_cast<int>(i);
    std::vector<int> seen(items.size(), 0);
    llist_head head;
    std::atomic<int> done{0};
    std::atomic<long> empty_transitions{0};

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer; ++i)
                if (head.add(items[static_cast<std::size_t>(p * per_producer + i)].node))
                    empty_transitions.fetch_add(1, std::memory_order_relaxed);
            done.fetch_add(1, std::memory_order_release);
        });
    long drains = 0;
    auto drain = [&] {
        llist_node* chain = head.del_all();
        if (chain != nullptr)
            ++drains;
        llist_for_each_safe(chain, [&](llist_node& n) { ++seen[static_cast<std::size_t>(entry(&n)->value)]; });
    };
    while (done.load(std::memory_order_acquire) < producers)
        drain();
    drain();
    for (auto& t : threads)
        t.join();

    check_exactly_once(seen);
    // Every non-empty drain was preceded by exactly one empty->non-empty add.
    CHECK(empty_transitions.load() == drains);
}

namespace {
// Signal-handler producer: the interrupt hook pushes pre-allocated nodes onto `sig_list`.
llist_head sig_list;
item* sig_pool = nullptr;
std::atomic<int> sig_next{0};
std::atomic<int> sig_limit{0};
std::atomic<thread_ctx*> sig_target{nullptr};

void push_from_signal(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr || self != sig_target.load(std::memory_order_acquire))
        return;
    const int i = sig_next.load(std::memory_order_relaxed); // only this thread's handler writes it
    if (i < sig_limit.load(std::memory_order_relaxed)) {
        (void)sig_list.add(sig_pool[i].node);
        sig_next.store(i + 1, std::memory_order_relaxed);
    }
}
} // namespace

TEST_CASE("adds from a signal handler interleave with del_all in the interrupted thread") {
    REQUIRE(interrupt_install() == status::ok);
    REQUIRE(interrupt_register_hook(&push_from_signal) == status::ok);
    const int n = static_cast<int>(rtdefer_test::scaled(5000, 500));
    std::vector<item> pool(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        pool[static_cast<std::size_t>(i)].value = i;
    sig_pool = pool.data();
    sig_next.store(0);
    sig_limit.store(n);

    std::vector<int> seen(static_cast<std::size_t>(n), 0);
    std::atomic<bool> consumer_ready{false}, stop{false};
    std::thread consumer([&] {
        thread_ctx& self = attach_this_thread();
        sig_target.store(&self, std::memory_order_release);
        consumer_ready.store(true, std::memory_order_release);
        // The interrupted thread itself drains: every del_all may be interrupted by an add.
        while (!stop.load(std::memory_order_acquire) || !sig_list.empty())
            llist_for_each_safe(sig_list.del_all(), [&](llist_node& nd) { ++seen[static_cast<std::size_t>(entry(&nd)->value)]; });
        sig_target.store(nullptr, std::memory_order_release);
        detach_this_thread();
    });
    while (!consumer_ready.load(std::memory_order_acquire))
        std::this_thread::yield();
    thread_ctx* target = sig_target.load(std::memory_order_acquire);
    // One interrupt at a time (real-time signals queue, bounded by RLIMIT_SIGPENDING): each lands at
    // a random point of the consumer's del_all loop.
    while (sig_next.load(std::memory_order_relaxed) < n) {
        const int before = sig_next.load(std::memory_order_relaxed);
        REQUIRE(send_ipi(*target) == status::ok);
        while (sig_next.load(std::memory_order_relaxed) == before)
            std::this_thread::yield();
    }
    stop.store(true, std::memory_order_release);
    consumer.join();

    check_exactly_once(seen);
    sig_pool = nullptr;
}
