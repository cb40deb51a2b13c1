// rtdefer benchmark harness: allocation counter.
//
// Counts the global operator new/delete (all forms), replaced by counting versions that forward to
// malloc/free. Replacement functions must not be inline, so they live in alloc_counter.cpp, which
// bench/meson.build links into every bench (the harness library); this header only reads the counts.
//
//   #include "harness/alloc_counter.hpp"
//   rtdefer_bench::alloc_scope sc;            // counts this thread's allocations from here
//   ... operations ...
//   double per_op = double(sc.allocations()) / ops;
//   rtdefer_bench::global_allocations();      // all threads, since start
//
// Counts operator new only (malloc called directly by libraries is not seen); that is what
// "allocations per operation" of C++ containers means. Per-thread counters are thread_local in the
// executable (initial-exec TLS: no allocation on access).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace rtdefer_bench {

namespace alloc_detail {
inline std::atomic<std::uint64_t> g_allocs{0};
inline std::atomic<std::uint64_t> g_frees{0};
inline thread_local std::uint64_t t_allocs = 0;
inline thread_local std::uint64_t t_frees = 0;

// noinline: keeps gcc's -Wmismatched-new-delete from pairing an inlined free() with operator new.
[[gnu::noinline]] inline void* counted_alloc(std::size_t n, std::size_t align) {
    if (n == 0) n = 1;
    void* p = nullptr;
    if (align <= alignof(std::max_align_t)) p = std::malloc(n);
    else if (posix_memalign(&p, align, n) != 0) p = nullptr;
    if (p) {
        ++t_allocs;
        g_allocs.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic, read after joins
    }
    return p;
}
[[gnu::noinline]] inline void counted_free(void* p) noexcept {
    if (!p) return;
    ++t_frees;
    g_frees.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    std::free(p);
}
}  // namespace alloc_detail

/// Allocations (operator new calls) made by the calling thread so far.
inline std::uint64_t thread_allocations() noexcept { return alloc_detail::t_allocs; }
inline std::uint64_t thread_frees() noexcept { return alloc_detail::t_frees; }
/// Allocations by all threads so far.
inline std::uint64_t global_allocations() noexcept { return alloc_detail::g_allocs.load(std::memory_order_relaxed); }
inline std::uint64_t global_frees() noexcept { return alloc_detail::g_frees.load(std::memory_order_relaxed); }
/// True when this binary counts allocations (the header is included).
inline constexpr bool allocations_counted = true;

/// Counts the calling thread's (or, with global=true, all threads') allocations since construction.
class alloc_scope {
public:
    explicit alloc_scope(bool global = false) noexcept
        : global_(global), start_(global ? global_allocations() : thread_allocations()) {}
    std::uint64_t allocations() const noexcept { return (global_ ? global_allocations() : thread_allocations()) - start_; }

private:
    bool global_;
    std::uint64_t start_;
};

}  // namespace rtdefer_bench
