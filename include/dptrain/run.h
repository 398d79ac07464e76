/* One run of the training loop: what it is given (the world, the options, the shards, the
 * command's profile, where its result goes) and everything it holds while it trains — model,
 * optimizer, units of work (inputs, random streams, the sums of the epoch in progress),
 * evaluator, gradient reducer, and where it stands. */
#ifndef DPTRAIN_RUN_H
#define DPTRAIN_RUN_H

#include "dptrain/config.h"
#include "dptrain/comm.h"
#include "dptrain/evaluation.h"
#include "dptrain/fault.h"
#include "dptrain/features.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/profile.h"
#include "dptrain/reducer.h"
#include "dptrain/results.h"
#include "dptrain/rng.h"
#include "dptrain/shards.h"
#include "dptrain/stragglers.h"
#include "dptrain/stream.h"

#include <stddef.h>
#include <stdint.h>

/* A unit of training work: this rank's whole block by default, one virtual shard with
 * --deterministic (shards.h). Each takes its share of every global batch in its own shuffled
 * order, with its own random streams, and keeps its own sums of the epoch in progress. */
struct unit {
    int id;                       /* the rank, or the virtual shard */
    struct features samples;
    uint32_t *order;              /* its shuffled local indices (within run->order) */
    struct rng dropout, augment;
    double partial_loss;
    long partial_correct;
    float *buffers;               /* its batch-norm running statistics (the model's own by default) */
};

/* --deterministic: each local unit's gradient of a step, kept until the grid is known, and their
 * exact sum (exactsum.h). */
struct exact_gradient {
    float *terms;                 /* [local units][params] */
    double *sum;                  /* [params] */
};

struct file_writer;

struct run {
    /* given */
    const struct comm *comm;
    const struct config *config;
    const struct shards *shards;
    struct profile *profile;      /* the command's; NULL for eval */
    struct run_result *result;
    /* held */
    struct unit *units;           /* shards->local_units of them */
    struct features test, validation;
    struct model *model;
    struct optimizer *optimizer;
    struct evaluator eval;
    struct reducer reducer;
    struct exact_gradient exact;
    struct schedule schedule;
    long steps;                   /* per epoch */
    uint32_t *order;              /* shuffled local indices, unit by unit */
    float *unit_buffers;          /* --deterministic: [local units][model buffers] */
    uint8_t *batch_labels;
    float *best_params;           /* rank 0, with --validation */
    float *best_buffers;          /* and that epoch's batch-norm running statistics (if the model has any) */
    double best_val;
    /* where the run stands: `start_epoch` epochs done and `start_step` steps of the next */
    int start_epoch;
    long start_step;
    double resumed_epoch_seconds;
    int resumed_ranks;            /* the checkpoint's rank count on a resume, else 0 */
    int resumed_budget;           /* and its --memory-budget (0: held in memory) */
    struct fault fault;
    int stop_signal;              /* the signal the ranks agreed to stop for */
    double started;               /* timer_now() when the run began: --max-time counts from here */
    struct rank_seconds counted;  /* this rank's step seconds up to the last epoch's end */
    struct straggler_watch stragglers; /* rank 0 */
    struct file_writer *checkpoint_writer; /* rank 0, --checkpoint without --checkpoint-sync (writer.h) */
    /* --memory-budget: the rank's training rows streamed from the file; the unit's samples are then
     * the step's staging rows, filled from the stream in order (its order the identity) */
    struct stream *stream;
    struct split staging;
};

/* Collective: build the model (inputs of `pca`'s size, or raw pixels), optimizer, units, inputs
 * and buffers for run->config and run->shards; the fields under "given" must be set. */
int run_allocate(struct run *run, const struct pca *pca, char *err);
/* Collective: rank 0 draws the initial parameters from the seed, every rank receives them. */
int run_initialise(struct run *run, char *err);
/* Every unit's batch-norm statistics from the model's (--deterministic: at the start and after
 * they are averaged). */
void run_share_buffers(struct run *run);
/* Collective: batch-norm running statistics are per unit (each sees its own batches); at the end
 * of every epoch they are averaged over the units, so that evaluation and checkpoints use one
 * set. By default a sum over the ranks; with --deterministic the units' rows are added in unit
 * order, the same on any rank count. */
int run_average_buffers(struct run *run, char *err);
void run_free(struct run *run);

#endif
