// rtdefer benchmark harness: the strongest hand-off peers a user would weigh against rtdefer's llist,
// each used the way its documentation recommends for an MPSC hand-off to a real-time consumer, with the
// same interface as the peers in mpsc.hpp (push(item) -> bool; drain(f) -> items taken).
//
//   moodycamel_peer  moodycamel::ConcurrentQueue<item*> (libconcurrentqueue-dev). Its README: use a
//                    ProducerToken per producer thread (each producer then fills its own sub-queue
//                    and never shares a cache line with another producer) and bulk dequeue with a
//                    ConsumerToken. Preallocated for a whole round and fed with try_enqueue, which
//                    never allocates (enqueue() may): what a real-time producer must use.
//   rwq_peer         moodycamel::ReaderWriterQueue<item*> (libreaderwriterqueue-dev): the
//                    single-producer queue; 1 producer only. Preallocated, try_enqueue (no allocation).
//   urcu_wfcq_peer   liburcu's wait-free concurrent queue (cds_wfcq, liburcu-dev): cds_wfcq_enqueue per
//                    item; the consumer splices the whole queue out without blocking
//                    (__cds_wfcq_splice_nonblocking) and walks it with the nonblocking iterators,
//                    leaving a node whose enqueuer is mid-operation for the next drain. (The blocking
//                    dequeue sleeps 10 ms when it meets such a node: unusable in a real-time consumer.)
//   urcu_lfs_peer    liburcu's lock-free stack (cds_lfs): the same algorithm as llist (push CAS,
//                    pop_all exchange), reversed for FIFO as the llist peer is.
//   sharded_llist_peer  not a peer but a question: llist with one head per producer (each on its own
//                    cache line), the consumer taking each head in turn. Beside the single shared
//                    head it shows how much of the 2-producer figure the shared head costs (what
//                    moodycamel's per-producer sub-queues buy); FIFO per producer is kept.
// liburcu is used through its shared library, without _LGPL_SOURCE: that is the documented way for
// code that is not LGPL (the inline fast paths are for LGPL-compatible code only); it costs one call.
#pragma once

#include "mpsc.hpp"

#include <array>
#include <cstddef>
#include <memory>

#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#define RTDEFER_BENCH_HAVE_MOODYCAMEL 1
#else
#define RTDEFER_BENCH_HAVE_MOODYCAMEL 0
#endif
#if __has_include(<readerwriterqueue/readerwriterqueue.h>)
#include <readerwriterqueue/readerwriterqueue.h>
#define RTDEFER_BENCH_HAVE_RWQ 1
#else
#define RTDEFER_BENCH_HAVE_RWQ 0
#endif
#if RTDEFER_BENCH_HAVE_URCU
#include <urcu/compiler.h>
#include <urcu/lfstack.h>
#include <urcu/wfcqueue.h>
#endif

namespace rtdefer_bench {

/// Producers a peer with per-producer state must be ready for (mpsc_item::producer indexes it).
inline constexpr std::size_t peer_max_producers = 8;

class sharded_llist_peer {
public:
    static constexpr const char* name = "llist, one head per producer";
    bool push(mpsc_item& it) noexcept {
        (void)heads_[it.producer].add(it.node);
        return true;
    }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        std::size_t k = 0;
        for (auto& h : heads_) {
            rtdefer::llist_for_each_safe(rtdefer::llist_reverse_order(h.del_all()), [&](rtdefer::llist_node& x) noexcept {
                f(*rtdefer::llist_entry<mpsc_item, &mpsc_item::node>(&x));
                ++k;
            });
        }
        return k;
    }

private:
    std::array<rtdefer::llist_head, peer_max_producers> heads_; // each head is cache-line aligned
};

#if RTDEFER_BENCH_HAVE_MOODYCAMEL
class moodycamel_peer {
public:
    static constexpr const char* name = "moodycamel::ConcurrentQueue";
    moodycamel_peer()
        : q_(std::make_unique<queue>(mpsc_max_round_items * 2, peer_max_producers, 0)), ctok_(*q_) {
        for (auto& t : tokens_)
            t = std::make_unique<moodycamel::ProducerToken>(*q_);
    }
    /// The calling producer must be item.producer's only thread (a token is single-threaded).
    bool push(mpsc_item& it) noexcept { return q_->try_enqueue(*tokens_[it.producer], &it); }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        std::size_t k = 0;
        for (std::size_t n; (n = q_->try_dequeue_bulk(ctok_, buf_.data(), buf_.size())) != 0;) {
            for (std::size_t i = 0; i < n; ++i)
                f(*buf_[i]);
            k += n;
        }
        return k;
    }

