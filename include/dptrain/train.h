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
#include "dptrain/run.h"

#include <stddef.h>
#include <stdint.h>

/* Collective: train one run (run's "given" fields set; pca_k components, 0 for raw pixels),
 * from `resume` when not NULL, to the end of its epochs and the final evaluation. Returns a
 * DP_EXIT_* code. */
int train_run(struct run *run, int pca_k, struct checkpoint *resume, char *err);

#endif
