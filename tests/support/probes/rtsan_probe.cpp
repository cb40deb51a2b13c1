// scripts/lib/probe_sanitizer rtsan: RealtimeSanitizer must run a clean program (no argument) and
// stop malloc in a [[clang::nonblocking]] function (argument `violate`).
#include <cstdio>
#include <cstdlib>
int violate(int n) noexcept [[clang::nonblocking]] {
    void* p = std::malloc(static_cast<std::size_t>(n)); // RealtimeSanitizer must stop this
    const int r = p != nullptr;
    std::free(p);
    return r;
}
int main(int argc, char**) {
    if (argc > 1) return violate(16) ? 0 : 3;
    std::puts("rtsan probe: clean run");
    return 0;
}
