// rtdefer benchmark harness: N producers -> 1 consumer hand-off, rtdefer::llist_head beside its
// peers, with every item counted. Used by bench/llist_bench.cpp (Google Benchmark) and the showcase.
//
// Peers (same item objects, same consumer work, same polling policy):
//   llist_peer        rtdefer::llist_head: add() per item; consumer del_all() + llist_reverse_order()
//                     (FIFO per producer, as the peers deliver; the kernel's llist users reverse too).
//   boost_peer        boost::lockfree::queue<item*, capacity<16384>>: bounded_push() per item; consumer
//                     pop() until empty. Bounded, fixed-size: the node pool is an array inside the queue,
//                     so push never allocates (the unbounded default may call the allocator on push,
//                     which is what a real-time producer must not do). Capacity > one round's items, so
//                     a full queue is never what we measure; failed pushes are counted anyway.
//   mutex_deque_peer  std::mutex + std::deque<item*>: push_back under the lock; the consumer swaps the
//                     whole deque out under the lock (its best case: one lock per batch, like del_all).
//
// A round: every producer pushes `per_producer` items; the consumer, concurrently, drains until it
// has them all. Each item records the round it was last received in: receiving it twice in a round
// is a duplicate; finishing the round short (after every producer said it was done and a final
// drain) is a loss. Either is a failed check.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <rtdefer/llist.hpp>
#include <rtdefer/task_work.hpp>

#if __has_include(<boost/lockfree/queue.hpp>)
#include <boost/lockfree/queue.hpp>
#define RTDEFER_BENCH_HAVE_BOOST_LOCKFREE 1
#else
#define RTDEFER_BENCH_HAVE_BOOST_LOCKFREE 0
#endif

#include "latency.hpp"

#if RTDEFER_BENCH_HAVE_URCU // defined by bench/meson.build when liburcu-cds is found (peers.hpp)
#include <urcu/lfstack.h>
#include <urcu/wfcqueue.h>
#endif

namespace rtdefer_bench {

struct mpsc_item {
    rtdefer::llist_node node;     // must stay the first member: llist_entry needs standard layout
    std::uint32_t producer = 0;
    std::uint32_t seq = 0;
    std::uint64_t round_seen = 0;  // consumer-only
    rtdefer::callback_head work;   // task_work_bench's link: intrusive, as llist's node is
#if RTDEFER_BENCH_HAVE_URCU
    cds_wfcq_node wfcq{};          // the liburcu peers' links (peers.hpp)
    cds_lfs_node lfs{};
#endif
};

/// Items one round may hold at once (the boost peer's fixed capacity must exceed this).
inline constexpr std::size_t mpsc_max_round_items = 16384;

class llist_peer {
public:
    static constexpr const char* name = "rtdefer::llist_head";
    bool push(mpsc_item& it) noexcept {
        (void)head_.add(it.node);  // the empty->non-empty result is for waking; we poll
        return true;
    }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        rtdefer::llist_node* n = rtdefer::llist_reverse_order(head_.del_all());
        std::size_t k = 0;
        rtdefer::llist_for_each_safe(n, [&](rtdefer::llist_node& x) noexcept {
            f(*rtdefer::llist_entry<mpsc_item, &mpsc_item::node>(&x));
            ++k;
        });
        return k;
    }

private:
    rtdefer::llist_head head_;
};

#if RTDEFER_BENCH_HAVE_BOOST_LOCKFREE
class boost_peer {
public:
    static constexpr const char* name = "boost::lockfree::queue<cap 16384>";
    boost_peer() : q_(std::make_unique<queue>()) {}
    bool push(mpsc_item& it) noexcept { return q_->bounded_push(&it); }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        std::size_t k = 0;
        mpsc_item* p;
        while (q_->pop(p)) {
            f(*p);
            ++k;
        }
        return k;
    }
    bool is_lock_free() const { return q_->is_lock_free(); }

private:
    using queue = boost::lockfree::queue<mpsc_item*, boost::lockfree::capacity<mpsc_max_round_items>>;
    std::unique_ptr<queue> q_;  // ~1 MiB of cache-line-sized nodes: keep it off the stack
};
#endif

class mutex_deque_peer {
public:
    static constexpr const char* name = "std::mutex+std::deque";
    bool push(mpsc_item& it) {
        std::lock_guard<std::mutex> g(m_);
        d_.push_back(&it);
        return true;
    }
    template <class F>
    std::size_t drain(F&& f) {
        {
            std::lock_guard<std::mutex> g(m_);
            if (d_.empty()) return 0;
            local_.swap(d_);
        }
        std::size_t k = local_.size();
        for (mpsc_item* p : local_) f(*p);
        local_.clear();
        return k;
    }

private:
    std::mutex m_;
    std::deque<mpsc_item*> d_;
    std::deque<mpsc_item*> local_;  // consumer-only
};

