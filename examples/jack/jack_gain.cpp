// examples/jack/jack_gain.cpp: a JACK client whose real-time process callback receives parameter
// updates (a gain and a new wavetable) from a UI thread and retires the tables it no longer needs,
// without a lock, an allocation or a free() in the callback.
//
//   UI thread ──task_work_add(notify::none)──▶ process callback ──llist + lazy irq_work──▶ irq_work/N
//   (builds each update; its own time)        (task_work_run at its top:   (frees the retired tables)
//                                              the safe point)
//
// --baseline does what such clients usually do instead: a mutex-protected parameter queue and free()
// inline in the callback. The client itself (updates, tables, the exactly-once ledger, the allocation
// storm) is bench/harness/rt_client.hpp, shared with bench/rt_client_bench.cpp; this file is the JACK
// glue, which is what the host-thread contract is about.
//
// The host-thread contract this follows is docs/host_threads.md:
//   - jack2 calls the thread-init callback on three threads (all SCHED_OTHER at that point): attach
//     each one with the nonthrowing try_attach_this_thread(); the real-time one is the thread that
//     runs the process callback, so the ctx is resolved in the first cycle (current_thread_ctx()).
//   - the callback hands a reference to its ctx to the UI with thread_ref::acquire_raw() through an
//     atomic; the UI takes it over with thread_ref::adopt().
//   - notify::none: the callback runs every period anyway; a signal would only interrupt jack2's wait.
//   - an irq_work_producer bound to one fixed CPU at setup (bind() returns invalid_argument for a CPU
//     the domain does not serve): the JACK thread migrates, and a local queue would spread LAZY items
//     over every CPU's tick. The worker runs at SCHED_FIFO 5, above low real-time load.
//   - the UI samples the retiring worker's backlog (irq_work_stats::pending, oldest_pending_age)
//     once per update and reports the worst: a starving worker shows there first.
//   - teardown order: stop the producers, wait for the items in flight, jack_deactivate(), retire what
//     the callback still held and irq_work_sync(), jack_client_close(), then the domain.
//
// It prints one `result:` line of key=value pairs (read by scripts/jack_check) and exits non-zero
// when an update was lost or applied twice, or a table was not freed exactly once by the worker.
#include "harness/latency.hpp"
#include "harness/rt_client.hpp"

#include <rtdefer/config.hpp>
#include <rtdefer/thread.hpp>

#include <jack/jack.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
namespace rc = rtdefer_bench::rt_client;

struct options {
    bool baseline = false;
    double seconds = 10;
    std::string server;
    int storm = 2;
    int rate_hz = 500;
    std::size_t table_floats = 64 * 1024; // 256 KiB
};

struct host_state {
    std::unique_ptr<rc::client> client;
    jack_port_t* out = nullptr;
    std::atomic<rtdefer::thread_ctx*> rt_ctx{nullptr}; // a reference taken by acquire_raw()
    std::atomic<std::uint32_t> attach_failures{0};
    std::atomic<std::uint64_t> xruns{0};
    // the callback's own (process thread only; read after jack_deactivate)
    bool resolved = false;
    rtdefer::thread_ctx* self = nullptr;
    rtdefer_bench::histogram cycle_ns{20000};
    std::uint64_t cycles = 0;
};

std::uint64_t elapsed_ns(const timespec& a, const timespec& b) noexcept RTDEFER_NONBLOCKING {
    return static_cast<std::uint64_t>((b.tv_sec - a.tv_sec) * 1'000'000'000LL + (b.tv_nsec - a.tv_nsec));
}

int process_rtdefer(jack_nframes_t nframes, void* arg) noexcept RTDEFER_NONBLOCKING {
    host_state& h = *static_cast<host_state*>(arg);
    timespec t0{}, t1{};
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &t0)); // vDSO: no syscall
    if (RTDEFER_UNLIKELY(!h.resolved)) {
        // First cycle: this is the host's real-time thread. Its ctx exists if thread-init attached it.
        h.resolved = true;
        h.self = rtdefer::current_thread_ctx();
        if (h.self != nullptr)
            h.rt_ctx.store(rtdefer::thread_ref::acquire_raw(*h.self), std::memory_order_release);
    }
    auto* out = RTDEFER_TRUSTED_CALL(static_cast<float*>(jack_port_get_buffer(h.out, nframes)));
    if (RTDEFER_LIKELY(h.self != nullptr))
        h.client->cycle_rtdefer(*h.self, out, nframes); // task_work_run at the top: the safe point
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &t1));
    h.cycle_ns.record(elapsed_ns(t0, t1));
    ++h.cycles;
    return 0;
}

