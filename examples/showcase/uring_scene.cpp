// Showcase scene: a network loop that waits in io_uring echoes UDP datagrams on loopback while a
// control thread reconfigures it through task_work. The loop owns its configuration (no lock); the
// control thread builds each new configuration on its own time and queues it; the loop applies it
// at the top of its next turn, woken in the ring by the same futex wake that wakes a parked owner
// (no eventfd). Every echoed datagram carries the configuration version it was served with: the
// versions must never go backwards and the last one must be the last sent. Baseline: the same loop
// with no reconfiguration traffic, measured in the same run. Full figures: bench/uring_bench.
#include "scene.hpp"

#include <rtdefer/park.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/uring.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct config {
    std::uint64_t version = 0;
    std::uint8_t tag = 0; // stamped into every echo
};

/// A reconfiguration: built by the control thread, applied by the loop at its safe point.
struct reconfig : rtdefer::callback_head {
    config next;
    config* target = nullptr;
    std::atomic<bool> busy{false};
    static void apply(rtdefer::callback_head* h) noexcept {
        auto* r = static_cast<reconfig*>(h);
        *r->target = r->next;                            // the loop's own data: no lock
        r->busy.store(false, std::memory_order_release); // pairs with the control thread's acquire
    }
};

struct datagram {
    std::uint64_t seq;
    std::uint64_t version;
    std::uint8_t tag;
};