private:
    using queue = moodycamel::ConcurrentQueue<mpsc_item*>;
    std::unique_ptr<queue> q_;
    std::array<std::unique_ptr<moodycamel::ProducerToken>, peer_max_producers> tokens_;
    moodycamel::ConsumerToken ctok_;
    std::array<mpsc_item*, 256> buf_{}; // consumer-only
};
#endif

#if RTDEFER_BENCH_HAVE_RWQ
class rwq_peer {
public:
    static constexpr const char* name = "moodycamel::ReaderWriterQueue";
    static constexpr int max_producers = 1; // single-producer queue
    rwq_peer() : q_(std::make_unique<queue>(mpsc_max_round_items)) {}
    bool push(mpsc_item& it) noexcept { return q_->try_enqueue(&it); }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        std::size_t k = 0;
        for (mpsc_item* p; q_->try_dequeue(p); ++k)
            f(*p);
        return k;
    }

private:
    using queue = moodycamel::ReaderWriterQueue<mpsc_item*>;
    std::unique_ptr<queue> q_;
};
#endif

#if RTDEFER_BENCH_HAVE_URCU
class urcu_wfcq_peer {
public:
    static constexpr const char* name = "liburcu cds_wfcq";
    urcu_wfcq_peer() {
        cds_wfcq_init(&head_, &tail_);
        cds_wfcq_init(&local_head_, &local_tail_);
    }
    ~urcu_wfcq_peer() {
        cds_wfcq_destroy(&head_, &tail_);
        cds_wfcq_destroy(&local_head_, &local_tail_);
    }
    urcu_wfcq_peer(const urcu_wfcq_peer&) = delete;
    urcu_wfcq_peer& operator=(const urcu_wfcq_peer&) = delete;

    bool push(mpsc_item& it) noexcept {
        cds_wfcq_node_init(&it.wfcq);
        (void)cds_wfcq_enqueue(cds_wfcq_head_cast(&head_), &tail_, &it.wfcq);
        return true;
    }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        // Move everything enqueued so far behind what the last drain had to leave (a node whose
        // enqueuer had not linked it yet); WOULDBLOCK: an enqueuer is mid-operation at the head.
        (void)__cds_wfcq_splice_nonblocking(cds_wfcq_head_cast(&local_head_), &local_tail_,
                                            cds_wfcq_head_cast(&head_), &tail_);
        std::size_t k = 0;
        for (;;) {
            cds_wfcq_node* n = __cds_wfcq_dequeue_nonblocking(cds_wfcq_head_cast(&local_head_), &local_tail_);
            if (n == nullptr || n == CDS_WFCQ_WOULDBLOCK)
                break;
            f(*caa_container_of(n, mpsc_item, wfcq));
            ++k;
        }
        return k;
    }

private:
    cds_wfcq_head head_;
    cds_wfcq_tail tail_;
    cds_wfcq_head local_head_; // consumer-only
    cds_wfcq_tail local_tail_;
};

class urcu_lfs_peer {
public:
    static constexpr const char* name = "liburcu cds_lfs";
    urcu_lfs_peer() { __cds_lfs_init(&stack_); }

    bool push(mpsc_item& it) noexcept {
        cds_lfs_node_init(&it.lfs);
        (void)cds_lfs_push(stack(), &it.lfs);
        return true;
    }
    template <class F>
    std::size_t drain(F&& f) noexcept {
        // One consumer: __cds_lfs_pop_all needs no lock (liburcu's synchronization table).
        cds_lfs_head* h = __cds_lfs_pop_all(stack());
        if (h == nullptr)
            return 0;
        cds_lfs_node* fifo = nullptr; // reverse: oldest first, as the llist peer delivers
        for (cds_lfs_node* n = &h->node; n != nullptr;) {
            cds_lfs_node* next = n->next;
            n->next = fifo;
            fifo = n;
            n = next;
        }
        std::size_t k = 0;
        for (cds_lfs_node* n = fifo; n != nullptr; ++k) {
            cds_lfs_node* next = n->next;
            f(*caa_container_of(n, mpsc_item, lfs));
            n = next;
        }
        return k;
    }

private:
    // The C API takes a transparent union, which C++ does not have: build it by hand.
    cds_lfs_stack_ptr_t stack() noexcept {
        cds_lfs_stack_ptr_t p;
        p._s = &stack_;
        return p;
    }
    __cds_lfs_stack stack_;
};
#endif

} // namespace rtdefer_bench
