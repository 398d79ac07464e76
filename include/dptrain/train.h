/* The training loop, shared by `train` and `compare`.
 *
 * Every rank holds its shard of the training set and takes its share of each GLOBAL batch;
 * gradients are summed over the ranks (in buckets overlapped with the backward pass, or one
 * MPI_Allreduce over the flat gradient buffer), normalised by the global batch size, and every
 * rank applies the same optimizer step, so parameters stay
 * bitwise identical. Rank 0 evaluates on the test (and validation) set and writes results. */
#ifndef DPTRAIN_TRAIN_H
#define DPTRAIN_TRAIN_H

#include "dptrain/cli.h"
#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/model.h"
#include "dptrain/reducer.h"

#include <stddef.h>
#include <stdint.h>

/* Run the train or compare command; returns a DP_EXIT_* code, the same on every rank, and on
 * failure leaves the message (the same on every rank) in err. */
int train_command(const struct comm *comm, const struct options *options, char *err);

/* Evaluate a checkpoint on the test set and write a results file with one run. */
int eval_command(const struct comm *comm, const struct options *options, char *err);

/* The share of step `step` (of `steps`) that a rank with `count` samples takes: samples
 * [*first, *first + *n) of its shuffled order. Shares differ by at most one. */
void train_local_share(size_t count, long steps, long step, size_t *first, int *n);

/* The gradient of one global batch: this rank computes the gradient of its `n` samples
 * (already in the model's input) with loss normalised by global_batch, and the allreduce sums
 * the ranks' contributions into model->grads: in buckets overlapped with backward through
 * `reducer`, or with one blocking MPI_Allreduce after it when reducer is NULL. Adds the local
 * summed loss to *loss_sum; counts correct predictions. Times its phases into model->profile
 * if set. Exposed for the tests, which compare 1, 2 and 3 ranks. */
int train_batch_gradient(const struct comm *comm, struct model *model, const uint8_t *labels,
                         int n, long global_batch, float smoothing, struct rng *dropout_rng,
                         struct reducer *reducer, double *loss_sum, long *correct, char *err);

#endif