// The usual way. Under RealtimeSanitizer it is marked as the real-time context it is, so the sanitizer
// counts what it does there (the mutex, free, munmap); the compile-time check is silenced for it alone.
#if RTDEFER_HAS_RTSAN
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wfunction-effects"
#define JACK_GAIN_BASELINE_CONTEXT RTDEFER_NONBLOCKING
#else
#define JACK_GAIN_BASELINE_CONTEXT
#endif
int process_baseline(jack_nframes_t nframes, void* arg) noexcept JACK_GAIN_BASELINE_CONTEXT {
    host_state& h = *static_cast<host_state*>(arg);
    timespec t0{}, t1{};
    ::clock_gettime(CLOCK_MONOTONIC, &t0);
    h.client->cycle_baseline(static_cast<float*>(jack_port_get_buffer(h.out, nframes)), nframes);
    ::clock_gettime(CLOCK_MONOTONIC, &t1);
    h.cycle_ns.record(elapsed_ns(t0, t1));
    ++h.cycles;
    return 0;
}
#if RTDEFER_HAS_RTSAN
#pragma clang diagnostic pop
#endif

void thread_init(void* arg) noexcept {
    // Runs on each of jack2's client threads; nothing may throw into libjack's frames.
    if (rtdefer::try_attach_this_thread() == nullptr)
        static_cast<host_state*>(arg)->attach_failures.fetch_add(1, std::memory_order_relaxed); // relaxed: counter
}

