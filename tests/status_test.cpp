// Unit tests for rtdefer/status.hpp: names, success predicate, std::error_code interop.
#include <rtdefer/status.hpp>

#include "test_util.hpp"

#include <set>
#include <string>
#include <system_error>

using namespace rtdefer;

TEST_CASE("every status has a distinct, stable name") {
    std::set<std::string> names;
    for (int v = 0; v <= static_cast<int>(status::system_error); ++v) {
        const std::string name = to_string(static_cast<status>(v));
        CHECK(name != "unknown_status");
        CHECK(names.insert(name).second);
    }
    CHECK(std::string(to_string(status::already_queued)) == "already_queued");
    CHECK(std::string(to_string(static_cast<status>(9999))) == "unknown_status");
    static_assert(to_string(status::ok)[0] == 'o', "to_string is constexpr");
}

TEST_CASE("succeeded() accepts ok and the cancel_sync outcomes only") {
    CHECK(succeeded(status::ok));
    CHECK(succeeded(status::removed));
    CHECK(succeeded(status::waited));
    CHECK(succeeded(status::idle));
    CHECK_FALSE(succeeded(status::would_deadlock));
    CHECK_FALSE(succeeded(status::exited));
    CHECK_FALSE(succeeded(status::already_queued));
}

TEST_CASE("status converts to std::error_code and maps to generic conditions") {
    std::error_code ok = status::ok;
    CHECK_FALSE(ok);
    std::error_code ec = status::would_deadlock;
    CHECK(ec);
    CHECK(ec.category() == status_category());
    CHECK(std::string(ec.category().name()) == "rtdefer");
    CHECK(ec.message() == "would_deadlock");
    CHECK(ec == std::errc::resource_deadlock_would_occur);
    CHECK(std::error_code(status::timed_out) == std::errc::timed_out);
    CHECK(std::error_code(status::not_permitted) == std::errc::operation_not_permitted);
    CHECK(std::error_code(status::exited) == std::errc::no_such_process);
    // A status without a generic equivalent compares equal only to itself.
    CHECK(std::error_code(status::already_queued) != std::errc::device_or_resource_busy);
    CHECK(std::error_code(status::already_queued) == make_error_code(status::already_queued));
}
