/* One run of the training loop: what it is given (the world, the options, the shards, the
 * command's profile, where its result goes) and everything it holds while it trains — model,
 * optimizer, inputs, evaluator, gradient reducer, random streams, the sums of the epoch in
 * progress and where it stands. */
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

#include <stddef.h>
#include <stdint.h>

struct run {
    /* given */
    const struct comm *comm;
    const struct config *o;
    const struct shards *d;
    struct profile *profile;      /* the command's; NULL for eval */
    struct run_result *r;
    /* held */
    struct features train, test, validation;
    struct model *model;
    struct optimizer *optimizer;
    struct evaluator eval;
    struct reducer reducer;
    struct schedule schedule;
    long steps;                   /* per epoch */
    uint32_t *order;              /* shuffled local indices */
    uint8_t *batch_labels;
    float *best_params;           /* rank 0, with --validation */
    double best_val;
    /* where the run stands: `start_epoch` epochs done and `start_step` steps of the next */
    int start_epoch;
    long start_step;
    double resumed_epoch_seconds;
    int resumed_ranks;            /* the checkpoint's rank count on a resume, else 0 */
    /* this rank's streams and sums of the epoch in progress */
    struct rng dropout, augment;
    double partial_loss;
    long partial_correct;
    struct fault fault;
    int stop_signal;              /* the signal the ranks agreed to stop for */
};

/* Collective: build the model (inputs of `pca`'s size, or raw pixels), optimizer, inputs and
 * buffers for run->o and run->d; the fields under "given" must be set. */
int run_allocate(struct run *run, const struct pca *pca, char *err);
/* Collective: rank 0 draws the initial parameters from the seed, every rank receives them. */
int run_initialise(struct run *run, char *err);
void run_free(struct run *run);

#endif
