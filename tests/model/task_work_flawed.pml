// pan: -DSAFETY
// run: -m200000
/*
 * The flawed variant of task_work_ok.pml: the owner runs (and so frees) a detached chain at once,
 * without checking whether a canceller is inside it — the kernel's task_work_run without its
 * raw_spin_lock_irq/raw_spin_unlock_irq(&task->pi_lock) after the exchange. Spin must find a run
 * in which the canceller reads an item that has already run (use after free) or an item that is
 * both run and cancelled.
 */
#define FLAWED 1
#include "task_work_ok.pml"
