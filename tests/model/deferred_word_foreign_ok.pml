// pan: -DSAFETY
// run: -m100000
/*
 * deferred_word_foreign_ok.pml: deferred_word_foreign_flawed.pml with tagged interrupts, as the
 * library sends them: the deferred word queues its signal with its tag in si_value
 * (send_ipi(target, interrupt_source::deferred_word)), and its hook clears INFLIGHT only for a signal
 * carrying that tag. A foreign interrupt (task_work, hard irq_work, a plain tgkill: another tag or
 * none) runs the hook too; it may take and run the IPI work (when no run is in progress) but leaves
 * INFLIGHT to the signal still coming. Checked as in the base model, including the quiet guarantee:
 * no deferred_word signal starts inside an isolated section, whatever the foreign interrupts do.
 * The flawed variant's trace (foreign interrupt clears INFLIGHT between the sender's CAS and its
 * send; the target enters; the signal lands inside) is cut at its second step. Full search:
 * 25 million states, 1.8 GB, ~3.5 min on a loaded 2-core machine (the model suite allows 15).
 */
#define FOREIGN 1
#define TAGGED 1
#include "deferred_word_ok.pml"
