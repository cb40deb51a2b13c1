// rtdefer benchmark harness: the replacement allocation functions ([replacement.functions]) that
// alloc_counter.hpp reads the counts of. Non-inline by requirement, hence this one translation unit,
// linked into every bench through the harness library (bench/meson.build).
#include "alloc_counter.hpp"

// Replacement allocation functions ([replacement.functions]); non-inline by requirement.
void* operator new(std::size_t n) {
    if (void* p = rtdefer_bench::alloc_detail::counted_alloc(n, 0)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = rtdefer_bench::alloc_detail::counted_alloc(n, 0)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
    if (void* p = rtdefer_bench::alloc_detail::counted_alloc(n, static_cast<std::size_t>(a))) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
    if (void* p = rtdefer_bench::alloc_detail::counted_alloc(n, static_cast<std::size_t>(a))) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return rtdefer_bench::alloc_detail::counted_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return rtdefer_bench::alloc_detail::counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return rtdefer_bench::alloc_detail::counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return rtdefer_bench::alloc_detail::counted_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { rtdefer_bench::alloc_detail::counted_free(p); }
