/* The stall watchdog: a thread per rank that ends the job when a collective waits too long.
 *
 * Across hosts a rank can vanish without a word: its host's link cut, the process stopped
 * (SIGSTOP), or a link so slow that a step never ends. MPI over TCP then waits for minutes in
 * the collective. Each rank tells its watchdog where it is (the phase: epoch, step, and whether
 * the phase may legitimately be slow on one rank: evaluation, checkpoints, the PCA fit) and when
 * it enters and leaves a collective. When a collective has waited longer than the limit, the
 * watchdog asks every other rank's watchdog where it is (small messages on a private
 * communicator; the threads answer even while their main thread computes). Ranks that do not
 * answer within a grace period did not arrive; a rank in a phase that may be slow re-arms the
 * wait (no stall); every rank waiting in the same collective means it is not completing (a link
 * too slow or broken). A stall prints one line naming the step, the collective and the ranks
 * that did not arrive, and aborts the job (MPI_Abort).
 *
 * Needs MPI_THREAD_MULTIPLE. A comm-level module: it calls MPI and nothing above it. */
#ifndef DPTRAIN_WATCHDOG_H
#define DPTRAIN_WATCHDOG_H

#include <mpi.h>

struct watchdog;

/* Collective over world. limit_seconds > 0. *out is the running watchdog. */
int watchdog_start(MPI_Comm world, double limit_seconds, const char *limit_flag, struct watchdog **out,
                   char *err);
/* Stops the thread and frees everything (also on failure); NULL is ignored. */
int watchdog_stop(struct watchdog *w, char *err);

/* Where this rank is: a phase (a string literal: only its address is kept), the epoch and step it
 * belongs to (0, 0: none), and whether it may be slow on some ranks only. NULL w is ignored. */
void watchdog_phase(struct watchdog *w, const char *phase, int epoch, long step, int may_be_slow);
/* Entering and leaving a collective (what: a string literal naming it). */
void watchdog_wait(struct watchdog *w, const char *what);
void watchdog_done(struct watchdog *w);

#endif
