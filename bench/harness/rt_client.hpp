// rtdefer benchmark harness: a real-time audio-style client, the way users write one, in two builds.
// Used by examples/jack/jack_gain.cpp (driven by a real jackd) and bench/rt_client_bench.cpp (driven
// by a SCHED_FIFO period loop of its own), so both measure the same client.
//
//   UI thread ──send()──▶ cycle() at the top of each period ──retire──▶ freed off the real-time thread
//
//   rtdefer    send: task_work_add(rt, update, notify::none); cycle: task_work_run(self) applies every
//              update at the safe point; the replaced table goes on an llist and a lazy irq_work item
//              (queued to one fixed CPU) frees it in irq_work/N.
//   baseline   send: lock a mutex, push_back on a std::deque; cycle: lock the same mutex, take what is
//              queued, free() the replaced table inline.
//
// Each update carries a 256 KiB table (above glibc's mmap threshold, fixed with mallopt so it does not
// adapt): every free() is a munmap, which takes the process's mmap lock for writing. storm threads
// allocate, touch and free memory meanwhile, so that lock is contended, as in a real program.
// A ledger counts every update applied and freed: each must be exactly once.
#pragma once

#include <rtdefer/irq_work.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <malloc.h>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace rtdefer_bench::rt_client {

enum class mode { rtdefer, baseline };
inline const char* to_string(mode m) { return m == mode::rtdefer ? "rtdefer" : "baseline"; }

inline constexpr std::size_t max_updates = 1u << 16; // ledger size: more than any run sends

class client;

/// One update: a gain and a wavetable built by the UI thread. The object travels UI → cycle (task_work)
/// → worker (llist + irq_work), touched by one thread at a time.
struct update {
    rtdefer::callback_head work;  // task_work: UI → the real-time thread
    rtdefer::llist_node retire{}; // llist: real-time thread → irq_work worker
    std::uint32_t seq = 0;
    float gain = 1.0F;
    float* table = nullptr; // malloc'ed, `frames` long
    std::size_t frames = 0;
    client* owner = nullptr;
};

/// Every update applied and freed exactly once: per-slot counters, each written by one thread at a
/// time (relaxed), read after the threads are stopped.
struct ledger {
    std::unique_ptr<std::atomic<std::uint32_t>[]> applied{new std::atomic<std::uint32_t>[max_updates]()};
    std::unique_ptr<std::atomic<std::uint32_t>[]> freed{new std::atomic<std::uint32_t>[max_updates]()};
    struct counts {
        std::uint32_t lost = 0, applied_twice = 0, not_freed = 0, freed_twice = 0;
        bool ok() const { return lost == 0 && applied_twice == 0 && not_freed == 0 && freed_twice == 0; }
    };
    counts check(std::uint32_t sent) const {
        counts c;
        for (std::uint32_t i = 0; i < sent; ++i) {
            const std::uint32_t a = applied[i].load(std::memory_order_relaxed); // relaxed: threads stopped
            const std::uint32_t f = freed[i].load(std::memory_order_relaxed);
            c.lost += a == 0;
            c.applied_twice += a > 1;
            c.not_freed += f == 0;
            c.freed_twice += f > 1;
        }
        return c;
    }
};

