// scripts/lib/probe_sanitizer tsan: can this machine run a ThreadSanitizer program at all?
// A thread and an atomic: nothing to report, so any failure is TSan's runtime refusing to start
// (typically "unexpected memory mapping" under a high vm.mmap_rnd_bits).
#include <atomic>
#include <cstdio>
#include <thread>
int main() {
    std::atomic<int> n{0};
    std::thread t([&] { n.fetch_add(1, std::memory_order_relaxed); }); // relaxed: join orders it
    t.join();
    std::printf("tsan probe ran: %d\n", n.load(std::memory_order_relaxed));
    return n.load(std::memory_order_relaxed) == 1 ? 0 : 1;
}
