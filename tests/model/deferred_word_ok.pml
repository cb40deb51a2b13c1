// pan: -DSAFETY
// run: -m100000
/*
 * deferred_word_ok.pml: the protocol of include/rtdefer/deferred_word.hpp, step for step.
 *
 * One word W per thread: [DIS 32][INF 16][I: 8 4][S: 2 1]  (the header's bits 31/29/12..23/0..11,
 * with two work bits). Processes:
 *   sender(b)  ct_set_work_or_ipi(target, b): the "bet" load, then a CAS loop on the whole word;
 *              defers into S while !DIS, else puts b into I and, if it moved INF from clear to set,
 *              sends the signal (tgkill), which may fail once (then it withdraws INF).
 *   target     ROUNDS times: ct_isolation_enter (drains I, then busy if INF; else CAS DIS -> 0),
 *              then, if entered, ct_isolation_exit (exchange(DIS), run S). A last round waits until
 *              all senders are done and every signal was handled, then checks that nothing is left.
 *   handler    the interrupt hook, run on the target's thread: while it runs the target does not
 *              move (every target step is guarded by !in_handler); senders do. At its end
 *              (sigreturn) a signal that is still pending is delivered before the target moves.
 *   foreign    with FOREIGN > 0 only (deferred_word_foreign_*.pml): another user of the same
 *              signal; its interrupts run the hook too. With TAGGED (deferred_word_foreign_ok.pml)
 *              the hook knows them by their tag: it may take I but leaves INF to our signal.
 *   exit       with THREAD_EXIT only (deferred_word_exit_ok.pml): the target's exit hook races the
 *              senders, inside or outside its last section.
 *   run_local  the owner's run: running=1, run, drain I until empty, running=0, drain once more.
 *
 * Checked (assertions, ghost counters):
 *   - no run without a matching request, none twice: each bit an RMW takes from S or I must have an
 *     accepted request not yet taken (req[b] > 0); coalesced requests are all covered by that take;
 *   - no request lost: at the end req[] == 0 and W == DIS (and no invalid end state: nothing stuck);
 *   - no interrupt inside an isolated section: the handler never starts while `isolated`;
 *   - callbacks never nest: the handler runs work only when the owner is not inside run_local
 *     (asserted);
 *   - a run never returns leaving IPI work behind without a signal coming for it.
 */

#ifndef FOREIGN
#define FOREIGN 0       /* foreign interrupts (other users of the signal); see *_foreign_flawed.pml */
#endif
#ifndef THREAD_EXIT
#define THREAD_EXIT 0   /* the target exits (exit hook) racing the senders; see *_exit_ok.pml */
#endif
#ifndef TAGGED
#define TAGGED 0        /* the hook tells our signals from foreign ones (si_value tag) */
#endif
#ifndef CHECK_QUIET
#define CHECK_QUIET 1   /* assert that no deferred_word signal starts inside a section */
#endif

#define EXD   64        /* EXITED (bit 30) */
#define DIS   32
#define INF   16
#define IMASK 12
#define SMASK 3
#define NS    3
#define ROUNDS 3
#define MAXFAIL 1

byte W = DIS;
bool running = 0;
bool in_handler = 0;
bool isolated = 0;
bool final = 0;
byte sig = 0;           /* our signals sent and not yet handled (real-time signals queue) */
byte fsig = 0;          /* foreign interrupt signals (same signo) sent and not yet handled */
byte nfail = 0;
byte senders_done = 0;
byte req[2];            /* accepted requests per bit, not yet taken by an RMW */

/* Ghost: `bits` (S form) were just taken by one RMW and will run once each. */
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

/* ct_take_ipi: fetch_and(~IMASK); G guards target steps (the handler passes true). */
inline drain(G, got) {
  atomic { G -> got = (W & IMASK) / 4; W = W & ~IMASK; take(got) }
}

/* ct_run_local: the work itself was taken (and counted) by the caller's RMW. */
inline run_local(G, got) {
  atomic { G -> running = 1 };
  do
  :: drain(G, got);
     if
     :: got != 0 -> skip
     :: else ->
        atomic { G -> running = 0 };
        drain(G, got);
        if
        :: got == 0 -> break
        :: else -> atomic { G -> running = 1 }
        fi
     fi
  od;
  /* A run returns with no IPI work left behind unless a signal is coming for it (or a tgkill
     failed, whose leftovers the next enter drains). */
  atomic { G -> assert((W & IMASK) == 0 || (W & INF) != 0 || nfail > 0) }
}

proctype sender(byte b) {
  byte seen, expected, desired;
  bool done = 0, sendsig = 0;
  seen = W;                                   /* (DW2) relaxed hint */
  d_step { expected = ((seen & DIS) -> 0 : seen); seen = 0 }    /* bet on the isolated state */
  do
  :: atomic {                                 /* (DW1) CAS on the whole word */
       if
       :: (expected & DIS) == 0 -> desired = expected | b
       :: (expected & EXD) != 0 -> done = 1                     /* returns exited: no request */
       :: (expected & (DIS | EXD)) == DIS -> desired = expected | (b * 4) | INF
       fi;
       if
       :: done -> skip
       :: !done && W == expected ->
          W = desired; done = 1; desired = 0;
          sendsig = ((expected & DIS) != 0 && (expected & INF) == 0);
          req[b - 1]++
       :: !done && W != expected -> expected = W
       fi
     };
     if
     :: done -> break
     :: else -> skip
     fi
  od;
  if
  :: sendsig ->
     if
     :: sig++                                                   /* tgkill ok */
     :: atomic { nfail < MAXFAIL -> nfail++; W = W & ~INF }     /* tgkill failed: withdraw INF */
     fi
  :: else -> skip
  fi;
  d_step { seen = 0; expected = 0; desired = 0; sendsig = 0; done = 0; senders_done++ }
}

