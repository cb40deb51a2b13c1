// examples/jack/jack_gain.cpp: a JACK client whose real-time process callback receives parameter
// updates (a gain and a new wavetable) from a UI thread and retires the tables it no longer needs,
// without a lock, an allocation or a free() in the callback.
//
//   UI thread ──task_work_add(notify::none)──▶ process callback ──llist + lazy irq_work──▶ irq_work/N
//   (builds each update; its own time)        (task_work_run at its top:   (frees the retired tables)
//                                              the safe point)
//
// --baseline does what such clients usually do instead: a mutex-protected parameter queue and free()
// inline in the callback. Tables are 256 KiB, above glibc's mmap threshold (fixed with mallopt so it
// does not adapt): each free() is a munmap, which must take the process's mmap lock; --storm N
// threads allocate, touch and free memory meanwhile, so that lock is contended.
//
// The host-thread contract this follows is docs/host_threads.md:
//   - jack2 calls the thread-init callback on three threads (all SCHED_OTHER at that point): attach
//     each one with the nonthrowing try_attach_this_thread(); the real-time one is the thread that
//     runs the process callback, so the ctx is resolved in the first cycle (current_thread_ctx()).
//   - the callback hands a reference to its ctx to the UI with thread_ref::acquire_raw() through an
//     atomic; the UI takes it over with thread_ref::adopt().
//   - notify::none: the callback runs every period anyway; a signal would only interrupt jack2's wait.
//   - irq_work_queue_on() one fixed CPU: the JACK thread migrates, and a local queue would spread
//     LAZY items over every CPU's tick.
//   - teardown order: stop the producers, wait for the items in flight, jack_deactivate(), retire what
//     the callback still held and irq_work_sync(), jack_client_close(), then the domain.
//
// It prints one `result:` line of key=value pairs (read by scripts/jack_check) and exits non-zero
// when an update was lost or applied twice, or a table was not freed exactly once by the worker.
#include "harness/latency.hpp"

#include <rtdefer/irq_work.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>

#include <jack/jack.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <malloc.h>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr std::size_t max_updates = 1u << 16; // ledger size: more than any run sends

struct options {
    bool baseline = false;
    double seconds = 10;
    std::string server;
    int storm = 2;
    int rate_hz = 500;
    std::size_t table_floats = 64 * 1024; // 256 KiB
};

/// One update: a gain and a wavetable, built by the UI thread. The same object travels UI → callback
/// (task_work) → worker (llist + irq_work), so it is touched by one thread at a time.
struct update {
    rtdefer::callback_head work;  // task_work: UI → process callback
    rtdefer::llist_node retire{}; // llist: process callback → irq_work worker
    std::uint32_t seq = 0;
    float gain = 1.0F;
    float* table = nullptr;       // malloc'ed, table_floats long
    std::size_t frames = 0;
};

/// Exactly-once ledger: each slot is written by one thread at a time (relaxed increments; read by
/// main after the threads are joined or deactivated).
struct ledger {
    std::unique_ptr<std::atomic<std::uint32_t>[]> applied{new std::atomic<std::uint32_t>[max_updates]()};
    std::unique_ptr<std::atomic<std::uint32_t>[]> freed{new std::atomic<std::uint32_t>[max_updates]()};
};

struct client_state {
    options opt;
    jack_client_t* client = nullptr;
    jack_port_t* out = nullptr;
    ledger book;

    // rtdefer mode
    std::unique_ptr<rtdefer::irq_work_domain> dom;
    int retire_cpu = 0;
    rtdefer::llist_head retired;
    std::atomic<rtdefer::thread_ctx*> rt_ctx{nullptr}; // a reference taken by acquire_raw()
    std::atomic<std::uint32_t> attach_failures{0};
    std::atomic<std::uint64_t> queue_pending{0};       // irq_work_queue_on() found it pending

    // baseline mode: the usual way
    std::mutex params_lock;
    std::deque<update*> params;

    // the callback's own state (process thread only, until jack_deactivate returns)
    update* current = nullptr;
    std::size_t phase = 0;
    bool resolved = false;
    rtdefer::thread_ctx* self = nullptr;

    // measurements (process thread only; read after deactivate)
    rtdefer_bench::histogram cycle_ns{20000};
    std::uint64_t cycles = 0;
    std::atomic<std::uint64_t> xruns{0};
    std::atomic<std::uint32_t> applied_total{0};
};

client_state* g_state = nullptr; // for the worker's callable and the C callbacks

float* new_table(std::size_t n, std::uint32_t seq) {
    auto* t = static_cast<float*>(std::malloc(n * sizeof(float)));
    if (t == nullptr)
        std::abort();
    for (std::size_t i = 0; i < n; ++i) // touch every page: the UI pays for the page faults, not the callback
        t[i] = std::sin(static_cast<float>(i + seq) * 0.01F);
    return t;
}