/// Two UDP sockets on 127.0.0.1, connected to each other. Returns false if sockets are refused.
bool udp_pair(int& a, int& b) {
    a = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    b = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (a < 0 || b < 0)
        return false;
    sockaddr_in sa{}, sb{};
    sa.sin_family = sb.sin_family = AF_INET;
    sa.sin_addr.s_addr = sb.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(a, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::bind(b, reinterpret_cast<sockaddr*>(&sb), sizeof sb) != 0 ||
        ::getsockname(a, reinterpret_cast<sockaddr*>(&sa), &len) != 0 ||
        ::getsockname(b, reinterpret_cast<sockaddr*>(&sb), &len) != 0)
        return false;
    return ::connect(a, reinterpret_cast<sockaddr*>(&sb), sizeof sb) == 0 &&
           ::connect(b, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

struct result {
    std::uint64_t echoed = 0, sent_configs = 0, last_version = 0;
    bool order_ok = true, final_ok = true, io_ok = true;
    double p50_us = 0, p99_us = 0;
    std::uint64_t enters = 0;
    const char* backend = "";
};

result run_echo(int datagrams, bool reconfigure) {
    result res;
    int srv = -1, cli = -1;
    if (!udp_pair(srv, cli)) {
        res.io_ok = false;
        return res;
    }
    config cfg; // the loop's configuration: read and written on the loop thread only
    std::atomic<rtdefer::thread_ctx*> loop_ctx{nullptr};
    std::atomic<bool> stop{false};
    std::thread loop_thread([&] {
        rtdefer::thread_ctx& self = rtdefer::attach_this_thread();
        rtdefer::uring_loop loop(self);
        const bool ring = loop.backend() == rtdefer::uring_backend::io_uring;
        res.backend = ring ? "io_uring" : "futex fallback";
        datagram buf{};
        struct op : rtdefer::uring_op {
            op() : uring_op(&done) {}
            int res = 0;
            bool fired = false;
            static void done(uring_op& o, int r, std::uint32_t) noexcept {
                static_cast<op&>(o).res = r;
                static_cast<op&>(o).fired = true;
            }
        } rx, tx;
        const auto recv_prep = [&](io_uring_sqe& s) noexcept { io_uring_prep_recv(&s, srv, &buf, sizeof buf, 0); };
        const auto send_prep = [&](io_uring_sqe& s) noexcept { io_uring_prep_send(&s, srv, &buf, sizeof buf, 0); };
        if (ring && loop.submit(rx, recv_prep) != rtdefer::status::ok)
            res.io_ok = false;
        // release: publishes the attached ctx to the control and client threads.
        loop_ctx.store(&self, std::memory_order_release);
        while (!stop.load(std::memory_order_acquire)) {
            (void)loop.run_once_until(self, steady::now() + (ring ? 20ms : 200us));
            if (!ring) { // the fallback loop has no ring I/O: poll the socket with plain syscalls
                while (::recv(srv, &buf, sizeof buf, MSG_DONTWAIT) == static_cast<ssize_t>(sizeof buf)) {
                    buf.version = cfg.version;
                    buf.tag = cfg.tag;
                    (void)::send(srv, &buf, sizeof buf, 0);
                }
                continue;
            }
            if (rx.fired) {
                rx.fired = false;
                buf.version = cfg.version; // served with this turn's configuration
                buf.tag = cfg.tag;
                if (rx.res != static_cast<int>(sizeof buf) || loop.submit(tx, send_prep) != rtdefer::status::ok)
                    res.io_ok = false;
            }
            if (tx.fired) {
                tx.fired = false;
                if (tx.res != static_cast<int>(sizeof buf) || loop.submit(rx, recv_prep) != rtdefer::status::ok)
                    res.io_ok = false;
            }
        }
        (void)rtdefer::task_work_run(self);
        res.enters = loop.enters();
        // rx is still in flight: the loop's destructor cancels it and runs its callback.
    });
    rtdefer::thread_ctx* target;
    while ((target = loop_ctx.load(std::memory_order_acquire)) == nullptr)
        std::this_thread::yield();

    std::vector<reconfig> pool(8);
    std::atomic<bool> stop_control{false};
    std::uint64_t sent = 0;
    std::thread control;
    if (reconfigure)
        control = std::thread([&] {
            while (!stop_control.load(std::memory_order_acquire)) {
                reconfig& r = pool[sent % pool.size()];
                if (r.busy.load(std::memory_order_acquire)) { // acquire: pairs with apply()
                    std::this_thread::sleep_for(100us);
                    continue;
                }
                r.next = config{sent + 1, static_cast<std::uint8_t>((sent + 1) & 0xff)};
                r.target = &cfg;
                r.busy.store(true, std::memory_order_relaxed); // relaxed: published by the add (A2)
                rtdefer::init_task_work(r, &reconfig::apply);
                if (rtdefer::task_work_add(*target, r, rtdefer::notify::resume) != rtdefer::status::ok)
                    break;
                ++sent;
                std::this_thread::sleep_for(200us);
            }
        });

    std::vector<double> rtt;
    rtt.reserve(static_cast<std::size_t>(datagrams));
    std::uint64_t last_version = 0;
    for (int i = 0; i < datagrams; ++i) {
        datagram d{static_cast<std::uint64_t>(i), 0, 0};
        const auto t0 = steady::now();
        if (::send(cli, &d, sizeof d, 0) != static_cast<ssize_t>(sizeof d) ||
            ::recv(cli, &d, sizeof d, 0) != static_cast<ssize_t>(sizeof d) || d.seq != static_cast<std::uint64_t>(i)) {
            res.io_ok = false;
            break;
        }
        rtt.push_back(std::chrono::duration<double, std::micro>(steady::now() - t0).count());
        res.order_ok = res.order_ok && d.version >= last_version && d.tag == static_cast<std::uint8_t>(d.version & 0xff);
        last_version = d.version;
        ++res.echoed;
    }
    stop_control.store(true, std::memory_order_release);
    if (control.joinable())
        control.join();
    // Every queued reconfiguration is applied: wait until the pool is idle, then ask once more.
    const auto give_up = steady::now() + 5s;
    while (std::any_of(pool.begin(), pool.end(), [](const reconfig& r) { return r.busy.load(std::memory_order_acquire); }) &&
           steady::now() < give_up)
        std::this_thread::sleep_for(1ms);
    datagram d{~0ull, 0, 0};
    if (::send(cli, &d, sizeof d, 0) == static_cast<ssize_t>(sizeof d) && ::recv(cli, &d, sizeof d, 0) == static_cast<ssize_t>(sizeof d))
        res.final_ok = d.version == sent;
    else
        res.io_ok = false;
    stop.store(true, std::memory_order_release);
    (void)rtdefer::unpark(*target);
    loop_thread.join();
    ::close(srv);
    ::close(cli);
    res.sent_configs = sent;
    res.last_version = d.version;
    std::sort(rtt.begin(), rtt.end());
    if (!rtt.empty()) {
        res.p50_us = rtt[rtt.size() / 2];
        res.p99_us = rtt[std::min(rtt.size() - 1, rtt.size() * 99 / 100)];
    }
    return res;
}

int run_uring_scene(const scene_args& args) {
    const int datagrams = args.quick ? 2'000 : 50'000;
    std::printf("== uring: a UDP echo loop waiting in io_uring, reconfigured through task_work ==\n");
    const result base = run_echo(datagrams, false);
    const result live = run_echo(datagrams, true);
    std::printf("  backend: %s; %d datagrams of %zu bytes on 127.0.0.1 per run\n", live.backend, datagrams, sizeof(datagram));
    std::printf("  %-42s | %10s | %10s | %8s | %s\n", "run", "rtt p50", "rtt p99", "echoed", "reconfigurations");
    for (const result* r : {&base, &live})
        std::printf("  %-42s | %7.1f µs | %7.1f µs | %8llu | %llu sent, last applied v%llu\n",
                    r == &base ? "baseline: same loop, no reconfiguration" : "loop + control thread (task_work / 200 µs)",
                    r->p50_us, r->p99_us, static_cast<unsigned long long>(r->echoed),
                    static_cast<unsigned long long>(r->sent_configs), static_cast<unsigned long long>(r->last_version));
    std::printf("\n  The loop never takes a lock for its configuration: each one is applied whole, in order, at the\n"
                "  top of a turn; the control thread's add wakes the loop inside io_uring_enter (in-ring FUTEX_WAIT).\n");
    bool ok = true;
    for (const result* r : {&base, &live})
        if (!r->io_ok || !r->order_ok || !r->final_ok || r->echoed != static_cast<std::uint64_t>(datagrams)) {
            std::printf("FAILED: %s: io %s, version order %s, final version %s (sent %llu, got v%llu)\n",
                        r == &base ? "baseline" : "reconfigured", r->io_ok ? "ok" : "WRONG", r->order_ok ? "ok" : "WRONG",
                        r->final_ok ? "ok" : "WRONG", static_cast<unsigned long long>(r->sent_configs),
                        static_cast<unsigned long long>(r->last_version));
            ok = false;
        }
    return ok ? 0 : 1;
}

} // namespace

RTDEFER_SCENE("uring", 60, run_uring_scene);
