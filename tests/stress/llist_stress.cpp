// Stress for rtdefer/llist.hpp: producers on every CPU (one also adding from a signal handler)
// against concurrent del_all consumers; items are recycled, so every node is pushed many times.
// Each push carries a sequence number: 0 lost, 0 duplicated.
#include <rtdefer/interrupt.hpp>
#include <rtdefer/llist.hpp>

#include "ledger.hpp"
#include "test_util.hpp"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace rtdefer;

namespace {

struct item {
    std::uint32_t seq = 0; // which push this node carries (written while private)
    llist_node node;
};

item* entry(llist_node* n) { return llist_entry<item, &item::node>(n); }

// Free nodes come back to their producer through a per-producer llist: producers del_all their
// free list (single consumer), consumers add to it, so recycling exercises add/del_all both ways.
struct producer_state {
    llist_head free_list;
    std::vector<item> nodes;
};

llist_head shared_list;
std::atomic<std::uint32_t> sig_pushes{0};
std::atomic<std::uint32_t> sig_budget{0};
std::atomic<thread_ctx*> sig_target{nullptr};
producer_state* sig_state = nullptr;
llist_node* sig_cache = nullptr; // only touched by the target thread's handler

void push_from_handler(thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr || self != sig_target.load(std::memory_order_acquire))
        return;
    // relaxed: only this thread's handler writes sig_pushes; the test reads it after joining.
    const std::uint32_t k = sig_pushes.load(std::memory_order_relaxed);
    if (k >= sig_budget.load(std::memory_order_relaxed))
        return;
    if (sig_cache == nullptr)
        sig_cache = sig_state->free_list.del_all(); // the handler is the free list's only consumer
    if (sig_cache == nullptr)
        return; // all in flight: this interrupt pushes nothing
    llist_node* n = sig_cache;
    sig_cache = n->next;
    entry(n)->seq = k;
    (void)shared_list.add(*n);
    sig_pushes.store(k + 1, std::memory_order_relaxed);
}

} // namespace

TEST_CASE("llist stress: producers + a signal-handler producer vs concurrent del_all consumers") {
    REQUIRE(interrupt_install() == status::ok);
    REQUIRE(interrupt_register_hook(&push_from_handler) == status::ok);

    constexpr int producers = 2, consumers = 2, pool = 256;
    const std::uint32_t per_producer = static_cast<std::uint32_t>(rtdefer_test::scaled(1'000'000, 20'000));
    const std::uint32_t sig_total = static_cast<std::uint32_t>(rtdefer_test::scaled(5'000, 1'000));
    const int sig_source = producers; // index of the signal-handler source

    std::vector<producer_state> states(producers + 1);
    for (int p = 0; p <= producers; ++p) {
        states[static_cast<std::size_t>(p)].nodes.resize(pool);
        for (auto& it : states[static_cast<std::size_t>(p)].nodes)
            (void)states[static_cast<std::size_t>(p)].free_list.add(it.node);
    }
    // Source of a node: which pool it lives in.
    auto source_of = [&](item* it) {
        for (int p = 0; p <= producers; ++p) {
            auto& v = states[static_cast<std::size_t>(p)].nodes;
            if (it >= v.data() && it < v.data() + v.size())
                return p;
        }
        return -1;
    };
    // One ledger per source: each (source, seq) is pushed once.
    std::vector<std::unique_ptr<rtdefer_test::ledger>> seen;
    for (int p = 0; p <= producers; ++p)
        seen.push_back(std::make_unique<rtdefer_test::ledger>(p == sig_source ? sig_total : per_producer, 1));
    std::atomic<long> foreign{0};

    sig_state = &states[sig_source];
    sig_cache = nullptr;
    sig_pushes.store(0);
    sig_budget.store(sig_total);

    std::atomic<int> producers_done{0};
    std::atomic<bool> sig_done{false};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            thread_ctx& self = attach_this_thread();
            if (p == 0)
                sig_target.store(&self, std::memory_order_release);
            auto& st = states[static_cast<std::size_t>(p)];
            llist_node* cache = nullptr;
            for (std::uint32_t k = 0; k < per_producer;) {
                if (cache == nullptr)
                    cache = st.free_list.del_all();
                if (cache == nullptr) {
                    std::this_thread::yield();
                    continue;
                }
                llist_node* n = cache;
                cache = n->next;
                entry(n)->seq = k++;
                (void)shared_list.add(*n);
            }
            if (p == 0) // keep the signal target alive until its budget is spent
                while (!sig_done.load(std::memory_order_acquire))
                    std::this_thread::yield();
            producers_done.fetch_add(1, std::memory_order_release);
            if (p == 0)
                sig_target.store(nullptr, std::memory_order_release);
        });
    for (int c = 0; c < consumers; ++c)
        threads.emplace_back([&] {
            auto drain = [&] {
                llist_for_each_safe(shared_list.del_all(), [&](llist_node& n) {
                    item* it = entry(&n);
                    const int src = source_of(it);
                    if (src < 0 || !seen[static_cast<std::size_t>(src)]->record(it->seq)) {
                        foreign.fetch_add(1);
                        return;
                    }
                    (void)states[static_cast<std::size_t>(src)].free_list.add(n);
                });
            };
            while (producers_done.load(std::memory_order_acquire) < producers)
                drain();
            drain();
        });

    // The interrupter: drives the handler on producer 0 until its budget is spent.
    while (sig_target.load(std::memory_order_acquire) == nullptr)
        std::this_thread::yield();
    while (sig_pushes.load(std::memory_order_relaxed) < sig_total) {
        thread_ctx* t = sig_target.load(std::memory_order_acquire);
        const std::uint32_t before = sig_pushes.load(std::memory_order_relaxed);
        REQUIRE(send_ipi(*t) == status::ok);
        for (int spin = 0; spin < 1000 && sig_pushes.load(std::memory_order_relaxed) == before; ++spin)
            std::this_thread::yield();
    }
    sig_done.store(true, std::memory_order_release);
    for (auto& t : threads)
        t.join();

    rtdefer_test::ledger::report all;
    std::string per_source; // the ids of what went wrong, by source
    for (int p = 0; p <= producers; ++p) {
        const rtdefer_test::ledger::report r = seen[static_cast<std::size_t>(p)]->count();
        per_source += "source " + std::to_string(p) + (p == sig_source ? " (signal handler): " : ": ") + r.str() + "\n";
        all += r;
    }
    INFO(per_source);
    std::printf("llist stress: %u items x %d producers + %u from a signal handler, %d consumers: "
                "%llu lost, %llu duplicated\n",
                per_producer, producers, sig_total, consumers, (unsigned long long)all.lost,
                (unsigned long long)all.duplicated);
    CHECK(foreign.load() == 0);
    CHECK(all.lost == 0);
    CHECK(all.duplicated == 0);
}