/// The client. Setup and teardown on the caller's thread; cycle_*() on the real-time thread only;
/// send() on one UI thread.
class client {
public:
    client(mode m, std::size_t table_floats) : mode_(m), table_floats_(table_floats) {
        // A fixed mmap threshold: every free() of a table is a munmap (glibc would otherwise raise the
        // threshold after the first free and serve tables from the heap).
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        if (m == mode::rtdefer) {
            rtdefer::irq_work_domain_options d;
            d.priority = 5; // explicit: above SCHED_FIFO 1, so other low real-time load cannot starve the frees
            dom_ = std::make_unique<rtdefer::irq_work_domain>(d);
            // One fixed CPU, checked once here: the real-time thread may migrate (a JACK callback does).
            if (const rtdefer::status st = retire_.bind(*dom_, dom_->cpus().front()); st != rtdefer::status::ok)
                throw std::system_error(make_error_code(st), "rt_client: irq_work_producer::bind");
        }
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;
    ~client() { free_remaining(); }

    mode kind() const { return mode_; }

    /// UI side. Returns: whether the update was handed over (rtdefer: task_work_add returned ok).
    bool send(rtdefer::thread_ctx* rt) {
        auto* u = new update;
        u->seq = sent_;
        u->gain = 0.5F + 0.5F * static_cast<float>(sent_ % 2);
        u->frames = table_floats_;
        u->owner = this;
        u->table = new_table(table_floats_, sent_);
        if (mode_ == mode::baseline) {
            std::lock_guard<std::mutex> lock(params_lock_);
            params_.push_back(u);
            ++sent_;
            return true;
        }
        rtdefer::init_task_work(u->work, &apply_update);
        // notify::none: the real-time thread comes round every period anyway.
        if (rtdefer::task_work_add(*rt, u->work, rtdefer::notify::none) != rtdefer::status::ok) {
            delete_update(u); // exited: not queued, still ours
            ++refused_;
            return false;
        }
        ++sent_;
        return true;
    }

    /// rtdefer cycle: the safe point, then render `n` samples. Nonblocking: no lock, no allocation,
    /// no free; a syscall only if the worker's tick has stopped (empty→non-empty LAZY add).
    void cycle_rtdefer(rtdefer::thread_ctx& self, float* out, std::size_t n) noexcept RTDEFER_NONBLOCKING {
        (void)rtdefer::task_work_run(self); // runs apply_update for every update sent since last time
        render(out, n);
    }

    /// baseline cycle: the usual way (locks, frees inline).
    void cycle_baseline(float* out, std::size_t n) noexcept {
        {
            std::lock_guard<std::mutex> lock(params_lock_);
            while (!params_.empty()) {
                update* u = params_.front();
                params_.pop_front();
                note_applied(*u);
                if (current_ != nullptr) {
                    book_.freed[current_->seq].fetch_add(1, std::memory_order_relaxed); // relaxed: ledger
                    delete_update(current_);                                            // munmap, here
                }
                current_ = u;
            }
        }
        render(out, n);
    }

    /// Updates sent that the real-time thread has applied (acquire: pairs with note_applied()).
    std::uint32_t applied() const { return applied_total_.load(std::memory_order_acquire); }
    std::uint32_t sent() const { return sent_; }
    std::uint32_t refused() const { return refused_; }
    std::uint64_t queue_pending() const { return queue_pending_.load(std::memory_order_relaxed); }

    /// Teardown, after the real-time thread stopped: retire what the cycle still holds and wait until
    /// the worker has freed it (rtdefer), or free it here (baseline).
    void finish() {
        if (mode_ == mode::rtdefer) {
            if (current_ != nullptr) {
                (void)retired_.add(current_->retire);
                current_ = nullptr;
                (void)retire_.queue(reclaim_);
            }
            (void)rtdefer::irq_work_sync(reclaim_);
        } else if (current_ != nullptr) {
            book_.freed[current_->seq].fetch_add(1, std::memory_order_relaxed);
            delete_update(current_);
            current_ = nullptr;
        }
    }
    /// Returns: the retiring worker's counters and backlog (rtdefer mode; zeros in baseline mode).
    /// Real-time safety: loads and a vDSO clock read; for the UI thread, e.g. once per update.
    rtdefer::irq_work_stats retire_stats() const noexcept {
        return dom_ != nullptr ? dom_->stats(retire_.cpu()) : rtdefer::irq_work_stats{};
    }
    /// Destroys the irq_work domain (after finish()).
    void stop_workers() { dom_.reset(); }

    ledger::counts check() const { return book_.check(sent_); }

private:
    struct reclaimer {
        client* c;
        void operator()() const noexcept {
            rtdefer::llist_for_each_safe(c->retired_.del_all(), [this](rtdefer::llist_node& n) noexcept {
                update* u = rtdefer::llist_entry<update, &update::retire>(&n);
                c->book_.freed[u->seq].fetch_add(1, std::memory_order_relaxed); // relaxed: ledger
                delete_update(u); // free() and munmap in irq_work/N, not on the real-time thread
            });
        }
    };

    static float* new_table(std::size_t n, std::uint32_t seq) {
        auto* t = static_cast<float*>(std::malloc(n * sizeof(float)));
        if (t == nullptr)
            std::abort();
        for (std::size_t i = 0; i < n; ++i) // the UI pays for the page faults, not the real-time thread
            t[i] = static_cast<float>((i + seq) & 1023U) * (1.0F / 1024.0F);
        return t;
    }
    static void delete_update(update* u) {
        std::free(u->table);
        delete u;
    }

    void note_applied(update& u) noexcept RTDEFER_NONBLOCKING {
        book_.applied[u.seq].fetch_add(1, std::memory_order_relaxed); // relaxed: ledger
        applied_total_.fetch_add(1, std::memory_order_release);       // release: pairs with applied()
    }

    /// task_work callback, on the real-time thread: install the update, retire the one it replaces.
    static void apply_update(rtdefer::callback_head* h) noexcept RTDEFER_NONBLOCKING {
        update* u = reinterpret_cast<update*>(reinterpret_cast<char*>(h) - offsetof(update, work));
        client& c = *u->owner;
        c.note_applied(*u);
        update* old = c.current_;
        c.current_ = u;
        if (old != nullptr) {
            (void)c.retired_.add(old->retire);
            // already_queued: that pending run sees this table (the claim's ordering argument).
            if (c.retire_.queue(c.reclaim_) != rtdefer::status::ok)
                c.queue_pending_.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
        }
    }
    void render(float* out, std::size_t n) noexcept RTDEFER_NONBLOCKING {
        const update* u = current_;
        for (std::size_t i = 0; i < n; ++i) {
            out[i] = u != nullptr ? u->gain * u->table[phase_] : 0.0F;
            if (u != nullptr && ++phase_ >= u->frames)
                phase_ = 0;
        }
    }

    void free_remaining() {
        std::lock_guard<std::mutex> lock(params_lock_);
        for (update* u : params_)
            delete_update(u);
        params_.clear();
        if (current_ != nullptr)
            delete_update(current_);
        current_ = nullptr;
    }

    mode mode_;
    std::size_t table_floats_;
    ledger book_;
    std::unique_ptr<rtdefer::irq_work_domain> dom_;
    rtdefer::irq_work_producer retire_; ///< bound to the retiring CPU in the constructor
    rtdefer::llist_head retired_;
    rtdefer::irq_work_fn<reclaimer> reclaim_{reclaimer{this}, rtdefer::irq_work_kind::lazy};
    std::atomic<std::uint64_t> queue_pending_{0};
    std::mutex params_lock_;
    std::deque<update*> params_;
    // the real-time thread's own state (until it has stopped)
    update* current_ = nullptr;
    std::size_t phase_ = 0;
    std::atomic<std::uint32_t> applied_total_{0};
    // UI-thread state
    std::uint32_t sent_ = 0, refused_ = 0;
};

/// Threads that allocate, touch and free 0.25–4 MiB blocks until stopped: page faults take the mmap
/// lock for reading, the munmaps for writing.
class alloc_storm {
public:
    explicit alloc_storm(int threads) {
        for (int i = 0; i < threads; ++i)
            threads_.emplace_back([this, i] { run(1234u + static_cast<unsigned>(i)); });
    }
    ~alloc_storm() { stop(); }
    void stop() {
        stop_.store(true, std::memory_order_relaxed); // relaxed: a stop flag
        for (auto& t : threads_)
            t.join();
        threads_.clear();
    }

private:
    void run(unsigned seed) {
        std::mt19937 rng(seed);
        std::uniform_int_distribution<std::size_t> size(256 * 1024, 4 * 1024 * 1024);
        while (!stop_.load(std::memory_order_relaxed)) { // relaxed: a stop flag
            const std::size_t n = size(rng);
            auto* p = static_cast<unsigned char*>(std::malloc(n));
            if (p == nullptr)
                continue;
            std::memset(p, 0x5a, n);
            std::free(p);
        }
    }
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

} // namespace rtdefer_bench::rt_client
