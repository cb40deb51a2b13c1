// Unit tests for tests/support/ledger.hpp, the stress tests' exactly-once accounting: it must see a
// lost item, a duplicated one, a refused one that ran and a foreign id, name their ids, and count
// records made concurrently by several threads and by a signal handler without losing any.
#include "ledger.hpp"
#include "test_util.hpp"

#include <atomic>
#include <csignal>
#include <cstddef>
#include <thread>
#include <vector>

#include <pthread.h>

using rtdefer_test::ledger;

TEST_SUITE("unit") {

TEST_CASE("ledger: every id expected once and recorded once is exactly once") {
    ledger l(100, 1);
    for (std::size_t i = 0; i < 100; ++i)
        CHECK(l.record(i));
    const ledger::report r = l.count();
    CHECK(r.exactly_once());
    CHECK(r.ids == 100);
    CHECK(r.expected == 100);
    CHECK(r.seen == 100);
    CHECK(r.lost == 0);
    CHECK(r.duplicated == 0);
    CHECK(r.unexpected == 0);
    CHECK(r.out_of_range == 0);
    CHECK(r.lost_ids.empty());
    CHECK(r.duplicated_ids.empty());
}

TEST_CASE("ledger: a lost and a duplicated item are reported with their ids") {
    ledger l(10, 1);
    for (std::size_t i = 0; i < 10; ++i)
        if (i != 3) // item 3 is lost
            (void)l.record(i);
    (void)l.record(7); // item 7 comes out twice
    const ledger::report r = l.count();
    CHECK_FALSE(r.exactly_once());
    CHECK(r.lost == 1);
    CHECK(r.lost_ids == std::vector<std::size_t>{3});
    CHECK(r.duplicated == 1);
    CHECK(r.duplicated_ids == std::vector<std::size_t>{7});
    CHECK(r.unexpected == 0);
    CHECK(r.seen == 10);
    CHECK(r.str() == "10 ids: 10 records expected, 10 seen (0 refused): 1 lost (ids 3), 1 duplicated (ids 7), "
                     "0 unexpected, 0 out of range");
}

TEST_CASE("ledger: declared expectations; a refused add that runs is unexpected; foreign ids are out of range") {
    ledger l(6);
    CHECK(l.expect(0));
    CHECK(l.expect(1));
    CHECK(l.expect(1)); // id 1 accepted twice (re-queued after its run): two records due
    CHECK(l.refuse(2));
    CHECK_FALSE(l.expect(6)); // outside the ledger
    CHECK_FALSE(l.refuse(6));
    (void)l.record(0);
    (void)l.record(1); // one of id 1's two records is missing
    (void)l.record(2); // refused, yet it ran
    (void)l.record(5); // never added, yet it ran
    CHECK_FALSE(l.record(99));
    ledger::report r = l.count();
    CHECK(r.expected == 3);
    CHECK(r.refused == 1);
    CHECK(r.seen == 4);
    CHECK(r.lost == 1);
    CHECK(r.lost_ids == std::vector<std::size_t>{1});
    CHECK(r.duplicated == 0);
    CHECK(r.unexpected == 2);
    CHECK(r.unexpected_ids == std::vector<std::size_t>{2, 5});
    CHECK(r.out_of_range == 3);
    CHECK_FALSE(r.exactly_once());

    // Rounds add up; reset() forgets the round (back to "nothing expected").
    ledger::report total;
    total += r;
    l.reset();
    CHECK(l.count().exactly_once());
    CHECK(l.count().expected == 0);
    CHECK(l.expect(4));
    (void)l.record(4);
    (void)l.record(4);
    total += l.count();
    CHECK(total.lost == 1);
    CHECK(total.duplicated == 1);
    CHECK(total.duplicated_ids == std::vector<std::size_t>{4});
    CHECK(total.unexpected == 2);
    CHECK(total.refused == 1);
}

TEST_CASE("ledger: at most max_ids ids are kept per kind; the counts stay exact") {
    ledger l(100, 1);
    const ledger::report r = l.count(); // nothing recorded: all 100 lost
    CHECK(r.lost == 100);
    CHECK(r.lost_ids.size() == ledger::report::max_ids);
    CHECK(r.lost_ids.front() == 0);
    ledger::report sum = r;
    sum += r;
    CHECK(sum.lost == 200);
    CHECK(sum.lost_ids.size() == ledger::report::max_ids);
}

namespace {
ledger* g_handler_ledger = nullptr;
std::atomic<std::size_t> g_handler_next{0};
void record_from_handler(int) {
    // relaxed: only this thread's handler takes ids; read by the same thread afterwards.
    (void)g_handler_ledger->record(g_handler_next.fetch_add(1, std::memory_order_relaxed));
}
} // namespace

TEST_CASE("ledger: records from several threads and from a signal handler are all counted") {
    constexpr std::size_t threads = 4, per_thread = 20000, from_handler = 200;
    ledger l(threads * per_thread + from_handler, 1);
    g_handler_ledger = &l;
    g_handler_next.store(threads * per_thread, std::memory_order_relaxed);
    struct sigaction sa{}, old{};
    sa.sa_handler = &record_from_handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(SIGUSR2, &sa, &old) == 0);
    std::vector<std::thread> ts;
    for (std::size_t t = 0; t < threads; ++t)
        ts.emplace_back([&l, t] {
            // Interleaved ids: neighbouring slots are recorded by different threads at once.
            for (std::size_t i = 0; i < per_thread; ++i)
                (void)l.record(i * threads + t);
        });
    // This thread records from its handler meanwhile (a signal to itself runs the handler before
    // pthread_kill returns).
    for (std::size_t k = 0; k < from_handler; ++k)
        REQUIRE(::pthread_kill(::pthread_self(), SIGUSR2) == 0);
    for (auto& t : ts)
        t.join();
    ::sigaction(SIGUSR2, &old, nullptr);
    const ledger::report r = l.count();
    INFO(r.str());
    CHECK(r.exactly_once());
    CHECK(r.seen == threads * per_thread + from_handler);
    CHECK(g_handler_next.load(std::memory_order_relaxed) == threads * per_thread + from_handler);
}

} // TEST_SUITE
