/* Where a run's time goes: totals per named phase (always kept: two clock reads per phase cost
 * well under 0.1% of a step) and, with --trace, every phase as a Chrome trace event.
 *
 * Phases nest: a step is data → forward → backward → allreduce wait → optimizer, and forward
 * and backward contain one event per layer (category "layer"). The trace is written as the
 * JSON object format of the Trace Event Format ("traceEvents", "displayTimeUnit", "otherData"),
 * one process per rank, which Perfetto and chrome://tracing open. */
#ifndef DPTRAIN_PROFILE_H
#define DPTRAIN_PROFILE_H

#include <stddef.h>

#define PROFILE_MAX_NAMES 32

/* Step phases (category "step") and the two outside the steps (category "epoch"). */
#define PHASE_STOP_CHECK "stop check"
#define PHASE_DATA "data"
#define PHASE_FORWARD "forward"
#define PHASE_BACKWARD "backward"
#define PHASE_ALLREDUCE_WAIT "allreduce wait"
#define PHASE_OPTIMIZER "optimizer"
#define PHASE_EVALUATION "evaluation"
#define PHASE_CHECKPOINT "checkpoint"
#define CATEGORY_STEP "step"
#define CATEGORY_LAYER "layer"
#define CATEGORY_EPOCH "epoch"

struct profile_total {
    const char *name, *category; /* string literals: compared by address first, then by text */
    double seconds;
    long count;
};

struct trace_event {
    const char *name, *category;
    double start, end;           /* seconds since the profile's origin */
    int epoch;
    long step;
};

struct profile {
    double origin;               /* timer_now() after a barrier (the caller's): the ranks' common zero */
    int epoch;                   /* stamped on events */
    long step;
    int total_count;
    struct profile_total totals[PROFILE_MAX_NAMES];
    struct trace_event *events;  /* NULL unless tracing */
    size_t event_count, event_capacity, dropped;
};

/* event_capacity 0: totals only, no trace. Call it on every rank right after a barrier, so that
 * the ranks' tracks share their zero in the viewer. */
int profile_init(struct profile *p, size_t event_capacity, char *err);
void profile_free(struct profile *p);
/* Clear the totals (not the trace) for a new run of `compare`. */
void profile_reset_totals(struct profile *p);

/* Both accept NULL (no profile: 0 and nothing recorded), so that code timed in training runs
 * unchanged without a profile (evaluation, the tests). */
double profile_now(const struct profile *p);
/* Account the interval [start, now] to name; returns now, so phases can be chained. */
double profile_end(struct profile *p, const char *name, const char *category, double start);

/* Seconds and number of intervals accounted to a name, 0 if never seen. */
double profile_seconds(const struct profile *p, const char *name);
long profile_count(const struct profile *p, const char *name);

/* JSON text of trace events and totals: one rank's fragments, or every rank's concatenated with
 * rank r's at [offsets[r], offsets[r + 1]). */
struct trace_text {
    char *events, *totals;
    size_t events_length, totals_length;
    size_t *event_offsets, *total_offsets;   /* merged text only */
};

/* This rank's trace events and totals as JSON fragments (malloc'd), for the merged trace. */
int profile_rank_json(const struct profile *p, int rank, struct trace_text *out, char *err);
/* Rank 0: the merged trace of every rank's fragments, published whole by files_write. */
int profile_write_merged(const char *path, int ranks, const struct trace_text *merged, char *err);
void profile_trace_text_free(struct trace_text *t);

#endif
