// pan: -DSAFETY
// run: -m100000
/*
 * deferred_word_foreign_flawed.pml: deferred_word_ok.pml plus ONE foreign interrupt: another user of
 * the same interrupt signal (task_work notify::signal, hard irq_work) interrupts the target once, at
 * any moment. The handler runs every hook and cannot tell whose signal it runs for, so deferred_word's
 * hook treats the foreign signal as its own. spin finds a deferred_word signal starting inside an
 * isolated section (the "zero interrupts while isolated" check), in this order:
 *
 *   sender   CAS: DISABLED -> DISABLED|INFLIGHT|I   (it will signal; preempted before its tgkill)
 *   target   foreign interrupt: the hook takes I, clears INFLIGHT, runs I
 *   target   enter: INFLIGHT clear -> isolated
 *   sender   tgkill: the signal lands inside the section (its hook finds nothing to do)
 *
 * Exactly-once still holds with foreign interrupts: with the same model and CHECK_QUIET 0 (one or two
 * foreign interrupts) spin reports 0 errors. The fix is in the library: interrupts carry their
 * sender's tag (interrupt.hpp, "Tags") and the hook clears INFLIGHT only for its own;
 * deferred_word_foreign_ok.pml verifies that variant. This model keeps the untagged hook (TAGGED 0)
 * as the counterexample.
 */
#define FOREIGN 1
#include "deferred_word_ok.pml"
