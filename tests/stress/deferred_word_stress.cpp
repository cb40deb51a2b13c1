// Stress test for rtdefer/deferred_word.hpp: a target thread enters and leaves isolated sections at
// random while senders issue requests with ct_set_work_or_ipi, each carrying a sequence number.
// A second case races requests against the target's thread exit (see below).
//
// Oracle, per request:
//   - owned bits: every sender owns 4 work bits and has at most one request outstanding per bit
//     (it reuses a bit only after that bit's callback has consumed the previous request), so each run
//     of an owned bit must find exactly one new request: a run that finds none is a double (or a
//     run without a request); a request never consumed is lost. Each request's sequence number is
//     recorded, and every one must be observed exactly once.
//   - one shared bit, added to every 8th request of every sender: requests coalesce (several
//     requests, one run); each run records, per sender, the newest posted sequence number it sees.
//     No request may be lost: at the end every sender's last shared request is covered.
//   The request payload is written with plain stores before the request and read with plain loads
//   in the callback: the only happens-before between them is the word's release CAS (DW1) and the
//   runner's acquire (D3/D5/D6), so TSan checks the memory orders too.
// Zero deferred_word interrupts inside isolated sections, under foreign traffic: a third thread
// hammers the target with other users' interrupts of the same signal (send_ipi tagged task_work, and
// plain untagged tgkill), which may land anywhere, inside sections too. An extra tagged interrupt
// hook counts every deferred_word-tagged interrupt that finds its thread isolated, and the target
// also compares the count of deferred_word interrupts it received inside each section. Before tags a
// foreign interrupt cleared INFLIGHT early and a deferred_word signal could land inside a section.
#include <rtdefer/deferred_word.hpp>

#include "ledger.hpp"
#include "test_util.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>

using namespace rtdefer;

namespace {

// ThreadSanitizer defers a signal to the next intercepted call and keeps one pending instance per
// signal number: a second one arriving meanwhile is dropped, unlike the kernel's queue of real-time
// signals. With foreign traffic on the same signal that can drop the deferred word's own signal
// (INFLIGHT then stays set and every enter is refused), so TSan runs this test without it.
constexpr bool foreign_traffic = !rtdefer_test::tsan_build;

constexpr unsigned n_senders = 2;
constexpr unsigned bits_per_sender = 4;
constexpr unsigned shared_bit = n_senders * bits_per_sender; // 8
constexpr std::uint32_t shared_work = 1u << shared_bit;
constexpr std::uint64_t shared_every = 8;

struct alignas(64) slot {
    std::uint64_t seq = 0;        // plain: published by (DW1), read by the callback
    bool requested = false;       // plain: set by the sender, cleared by the callback
    std::atomic<bool> free{true}; // callback -> sender: release/acquire
};

struct stress_state {
    std::array<slot, n_senders * bits_per_sender> slots;
    // Per sender, request k is id k-1: each must be consumed once (a sequence number 0 or past the
    // end is out of range).
    std::array<std::unique_ptr<rtdefer_test::ledger>, n_senders> observed;
    std::array<std::atomic<std::uint64_t>, n_senders> shared_posted{};
    std::array<std::uint64_t, n_senders> shared_covered{}; // target only
    std::uint64_t shared_runs = 0;                          // target only
    std::uint64_t doubles = 0;                              // runs of an owned bit without a request
    std::atomic<thread_ctx*> target{nullptr};
    // Counted by the test's own (tagged) interrupt hook, for the target thread only:
    std::atomic<std::uint64_t> irq_while_isolated{0};     // deferred_word interrupts inside a section
    std::atomic<std::uint64_t> dw_received{0};            // deferred_word interrupts
    std::atomic<std::uint64_t> foreign_received{0};       // any other interrupt (tagged or not)
    std::atomic<std::uint64_t> foreign_while_isolated{0}; // ... that landed inside a section
};

stress_state* S = nullptr;

void owned_cb(thread_ctx&, unsigned work) noexcept RTDEFER_NONBLOCKING {
    const unsigned bit = static_cast<unsigned>(__builtin_ctz(work));
    slot& sl = S->slots[bit];
    if (!sl.requested) {
        ++S->doubles;
        return;
    }
    const unsigned sender = bit / bits_per_sender;
    (void)S->observed[sender]->record(sl.seq - 1);
    sl.requested = false;
    // release: the sender may reuse the slot; pairs with its acquire load.
    sl.free.store(true, std::memory_order_release);
}

void shared_cb(thread_ctx&, unsigned) noexcept RTDEFER_NONBLOCKING {
    ++S->shared_runs;
    for (unsigned s = 0; s < n_senders; ++s) {
        // relaxed: ordered by the word ((DW1) -> the runner's acquire); see the header comment.
        const std::uint64_t p = S->shared_posted[s].load(std::memory_order_relaxed);
        if (p > S->shared_covered[s])
            S->shared_covered[s] = p;
    }
}

// relaxed counters: read by the target itself (same thread) or after joins.
void isolation_probe_hook(thread_ctx* self, interrupt_source src) noexcept RTDEFER_NONBLOCKING {
    if (self == nullptr || S == nullptr || self != S->target.load(std::memory_order_relaxed))
        return;
    const bool isolated = ct_isolated(*self);
    if (src == interrupt_source::deferred_word) {
        S->dw_received.fetch_add(1, std::memory_order_relaxed);
        if (isolated)
            S->irq_while_isolated.fetch_add(1, std::memory_order_relaxed);
    } else {
        S->foreign_received.fetch_add(1, std::memory_order_relaxed);
        if (isolated)
            S->foreign_while_isolated.fetch_add(1, std::memory_order_relaxed);
    }
}

struct xorshift {
    std::uint64_t x;
    std::uint64_t next() noexcept {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    }
};

void spin(std::uint64_t n) noexcept {
    for (std::uint64_t i = 0; i < n; ++i)
        asm volatile("" ::: "memory");
}

} // namespace

