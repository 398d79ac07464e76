#include "dptrain/optim.h"

#include "dptrain/check.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct optimizer *optim_create(enum optimizer_kind kind, size_t count, double momentum,
                               double weight_decay, char *err)
{
    struct optimizer *opt = NULL;
    CHECK_PTR(opt = calloc(1, sizeof *opt), "cannot allocate the optimizer");
    opt->kind = kind;
    opt->count = count;
    opt->momentum = momentum;
    opt->beta1 = 0.9;
    opt->beta2 = 0.999;
    opt->epsilon = 1e-8;
    opt->weight_decay = weight_decay;
    CHECK_PTR(opt->first = tensor_alloc(count), "cannot allocate optimizer state");
    if (kind == OPT_ADAM)
        CHECK_PTR(opt->second = tensor_alloc(count), "cannot allocate optimizer state");
    return opt;
fail:
    optim_free(opt);
    return NULL;
}

int optim_state(const struct optimizer *opt, const float *arrays[2])
{
    arrays[0] = opt->first;
    arrays[1] = opt->second;
    return opt->second ? 2 : 1;
}

int optim_state_arrays(struct optimizer *opt, float *arrays[2])
{
    arrays[0] = opt->first;
    arrays[1] = opt->second;
    return opt->second ? 2 : 1;
}

long optim_steps(const struct optimizer *opt)
{
    return opt->step;
}

void optim_restore(struct optimizer *opt, const float *const saved[2], long steps)
{
    memcpy(opt->first, saved[0], opt->count * sizeof(float));
    if (opt->second && saved[1])
        memcpy(opt->second, saved[1], opt->count * sizeof(float));
    opt->step = steps;
}

void optim_free(struct optimizer *opt)
{
    if (!opt)
        return;
    tensor_free(opt->first);
    tensor_free(opt->second);
    free(opt);
}

/* One step's constants, copied into locals by the loops so that nothing they read can alias the
 * arrays they write (the loops vectorise). */
struct step_constants {
    float lr, momentum, decay;                                      /* SGD */
    float beta1, beta2, correction1, correction2, epsilon;          /* Adam */
};

static void sgd_range(float *restrict p, const float *restrict g, float *restrict v, size_t n,
                      const struct step_constants *k)
{
    const float lr = k->lr, momentum = k->momentum, decay = k->decay;
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] + g[i];
        p[i] -= lr * (v[i] + decay * p[i]);
    }
}

/* Nesterov's momentum as PyTorch's SGD(nesterov=True) takes it: the step looks ahead along the
 * updated velocity, g + momentum · v (Sutskever et al., 2013). */
static void nesterov_range(float *restrict p, const float *restrict g, float *restrict v, size_t n,
                           const struct step_constants *k)
{
    const float lr = k->lr, momentum = k->momentum, decay = k->decay;
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] + g[i];
        p[i] -= lr * (g[i] + momentum * v[i] + decay * p[i]);
    }
}

static void adam_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                       const struct step_constants *k)
{
    const float lr = k->lr, beta1 = k->beta1, beta2 = k->beta2, correction1 = k->correction1;
    const float correction2 = k->correction2, epsilon = k->epsilon, decay = k->decay;
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        float m_hat = m[i] * correction1;
        float v_hat = v[i] * correction2;
        p[i] -= lr * (m_hat / (sqrtf(v_hat) + epsilon) + decay * p[i]);
    }
}

void optim_step_part(struct optimizer *opt, const struct optim_part *part, double lr)
{
    opt->step++;
    struct step_constants k = {
        .lr = (float)lr, .momentum = (float)opt->momentum, .beta1 = (float)opt->beta1, .beta2 = (float)opt->beta2,
        .correction1 = (float)(1.0 / (1.0 - pow(opt->beta1, (double)opt->step))),
        .correction2 = (float)(1.0 / (1.0 - pow(opt->beta2, (double)opt->step))), .epsilon = (float)opt->epsilon,
    };
    size_t lo = part->first, hi = part->first + part->count;
    for (int r = 0; r < part->range_count; r++) {
        /* the range's elements inside the part */
        size_t o = part->ranges[r].offset, end = o + part->ranges[r].count;
        o = o > lo ? o : lo;
        end = end < hi ? end : hi;
        if (o >= end)
            continue;
        k.decay = part->ranges[r].decay ? (float)opt->weight_decay : 0.0f;
        if (opt->kind == OPT_SGD)
            sgd_range(part->params + o, part->grads + o, opt->first + o, end - o, &k);
        else if (opt->kind == OPT_NESTEROV)
            nesterov_range(part->params + o, part->grads + o, opt->first + o, end - o, &k);
        else
            adam_range(part->params + o, part->grads + o, opt->first + o, opt->second + o, end - o, &k);
    }
}

void optim_step(struct optimizer *opt, float *params, const float *grads,
                const struct param_range *ranges, int range_count, double lr)
{
    optim_step_part(opt, &(struct optim_part){params, grads, ranges, range_count, 0, opt->count}, lr);
}

double schedule_lr(const struct schedule *s, long t)
{
    if (t < s->warmup_steps)
        return s->peak_lr * (double)(t + 1) / (double)s->warmup_steps;
    long decay_steps = s->total_steps - s->warmup_steps;
    double progress = decay_steps > 0 ? (double)(t - s->warmup_steps) / (double)decay_steps : 0.0;
    if (progress > 1.0)
        progress = 1.0;
    switch (s->kind) {
    case SCHEDULE_COSINE:
        return s->peak_lr * 0.5 * (1.0 + cos(M_PI * progress));
    case SCHEDULE_STEP:
        return s->peak_lr * (progress < 0.5 ? 1.0 : progress < 0.75 ? 0.1 : 0.01);
    case SCHEDULE_CONSTANT:
        break;
    }
    return s->peak_lr;
}
