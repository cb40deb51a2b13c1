// rtdefer benchmark harness: the housekeeping job that deferred_word_bench and its showcase scene
// request of a busy-polling loop, once through the deferred work word and once by signal.
//
// The job records the newest request it covers (a sequence number posted before each request), so
// "every request's effect observed" is covered() == posted() after the run, however many requests
// one run of the job covered. word_callback is the ct_register_work callback; signal_hook the
// interrupt hook, which does the job only on signal_target (hooks are process-wide and permanent).
// One job per process (callbacks are plain function pointers): its state is static.
#pragma once

#include <atomic>
#include <cstdint>

#include <rtdefer/thread.hpp>

namespace rtdefer_bench {

struct housekeeping_job {
    static inline std::atomic<std::uint64_t> posted{0};
    static inline std::atomic<std::uint64_t> covered{0};
    static inline std::atomic<std::uint64_t> runs{0};
    static inline std::atomic<rtdefer::thread_ctx*> signal_target{nullptr};

    static void run() noexcept RTDEFER_NONBLOCKING {
        // relaxed: posted is published by the word's CAS (DW1) or, for the signal, by the kernel's
        // signal delivery; covered/runs are read after the phase by the thread that joined it.
        covered.store(posted.load(std::memory_order_relaxed), std::memory_order_relaxed);
        runs.fetch_add(1, std::memory_order_relaxed);
    }
    static void word_callback(rtdefer::thread_ctx&, unsigned) noexcept RTDEFER_NONBLOCKING { run(); }
    static void signal_hook(rtdefer::thread_ctx* self) noexcept RTDEFER_NONBLOCKING {
        // relaxed: compared by identity only; the target is stored before its first signal.
        if (self != nullptr && self == signal_target.load(std::memory_order_relaxed))
            run();
    }
    /// Before a run (setup path).
    static void reset() {
        posted.store(0, std::memory_order_relaxed);  // relaxed: no job runs between runs
        covered.store(0, std::memory_order_relaxed);
        runs.store(0, std::memory_order_relaxed);
    }
};

}  // namespace rtdefer_bench
