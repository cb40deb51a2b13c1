// pan: -DSAFETY
// run: -m100000
/*
 * deferred_word_flawed.pml: the earlier design the RFC's cover letter rejects (PeterZ's variant):
 * the work bits live in a separate word `work`, and only a flag CT_SEQ_WORK in the
 * state word `st` says "there is work". The sender:
 *
 *     seq = atomic_read(&ct->seq);
 *     if (in_user(seq)) {
 *         atomic_or(work, &ct->work);
 *         ret = atomic_try_cmpxchg(&ct->seq, &seq, seq | CT_SEQ_WORK);
 *     }
 *     if (!ret) send the IPI, which runs `work` on the target
 *
 * If the target enters the kernel between the atomic_or and the cmpxchg, the cmpxchg fails and the
 * IPI runs the work, but the bit stays in ct->work ("it can't be sanely cleared in case another CPU
 * set it concurrently"); the next successful sender's flag makes the next kernel entry flush it
 * again: a double execution. spin must find it: the ghost check below fires when a bit is run
 * without an outstanding request.
 *
 * st: bit 0 USER (isolated), bit 1 WORK flag, bits 2.. a sequence count bumped by each transition.
 */

#define USER  1
#define WORKF 2
#define SEQ1  4
#define ROUNDS 2

byte st = 0;            /* starts in the kernel (not isolated) */
byte work = 0;
byte req[2];            /* accepted requests per bit, not yet run */
chan ipi = [2] of { byte };

inline take(bits) {
  if
  :: (bits & 1) -> assert(req[0] > 0); req[0] = 0
  :: else -> skip
  fi;
  if
  :: (bits & 2) -> assert(req[1] > 0); req[1] = 0
  :: else -> skip
  fi
}

proctype sender(byte b) {
  byte seq;
  bool ret = 0;
  seq = st;                                           /* atomic_read */
  if
  :: (seq & USER) ->
     atomic { work = work | b; req[b - 1]++ };       /* atomic_or: the request is made here */
     atomic {                                          /* atomic_try_cmpxchg */
       if
       :: st == seq -> st = seq | WORKF; ret = 1
       :: else -> skip
       fi
     }
  :: else -> req[b - 1]++                             /* not in user: straight to the IPI */
  fi;
  if
  :: !ret -> ipi!b                                    /* the IPI runs `b` */
  :: else -> skip
  fi
}

active proctype handler() {
  byte b;
end:                                                  /* idle waiting for an IPI is a valid end */
  do
  :: ipi?b -> atomic { take(b) }
  od
}

active proctype target() {
  byte old, got;
  byte r = 0;
  do
  :: r < ROUNDS ->
     atomic { st = ((st + SEQ1) | USER) & ~WORKF };   /* kernel -> user: accept work */
     atomic { old = st; st = (st + SEQ1) & ~(USER | WORKF) };   /* user -> kernel */
     if
     :: (old & WORKF) -> atomic { got = work; work = 0; take(got) }   /* flush */
     :: else -> skip
     fi;
     r++
  :: r == ROUNDS -> break
  od
}

init {
  atomic {
    run sender(1);
    run sender(2)
  }
}