TEST_CASE("deferred_word stress: random isolation, 2 senders and foreign interrupts, every request exactly once, "
          "no deferred_word interrupt while isolated") {
    REQUIRE(ct_work_setup() == status::ok);
    for (unsigned b = 0; b < shared_bit; ++b)
        REQUIRE(ct_register_work(b, &owned_cb) == status::ok);
    REQUIRE(ct_register_work(shared_bit, &shared_cb) == status::ok);
    REQUIRE(interrupt_register_hook(&isolation_probe_hook) == status::ok);

    // 2 x 500k: the 10^6 requests at scale 1 (the release CI configuration).
    const std::size_t per_sender = rtdefer_test::scaled(500'000, 2'000);
    auto state = std::make_unique<stress_state>();
    S = state.get();
    for (auto& o : S->observed)
        o = std::make_unique<rtdefer_test::ledger>(per_sender, 1);

    std::atomic<bool> senders_done{false};
    std::atomic<std::uint64_t> foreign_total{~std::uint64_t{0}}; // foreign interrupts sent, once done
    std::atomic<bool> stuck{false};
    std::atomic<std::chrono::steady_clock::time_point> done_at{std::chrono::steady_clock::time_point::max()};
    const auto stuck_after = std::chrono::seconds(60);
    std::atomic<std::uint64_t> bad_status{0};
    std::uint64_t sections = 0, refused = 0, irq_in_sections = 0, final_word = 0;
    std::uint64_t deferred_runs = 0, ipi_runs = 0;

    std::thread target([&] {
        thread_ctx& self = attach_this_thread();
        xorshift rng{0x9e3779b97f4a7c15ull};
        S->target.store(&self, std::memory_order_release);
        auto all_consumed = [&] {
            for (auto& sl : S->slots)
                if (!sl.free.load(std::memory_order_acquire))
                    return false;
            for (unsigned s = 0; s < n_senders; ++s)
                if (S->shared_covered[s] != S->shared_posted[s].load(std::memory_order_relaxed))
                    return false;
            return true;
        };
        for (;;) {
            const std::uint64_t r = rng.next();
            if ((r & 7) != 0) { // mostly isolated, as an isolated loop is
                const status st = ct_isolation_enter(self);
                if (st == status::ok) {
                    const std::uint64_t irq0 = S->dw_received.load(std::memory_order_relaxed);
                    // Mostly short sections (requests arriving now are deferred); one in 16 is
                    // longer than a signal takes to arrive here (~10 µs), so a signal sent before the
                    // enter would land inside it.
                    spin((r & 0xf0) == 0 ? (r >> 47) : (r >> 51));
                    irq_in_sections += S->dw_received.load(std::memory_order_relaxed) - irq0;
                    ct_isolation_exit(self);
                    ++sections;
                } else {
                    ++refused;
                    sched_yield(); // an interrupt is in flight; under TSan it is delivered at a call
                }
            } else {
                spin(r >> 54); // shorter: requests arriving now go by interrupt
                if ((r & 0x1e) == 0)
                    sched_yield();
            }
            if (senders_done.load(std::memory_order_acquire) &&
                ((all_consumed() && detail::ctx_access::ct(self).word.load(std::memory_order_relaxed) == detail::ct_disabled &&
                  // relaxed: our own hook's counter; acquire: pairs with the foreign thread's release.
                  S->foreign_received.load(std::memory_order_relaxed) == foreign_total.load(std::memory_order_acquire)) ||
                 stuck.load(std::memory_order_relaxed) ||
                 std::chrono::steady_clock::now() - done_at.load() > stuck_after)) {
                if (!all_consumed() || S->foreign_received.load(std::memory_order_relaxed) != foreign_total.load())
                    stuck.store(true, std::memory_order_relaxed);
                break;
            }
        }
        final_word = detail::ctx_access::ct(self).word.load(std::memory_order_relaxed);
        deferred_runs = detail::ctx_access::ct(self).deferred_runs.load(std::memory_order_relaxed);
        ipi_runs = detail::ctx_access::ct(self).ipi_runs.load(std::memory_order_relaxed);
    });
    while (S->target.load(std::memory_order_acquire) == nullptr)
        std::this_thread::yield();
    thread_ctx& tgt = *S->target.load(std::memory_order_acquire);

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> senders;
    for (unsigned s = 0; s < n_senders; ++s) {
        senders.emplace_back([&, s] {
            unsigned next = 0;
            xorshift rng{0x2545f4914f6cdd1dull + s};
            for (std::uint64_t k = 1; k <= per_sender; ++k) {
                // Decorrelate requests from the target's phases (the free bit appears during a run).
                // Now and then a real pause: without it a sender re-requests the instant a run
                // frees its bit, and under TSan (which runs handlers only inside intercepted calls)
                // the whole test would ping-pong inside one sched_yield of the target.
                if (const std::uint64_t r = rng.next(); (r & 3) == 0)
                    spin(r >> 53);
                else if ((r & 0x3c) == 0)
                    std::this_thread::sleep_for(std::chrono::microseconds(1));
                // A free owned bit (its previous request consumed).
                unsigned bit;
                auto wait_start = std::chrono::steady_clock::now();
                for (unsigned spins = 0;; ++spins) {
                    bit = s * bits_per_sender + (next++ % bits_per_sender);
                    // acquire: pairs with the callback's release; its plain accesses are done.
                    if (S->slots[bit].free.load(std::memory_order_acquire))
                        break;
                    if (spins % bits_per_sender == bits_per_sender - 1)
                        std::this_thread::yield();
                    // Hang guard, not a latency check: a lost request never frees its bit.
                    if (spins % 65536 == 65535 && std::chrono::steady_clock::now() - wait_start > stuck_after) {
                        stuck.store(true, std::memory_order_relaxed);
                        return;
                    }
                }
                slot& sl = S->slots[bit];
                sl.seq = k;
                sl.requested = true;
                // relaxed: only this sender stores false; the callback's true follows (DW1)->acquire.
                sl.free.store(false, std::memory_order_relaxed);
                std::uint32_t work = 1u << bit;
                if (k % shared_every == 0) {
                    // relaxed: published by the CAS (DW1) below.
                    S->shared_posted[s].store(k, std::memory_order_relaxed);
                    work |= shared_work;
                }
                if (ct_set_work_or_ipi(tgt, work) != status::ok)
                    bad_status.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    // Foreign traffic: another subsystem's tagged interrupts and plain tgkills, paced to at most 4
    // unhandled at a time (real-time signals queue; an unpaced flood would exhaust RLIMIT_SIGPENDING
    // and make the deferred word's own sends fail with no_space).
    std::uint64_t foreign_sent = 0;
    std::atomic<std::uint64_t> foreign_bad{0};
    std::thread foreign([&] {
        xorshift rng{0x51afd7ed558ccd1dull};
        while (foreign_traffic && !senders_done.load(std::memory_order_acquire)) {
            const std::uint64_t r = rng.next();
            // relaxed: pacing only.
            if (foreign_sent - S->foreign_received.load(std::memory_order_relaxed) < 4) {
                const status st = (r & 1) ? send_ipi(tgt, interrupt_source::task_work) : send_ipi(tgt);
                if (st == status::ok)
                    ++foreign_sent;
                else
                    foreign_bad.fetch_add(1, std::memory_order_relaxed);
            }
            if ((r & 6) == 0)
                std::this_thread::yield();
            else
                spin(r >> 54);
        }
        foreign_total.store(foreign_sent, std::memory_order_release); // the target may now finish
    });
    for (auto& t : senders)
        t.join();
    done_at.store(std::chrono::steady_clock::now());
    senders_done.store(true, std::memory_order_release);
    foreign.join(); // before the target can exit: it sends to the target's ctx
    target.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    rtdefer_test::ledger::report requests;
    std::string per_sender_report; // the ids (sequence number - 1) of what went wrong, by sender
    for (unsigned s = 0; s < n_senders; ++s) {
        const rtdefer_test::ledger::report r = S->observed[s]->count();
        per_sender_report += "sender " + std::to_string(s) + ": " + r.str() + "\n";
        requests += r;
    }
    const std::uint64_t lost = requests.lost, doubled = requests.duplicated;
    INFO(per_sender_report);
    std::uint64_t shared_requests = 0;
    for (unsigned s = 0; s < n_senders; ++s)
        shared_requests += per_sender / shared_every;
    std::printf("deferred_word stress: %u senders x %zu requests in %.2f s; %llu sections (%llu enters refused: "
                "interrupt in flight); bits run at exit %llu, by interrupt/drain %llu; shared bit: %llu requests, "
                "%llu runs; lost %llu, doubled %llu, runs without request %llu; deferred_word interrupts inside "
                "sections %llu (hook) / %llu (counted by the target); foreign interrupts %llu sent, %llu handled, "
                "%llu of them inside sections\n",
                n_senders, per_sender, secs, (unsigned long long)sections, (unsigned long long)refused,
                (unsigned long long)deferred_runs, (unsigned long long)ipi_runs,
                (unsigned long long)shared_requests, (unsigned long long)S->shared_runs,
                (unsigned long long)lost, (unsigned long long)doubled, (unsigned long long)S->doubles,
                (unsigned long long)S->irq_while_isolated.load(), (unsigned long long)irq_in_sections,
                (unsigned long long)foreign_sent, (unsigned long long)S->foreign_received.load(),
                (unsigned long long)S->foreign_while_isolated.load());
    INFO("a request was never consumed (hang guard: no progress for 60 s)");
    CHECK_FALSE(stuck.load());
    CHECK(bad_status.load() == 0);
    CHECK(lost == 0);
    CHECK(doubled == 0);
    CHECK(S->doubles == 0);
    CHECK(requests.out_of_range == 0); // a run found a sequence number no request had
    for (unsigned s = 0; s < n_senders; ++s)
        CHECK(S->shared_covered[s] == S->shared_posted[s].load());
    CHECK(S->shared_runs <= shared_requests);
    CHECK(S->irq_while_isolated.load() == 0);
    CHECK(irq_in_sections == 0);
    CHECK(foreign_bad.load() == 0);
    CHECK((foreign_sent > 0 || !foreign_traffic));
    CHECK(S->foreign_received.load() == foreign_sent); // every foreign interrupt handled, none counted twice
    CHECK(final_word == detail::ct_disabled);
    CHECK(sections > 0);
    for (unsigned b = 0; b <= shared_bit; ++b)
        CHECK(ct_unregister_work(b) == status::ok);
    S = nullptr;
}

// Requests racing the target's thread exit: short-lived targets enter and leave sections, then exit
// (inside a section or not) while two senders keep requesting. Every ok request must run exactly
// once (at an exit, by interrupt or drain, or in the exit hook), every exited one never; a sender
// has one request outstanding at a time, so runs are not coalesced and each can be counted. The
// payload is plain data published only by the word ((DW1) -> the runner's acquire, (DW7) in the exit
// hook), so TSan checks the exit path's orders too.
namespace {

constexpr unsigned exit_bit0 = 9; // bits 9 and 10: one per sender

struct exit_slot {
    bool requested = false;          // plain: sender -> callback through the word
    std::uint64_t seq = 0;           // plain: as above
    std::atomic<std::uint64_t> consumed{0}; // callback -> sender (release/acquire)
};

struct exit_state {
    std::array<exit_slot, 2> slots;
    std::atomic<std::uint64_t> runs_without_request{0};
    std::atomic<std::uint64_t> bad_seq{0};
    std::atomic<std::uint64_t> runs_in_exit_hook{0};
};

exit_state* E = nullptr;

void exit_cb(thread_ctx& self, unsigned work) noexcept RTDEFER_NONBLOCKING {
    exit_slot& sl = E->slots[static_cast<unsigned>(__builtin_ctz(work)) - exit_bit0];
    if (!sl.requested) {
        E->runs_without_request.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    sl.requested = false;
    if (self.exiting())
        E->runs_in_exit_hook.fetch_add(1, std::memory_order_relaxed);
    // relaxed: only this callback writes `consumed` (runs of one bit never overlap).
    if (sl.consumed.load(std::memory_order_relaxed) + 1 != sl.seq)
        E->bad_seq.fetch_add(1, std::memory_order_relaxed);
    // release: the slot's plain fields are done; pairs with the sender's acquire.
    sl.consumed.store(sl.seq, std::memory_order_release);
}

} // namespace

TEST_CASE("deferred_word stress: requests racing thread exit run exactly once or return exited") {
    REQUIRE(ct_work_setup() == status::ok);
    for (unsigned b = exit_bit0; b < exit_bit0 + 2; ++b)
        REQUIRE(ct_register_work(b, &exit_cb) == status::ok);
    auto state = std::make_unique<exit_state>();
    E = state.get();

    const std::size_t n_targets = rtdefer_test::scaled(400, 40);
    std::array<std::uint64_t, 2> sent_ok{}, sent_exited{};
    std::uint64_t bad_status = 0, stuck = 0, exits_inside = 0;
    xorshift rng{0x51ed2701a3c4b5d7ull};

    for (std::size_t n = 0; n < n_targets; ++n) {
        std::atomic<thread_ctx*> published{nullptr};
        std::atomic<bool> go{false};
        thread_ref ref;
        const std::uint64_t rounds = rng.next() % 256;
        const bool exit_inside = (rng.next() & 1) != 0;
        exits_inside += exit_inside;
        std::thread target([&, rounds, exit_inside] {
            thread_ctx& self = attach_this_thread();
            ref = thread_ref(self);
            published.store(&self, std::memory_order_release);
            while (!go.load(std::memory_order_acquire))
                std::this_thread::yield(); // requests arriving now go by interrupt
            xorshift r{0x9e3779b97f4a7c15ull ^ rounds};
            for (std::uint64_t i = 0; i < rounds; ++i) {
                if (ct_isolation_enter(self) == status::ok) {
                    spin(r.next() >> 50);
                    ct_isolation_exit(self);
                } else {
                    sched_yield();
                }
                spin(r.next() >> 55);
            }
            if (exit_inside)
                (void)ct_isolation_enter(self); // the thread exits inside its section (if entered)
        });
        while (published.load(std::memory_order_acquire) == nullptr)
            std::this_thread::yield();
        thread_ctx& tgt = *published.load(std::memory_order_acquire);

        std::array<std::thread, 2> senders;
        std::array<std::uint64_t, 2> ok_here{}, exited_here{}, bad_here{}, stuck_here{};
        for (unsigned s = 0; s < 2; ++s) {
            senders[s] = std::thread([&, s] {
                exit_slot& sl = E->slots[s];
                for (;;) {
                    // acquire: pairs with the callback's release; the slot is ours again.
                    const std::uint64_t done = sl.consumed.load(std::memory_order_acquire);
                    sl.requested = true;
                    sl.seq = done + 1;
                    const status st = ct_set_work_or_ipi(tgt, 1u << (exit_bit0 + s));
                    if (st == status::exited) {
                        sl.requested = false; // never published: the CAS failed
                        ++exited_here[s];
                        return;
                    }
                    if (st != status::ok) {
                        ++bad_here[s];
                        return;
                    }
                    ++ok_here[s];
                    // Hang guard, not a latency check: a lost request is never consumed.
                    const auto t0 = std::chrono::steady_clock::now();
                    while (sl.consumed.load(std::memory_order_acquire) != done + 1) {
                        std::this_thread::yield();
                        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
                            ++stuck_here[s];
                            return;
                        }
                    }
                }
            });
        }
        go.store(true, std::memory_order_release);
        for (auto& t : senders)
            t.join();
        target.join();
        for (unsigned s = 0; s < 2; ++s) {
            sent_ok[s] += ok_here[s];
            sent_exited[s] += exited_here[s];
            bad_status += bad_here[s];
            stuck += stuck_here[s];
        }
        CHECK(detail::ctx_access::ct(*ref).word.load(std::memory_order_relaxed) == (detail::ct_disabled | detail::ct_exited));
    }

    std::printf("deferred_word exit stress: %zu targets (%llu exiting inside a section); ok requests %llu + %llu, "
                "exited %llu + %llu; consumed %llu + %llu (%llu by the exit hook); runs without request %llu\n",
                n_targets, (unsigned long long)exits_inside, (unsigned long long)sent_ok[0],
                (unsigned long long)sent_ok[1], (unsigned long long)sent_exited[0], (unsigned long long)sent_exited[1],
                (unsigned long long)E->slots[0].consumed.load(), (unsigned long long)E->slots[1].consumed.load(),
                (unsigned long long)E->runs_in_exit_hook.load(), (unsigned long long)E->runs_without_request.load());
    CHECK(stuck == 0);
    CHECK(bad_status == 0);
    for (unsigned s = 0; s < 2; ++s) {
        CHECK(E->slots[s].consumed.load() == sent_ok[s]); // every ok request ran, once
        CHECK(sent_exited[s] == n_targets);               // each target's end was seen exactly once
    }
    CHECK(E->runs_without_request.load() == 0);
    CHECK(E->bad_seq.load() == 0);
    for (unsigned b = exit_bit0; b < exit_bit0 + 2; ++b)
        CHECK(ct_unregister_work(b) == status::ok);
    E = nullptr;
}
