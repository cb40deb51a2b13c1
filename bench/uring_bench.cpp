// uring_bench: the io_uring safe-point loop (rtdefer/uring.hpp) beside its baselines, every figure
// next to one measured in the same run.
//
//   1. add -> run latency of a task_work item (notify::resume) to an owner waiting in
//      uring_loop::run_once on io_uring (in-ring FUTEX_WAIT on the park word), beside the same
//      owner on the futex backend (wait_for_work_until) and the plain futex wake-to-run. Goal <= 1.1x.
//   2. A loop serving real I/O: 64-byte ping-pong over two pipes (the client writes, the loop reads
//      and writes the message back), for a fixed time: round trips/s and the round-trip
//      distribution (the loop's jitter), while a producer adds 10^5 task_work items/s (batches of
//      100 every millisecond, one wake per batch for both loops); beside the same loop with no task_work traffic, and beside the loop
//      built the way peers build it (epoll + an eventfd written only when the loop is marked
//      asleep), with and without traffic. Goals: <= 5 % throughput lost to the traffic, no
//      syscall per item (loop enters and futex wakes per item are printed).
//
//   uring_bench [--quick] [--json FILE] [--no-rt] [--repeat N]
//
// Exit status 1 if an item or message was lost or duplicated (the bench-smoke check).
#include "harness/args.hpp"
#include "harness/baseline.hpp"
#include "harness/handoff.hpp"
#include "harness/report.hpp"

#include <rtdefer/park.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/uring.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace {

using namespace rtdefer_bench;
using steady = std::chrono::steady_clock;

// --- 1. add -> run ---------------------------------------------------------------------------------

/// add -> run on the harness's hand-off rig, the owner waiting in uring_loop::run_once_until on
/// io_uring (ring) or on the futex backend.
latency_result measure_add_to_run(const baseline_config& c, std::size_t samples, bool ring, report& rep) {
    const std::string name = ring ? "add->run, owner in io_uring" : "add->run, owner on the futex";
    const char* what = "from just before task_work_add(notify::resume) (CPU a) to the callback running in the "
                       "owner's uring_loop::run_once (CPU b)";
    if (!c.two_cpus())
        return latency_result::unavailable(name, what, "needs two usable CPUs");
    const handoff_result r = measure_task_work_handoff(handoff_for(c, samples), [&](handoff_owner& o) {
        rtdefer::uring_loop loop(o.self(), rtdefer::uring_options{.force_futex = !ring});
        if (loop.backend() != (ring ? rtdefer::uring_backend::io_uring : rtdefer::uring_backend::futex)) {
            o.refuse("io_uring unavailable here (the loop fell back)");
            return;
        }
        while (o.next())
            (void)loop.run_once_until(o.self(), steady::now() + std::chrono::seconds(2));
    });
    if (!r.refused.empty())
        return latency_result::unavailable(name, what, r.refused);
    rep.check(r.exactly_once(), name + ": every add ran exactly once within 2 s");
    char b[160];
    std::snprintf(b, sizeof b, "CPU %d -> CPU %d; %llu rounds skipped (owner not yet asleep)", c.cpu_a, c.cpu_b,
                  static_cast<unsigned long long>(r.not_woken));
    return latency_result::from(name, what, r.handed, r.producer, b);
}

// --- 2. a loop serving I/O under task_work traffic -----------------------------------------------------

constexpr std::size_t msg_size = 64;

struct counted_item : rtdefer::callback_head {
    std::atomic<bool> busy{false};
    std::atomic<std::uint64_t>* ran = nullptr;
    static void run(rtdefer::callback_head* h) noexcept {
        auto* it = static_cast<counted_item*>(h);
        it->ran->fetch_add(1, std::memory_order_relaxed); // relaxed: a counter read after the joins
        it->busy.store(false, std::memory_order_release); // pairs with the producer's acquire
    }
};

enum class loop_kind { uring, epoll };

struct echo_figure {
    double round_trips_per_s = 0;
    latency_result rtt;
    std::uint64_t items = 0, items_ran = 0, loop_syscalls = 0, futex_wakes = 0;
    bool ok = true;
};

