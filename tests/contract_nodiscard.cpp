// Compiled (never run) by scripts/check_unused_result: every line marked EXPECT must draw a
// -Wunused-result warning ([[nodiscard]] status), and no other line may. The hot paths whose result
// may be dropped (task_work_run's count, unpark) are called on unmarked lines to prove they don't warn.
// uring_loop's are in contract_nodiscard_uring.cpp (checked only where liburing is found).
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/deferred_word.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/irq_work.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/timer.hpp>

#include <chrono>

using namespace rtdefer;

void discard_everything(thread_ctx& t, callback_head& w, irq_work_domain& d, irq_work& iw, expiry_item& item,
                        timer_service<>& svc, timer& tm, cpu_timer& ct, timer_service<>::callback fn,
                        cpu_timer::callback cfn, irq_work_producer& prod, process_cpu_timer& pt,
                        process_cpu_timer::callback pfn) {
    const auto tp = std::chrono::steady_clock::time_point{};
    task_work_add(t, w); // EXPECT: warning here
    wait_for_work_until(t, tp); // EXPECT: warning here
    task_work_run(t);
    unpark(t);
    park_until(t, tp); // EXPECT: warning here
    park(t); // EXPECT: warning here
    irq_work_queue(d, iw); // EXPECT: warning here
    irq_work_queue_on(d, iw, 0); // EXPECT: warning here
    prod.queue(iw); // EXPECT: warning here
    irq_work_sync_until(iw, tp); // EXPECT: warning here
    ct_set_work(t, 1u); // EXPECT: warning here
    ct_set_work_or_ipi(t, 1u); // EXPECT: warning here
    ct_isolation_enter(t); // EXPECT: warning here
    send_ipi(t); // EXPECT: warning here
    wait_running(item, t); // EXPECT: warning here
    svc.arm(tm, tp, fn); // EXPECT: warning here
    svc.cancel_sync(tm, t); // EXPECT: warning here
    ct.arm(0u, cfn); // EXPECT: warning here
    ct.cancel_sync(t); // EXPECT: warning here
    pt.arm(t, 0u, pfn); // EXPECT: warning here
    pt.cancel_sync(t); // EXPECT: warning here
}

