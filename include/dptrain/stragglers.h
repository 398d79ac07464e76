/* Slow ranks named: a straggler is a rank whose compute in an epoch's steps is well above the
 * other ranks', so that they wait for it in every gradient allreduce.
 *
 * Each rank times its steps' own work (data, forward, backward, optimizer) apart from its waits
 * (the gradient allreduce, the stop check); rank 0 gathers the pairs once per epoch (a few bytes
 * per rank) and asks this module. A rank is a straggler in an epoch when its compute is at least
 * STRAGGLER_RATIO times the median of the others'; it is named when it is the straggler in two
 * epochs running (an epoch is hundreds of steps: one slow step, or one noisy epoch on a shared
 * machine, is not a slow rank). Pure arithmetic: no MPI, no clocks. */
#ifndef DPTRAIN_STRAGGLERS_H
#define DPTRAIN_STRAGGLERS_H

#define STRAGGLER_RATIO 1.5

/* One rank's seconds in one epoch's steps. */
struct rank_seconds {
    double compute, wait;
};

struct straggler {
    int rank;
    double ratio;          /* its compute over the median of the others' */
    double others_waited;  /* the median over the others of wait / (compute + wait) */
};

/* The slowest rank of one epoch, if it is a straggler: 1 and *out filled, else 0. Needs 2 ranks or
 * more, and finite, non-negative times. */
int straggler_find(const struct rank_seconds *ranks, int count, struct straggler *out);

/* Epoch after epoch: which rank was the straggler last time, and since when. */
struct straggler_watch {
    int candidate;         /* -1: none */
    int streak;            /* epochs running it was the straggler */
    int named;             /* the rank last named, -1: none */
};

void straggler_watch_init(struct straggler_watch *w);
/* This epoch's straggler (NULL: none). Returns 1 when it is to be named now: the same rank two
 * epochs running, not already named in the epoch before. */
int straggler_observe(struct straggler_watch *w, const struct straggler *found);

#endif