void delete_update(update* u) {
    std::free(u->table);
    delete u;
}

// ---- the real-time side -----------------------------------------------------------------------

/// The worker's side: frees what the callback retired (lazy irq_work: runs at the worker's tick).
struct reclaimer {
    void operator()() const noexcept {
        client_state& s = *g_state;
        rtdefer::llist_for_each_safe(s.retired.del_all(), [&s](rtdefer::llist_node& n) noexcept {
            update* u = rtdefer::llist_entry<update, &update::retire>(&n);
            s.book.freed[u->seq].fetch_add(1, std::memory_order_relaxed); // relaxed: ledger
            delete_update(u); // free() and munmap here, in irq_work/N, not in the callback
        });
    }
};
rtdefer::irq_work_fn<reclaimer> g_reclaim{reclaimer{}, rtdefer::irq_work_kind::lazy};

/// task_work callback, on the process thread: install the update, retire the one it replaces.
void apply_update(rtdefer::callback_head* h) noexcept RTDEFER_NONBLOCKING {
    client_state& s = *g_state;
    update* u = reinterpret_cast<update*>(reinterpret_cast<char*>(h) - offsetof(update, work));
    s.book.applied[u->seq].fetch_add(1, std::memory_order_relaxed); // relaxed: ledger, see `ledger`
    s.applied_total.fetch_add(1, std::memory_order_release);        // release: pairs with main's wait
    update* old = s.current;
    s.current = u;
    if (old != nullptr) {
        (void)s.retired.add(old->retire);
        // false: already pending; that run sees this table (the claim's ordering argument).
        if (!rtdefer::irq_work_queue_on(*s.dom, g_reclaim, s.retire_cpu))
            s.queue_pending.fetch_add(1, std::memory_order_relaxed); // relaxed: statistic
    }
}


int process_rtdefer(jack_nframes_t nframes, void* arg) noexcept RTDEFER_NONBLOCKING {
    client_state& s = *static_cast<client_state*>(arg);
    timespec t0{}, t1{};
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &t0)); // vDSO: no syscall
    if (RTDEFER_UNLIKELY(!s.resolved)) {
        // First cycle: this is the host's real-time thread. Its ctx exists if thread-init attached it.
        s.resolved = true;
        s.self = rtdefer::current_thread_ctx();
        if (s.self != nullptr)
            s.rt_ctx.store(rtdefer::thread_ref::acquire_raw(*s.self), std::memory_order_release);
    }
    if (RTDEFER_LIKELY(s.self != nullptr))
        (void)rtdefer::task_work_run(*s.self); // the safe point: top of the cycle, no locks held
    auto* out = RTDEFER_TRUSTED_CALL(static_cast<float*>(jack_port_get_buffer(s.out, nframes)));
    const update* u = s.current;
    for (jack_nframes_t i = 0; i < nframes; ++i) {
        out[i] = u != nullptr ? u->gain * u->table[s.phase] : 0.0F;
        if (u != nullptr && ++s.phase >= u->frames)
            s.phase = 0;
    }
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &t1));
    s.cycle_ns.record(static_cast<std::uint64_t>((t1.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t1.tv_nsec - t0.tv_nsec)));
    ++s.cycles;
    return 0;
}

/// The usual way: lock the parameters, take what the UI queued, free the replaced table inline.
/// Under RealtimeSanitizer it is marked as the real-time context it is, so the sanitizer counts what
/// it does there (the mutex, free, munmap); the compile-time check is silenced for it alone.
#if RTDEFER_HAS_RTSAN
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wfunction-effects"
#define JACK_GAIN_BASELINE_CONTEXT RTDEFER_NONBLOCKING
#else
#define JACK_GAIN_BASELINE_CONTEXT
#endif
int process_baseline(jack_nframes_t nframes, void* arg) noexcept JACK_GAIN_BASELINE_CONTEXT {
    client_state& s = *static_cast<client_state*>(arg);
    timespec t0{}, t1{};
    ::clock_gettime(CLOCK_MONOTONIC, &t0);
    {
        std::lock_guard<std::mutex> lock(s.params_lock);
        while (!s.params.empty()) {
            update* u = s.params.front();
            s.params.pop_front();
            s.book.applied[u->seq].fetch_add(1, std::memory_order_relaxed);
            s.applied_total.fetch_add(1, std::memory_order_release);
            if (s.current != nullptr) {
                s.book.freed[s.current->seq].fetch_add(1, std::memory_order_relaxed);
                delete_update(s.current); // munmap in the real-time thread
            }
            s.current = u;
            s.phase = 0;
        }
    }
    auto* out = static_cast<float*>(jack_port_get_buffer(s.out, nframes));
    const update* u = s.current;
    for (jack_nframes_t i = 0; i < nframes; ++i) {
        out[i] = u != nullptr ? u->gain * u->table[s.phase] : 0.0F;
        if (u != nullptr && ++s.phase >= u->frames)
            s.phase = 0;
    }
    ::clock_gettime(CLOCK_MONOTONIC, &t1);
    s.cycle_ns.record(static_cast<std::uint64_t>((t1.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t1.tv_nsec - t0.tv_nsec)));
    ++s.cycles;
    return 0;
}
#if RTDEFER_HAS_RTSAN
#pragma clang diagnostic pop
#endif