/// The peer loop: epoll on the request pipe and an eventfd; task_work items are queued with
/// notify::none and the producer writes the eventfd only when the loop said it is going to sleep.
struct epoll_loop {
    int ep = -1, efd = -1;
    std::atomic<bool> asleep{false};
    std::uint64_t syscalls = 0;
    explicit epoll_loop(int rfd) {
        ep = ::epoll_create1(EPOLL_CLOEXEC);
        efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = rfd;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev);
        ev.data.fd = efd;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    }
    ~epoll_loop() {
        ::close(ep);
        ::close(efd);
    }
    void wake() noexcept {
        // seq_cst: Dekker with the loop's store to asleep then its task_work_pending check.
        if (asleep.load(std::memory_order_seq_cst) && asleep.exchange(false, std::memory_order_seq_cst)) {
            const std::uint64_t one = 1;
            (void)!::write(efd, &one, sizeof one);
        }
    }
};

echo_figure measure_echo(const baseline_config& c, double seconds, loop_kind kind, bool traffic, report& rep) {
    echo_figure f;
    const std::string name = std::string(kind == loop_kind::uring ? "io_uring loop" : "epoll+eventfd loop") +
                             (traffic ? ", 10^5 task_work/s" : ", no task_work");
    int req[2], rsp[2];
    if (::pipe2(req, O_CLOEXEC) != 0 || ::pipe2(rsp, O_CLOEXEC) != 0) {
        f.ok = false;
        return f;
    }
    published_ctx target;
    std::atomic<bool> stop{false}, loop_ready{false};
    std::atomic<epoll_loop*> peer{nullptr};
    std::atomic<std::uint64_t> ran{0};
    std::uint64_t served = 0, loop_syscalls = 0;
    bool loop_ok = true;
    bench_thread loop_thread({.fifo = true, .priority = c.priority, .cpu = c.cpu_b}, [&] {
        rtdefer::thread_ctx& self = target.attach_and_publish();
        char buf[msg_size];
        if (kind == loop_kind::uring) {
            rtdefer::uring_loop loop(self);
            if (loop.backend() != rtdefer::uring_backend::io_uring) {
                loop_ok = false;
                loop_ready.store(true, std::memory_order_release);
                return;
            }
            struct echo_op : rtdefer::uring_op {
                echo_op() : uring_op(&done) {}
                int res = 0;
                bool fired = false;
                static void done(uring_op& op, int res, std::uint32_t) noexcept {
                    auto& e = static_cast<echo_op&>(op);
                    e.res = res;
                    e.fired = true;
                }
            } rd, wr;
            const auto read_prep = [&](io_uring_sqe& sqe) noexcept { io_uring_prep_read(&sqe, req[0], buf, msg_size, 0); };
            const auto write_prep = [&](io_uring_sqe& sqe) noexcept { io_uring_prep_write(&sqe, rsp[1], buf, msg_size, 0); };
            loop_ok = loop.submit(rd, read_prep) == rtdefer::status::ok;
            loop_ready.store(true, std::memory_order_release);
            while (loop_ok && !stop.load(std::memory_order_acquire)) {
                (void)loop.run_once_until(self, steady::now() + std::chrono::milliseconds(50));
                if (rd.fired) {
                    rd.fired = false;
                    loop_ok = rd.res == static_cast<int>(msg_size) && loop.submit(wr, write_prep) == rtdefer::status::ok;
                }
                if (wr.fired) {
                    wr.fired = false;
                    ++served;
                    loop_ok = wr.res == static_cast<int>(msg_size) && loop.submit(rd, read_prep) == rtdefer::status::ok;
                }
            }
            (void)loop.cancel(rd);
            loop_syscalls = loop.enters();
        } else {
            epoll_loop el(req[0]);
            peer.store(&el, std::memory_order_release);
            loop_ready.store(true, std::memory_order_release);
            while (!stop.load(std::memory_order_acquire)) {
                (void)rtdefer::task_work_run(self);
                el.asleep.store(true, std::memory_order_seq_cst); // seq_cst: see epoll_loop::wake
                epoll_event evs[2];
                int n = 0;
                if (!rtdefer::task_work_pending(self)) {
                    n = ::epoll_wait(el.ep, evs, 2, 50);
                    ++el.syscalls;
                }
                el.asleep.store(false, std::memory_order_relaxed); // relaxed: only the loop sets it true
                for (int i = 0; i < n; ++i) {
                    if (evs[i].data.fd == el.efd) {
                        std::uint64_t v;
                        (void)!::read(el.efd, &v, sizeof v);
                        ++el.syscalls;
                        continue;
                    }
                    const ssize_t r = ::read(req[0], buf, msg_size);
                    const ssize_t w = r == static_cast<ssize_t>(msg_size) ? ::write(rsp[1], buf, msg_size) : -1;
                    el.syscalls += 2;
                    loop_ok = loop_ok && w == static_cast<ssize_t>(msg_size);
                    ++served;
                }
            }
            (void)rtdefer::task_work_run(self);
            peer.store(nullptr, std::memory_order_release);
            loop_syscalls = el.syscalls;
        }
    });
    while (!loop_ready.load(std::memory_order_acquire))
        std::this_thread::yield();
    rtdefer::thread_ctx& t = target.wait();

    constexpr std::size_t pool = 256;
    std::unique_ptr<counted_item[]> items(new counted_item[pool]);
    for (std::size_t i = 0; i < pool; ++i) {
        rtdefer::init_task_work(items[i], &counted_item::run);
        items[i].ran = &ran;
    }
    std::uint64_t added = 0;
    std::atomic<bool> stop_producer{false};
    std::thread producer;
    if (traffic)
        producer = std::thread([&] {
            // One wake per batch for both loops, as the peers do with their eventfd: the batch's
            // items are queued with notify::none, the last with notify::resume (io_uring loop) or
            // followed by the eventfd write when the loop is asleep (epoll loop).
            auto next = steady::now();
            std::size_t slot = 0;
            while (!stop_producer.load(std::memory_order_acquire)) {
                next += std::chrono::milliseconds(1);
                std::this_thread::sleep_until(next);
                for (int k = 0; k < 100; ++k) {
                    counted_item& it = items[slot++ % pool];
                    if (it.busy.load(std::memory_order_acquire))
                        continue; // the loop is behind; this slot's item is still queued
                    it.busy.store(true, std::memory_order_relaxed); // relaxed: published by the add (A2)
                    const bool last = k == 99 && kind == loop_kind::uring;
                    if (rtdefer::task_work_add(t, it, last ? rtdefer::notify::resume : rtdefer::notify::none) ==
                        rtdefer::status::ok)
                        ++added;
                }
                if (kind == loop_kind::epoll)
                    if (epoll_loop* el = peer.load(std::memory_order_acquire))
                        el->wake();
            }
        });

    // relaxed: statistics of the loop's park word.
    const std::uint64_t wakes0 = rtdefer::park_futex_wakes(t);
    auto h = std::make_shared<histogram>();
    std::uint64_t trips = 0;
    bool client_ok = loop_ok;
    const double dt = seconds;
    rt_outcome o = run_measured({.fifo = true, .priority = c.priority, .cpu = c.cpu_a}, [&] {
        char msg[msg_size] = {};
        const std::uint64_t start = bench_clock::now();
        const std::uint64_t end = start + rtdefer_bench::clock().ns_to_ticks(dt * 1e9);
        for (std::uint64_t now = start; client_ok && now < end;) {
            std::memcpy(msg, &trips, sizeof trips);
            const std::uint64_t t0 = bench_clock::now();
            if (::write(req[1], msg, msg_size) != static_cast<ssize_t>(msg_size) ||
                ::read(rsp[0], msg, msg_size) != static_cast<ssize_t>(msg_size)) {
                client_ok = false;
                break;
            }
            now = bench_clock::now_end();
            std::uint64_t echoed;
            std::memcpy(&echoed, msg, sizeof echoed);
            client_ok = echoed == trips;
            h->record(rtdefer_bench::clock().delta_ns(t0, now));
            ++trips;
        }
    });
    const std::uint64_t wakes1 = rtdefer::park_futex_wakes(t);
    stop_producer.store(true, std::memory_order_release);
    if (producer.joinable())
        producer.join();
    stop.store(true, std::memory_order_release);
    (void)rtdefer::unpark(t);
    if (kind == loop_kind::epoll) {
        const std::uint64_t one = 1;
        (void)!::write(req[1], &one, 0); // no-op; the loop's epoll_wait times out within 50 ms
    }
    loop_thread.join();
    for (int fd : {req[0], req[1], rsp[0], rsp[1]})
        ::close(fd);
    f.ok = client_ok && loop_ok && served == trips && ran.load() == added;
    rep.check(f.ok, name + ": every message echoed once, every task_work item run once");
    f.round_trips_per_s = static_cast<double>(trips) / dt;
    f.items = added;
    f.items_ran = ran.load();
    f.loop_syscalls = loop_syscalls;
    f.futex_wakes = wakes1 - wakes0;
    f.rtt = latency_result::from("round trip: " + name, "64-byte write to the loop's pipe -> its echo read back", h, o,
                                 std::to_string(added) + " task_work items");
    return f;
}

} // namespace

