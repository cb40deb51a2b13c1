// pan: -DSAFETY
// run: -m200000
/*
 * task_work: run vs cancel vs exit (include/rtdefer/task_work.hpp, "Run vs cancel").
 *
 * Two producers push items 1,2 and 3 onto the owner's LIFO list (one CAS each; EXITED refuses).
 * A canceller (serialised by cancel_lock, which the exit path also takes) walks the list and
 * unlinks items 2 and then 1 with cmpxchg(pprev, work, work->next), announcing itself with
 * cancel_seq odd/even. The owner runs two task_work_run passes, then its exit: drain, install
 * EXITED only on an empty list.
 *
 * Running an item frees it (the callback may free its own item), so:
 *   - the canceller must never read an item the owner has run ("use after free");
 *   - every item whose add succeeded runs or is cancelled, exactly once; refused items never run.
 *
 * The owner never waits in a run pass: after detaching the list (exchange) it reads cancel_seq;
 * odd means a canceller may be inside the chain, so the chain is parked in `deferred` and runs on a
 * later pass once cancel_seq has moved on (or at exit, under the lock).
 *
 * task_work_flawed.pml defines FLAWED: the runner runs the detached chain at once (the kernel's
 * run without its pi_lock lock/unlock), and spin finds the use after free / double outcome.
 * Promela interleaves statements sequentially consistently: it models the seq_cst operations
 * (R2)(R3)(R4)(R5)(C1)(C2)(C4)(C5) of the C++ code.
 */
#define NITEMS 3
#define NIL 0
#define EXITED 9

byte works = NIL;            /* list head: NIL, an item, or EXITED */
byte next[NITEMS + 1];       /* next[i]: link of item i */
byte cancel_seq = 0;         /* odd while the canceller walks */
byte deferred = NIL;         /* chain held back by the owner */
byte deferred_seq = 0;
bit lock = 0;                /* cancel_lock */

byte added[NITEMS + 1];      /* 0 not yet, 1 ok, 2 refused (exited) */
byte ran[NITEMS + 1];
byte cancelled[NITEMS + 1];
bit freed[NITEMS + 1];       /* the item's callback ran: its memory may be gone */

/* add: head = works; next[i] = head; CAS(works, head, i) — retry on failure, refuse on EXITED */
inline add(i, h) {
    do
    :: h = works;
       if
       :: h == EXITED -> added[i] = 2; break
       :: else ->
          next[i] = h;
          atomic {
              if
              :: works == h -> works = i; added[i] = 1
              :: else -> skip
              fi
          }
          if
          :: added[i] == 1 -> break
          :: else -> skip
          fi
       fi
    od
}

/* run a detached chain (private to the owner now): read next, run (= free) the item */
inline run_chain(c, it, nx) {
    it = c;
    do
    :: it == NIL -> break
    :: else ->
       nx = next[it];
       assert(cancelled[it] == 0);
       ran[it]++;
       freed[it] = 1;
       it = nx
    od
}

/* one task_work_run pass (owner locals: w, s, d, it, nx) */
inline run_pass() {
    d = deferred;
    if
    :: d != NIL && cancel_seq == deferred_seq -> skip                  /* still held back */
    :: else ->
       if
       :: d != NIL -> deferred = NIL; run_chain(d, it, nx)
       :: else -> skip
       fi;
       atomic { w = works; if :: w != EXITED -> works = NIL :: else -> w = NIL fi }   /* (R2) */
       if
       :: w == NIL -> skip
       :: else ->
#ifdef FLAWED
          run_chain(w, it, nx)
#else
          s = cancel_seq;                                              /* (R3) */
          if
          :: s % 2 == 1 ->
             deferred_seq = s;
             deferred = w;                                             /* (R4) */
             if
             :: cancel_seq != s -> deferred = NIL; run_chain(w, it, nx)  /* (R5) */
             :: else -> skip
             fi
          :: else -> run_chain(w, it, nx)
          fi
#endif
       fi
    fi
}

proctype producer_a() { byte h; add(1, h); add(2, h) }
proctype producer_b() { byte h; add(3, h) }

/* task_work_cancel(target): the kernel's walk, under cancel_lock, inside cancel_seq odd */
inline cancel(target) {
    atomic { lock == 0 -> lock = 1 };
    cancel_seq++;                                                      /* (C1) */
    pprev = NIL;                                                       /* NIL: &works */
    done = 0;
    work = works;                                                      /* (C2) */
    do
    :: work == NIL || work == EXITED -> break
    :: else ->
       assert(freed[work] == 0);          /* reads work->func */
       if
       :: work != target ->
          pprev = work;
          work = next[pprev]
       :: else ->
          after = next[work];
          atomic {
              if
              :: pprev == NIL && works == work -> works = after; done = 1
              :: pprev != NIL && next[pprev] == work -> next[pprev] = after; done = 1
              :: else -> work = (pprev == NIL -> works : next[pprev])
              fi
          }
          if
          :: done -> cancelled[work]++; break
          :: else -> skip
          fi
       fi
    od;
    cancel_seq++;                                                      /* (C4) */
    lock = 0
}

proctype canceller() {
    byte pprev, work, after;
    bit done;
    cancel(2);
    cancel(1)
}

/* thread exit: under the lock, take the held-back chain and the list, or install EXITED */
proctype owner() {
    byte d, w, s, it, nx;
    bit installed;
    run_pass();
    run_pass();
    installed = 0;
    do
    :: installed -> break
    :: else ->
       atomic { lock == 0 -> lock = 1 };
       d = deferred;
       deferred = NIL;
       atomic {
           w = works;
           if
           :: w == NIL && d == NIL -> works = EXITED; installed = 1
           :: w == NIL && d != NIL -> skip
           :: else -> works = NIL
           fi
       }
       lock = 0;
       run_chain(d, it, nx);
       run_chain(w, it, nx)
    od
}

init {
    byte i;
    atomic {
        run producer_a();
        run producer_b();
        run canceller();
        run owner()
    }
    (_nr_pr == 1);
    /* every accepted item ran or was cancelled, exactly once; refused items never ran */
    i = 1;
    do
    :: i > NITEMS -> break
    :: else ->
       assert(added[i] != 0);
       if
       :: added[i] == 1 -> assert(ran[i] + cancelled[i] == 1)
       :: else -> assert(ran[i] == 0 && cancelled[i] == 0)
       fi;
       i++
    od;
    assert(works == EXITED)
}