/// Counts of one rig's life.
struct mpsc_counts {
    std::uint64_t rounds = 0, received = 0, lost = 0, duplicated = 0, corrupt = 0, push_failures = 0;
    bool ok() const { return lost == 0 && duplicated == 0 && corrupt == 0; }
    std::string describe() const {
        char b[200];
        std::snprintf(b, sizeof b, "%llu rounds, %llu items received, %llu lost, %llu duplicated, %llu corrupt",
                      static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(received),
                      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(duplicated),
                      static_cast<unsigned long long>(corrupt));
        return b;
    }
};

/// Persistent producer threads + a consumer (the caller of run_round) around one Peer.
/// Setup (constructor) allocates; run_round() on the consumer side does not (except inside the
/// mutex+deque peer, which is the point of counting its allocations).
///
/// Placement: every thread is pinned, round-robin over the usable CPUs: the consumer (the thread
/// that constructs the rig and calls run_round) on the first, producer p on the (p+1)-th modulo the
/// CPU count. When producers + consumer fit, each has its own CPU and the hand-off is truly
/// concurrent. When they do not (2 producers on 2 CPUs), the consumer shares its CPU with the last
/// producer: the two producers still contend from two CPUs, and the consumer drains between the
/// sharing producer's slices. With `fifo` (when permitted) all rig threads run SCHED_FIFO at one
/// priority: then sharing is strict alternation at the yields (spin 64 polls, then sched_yield) and
/// other processes cannot preempt the run — without it, the shared machine's load decides how the
/// threads interleave and the 2-producer figure varies several-fold between runs.
/// placement() says what was in force.
template <class Peer>
class mpsc_rig {
public:
    mpsc_rig(int producers, std::size_t per_producer, bool fifo = false)
        : producers_(producers), per_(per_producer), items_(static_cast<std::size_t>(producers)), fifo_(fifo),
          cpus_(usable_cpu_list()), consumer_place_({.fifo = fifo, .priority = rig_priority, .cpu = cpu_for(0)}) {
        if (static_cast<std::size_t>(producers) * per_producer > mpsc_max_round_items) {
            std::fprintf(stderr, "mpsc_rig: %d x %zu items exceed the round limit %zu\n", producers, per_producer,
                         mpsc_max_round_items);
            std::abort();
        }
        for (int p = 0; p < producers; ++p) {
            items_[static_cast<std::size_t>(p)] = std::make_unique<mpsc_item[]>(per_producer);
            for (std::size_t i = 0; i < per_producer; ++i) {
                items_[static_cast<std::size_t>(p)][i].producer = static_cast<std::uint32_t>(p);
                items_[static_cast<std::size_t>(p)][i].seq = static_cast<std::uint32_t>(i);
            }
        }
        for (int p = 0; p < producers; ++p)
            threads_.emplace_back([this, p] {
                rt_outcome o = apply_rt_to_this_thread({.fifo = fifo_, .priority = rig_priority, .cpu = cpu_for(p + 1)});
                if (fifo_ && !o.fifo) producer_fifo_refused_.store(true, std::memory_order_relaxed);  // relaxed: read after the round
                producer_loop(p);
            });
    }
    mpsc_rig(const mpsc_rig&) = delete;
    mpsc_rig& operator=(const mpsc_rig&) = delete;
    ~mpsc_rig() {
        quit_.store(true, std::memory_order_release);
        for (auto& t : threads_) t.join();
    }

    /// One round; returns false if an item was lost, duplicated or corrupt in it.
    bool run_round() {
        const std::uint64_t r = ++counts_.rounds;
        const std::uint64_t expected = static_cast<std::uint64_t>(producers_) * per_;
        const std::uint64_t done_target = r * static_cast<std::uint64_t>(producers_);
        std::uint64_t got = 0;
        auto check = [&](mpsc_item& it) {
            if (it.producer >= static_cast<std::uint32_t>(producers_) || it.seq >= per_) ++counts_.corrupt;
            else if (it.round_seen == r) ++counts_.duplicated;
            else it.round_seen = r;
            ++got;
        };
        // release: the producers' acquire of go_ sees round_seen updates of earlier rounds done
        // (they never read them, but they re-link the items we finished walking).
        go_.store(r, std::memory_order_release);
        unsigned idle = 0;
        while (got < expected) {
            if (peer_.drain(check) != 0) {
                idle = 0;
                continue;
            }
            // acquire: pairs with the producers' release increment: their pushes are visible.
            if (finished_.load(std::memory_order_acquire) == done_target) {
                peer_.drain(check);  // everything pushed is in the peer now
                break;
            }
            if (++idle % 64 == 0) std::this_thread::yield();  // 3 threads may share 2 CPUs
            else cpu_relax();
        }
        // Wait for the producers to leave the round before items can be reused.
        while (finished_.load(std::memory_order_acquire) != done_target) std::this_thread::yield();
        if (got < expected) counts_.lost += expected - got;
        counts_.received += got;
        return counts_.ok();
    }

