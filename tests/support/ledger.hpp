// tests/support/ledger.hpp: the exactly-once accounting of the stress tests.
//
//   rtdefer_test::ledger          one slot per item id: how many records it expects, how many it got
//   rtdefer_test::ledger::report  lost, duplicated, unexpected and out-of-range records, with the
//                                 first ids of each, after every thread is joined
//
// Use: size the ledger for the item ids (0 .. ids-1). Either every id is expected once from the
// start (`ledger seen(n, 1)`: every item pushed is an item that must come out), or the producer
// declares each accepted add with expect(id) (and a refused one with refuse(id), which only counts
// it). The consumer calls record(id) for each item it takes out (a run, a successful cancel, a
// pop). At the end, count() compares each id's records with its expectation:
//   lost        records missing (an id expected k times, recorded fewer);
//   duplicated  records beyond the expectation of an id that expected some;
//   unexpected  records of an id that expected none (its add was refused, or never made);
//   out_of_range  record(id) with an id outside the ledger (a corrupt or foreign item).
// An id may be expected several times (an irq_work item claimed again after each run): the ledger
// counts claims and runs per id, not which claim a run served.
//
// record(), expect() and refuse() are lock-free and async-signal-safe (one relaxed RMW each), so
// callbacks, signal handlers and interrupt hooks may call them. Relaxed is enough: count() and
// reset() run only after the threads that record are joined, and the join orders every record
// before them.
#pragma once

#include <rtdefer/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace rtdefer_test {

class ledger {
public:
    /// Effects: `ids` slots, each expecting `expected_each` records (0: declared later by expect()).
    explicit ledger(std::size_t ids, std::uint32_t expected_each = 0)
        : slots_(new slot[ids]), size_(ids), initial_(expected_each) {
        reset();
    }
    ledger(const ledger&) = delete;
    ledger& operator=(const ledger&) = delete;

    /// Effects: back to the constructor's state. No thread may be using the ledger.
    void reset() noexcept {
        for (std::size_t i = 0; i < size_; ++i) {
            slots_[i].expected.store(initial_, std::memory_order_relaxed); // relaxed: see the top
            slots_[i].seen.store(0, std::memory_order_relaxed);
        }
        refused_.store(0, std::memory_order_relaxed);
        out_of_range_.store(0, std::memory_order_relaxed);
    }

    /// Effects: id is expected once more (its add was accepted). Returns: false (and counts it as
    /// out of range) when id is not in the ledger.
    bool expect(std::size_t id) noexcept RTDEFER_NONBLOCKING {
        if (!in_range(id))
            return false;
        slots_[id].expected.fetch_add(1, std::memory_order_relaxed); // relaxed: see the top
        return true;
    }
    /// Effects: counts a refused add of id (the item must not come out for it: its expectation stays
    /// as it was). Returns: false (and counts it as out of range) when id is not in the ledger.
    bool refuse(std::size_t id) noexcept RTDEFER_NONBLOCKING {
        if (!in_range(id))
            return false;
        refused_.fetch_add(1, std::memory_order_relaxed); // relaxed: see the top
        return true;
    }
    /// Effects: one record of id (it came out once). Returns: false (and counts it as out of range)
    /// when id is not in the ledger.
    bool record(std::size_t id) noexcept RTDEFER_NONBLOCKING {
        if (!in_range(id))
            return false;
        slots_[id].seen.fetch_add(1, std::memory_order_relaxed); // relaxed: see the top
        return true;
    }

    struct report {
        static constexpr std::size_t max_ids = 8; // ids kept per kind (the first ones found)
        std::uint64_t ids = 0, expected = 0, refused = 0, seen = 0;
        std::uint64_t lost = 0, duplicated = 0, unexpected = 0, out_of_range = 0;
        std::vector<std::size_t> lost_ids, duplicated_ids, unexpected_ids;

        [[nodiscard]] bool exactly_once() const noexcept {
            return lost == 0 && duplicated == 0 && unexpected == 0 && out_of_range == 0;
        }
        /// Effects: adds `o` (another round's report) to this one; keeps the first max_ids ids.
        report& operator+=(const report& o) {
            ids += o.ids, expected += o.expected, refused += o.refused, seen += o.seen;
            lost += o.lost, duplicated += o.duplicated, unexpected += o.unexpected;
            out_of_range += o.out_of_range;
            append(lost_ids, o.lost_ids);
            append(duplicated_ids, o.duplicated_ids);
            append(unexpected_ids, o.unexpected_ids);
            return *this;
        }
        /// Returns: one line for INFO/MESSAGE, e.g. `1000 ids: 999 records expected, 1000 seen
        /// (0 refused): 0 lost, 1 duplicated (ids 17), 0 unexpected, 0 out of range`.
        [[nodiscard]] std::string str() const {
            std::ostringstream o;
            o << ids << " ids: " << expected << " records expected, " << seen << " seen (" << refused
              << " refused): " << lost << " lost";
            list(o, lost_ids);
            o << ", " << duplicated << " duplicated";
            list(o, duplicated_ids);
            o << ", " << unexpected << " unexpected";
            list(o, unexpected_ids);
            o << ", " << out_of_range << " out of range";
            return o.str();
        }

    private:
        static void append(std::vector<std::size_t>& to, const std::vector<std::size_t>& from) {
            for (std::size_t i = 0; i < from.size() && to.size() < max_ids; ++i)
                to.push_back(from[i]);
        }
        static void list(std::ostringstream& o, const std::vector<std::size_t>& v) {
            if (v.empty())
                return;
            o << " (ids";
            for (std::size_t id : v)
                o << ' ' << id;
            o << ')';
        }
    };

    /// Returns: the comparison of every id's records with its expectation. After the joins.
    [[nodiscard]] report count() const {
        report r;
        r.ids = size_;
        r.refused = refused_.load(std::memory_order_relaxed); // relaxed (all): after the joins
        r.out_of_range = out_of_range_.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < size_; ++i) {
            const std::uint64_t want = slots_[i].expected.load(std::memory_order_relaxed);
            const std::uint64_t got = slots_[i].seen.load(std::memory_order_relaxed);
            r.expected += want;
            r.seen += got;
            if (got < want)
                note(r.lost, r.lost_ids, want - got, i);
            else if (got > want && want > 0)
                note(r.duplicated, r.duplicated_ids, got - want, i);
            else if (got > want)
                note(r.unexpected, r.unexpected_ids, got, i);
        }
        return r;
    }

    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    bool in_range(std::size_t id) noexcept RTDEFER_NONBLOCKING {
        if (id < size_)
            return true;
        out_of_range_.fetch_add(1, std::memory_order_relaxed); // relaxed: see the top
        return false;
    }
    static void note(std::uint64_t& count, std::vector<std::size_t>& ids, std::uint64_t n, std::size_t id) {
        count += n;
        if (ids.size() < report::max_ids)
            ids.push_back(id);
    }

    struct slot {
        std::atomic<std::uint32_t> expected{0};
        std::atomic<std::uint32_t> seen{0};
    };
    std::unique_ptr<slot[]> slots_; // not a vector: record() indexes it from nonblocking code
    std::size_t size_;
    std::uint32_t initial_;
    std::atomic<std::uint64_t> refused_{0};
    std::atomic<std::uint64_t> out_of_range_{0};
};

} // namespace rtdefer_test