// ---- host callbacks -----------------------------------------------------------------------------

void thread_init(void* arg) noexcept {
    // Runs on each of jack2's client threads; none may throw into libjack's frames.
    if (rtdefer::try_attach_this_thread() == nullptr)
        static_cast<client_state*>(arg)->attach_failures.fetch_add(1, std::memory_order_relaxed);
}

int on_xrun(void* arg) noexcept {
    static_cast<client_state*>(arg)->xruns.fetch_add(1, std::memory_order_relaxed); // relaxed: counter
    return 0;
}

// ---- the non-real-time side ---------------------------------------------------------------------

void storm_thread(std::atomic<bool>& stop, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::size_t> size(256 * 1024, 4 * 1024 * 1024);
    while (!stop.load(std::memory_order_relaxed)) { // relaxed: a stop flag
        const std::size_t n = size(rng);
        auto* p = static_cast<unsigned char*>(std::malloc(n));
        if (p == nullptr)
            continue;
        std::memset(p, 0x5a, n); // page faults: the mmap lock, read side
        std::free(p);            // munmap: the mmap lock, write side
    }
}

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--baseline] [--seconds S] [--server NAME] [--storm N] [--rate HZ]\n"
                 "  rtdefer mode (default): task_work in, lazy irq_work out; --baseline: mutex + free()\n",
                 argv0);
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    auto state = std::make_unique<client_state>();
    client_state& s = *state;
    g_state = &s;
    options& o = s.opt;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        const char* v = nullptr;
        if (a == "--baseline") o.baseline = true;
        else if (a == "--seconds" && (v = next())) o.seconds = std::atof(v);
        else if (a == "--server" && (v = next())) o.server = v;
        else if (a == "--storm" && (v = next())) o.storm = std::atoi(v);
        else if (a == "--rate" && (v = next())) o.rate_hz = std::atoi(v);
        else return usage(argv[0]);
    }
    if (o.seconds <= 0 || o.rate_hz <= 0 || o.storm < 0 || o.seconds * o.rate_hz >= max_updates - 1)
        return usage(argv[0]);
    // A fixed mmap threshold: every free() of a table is a munmap (glibc would otherwise raise the
    // threshold after the first free and serve tables from the heap).
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const char* mode = o.baseline ? "baseline" : "rtdefer";

    if (!o.baseline) {
        rtdefer::irq_work_domain_options d;
        d.priority = 5; // explicit: above SCHED_FIFO 1 so other low-RT load cannot starve the frees
        s.dom = std::make_unique<rtdefer::irq_work_domain>(d);
        s.retire_cpu = s.dom->cpus().front();
    }

    jack_status_t st{};
    const int flags = JackNoStartServer | (o.server.empty() ? 0 : JackServerName);
    s.client = o.server.empty() ? jack_client_open("rtdefer_gain", static_cast<jack_options_t>(flags), &st)
                                : jack_client_open("rtdefer_gain", static_cast<jack_options_t>(flags), &st, o.server.c_str());
    if (s.client == nullptr) {
        std::printf("SKIP: no JACK server (jack_client_open status 0x%x)\n", static_cast<unsigned>(st));
        return 77;
    }
    s.out = jack_port_register(s.client, "out", JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
    jack_set_thread_init_callback(s.client, &thread_init, &s);
    jack_set_xrun_callback(s.client, &on_xrun, &s);
    if (o.baseline)
        jack_set_process_callback(s.client, &process_baseline, &s); // (nonblocking only under RTSan)
    else
        jack_set_process_callback(s.client, &process_rtdefer, &s);
    const jack_nframes_t period = jack_get_buffer_size(s.client);
    const jack_nframes_t rate = jack_get_sample_rate(s.client);
    if (jack_activate(s.client) != 0) {
        std::printf("FAIL: jack_activate\n");
        return 1;
    }
    std::printf("jack_gain %s: %u frames at %u Hz (%.2f ms period), %d updates/s of %zu KiB tables, %d storm threads, %.0f s\n",
                mode, period, rate, 1e3 * period / rate, o.rate_hz, o.table_floats * sizeof(float) / 1024,
                o.storm, o.seconds);

    std::atomic<bool> stop_storm{false};
    std::vector<std::thread> storm;
    for (int i = 0; i < o.storm; ++i)
        storm.emplace_back(storm_thread, std::ref(stop_storm), 1234u + static_cast<unsigned>(i));

    // The UI thread: the caller of this loop. It needs the real-time thread's ctx (rtdefer mode).
    rtdefer::thread_ref rt;
    if (!o.baseline) {
        const auto give_up = steady::now() + 5s;
        rtdefer::thread_ctx* raw = nullptr;
        while ((raw = s.rt_ctx.load(std::memory_order_acquire)) == nullptr && steady::now() < give_up)
            std::this_thread::sleep_for(1ms);
        if (raw == nullptr) {
            std::printf("FAIL: the process callback never published its thread (attach failures: %u)\n",
                        s.attach_failures.load());
            return 1;
        }
        rt = rtdefer::thread_ref::adopt(raw);
    }
    std::uint32_t sent = 0, refused = 0;
    const auto interval = std::chrono::nanoseconds(1'000'000'000LL / o.rate_hz);
    const auto end = steady::now() + std::chrono::duration<double>(o.seconds);
    for (auto next = steady::now(); next < end; next += interval) {
        std::this_thread::sleep_until(next);
        auto* u = new update;
        u->seq = sent;
        u->gain = 0.5F + 0.5F * static_cast<float>(sent % 2);
        u->frames = o.table_floats;
        u->table = new_table(o.table_floats, sent);
        if (o.baseline) {
            std::lock_guard<std::mutex> lock(s.params_lock);
            s.params.push_back(u);
            ++sent;
            continue;
        }
        rtdefer::init_task_work(u->work, &apply_update);
        // notify::none: the callback comes round every period anyway (docs/host_threads.md).
        const rtdefer::status r = rtdefer::task_work_add(*rt, u->work, rtdefer::notify::none);
        if (r == rtdefer::status::ok) {
            ++sent;
        } else {
            ++refused; // exited: the item was not queued and is still ours
            delete_update(u);
        }
    }

    // Teardown, in the documented order.
    // 1. the producers have stopped (this loop); 2. wait for the items in flight.
    const auto drain_until = steady::now() + 5s;
    while (s.applied_total.load(std::memory_order_acquire) != sent && steady::now() < drain_until)
        std::this_thread::sleep_for(1ms);
    stop_storm.store(true, std::memory_order_relaxed);
    for (auto& t : storm)
        t.join();
    // 3. stop the real-time thread (jack2 cancels it asynchronously).
    jack_deactivate(s.client);
    // 4. retire what the callback still holds, and wait until the worker is done with it.
    if (!o.baseline) {
        if (s.current != nullptr) {
            (void)s.retired.add(s.current->retire);
            s.current = nullptr;
            (void)rtdefer::irq_work_queue_on(*s.dom, g_reclaim, s.retire_cpu);
        }
        (void)rtdefer::irq_work_sync(g_reclaim);
    } else if (s.current != nullptr) {
        s.book.freed[s.current->seq].fetch_add(1, std::memory_order_relaxed);
        delete_update(s.current);
        s.current = nullptr;
    }
    // 5. close the client; 6. drop our reference, then the domain.
    jack_client_close(s.client);
    rt.reset();
    s.dom.reset();

    std::uint32_t lost = 0, twice = 0, not_freed = 0, freed_twice = 0;
    for (std::uint32_t i = 0; i < sent; ++i) {
        const std::uint32_t a = s.book.applied[i].load(std::memory_order_relaxed);
        const std::uint32_t f = s.book.freed[i].load(std::memory_order_relaxed);
        lost += a == 0;
        twice += a > 1;
        not_freed += f == 0;
        freed_twice += f > 1;
    }
    const rtdefer_bench::summary c = rtdefer_bench::summary::of(s.cycle_ns);
    const bool ok = lost == 0 && twice == 0 && not_freed == 0 && freed_twice == 0 && sent > 0;
    std::printf("result: mode=%s cycles=%llu xruns=%llu cycle_p50_us=%.1f cycle_p99_us=%.1f cycle_max_us=%.1f "
                "updates=%u refused=%u lost=%u applied_twice=%u not_freed=%u freed_twice=%u "
                "queue_pending=%llu attach_failures=%u ok=%d\n",
                mode, static_cast<unsigned long long>(s.cycles), static_cast<unsigned long long>(s.xruns.load()),
                c.p50 / 1e3, c.p99 / 1e3, c.max / 1e3, sent, refused, lost, twice, not_freed, freed_twice,
                static_cast<unsigned long long>(s.queue_pending.load()), s.attach_failures.load(), ok ? 1 : 0);
    return ok ? 0 : 1;
}
