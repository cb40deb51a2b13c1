// pan: -DSAFETY
// run: -m100000
/*
 * deferred_word_exit_ok.pml: deferred_word_ok.pml with the target's thread exit racing the senders.
 * After ROUNDS-1 rounds the target either exits inside its last section or after it; the exit hook
 * (ct_thread_exit) takes S (if isolated) and I with one exchange(DISABLED|EXITED) and runs them.
 * Senders that meet EXITED return `exited` without a request; a signal still coming finds nothing.
 * Checked as in the base model, plus: every accepted request was taken by the end, and the word ends
 * as DISABLED|EXITED. Mutations refuted: the hook taking only S or only I (a request lost), a sender
 * treating DISABLED|EXITED as DISABLED (bits set after the exit).
 */
#define THREAD_EXIT 1
#include "deferred_word_ok.pml"
