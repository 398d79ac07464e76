/* A run to and from its checkpoint: rank 0 gathers every rank's random streams, partial sums
 * and batch-norm statistics and writes them with the shared state; a resume restores exactly
 * what the uninterrupted run would hold at that point. */
#ifndef DPTRAIN_RUN_CHECKPOINT_H
#define DPTRAIN_RUN_CHECKPOINT_H

#include "dptrain/checkpoint.h"
#include "dptrain/run.h"

/* Collective: save the run at (epochs_done, step) to o->checkpoint. */
int run_checkpoint_save(struct run *run, int epochs_done, long step, double epoch_seconds, char *err);
/* Check the checkpoint's position and sizes against the run, then restore it (every rank). */
int run_checkpoint_restore(struct run *run, const struct checkpoint *c, char *err);
/* The settings a checkpoint was saved with, as a configuration (the rest from `given`); -1 when
 * its optimizer or schedule is unknown. */
int run_checkpoint_settings(const struct checkpoint *c, const struct config *given, struct config *saved);
/* Collective: every rank reads the checkpoint and checks it against the configuration. */
int run_checkpoint_load(const struct comm *comm, const struct config *o, struct checkpoint *c, char *err);

#endif
