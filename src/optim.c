#include "dptrain/optim.h"

#include "dptrain/check.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>

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

void optim_free(struct optimizer *opt)
{
    if (!opt)
        return;
    tensor_free(opt->first);
    tensor_free(opt->second);
    free(opt);
}

static void sgd_range(float *restrict p, const float *restrict g, float *restrict v, size_t n,
                      float lr, float momentum, float decay)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] + g[i];
        p[i] -= lr * (v[i] + decay * p[i]);
    }
}

static void adam_range(float *restrict p, const float *restrict g, float *restrict m,
                       float *restrict v, size_t n, float lr, float beta1, float beta2,
                       float correction1, float correction2, float epsilon, float decay)
{
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        float m_hat = m[i] * correction1;
        float v_hat = v[i] * correction2;
        p[i] -= lr * (m_hat / (sqrtf(v_hat) + epsilon) + decay * p[i]);
    }
}

void optim_step(struct optimizer *opt, float *params, const float *grads,
                const struct param_range *ranges, int range_count, double lr)
{
    opt->step++;
    float correction1 = (float)(1.0 / (1.0 - pow(opt->beta1, (double)opt->step)));
    float correction2 = (float)(1.0 / (1.0 - pow(opt->beta2, (double)opt->step)));
    for (int r = 0; r < range_count; r++) {
        size_t o = ranges[r].offset, n = ranges[r].count;
        float decay = ranges[r].decay ? (float)opt->weight_decay : 0.0f;
        if (opt->kind == OPT_SGD)
            sgd_range(params + o, grads + o, opt->first + o, n, (float)lr, (float)opt->momentum,
                      decay);
        else
            adam_range(params + o, grads + o, opt->first + o, opt->second + o, n, (float)lr,
                       (float)opt->beta1, (float)opt->beta2, correction1, correction2,
                       (float)opt->epsilon, decay);
    }
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