int on_xrun(void* arg) noexcept {
    static_cast<host_state*>(arg)->xruns.fetch_add(1, std::memory_order_relaxed); // relaxed: counter
    return 0;
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
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--baseline") o.baseline = true;
        else if (a == "--seconds" && v) o.seconds = std::atof(argv[++i]);
        else if (a == "--server" && v) o.server = argv[++i];
        else if (a == "--storm" && v) o.storm = std::atoi(argv[++i]);
        else if (a == "--rate" && v) o.rate_hz = std::atoi(argv[++i]);
        else return usage(argv[0]);
    }
    if (o.seconds <= 0 || o.rate_hz <= 0 || o.storm < 0 || o.seconds * o.rate_hz >= rc::max_updates - 1)
        return usage(argv[0]);
    const rc::mode m = o.baseline ? rc::mode::baseline : rc::mode::rtdefer;
    auto state = std::make_unique<host_state>();
    host_state& h = *state;
    h.client = std::make_unique<rc::client>(m, o.table_floats);

    jack_status_t st{};
    const auto flags = static_cast<jack_options_t>(JackNoStartServer | (o.server.empty() ? 0 : JackServerName));
    jack_client_t* jc = o.server.empty() ? jack_client_open("rtdefer_gain", flags, &st)
                                         : jack_client_open("rtdefer_gain", flags, &st, o.server.c_str());
    if (jc == nullptr) {
        std::printf("SKIP: no JACK server (jack_client_open status 0x%x)\n", static_cast<unsigned>(st));
        return 77;
    }
    h.out = jack_port_register(jc, "out", JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
    jack_set_thread_init_callback(jc, &thread_init, &h);
    jack_set_xrun_callback(jc, &on_xrun, &h);
    if (o.baseline)
        jack_set_process_callback(jc, &process_baseline, &h); // (nonblocking only under RTSan)
    else
        jack_set_process_callback(jc, &process_rtdefer, &h);
    const jack_nframes_t period = jack_get_buffer_size(jc);
    const jack_nframes_t rate = jack_get_sample_rate(jc);
    if (jack_activate(jc) != 0) {
        std::printf("FAIL: jack_activate\n");
        return 1;
    }
    std::printf("jack_gain %s: %u frames at %u Hz (%.2f ms period), %d updates/s of %zu KiB tables, %d storm threads, %.0f s\n",
                rc::to_string(m), period, rate, 1e3 * period / rate, o.rate_hz, o.table_floats * sizeof(float) / 1024,
                o.storm, o.seconds);
    rc::alloc_storm storm(o.storm);

    // This thread is the UI. It needs the real-time thread's ctx (rtdefer mode).
    rtdefer::thread_ref rt;
    if (!o.baseline) {
        const auto give_up = steady::now() + 5s;
        rtdefer::thread_ctx* raw = nullptr;
        while ((raw = h.rt_ctx.load(std::memory_order_acquire)) == nullptr && steady::now() < give_up)
            std::this_thread::sleep_for(1ms);
        if (raw == nullptr) {
            std::printf("FAIL: the process callback never published its thread (attach failures: %u)\n",
                        h.attach_failures.load());
            return 1;
        }
        rt = rtdefer::thread_ref::adopt(raw);
    }
    const auto interval = std::chrono::nanoseconds(1'000'000'000LL / o.rate_hz);
    const auto end = steady::now() + std::chrono::duration<double>(o.seconds);
    std::uint64_t backlog_max = 0;
    std::chrono::nanoseconds oldest_max{0};
    for (auto next = steady::now(); steady::now() < end; next += interval) {
        std::this_thread::sleep_until(next);
        (void)h.client->send(rt.get());
        const rtdefer::irq_work_stats ws = h.client->retire_stats();
        backlog_max = std::max(backlog_max, ws.pending);
        oldest_max = std::max(oldest_max, ws.oldest_pending_age);
    }

    // Teardown, in the documented order (docs/host_threads.md).
    // 1. the producer has stopped (the loop above); 2. wait for the updates in flight.
    const auto drain_until = steady::now() + 5s;
    while (h.client->applied() != h.client->sent() && steady::now() < drain_until)
        std::this_thread::sleep_for(1ms);
    storm.stop();
    jack_deactivate(jc);   // 3. stop the real-time thread (jack2 cancels it asynchronously)
    h.client->finish();    // 4. retire what the callback held; irq_work_sync
    jack_client_close(jc); // 5.
    rt.reset();            // 6. our reference, then the workers
    h.client->stop_workers();

    const rc::ledger::counts c = h.client->check();
    const rtdefer_bench::summary cs = rtdefer_bench::summary::of(h.cycle_ns);
    const bool ok = c.ok() && h.client->sent() > 0;
    std::printf("result: mode=%s cycles=%llu xruns=%llu cycle_p50_us=%.1f cycle_p99_us=%.1f cycle_max_us=%.1f "
                "updates=%u refused=%u lost=%u applied_twice=%u not_freed=%u freed_twice=%u "
                "queue_pending=%llu retire_backlog_max=%llu retire_oldest_max_us=%.1f attach_failures=%u ok=%d\n",
                rc::to_string(m), static_cast<unsigned long long>(h.cycles), static_cast<unsigned long long>(h.xruns.load()),
                cs.p50 / 1e3, cs.p99 / 1e3, cs.max / 1e3, h.client->sent(), h.client->refused(), c.lost,
                c.applied_twice, c.not_freed, c.freed_twice, static_cast<unsigned long long>(h.client->queue_pending()),
                static_cast<unsigned long long>(backlog_max), static_cast<double>(oldest_max.count()) / 1e3,
                h.attach_failures.load(), ok ? 1 : 0);
    return ok ? 0 : 1;
}
