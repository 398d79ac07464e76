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
 * that did not arrive, and ends the job.
 *
 * Every rank also numbers the collectives it enters and keeps its last ones (stall_report.h): the
 * rank that ends the job prints a second line saying where each rank was, and writes every
 * answering rank's recent collectives to a JSON record.
 *
 * Needs MPI_THREAD_MULTIPLE. It calls no MPI itself: comm hands it a transport (comm_start_watchdog),
 * which carries the questions and answers on a communicator of its own. */
#ifndef DPTRAIN_WATCHDOG_H
#define DPTRAIN_WATCHDOG_H

#include "dptrain/stall_report.h"

#include <stddef.h>

struct watchdog;

enum { WATCHDOG_HOST = STALL_HOST }; /* a host name's bytes in messages (longer names are cut) */

/* How one rank's watchdog reaches the others': called from the watchdog's thread; each call
 * returns 0, or -1 with err set. An answer is watchdog_answer_bytes() bytes. */
struct watchdog_transport {
    void *channel;
    int rank, size;
    const char (*hosts)[WATCHDOG_HOST]; /* every rank's host name */
    /* A question from another rank, if one has arrived: *asker is its rank, else -1. */
    int (*next_question)(void *channel, int *asker, char *err);
    /* Send a copy of `answer` to `asker`, unless the previous answer to it is still on its way
     * (it will do). */
    int (*answer)(void *channel, int asker, const void *answer, char *err);
    /* Ask every other rank; rank r's answer is to land at replies + r * answer bytes. */
    int (*ask)(void *channel, void *replies, char *err);
    /* answered[r] becomes nonzero for each answer that has arrived. */
    int (*collect)(void *channel, int *answered, char *err);
    /* The round is over: the answers that did not arrive are given up. */
    int (*end_round)(void *channel, const int *answered, char *err);
    /* End every rank of the job (returns only if that failed). */
    void (*abort)(void *channel);
    /* Publish a file whole (files_write: the watchdog is below the files module). */
    int (*publish)(const char *path, const void *data, size_t size, char *err);
};

size_t watchdog_answer_bytes(void);

/* When a wait is a stall, and where its record goes. */
struct watchdog_limits {
    double seconds;          /* > 0 */
    const char *flag;        /* the flag that set it, for messages */
    const char *record_prefix; /* a stall's JSON record (stall_report.h) goes to PREFIX.stall-rankR.json,
                                  R the reporting rank (a link too slow can make two ranks report, each
                                  with its own view); NULL or "": none */
};

/* *out is the running watchdog; `link` and `limits` are copied, the channel borrowed. */
int watchdog_start(const struct watchdog_transport *link, const struct watchdog_limits *limits,
                   struct watchdog **out, char *err);
/* Stops the thread and frees everything (also on failure); NULL is ignored. */
int watchdog_stop(struct watchdog *w, char *err);

/* Where this rank is: a phase (a string literal: only its address is kept), the epoch and step it
 * belongs to (0, 0: none), and whether it may be slow on some ranks only. NULL w is ignored. */
void watchdog_phase(struct watchdog *w, const char *phase, int epoch, long step, int may_be_slow);
/* Entering and leaving a collective (what: a string literal naming it; bytes: this rank's payload). */
void watchdog_wait(struct watchdog *w, const char *what, double bytes);
void watchdog_done(struct watchdog *w);

#endif
