/* The commands that run under MPI: train and compare (one or more runs of the training loop)
 * and eval (a checkpoint on the test set). Each checks every path before reading anything,
 * chooses the BLAS threads, and returns a DP_EXIT_* code that is the same on every rank, with the
 * message (the same on every rank) in err on failure. */
#ifndef DPTRAIN_COMMANDS_H
#define DPTRAIN_COMMANDS_H

#include "dptrain/config.h"
#include "dptrain/comm.h"

int train_command(const struct comm *comm, const struct config *options, char *err);
int eval_command(const struct comm *comm, const struct config *options, char *err);

#endif
