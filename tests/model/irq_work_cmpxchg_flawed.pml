// pan: -DSAFETY -DCOLLAPSE
// REFUTED VARIANT of irq_work_ok.pml: the kernel's BUSY clear, cmpxchg(flags, flags & ~BUSY) with the
// value read when PENDING was cleared. When the re-queued second run ends first, it clears BUSY while
// the first callback still runs: irq_work_sync returns and the item is freed under it.
// irq_work claim / run / sync protocol (include/rtdefer/irq_work.hpp), sequentially consistent model.
// Two producers and the item's own callback claim one item (fetch_or(PENDING|BUSY), fails if PENDING)
// and add it to one of two per-CPU lists; two runners take their list (del_all), turn PENDING into one
// more ACTIVE run before the callback, and after it drop ACTIVE, the last one out with nothing pending
// clearing BUSY in the same step; then they wake irq_work_sync waiters through a wait bucket that is
// NOT part of the item. The callback re-queues the item once, to the other CPU, so two runs overlap.
// A syncer, once the producers are done, waits in the bucket until BUSY is clear and frees the item.
// Checked: no runner touches the item after it was freed (the irq_work_sync use-after-free), every
// successful claim ran exactly once, and no wake-up is lost (a lost one is an invalid end state).
// The refuted variants: irq_work_cmpxchg_flawed.pml (the kernel's cmpxchg(flags, flags & ~BUSY) with
// overlapping runs) and irq_work_wake_flawed.pml (the kernel's first irq_work_sync, which woke the
// waiter through an rcuwait inside the item after clearing BUSY).
#define PENDING 1
#define BUSY 2
#define NONE 255

byte flags = 0;          // the item's flag word: PENDING | BUSY
byte nactive = 0;         // ... and its ACTIVE count (runs in progress), same word in the C++ code
byte onlist = NONE;      // which per-CPU list the item is on (an item is on at most one)
byte owed = 0;           // successful claims not yet matched by a callback run
byte requeues = 1;       // the callback re-queues the item this many times (to the other CPU)
bool freed = false;      // the syncer freed the item
byte prod_done = 0;
byte waiters = 0;        // wait bucket (static storage): registered syncers
byte seq = 0;            // wait bucket futex word (mod 8: at most 5 wakes, one per run: no ABA)

// fetch_or(PENDING|BUSY); the item is touched, so it must not be freed.
inline claim(ok) {
    atomic {
        assert(!freed);
        ok = ((flags & PENDING) == 0);
        flags = flags | PENDING | BUSY
    }
}

inline enqueue(cpu) {
    atomic { assert(!freed); owed++; onlist = cpu }     // llist add (node write + head CAS)
}

proctype producer(byte cpu) {
    bool ok;
    byte i = 0;
    do
    :: i < 2 ->
        claim(ok);
        if
        :: ok -> enqueue(cpu)
        :: else -> skip      // already pending: that run will see our writes
        fi;
        i++
    :: else -> break
    od;
    prod_done++
}

proctype runner(byte me) {
    byte f;
    bool ok;
    do
    :: atomic { onlist == me -> onlist = NONE };                        // del_all
        atomic { assert(!freed); flags = flags & ~PENDING; f = flags };  // kernel: clear PENDING
        atomic { assert(!freed); owed-- };                               // func(w)
        if
        :: atomic { requeues > 0 -> requeues-- };                        // func re-queues w
            claim(ok);
            if
            :: ok -> enqueue(1 - me)
            :: else -> skip
            fi
        :: else -> skip
        fi;
        atomic {                                                         // kernel: cmpxchg BUSY off
            assert(!freed);
            if
            :: flags == f -> flags = f & ~BUSY
            :: else -> skip
            fi
        };
        if                                                               // wake_up_var: bucket only (WV3), (WV4)
        :: waiters > 0 -> seq = (seq + 1) % 8
        :: else -> skip
        fi
    :: freed -> break
    od
}

proctype syncer() {
    byte s;
    prod_done == 2;          // the caller's contract: nobody else queues any more
    waiters++;               // (WV1) wait_var_event_until
    do
    :: s = seq;              // (WV2)
        if
        :: (flags & BUSY) == 0 -> break   // (IQS5) irq_work_flags_wait_idle
        :: else -> (seq != s)             // futex_wait(seq, s): sleeps until a wake bumps seq
        fi
    od;
    waiters--;
    assert(owed == 0);       // every successful claim ran, exactly once
    freed = true             // irq_work_sync returned: the caller frees the item
}

init {
    atomic {
        run producer(0);
        run producer(1);
        run runner(0);
        run runner(1);
        run syncer()
    }
}
