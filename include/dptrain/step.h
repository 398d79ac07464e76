/* One unit's share of a training step: its batch (augmented, into the model's input), forward,
 * loss and backward, and the gradient's sum over the ranks through the reducer. */
#ifndef DPTRAIN_STEP_H
#define DPTRAIN_STEP_H

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
int step_batch_gradient(struct model *model, struct reducer *reducer, const struct batch *batch,
                        struct batch_sums *sums, char *err);

/* Unit u's share of step `step` of `epoch`: its batch, its gradient (summed over the ranks by
 * `reducer`; NULL: its own, left in model->grads), its epoch sums kept. Returns 1 when its loss
 * went bad, else 0; a failed collective ends the job (the ranks cannot meet again). */
int step_unit(struct run *run, struct unit *u, int epoch, long step, struct reducer *reducer, char *err);

#endif