    const mpsc_counts& counts() const {
        counts_.push_failures = push_failures_.load(std::memory_order_relaxed);  // relaxed: statistic
        return counts_;
    }
    std::uint64_t items_per_round() const { return static_cast<std::uint64_t>(producers_) * per_; }
    /// "consumer CPU 0, producers CPU 1,0; SCHED_FIFO" and whether threads share a CPU.
    std::string placement() const {
        std::string s = "consumer CPU " + std::to_string(cpu_for(0)) + ", producer" + (producers_ > 1 ? "s" : "") + " CPU ";
        for (int p = 0; p < producers_; ++p) {
            if (p) s += ',';
            s += std::to_string(cpu_for(p + 1));
        }
        s += static_cast<std::size_t>(producers_) + 1 > cpus_.size() ? " (shared)" : "";
        const bool fifo = consumer_place_.outcome().fifo && !producer_fifo_refused_.load(std::memory_order_relaxed);
        s += fifo ? "; SCHED_FIFO" : fifo_ ? "; SCHED_OTHER (FIFO refused)" : "; SCHED_OTHER";
        return s;
    }

private:
    void producer_loop(int p) {
        std::uint64_t seen = 0;
        mpsc_item* mine = items_[static_cast<std::size_t>(p)].get();
        for (;;) {
            std::uint64_t r;
            unsigned spins = 0;
            // acquire: pairs with the consumer's release store of go_.
            while ((r = go_.load(std::memory_order_acquire)) == seen) {
                if (quit_.load(std::memory_order_acquire)) return;
                if (++spins % 64 == 0) std::this_thread::yield();
                else cpu_relax();
            }
            seen = r;
            std::uint64_t fails = 0;
            for (std::size_t i = 0; i < per_; ++i)
                while (!peer_.push(mine[i])) {
                    // Full (never with our capacity): yield so a consumer sharing this CPU can drain.
                    if (++fails % 64 == 0) std::this_thread::yield();
                    else cpu_relax();
                }
            if (fails) push_failures_.fetch_add(fails, std::memory_order_relaxed);  // relaxed: statistic
            // release: our pushes happen-before the consumer's final drain.
            finished_.fetch_add(1, std::memory_order_release);
        }
    }

    Peer peer_;
    int producers_;
    std::size_t per_;
    std::vector<std::unique_ptr<mpsc_item[]>> items_;
    bool fifo_;
    std::vector<int> cpus_;  // taken before the consumer is pinned (threads inherit the pinned mask)
    thread_placement_guard consumer_place_;  // the constructing thread is the consumer
    std::atomic<bool> producer_fifo_refused_{false};
    static constexpr int rig_priority = 10;  // below the harness's latency threads (80)
    int cpu_for(int slot) const {
        return cpus_.empty() ? -1 : cpus_[static_cast<std::size_t>(slot) % cpus_.size()];
    }
    static std::vector<int> usable_cpu_list() {
        std::vector<int> v;
        for (int i = 0, c; (c = nth_usable_cpu(i)) >= 0; ++i) v.push_back(c);
        return v;
    }
    std::vector<std::thread> threads_;
    alignas(64) std::atomic<std::uint64_t> go_{0};
    alignas(64) std::atomic<std::uint64_t> finished_{0};
    std::atomic<bool> quit_{false};
    std::atomic<std::uint64_t> push_failures_{0};
    mutable mpsc_counts counts_;
};

/// Run rounds for about `seconds` (at least min_rounds) and return items/s by wall time.
template <class Peer>
double mpsc_throughput(int producers, std::size_t per_producer, double seconds, mpsc_counts& out, bool fifo = false,
                       std::uint64_t min_rounds = 3) {
    mpsc_rig<Peer> rig(producers, per_producer, fifo);
    rig.run_round();  // warm-up: threads started, caches and the deque's chunks populated
    const std::uint64_t t0 = bench_clock::steady_ns();
    std::uint64_t rounds = 0, now = t0;
    while (rounds < min_rounds || static_cast<double>(now - t0) < seconds * 1e9) {
        rig.run_round();
        ++rounds;
        now = bench_clock::steady_ns();
    }
    out = rig.counts();
    return static_cast<double>(rounds * rig.items_per_round()) / (static_cast<double>(now - t0) / 1e9);
}

}  // namespace rtdefer_bench
