/* What every rank was doing when the stall watchdog ended a job: hang forensics.
 *
 * A stall line says which collective waited and who did not arrive; to find out why, one needs
 * where each rank was in the sequence of collectives. Every rank numbers the collectives it
 * enters (1, 2, ...: the same sequence on every rank, since all ranks call the same collectives
 * in the same order) and keeps its last STALL_RECENT of them. A rank's answer to the watchdog's
 * question carries them, so the rank that ends the job knows, for each rank that could still
 * answer, its collective number, its phase and its recent collectives. This module turns those
 * answers into the summary line ("ranks 0-1 wait in collective #1235 (the gradient allreduce,
 * 7.45 MB); rank 2 on node2 finished #1234 and is in evaluation") and a JSON record.
 *
 * Answers travel as bytes between ranks of one cluster (one build, one architecture). Times in
 * them are relative to the answer ("started 6.2 s ago"), since hosts' clocks differ. */
#ifndef DPTRAIN_STALL_REPORT_H
#define DPTRAIN_STALL_REPORT_H

#include <stddef.h>

enum { STALL_HOST = 64, STALL_TEXT = 64, STALL_RECENT = 64 };

/* One collective a rank entered. */
struct stall_collective {
    long number;               /* 1 for the first collective since the watchdog started */
    double bytes;              /* this rank's payload */
    int epoch;                 /* where the rank was when it entered it (0, 0: outside training) */
    long step;
    double ago;                /* it started this many seconds before the answer */
    double seconds;            /* it took this long; negative: still waiting */
    char what[STALL_TEXT], phase[STALL_TEXT];
};

/* One rank's answer: where it is, and its last collectives, oldest first. */
struct stall_status {
    int waiting, may_be_slow, epoch;
    long step;
    double seconds;            /* in this collective (waiting) or this phase (not waiting) */
    char phase[STALL_TEXT], what[STALL_TEXT];
    long number;               /* the collective it waits in, or the last it entered */
    double bytes;              /* that collective's payload */
    int recent_count;
    struct stall_collective recent[STALL_RECENT];
};

/* The answers of one round: status[r] is meaningful where answered[r] (the reporter's own is
 * always there). */
struct stall_view {
    int size, reporter;
    const struct stall_status *status;
    const int *answered;
    const char (*hosts)[STALL_HOST];
};

/* One line, without a newline: the ranks grouped by where they were. */
void stall_summary(const struct stall_view *v, char *line, size_t size);

/* The JSON record: the stall line, and for each rank its host, whether it answered, where it was
 * and its recent collectives. Returns the text (malloc'd, *length bytes), or NULL when memory
 * runs out. The watchdog publishes it through its transport. */
char *stall_record_json(const struct stall_view *v, const char *stall_line, size_t *length);

#endif
