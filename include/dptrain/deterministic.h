/* --deterministic's gradient: every local unit (virtual shard) computes its gradient on its own,
 * with the same shapes wherever it runs, and their exact sum over every unit of every rank
 * (exactsum.h) goes into model->grads: the same bits on any rank count and any hosts. */
#ifndef DPTRAIN_DETERMINISTIC_H
#define DPTRAIN_DETERMINISTIC_H

#include "dptrain/run.h"

/* Collective. *locally_bad becomes 1 when a local unit's loss went bad; a gradient that is not
 * finite on any rank leaves NaN in model->grads for the caller's guard. */
int deterministic_gradient(struct run *run, int epoch, long step, int *locally_bad, char *err);

#endif
