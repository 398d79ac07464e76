/* The training loop, shared by `train` and `compare`.
 *
 * Every rank holds its shard of the training set and takes its share of each GLOBAL batch;
 * gradients are summed over the ranks by the reducer (one allreduce after backward, or buckets
 * overlapped with it), normalised by the global batch size, and every rank applies the same
 * optimizer step, so parameters stay bitwise identical. After every epoch all ranks evaluate
 * their blocks of the test (and validation) set; rank 0 prints and keeps the best epoch. */
#ifndef DPTRAIN_TRAIN_H
#define DPTRAIN_TRAIN_H

#include "dptrain/checkpoint.h"
#include "dptrain/model.h"
#include "dptrain/reducer.h"
#include "dptrain/rng.h"
#include "dptrain/run.h"

#include <stddef.h>
#include <stdint.h>

/* One rank's part of a global batch: its n samples are in the model's input already. */
struct batch {
    const uint8_t *labels;
    int n;
    long global;                 /* the global batch size, which normalises the loss */
    float smoothing;
    struct rng *dropout;
};

/* This rank's running sums over an epoch. */
struct batch_sums {
    double loss;
    long correct;
};

/* The gradient of one global batch: this rank computes the gradient of its samples with the
 * loss normalised by the global batch, and the reducer sums the ranks' contributions into
 * model->grads. Adds to sums; times its phases into model->profile if set. Exposed for the
 * tests, which compare 1, 2 and 3 ranks. */
int train_batch_gradient(struct model *model, struct reducer *reducer, const struct batch *batch,
                         struct batch_sums *sums, char *err);

/* Collective: train one run (run's "given" fields set; pca_k components, 0 for raw pixels),
 * from `resume` when not NULL, to the end of its epochs and the final evaluation. Returns a
 * DP_EXIT_* code. */
int train_run(struct run *run, int pca_k, struct checkpoint *resume, char *err);

#endif
