/* Optimizers over the flat parameter buffer: SGD with momentum (plain or Nesterov's) and Adam, all
 * with decoupled weight decay (applied to weights, not biases), and the learning-rate schedule. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include "dptrain/config.h"
#include "dptrain/model.h"

#include <stddef.h>

struct optimizer {
    enum optimizer_kind kind;
    double momentum, beta1, beta2, epsilon, weight_decay;
    size_t count;
    float *first;       /* SGD's (and Nesterov's) velocity, or Adam's first moment */
    float *second;      /* Adam's second moment (NULL for SGD) */
    long step;          /* steps taken (Adam's bias correction) */
};

struct schedule {
    enum schedule_kind kind;
    double peak_lr;
    long warmup_steps, total_steps;
};

struct optimizer *optim_create(enum optimizer_kind kind, size_t count, double momentum,
                               double weight_decay, char *err);
void optim_free(struct optimizer *opt);
/* One update of params from grads (which already hold the mean-loss gradient). */
void optim_step(struct optimizer *opt, float *params, const float *grads,
                const struct param_range *ranges, int range_count, double lr);

/* The part [first, first + count) of the flat buffers that one update touches (a sharded
 * optimizer's slice); the ranges are the model's, whole. */
struct optim_part {
    float *params;
    const float *grads;
    const struct param_range *ranges;
    int range_count;
    size_t first, count;
};
/* The update of part's elements only; the step count advances as with optim_step. */
void optim_step_part(struct optimizer *opt, const struct optim_part *part, double lr);

/* The state a checkpoint keeps, as arrays of `count` floats (borrowed): SGD's velocity or Adam's
 * first moment, and for Adam the second moment. Returns how many. Nothing outside optim reads or
 * writes the moments but through these three. */
int optim_state(const struct optimizer *opt, const float *arrays[2]);
/* The same arrays, writable: a sharded optimizer's slices are gathered into them before a save. */
int optim_state_arrays(struct optimizer *opt, float *arrays[2]);
long optim_steps(const struct optimizer *opt);
/* Continue from saved state: the arrays in optim_state's order (second NULL for SGD), and the
 * number of steps taken (Adam's bias correction depends on it). */
void optim_restore(struct optimizer *opt, const float *const saved[2], long steps);

/* Learning rate for step t (0-based): linear warm-up to the peak, then the decay. */
double schedule_lr(const struct schedule *s, long t);

#endif