int main(int argc, char** argv) {
    options opts = parse_args(argc, argv, "uring_bench");
    report rep(opts);
    rep.print_header();
    baseline_config bc = baseline_defaults(opts);

    std::printf("\nmachine limits (this run):\n");
    auto fw = measure_futex_wake(bc);
    rep.add(fw.first);

    std::printf("\nadd->run latency (owner asleep):\n");
    const std::size_t samples = opts.sample_count(5000, 300);
    latency_result ring = measure_add_to_run(bc, samples, true, rep);
    rep.add(ring);
    latency_result futex = measure_add_to_run(bc, samples, false, rep);
    rep.add(futex);

    std::printf("\nI/O loop: 64-byte ping-pong over pipes, with and without 10^5 task_work items/s:\n");
    const double secs = opts.pick(2.0, 0.2);
    struct run {
        loop_kind kind;
        bool traffic;
        echo_figure f;
    };
    std::vector<run> runs{{loop_kind::uring, false, {}}, {loop_kind::uring, true, {}}, {loop_kind::epoll, false, {}},
                          {loop_kind::epoll, true, {}}};
    for (auto& r : runs) {
        r.f = measure_echo(bc, secs, r.kind, r.traffic, rep);
        rep.add(r.f.rtt);
        const double trips = r.f.round_trips_per_s * secs;
        std::printf("  %-40s %12s  loop syscalls/trip %.2f, per item %.4f; futex wakes/item %.4f\n", r.f.rtt.name.c_str(),
                    fmt_rate(r.f.round_trips_per_s, " trips/s").c_str(), trips > 0 ? double(r.f.loop_syscalls) / trips : 0,
                    r.f.items ? double(r.f.loop_syscalls) / double(r.f.items) : 0,
                    r.f.items ? double(r.f.futex_wakes) / double(r.f.items) : 0);
        rep.add_throughput(r.f.rtt.name, r.f.round_trips_per_s, "round trips/s");
    }

    if (ring.valid && futex.valid)
        rep.compare(ring.name, "p50", ring.s.p50, unit::ns, futex.name, "p50", futex.s.p50);
    if (ring.valid && fw.first.valid)
        rep.compare(ring.name, "p50", ring.s.p50, unit::ns, "futex wake-to-run", "p50", fw.first.s.p50);
    const auto& u0 = runs[0].f;
    const auto& u1 = runs[1].f;
    const auto& e0 = runs[2].f;
    const auto& e1 = runs[3].f;
    rep.compare("io_uring loop with traffic", "trips/s", u1.round_trips_per_s, unit::per_second,
                "io_uring loop, no traffic", "trips/s", u0.round_trips_per_s);
    rep.compare("io_uring loop with traffic", "trips/s", u1.round_trips_per_s, unit::per_second,
                "epoll+eventfd loop with traffic", "trips/s", e1.round_trips_per_s);
    rep.compare("epoll+eventfd loop with traffic", "trips/s", e1.round_trips_per_s, unit::per_second,
                "epoll+eventfd loop, no traffic", "trips/s", e0.round_trips_per_s);
    if (u1.rtt.valid && u0.rtt.valid)
        rep.compare("io_uring loop with traffic", "rtt p99", u1.rtt.s.p99, unit::ns, "io_uring loop, no traffic",
                    "rtt p99", u0.rtt.s.p99);
    if (u1.rtt.valid && e1.rtt.valid)
        rep.compare("io_uring loop with traffic", "rtt p99", u1.rtt.s.p99, unit::ns, "epoll+eventfd with traffic",
                    "rtt p99", e1.rtt.s.p99);
    rep.print_table("side by side (same run; ratio = first / baseline):");

    std::printf("\ntargets (this run's figures):\n");
    if (ring.valid && futex.valid) {
        const double r = ring.s.p50 / futex.s.p50;
        std::printf("  add->run in io_uring <= 1.1x on the futex (p50): %.2fx  %s\n", r, r <= 1.1 ? "met" : "NOT met");
    }
    if (u0.round_trips_per_s > 0) {
        const double loss = 1.0 - u1.round_trips_per_s / u0.round_trips_per_s;
        std::printf("  I/O throughput lost to 10^5 task_work/s <= 5 %%: %.1f %%  %s\n", loss * 100, loss <= 0.05 ? "met" : "NOT met");
    }
    if (u1.items > 0) {
        const double extra = (double(u1.loop_syscalls) - double(u0.loop_syscalls) * u1.round_trips_per_s /
                                                             std::max(u0.round_trips_per_s, 1.0)) / double(u1.items);
        std::printf("  no syscall per item: loop enters per item beyond the I/O's %.4f, futex wakes per item %.4f  %s\n",
                    extra, double(u1.futex_wakes) / double(u1.items), extra < 0.5 && u1.futex_wakes < u1.items ? "met" : "NOT met");
    }
    return rep.finish();
}