active proctype handler() {
  byte cur, got;
  bool ours;            /* the signal being handled is deferred_word's (what its tag says) */
  do
  :: atomic { sig > 0 -> sig--; in_handler = 1; ours = 1; assert(!CHECK_QUIET || !isolated) };
     goto hook
  :: atomic { fsig > 0 -> fsig--; in_handler = 1; ours = 0 };  /* a foreign interrupt runs every hook too */
hook:
     /* cheap check, then acknowledge-only or take: running cannot change while the handler runs
        (the owner is interrupted), so the check and the RMW may be one step here. Untagged, every
        signal is taken for ours; tagged, a foreign one may take I but never touches INF. */
     atomic {
       if
       :: TAGGED && !ours ->
          if
          :: (W & IMASK) != 0 && !running ->
             got = (W & IMASK) / 4; W = W & ~IMASK; take(got)             /* (DW5), INF kept */
          :: else -> got = 0
          fi
       :: else ->
          if
          :: (W & (INF | IMASK)) == 0 -> got = 0
          :: (W & (INF | IMASK)) != 0 && running -> W = W & ~INF; got = 0
          :: (W & (INF | IMASK)) != 0 && !running ->
             got = (W & IMASK) / 4; W = W & ~(INF | IMASK); take(got)    /* (DW5) */
          fi
       fi
     };
     if
     :: got != 0 -> assert(!running); run_local(true, got)    /* callbacks never nest */
     :: else -> skip
     fi;
     /* sigreturn unblocks the signal: one queued meanwhile (or still pending) is delivered before
        the interrupted code resumes, so the target cannot move in between. */
     atomic {
       got = 0;
       if
       :: sig > 0 -> sig--; assert(!CHECK_QUIET || !isolated); ours = 1; cur = 1
       :: fsig > 0 -> fsig--; ours = 0; cur = 1
       :: else -> in_handler = 0; cur = 0
       fi
     };
     if
     :: cur -> cur = 0; goto hook
     :: else -> skip
     fi
  :: atomic { final && sig == 0 && fsig == 0 } -> break
  od
}

#if FOREIGN
/* Another user of the interrupt signal (task_work notify::signal, hard irq_work) interrupting the
   target FOREIGN times at any moment; the handler cannot tell its signal from ours. */
active proctype foreign() {
  byte n = 0;
  do
  :: atomic { !final && n < FOREIGN -> n++; fsig++ }
  :: n == FOREIGN || final -> break
  od
}
#endif

active proctype target() {
  byte cur, got;
  byte r = 0;
  bool entered = 0;
  do
  :: r <= ROUNDS ->
     if
     :: r == ROUNDS && THREAD_EXIT -> goto texit
     :: r == ROUNDS && !THREAD_EXIT ->
        atomic { !in_handler && senders_done == NS && sig == 0 && fsig == 0 -> skip }
     :: else -> skip
     fi;
     /* ct_isolation_enter */
     do
     :: atomic { !in_handler -> cur = W };
        if
        :: (cur & (INF | IMASK)) != 0 ->       /* run I first, signal coming or not; busy if INF */
           drain(!in_handler, got);
           if
           :: got != 0 -> run_local(!in_handler, got)
           :: else -> skip
           fi;
           atomic { !in_handler -> cur = W };
           if
           :: (cur & INF) != 0 -> break                           /* busy */
           :: else -> skip
           fi
        :: (cur & (INF | IMASK)) == 0 ->
           atomic { !in_handler ->                                 /* (DW4) CAS DIS -> 0 */
             if
             :: W == cur -> W = 0; isolated = 1; entered = 1
             :: else -> skip
             fi
           };
           if
           :: entered -> break
           :: else -> skip
           fi
        fi
     od;
     if
     :: entered && THREAD_EXIT && r == ROUNDS - 1 -> goto texit  /* thread exit inside the section */
     :: entered ->
        /* ct_isolation_exit: (DW3) exchange(DIS) */
        atomic { !in_handler -> got = W & SMASK; assert((W & ~SMASK) == 0); W = DIS; isolated = 0; take(got) };
        if
        :: got != 0 -> run_local(!in_handler, got)
        :: else -> skip
        fi
     :: else -> skip
     fi;
     atomic { entered = 0; cur = 0; got = 0; r++ }
  :: r > ROUNDS -> break
  od;
  atomic {
    !in_handler ->
    assert(W == DIS);
    assert(req[0] == 0 && req[1] == 0);
    final = 1
  };
  goto tend;
texit:
  /* ct_thread_exit: (DW7) exchange(DIS|EXITED), run what it took (S if isolated, and I). Senders
     race it; a signal still coming finds nothing (or the thread gone). */
  atomic { !in_handler ->
    got = ((W & DIS) -> 0 : (W & SMASK)) | ((W & IMASK) / 4);
    W = DIS | EXD; isolated = 0; take(got) };
  if
  :: got != 0 -> run_local(!in_handler, got)
  :: else -> skip
  fi;
  atomic {
    !in_handler && senders_done == NS && sig == 0 && fsig == 0 ->
    assert(W == (DIS | EXD));
    assert(req[0] == 0 && req[1] == 0);
    final = 1
  };
tend:
  skip
}

init {
  atomic {
    run sender(1);
    run sender(2);
    run sender(1)
  }
}
