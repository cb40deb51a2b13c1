// RTDEFER_TRUSTED_CALL: the public way to mark an audited call (here clock_gettime, a vDSO read) in
// a nonblocking function. -Wfunction-effects must stay silent for the marked calls and still report
// the unmarked one (marked EXPECT). The value of the call is passed through.
#include <rtdefer/config.hpp>

#include <ctime>

int stamp(timespec& ts) noexcept RTDEFER_NONBLOCKING {
    const int rc = RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &ts));
    (void)RTDEFER_TRUSTED_CALL(::clock_gettime(CLOCK_MONOTONIC, &ts));
    return rc;
}

int unmarked(timespec& ts) noexcept RTDEFER_NONBLOCKING {
    return ::clock_gettime(CLOCK_MONOTONIC, &ts); // EXPECT: warning here
}

int main() {
    timespec ts{};
    return stamp(ts) + unmarked(ts);
}
