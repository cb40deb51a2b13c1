// A user's own real-time bug: a std::lock_guard in a nonblocking callback, in a program that
// includes all of rtdefer. -Wfunction-effects must report it on the user's lines (marked EXPECT),
// and no note may point into rtdefer's headers (scripts/check_effects checks both).
#include <rtdefer/rtdefer.hpp>

#include <mutex>

namespace {
std::mutex params_lock;
float gain = 1.0F;
} // namespace

void process_cycle(float g) noexcept RTDEFER_NONBLOCKING {
    std::lock_guard<std::mutex> lock(params_lock); // EXPECT: warning here
    gain = g;
}

int main() {
    process_cycle(0.5F);
    return gain == 0.5F ? 0 : 1;
}
