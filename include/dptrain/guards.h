/* The guards of the training loop. The NaN guard: a summed gradient (or, with a sharded optimizer,
 * parameters) that is not finite is the same on every rank, so every rank stops at the same step,
 * and the message names the rank whose own loss went bad. The drift guard: every rank must hold
 * bitwise the same parameters (they apply the same update to the same sums); one allgather of a
 * 64-bit hash, and a rank that differs from most ranks (with two ranks: from rank 0) is named,
 * with the same message on every rank. */
#ifndef DPTRAIN_GUARDS_H
#define DPTRAIN_GUARDS_H

#include "dptrain/comm.h"

#include <stddef.h>
#include <stdint.h>

int guards_finite(const float *x, size_t n);
/* Collective, on the failure path only: err names the first rank whose loss went bad (locally_bad
 * on it), or says that the sum itself went bad. */
void guards_name_bad_rank(const struct comm *comm, int locally_bad, int epoch, long step, char *err);
/* Collective: 0 when every rank's parameter hash is the same, else -1 naming the rank that differs. */
int guards_check_drift(const struct comm *comm, uint64_t hash, int epoch, long step, char *err);

#endif
