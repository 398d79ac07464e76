/* Who holds which samples: every rank's contiguous block of the training set (minus the
 * validation hold-out), each rank's block of the test and validation sets for the shared
 * evaluation, the input normalisation fitted over all ranks, the identity of the data file, and
 * each rank's share of every global batch. */
#ifndef DPTRAIN_SHARDS_H
#define DPTRAIN_SHARDS_H

#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/features.h"

#include <stddef.h>
#include <stdint.h>

struct shards {
    struct split train;          /* this rank's training samples (validation rows removed) */
    struct split test;           /* rank 0 only: the whole test set (its labels go to the results) */
    struct split validation;     /* rank 0 only */
    /* This rank's block of each: evaluation is shared by all ranks (rank 0 alone evaluating the
     * CNN with --tta took 18% of the wall time while the other ranks waited). */
    struct split test_part, validation_part;
    size_t train_total;          /* over all ranks, after the validation hold-out */
    size_t *rank_counts;         /* training samples per rank */
    struct normaliser norm;
    struct data_identity identity; /* of the file's arrays, for checkpoints */
};

/* Collective: read the data file, hold out `validation` training images chosen by the seed
 * (the same for every rank count), share the evaluation sets and fit the normalisation. */
int shards_load(const struct comm *comm, const char *path, int validation, uint64_t seed, struct shards *d,
                char *err);
void shards_free(struct shards *d);

long shards_steps_per_epoch(const struct shards *d, int batch);
/* Largest share any rank takes in any step: the model's batch capacity. */
int shards_largest_share(const struct shards *d, int ranks, long steps);
/* The share of step `step` (of `steps`) that a rank with `count` samples takes: samples
 * [*first, *first + *n) of its shuffled order. Shares differ by at most one. */
void shards_step_share(size_t count, long steps, long step, size_t *first, int *n);
/* The global batch of one step: the sum of every rank's share. */
long shards_step_total(const struct shards *d, int ranks, long steps, long step);

#endif
