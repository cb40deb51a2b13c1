// pan: -DSAFETY
// irq_work nohz tick (include/rtdefer/irq_work.hpp): the worker stops its tick after idle periods
// (irq_work_tick::poll: (IQT1) exchange(word_, 1), then re-check the tick list) and the LAZY add that
// makes the tick list non-empty reads the stopped word ((IQT2) in irq_work_tick::stopped_at_add) and wakes the worker
// only if it is stopped. Sequentially consistent model: (IQT1)/(IQT2) are acq_rel RMWs on one word, so
// one of them reads the other (the argument at (IQT2) in the code); the list ops are single atomics.
// Producers add LAZY items; the worker ticks (or its tick is not due yet: nondeterministic), runs
// the tick list at a tick, stops the tick after STOP_AFTER idle ticks, restarts it when woken with
// items queued, and parks until the next tick (stopped: until a wake token).
// Checked: when nothing can move any more (every producer done, the worker asleep with its tick
// stopped), no LAZY item is left behind: every queued item ran. A lost wake is exactly a stall
// with items on the list (the `timeout` check below). The refuted variant, irq_work_tick_flawed.pml,
// checks the list before setting the stopped word instead of after.
#define STOP_AFTER 1
#define ITEMS 2

byte list = 0;        // items on the tick list
bool stopped = 0;     // irq_work_tick::word_
bool token = 0;       // the worker's park token: unpark sets it, park consumes it
byte queued = 0;
byte ran = 0;
byte prod_done = 0;

proctype producer() {
    bool was_empty;
    byte i = 0;
    do
    :: i < ITEMS ->
        atomic { was_empty = (list == 0); list++; queued++ };   // llist add: true if it was empty
        if
        :: was_empty && stopped -> token = 1                   // (IQT2) read 1: unpark (restart)
        :: else -> skip                                        // tick running, or not the first add
        fi;
        i++
    :: else -> break
    od;
    prod_done++
}

active proctype worker() {
    bool local_stopped = 0;
    byte idle = 0;
    do
    :: if
        :: local_stopped ->
            if
            :: list > 0 -> local_stopped = 0; stopped = 0; idle = 0   // woken with work: restart
            :: else -> skip
            fi
        :: else ->
            if
            :: true ->                                                // the tick is due
                if
                :: list > 0 -> atomic { ran = ran + list; list = 0 }; idle = 0   // del_all, run
                :: else -> idle++
                fi;
                if
                :: idle >= STOP_AFTER ->
                    stopped = 1;                                      // (IQT1)
                    if
                    :: list == 0 -> local_stopped = 1                 // re-check after (IQT1)
                    :: else -> stopped = 0; idle = 0                  // an add raced: keep ticking
                    fi
                :: else -> skip
                fi
            :: true -> skip                                           // not due yet
            fi
        fi;
        if                                                            // park_until
        :: local_stopped ->
end_park:   token == 1 -> token = 0                                   // no deadline: wake only
        :: else ->
            if
            :: token == 1 -> token = 0
            :: true -> skip                                           // the tick's deadline
            fi
        fi
    od
}

init {
    atomic { run producer(); run producer() }
}

// Nothing can move: the worker sleeps without a tick. Then nothing may be left on the list.
active proctype stall_check() {
    timeout -> assert(prod_done == 2 && list == 0 && ran == queued)
}
