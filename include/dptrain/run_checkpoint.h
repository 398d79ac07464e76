/* A run to and from its checkpoint: rank 0 gathers every rank's random streams, partial sums
 * and batch-norm statistics and writes them with the shared state; a resume restores exactly
 * what the uninterrupted run would hold at that point. */
#ifndef DPTRAIN_RUN_CHECKPOINT_H
#define DPTRAIN_RUN_CHECKPOINT_H

#include "dptrain/checkpoint.h"
#include "dptrain/run.h"

/* Collective: save the run at (epochs_done, step) to o->checkpoint. The state is gathered and the
 * file built in memory now; with a background writer (run_checkpoint_start_writer) rank 0 hands it
 * over and training goes on while it is written, and a failure of the write before is reported
 * here. */
int run_checkpoint_save(struct run *run, int epochs_done, long step, double epoch_seconds, char *err);
/* Collective: rank 0's background writer, with --checkpoint and without --checkpoint-sync. */
int run_checkpoint_start_writer(struct run *run, char *err);
/* Collective: wait for the checkpoint being written, if any; its failure ends the run on every
 * rank. Before the results are written, and before a stop says its checkpoint is written. */
int run_checkpoint_settle(struct run *run, char *err);
/* Check the checkpoint's position and sizes against the run, then restore it (every rank). */
int run_checkpoint_restore(struct run *run, const struct checkpoint *c, char *err);
/* The settings a checkpoint was saved with, as a configuration (the rest from `given`); -1 when
 * its optimizer or schedule is unknown. */
int run_checkpoint_settings(const struct checkpoint *c, const struct config *given, struct config *saved);
/* Collective: every rank reads the checkpoint and checks it against the configuration. */
int run_checkpoint_load(const struct comm *comm, const struct config *o, struct checkpoint *c, char *err);

#endif
