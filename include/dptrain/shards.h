/* Who holds which samples: every rank's contiguous block of the training set (minus the
 * validation hold-out) and the units it is cut into, each rank's block of the test and validation
 * sets for the shared evaluation, the input normalisation fitted over all ranks, the identity of
 * the data file, and each unit's share of every global batch. */
#ifndef DPTRAIN_SHARDS_H
#define DPTRAIN_SHARDS_H

#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/features.h"
#include "dptrain/stream.h"

#include <stddef.h>
#include <stdint.h>

/* --deterministic cuts the training set into this many virtual shards whatever the rank count;
 * a rank holds whole ones, so at most this many ranks. */
#define SHARDS_VIRTUAL 12

/* How to load: the data file, the validation hold-out, and the training set's units. */
struct shard_plan {
    const char *path;
    int validation;
    uint64_t seed;
    int virtual_shards;          /* 0: one unit per rank, its block; else this many, whole ones per rank */
    size_t memory_budget;        /* bytes: stream the training rows (stream.h) within it; 0: hold them */
};

struct shards {
    struct split train;          /* this rank's training samples (validation rows removed) */
    struct split test;           /* rank 0 only: the whole test set (its labels go to the results) */
    struct split validation;     /* rank 0 only */
    /* This rank's block of each, in whole EVAL_CHUNKs: evaluation is shared by all ranks (rank 0
     * alone evaluating the CNN with --tta took 18% of the wall time while the other ranks waited). */
    struct split test_part, validation_part;
    size_t train_total;          /* over all ranks, after the validation hold-out */
    /* The units of training work: every rank's block, or the virtual shards. Each takes its share
     * of every global batch. */
    int units;
    size_t *unit_counts;         /* [units] training samples of each */
    int first_unit, local_units; /* this rank's units */
    size_t *unit_offsets;        /* [local_units + 1]: local unit i is rows [offsets[i], offsets[i + 1]) of train */
    struct normaliser norm;
    struct data_identity identity; /* of the file's arrays, for checkpoints */
    struct data_description about; /* what the file says of itself: shape, classes, names */
    /* --memory-budget: train holds no samples (its count is the rank's kept rows); they are here in
     * the file, streamed by the run (stream.h) */
    int streamed;
    struct stream_source stream;
    uint8_t *held;               /* [stream.count]: the rows held out for validation, or NULL */
};

/* Collective: read the data file, hold out `validation` training images chosen by the seed
 * (the same for every rank count), share the evaluation sets and fit the normalisation. With a
 * memory budget the training rows are read once, a window at a time (checksums, labels,
 * normalisation, hold-out), and left in the file. */
int shards_load(const struct comm *comm, const struct shard_plan *plan, struct shards *d, char *err);
void shards_free(struct shards *d);

/* stream_plan for a memory budget of budget_bytes, its refusal naming --memory-budget. */
int shards_stream_plan(size_t budget_bytes, size_t image_bytes, size_t staging_rows, struct stream_geometry *g,
                       char *err);

long shards_steps_per_epoch(const struct shards *d, int batch);
/* Largest share any unit takes in any step: the model's batch capacity. */
int shards_largest_share(const struct shards *d, long steps);
/* The share of step `step` (of `steps`) that a unit with `count` samples takes: samples
 * [*first, *first + *n) of its shuffled order. Shares differ by at most one. */
void shards_step_share(size_t count, long steps, long step, size_t *first, int *n);
/* The global batch of one step: the sum of every unit's share. */
long shards_step_total(const struct shards *d, long steps, long step);

#endif
