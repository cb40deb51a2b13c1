// rtdefer/rtdefer.hpp: umbrella header, everything rtdefer provides.
//
//   llist.hpp          intrusive lock-free list (include/linux/llist.h)
//   status.hpp         the result type, with std::error_code interop
//   thread.hpp         thread_ctx, thread_ref, attach/detach
//   park.hpp           park/unpark/park_until: the token parker safe-point loops sleep on
//   rt_thread.hpp      rt_thread: real-time pthreads, their options and sched_report
//   interrupt.hpp      the interrupt signal (IPI) and its hooks
//   task_work.hpp      per-thread callbacks run at the owner's safe point (kernel/task_work.c)
//   expiry_lock.hpp    block on the expirer's PI lock instead of spinning (hrtimer/posix-cpu-timers)
//   timer.hpp          a timer service with blocking cancel_sync built on the expiry lock
//   cpu_timer.hpp      per-thread CPU-time timers and per-cycle budgets (posix-cpu-timers)
//   process_cpu_timer.hpp  process-wide CPU-time timers expired by a designated thread
//   irq_work.hpp       hard and lazy work with per-CPU SCHED_FIFO-low workers (kernel/irq_work.c)
//   deferred_word.hpp  per-thread work word so isolated threads are never interrupted
//
// Not included: uring.hpp (the io_uring loop) needs liburing; include it yourself and link the
// rtdefer-uring dependency. This header and everything it includes stay liburing-free.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/cpu_timer.hpp>
#include <rtdefer/deferred_word.hpp>
#include <rtdefer/expiry_lock.hpp>
#include <rtdefer/interrupt.hpp>
#include <rtdefer/irq_work.hpp>
#include <rtdefer/llist.hpp>
#include <rtdefer/park.hpp>
#include <rtdefer/process_cpu_timer.hpp>
#include <rtdefer/rt_thread.hpp>
#include <rtdefer/status.hpp>
#include <rtdefer/task_work.hpp>
#include <rtdefer/thread.hpp>
#include <rtdefer/timer.hpp>
