#include "dptrain/batchnorm.h"

#include "dptrain/pool.h"

#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPSILON 1e-5f
#define BN_MOMENTUM 0.1f

/* Channel sums in eight float lanes (one AVX register), added into double every block so that
 * a long channel (128 images x 784 pixels) keeps its precision. GCC's vector extension, not a
 * plain loop over a lane array: GCC turned that loop into shuffles and scalar adds, and the
 * sums took 10% of a CNN step (perf). */
enum { SUM_LANES = 8, SUM_BLOCK = 256 };
typedef float lanes __attribute__((vector_size(SUM_LANES * sizeof(float))));
typedef int32_t lane_mask __attribute__((vector_size(SUM_LANES * sizeof(int32_t))));

static inline lanes load_lanes(const float *p)
{
    lanes v;
    memcpy(&v, p, sizeof v);
    return v;
}

static double lanes_total(lanes v)
{
    double total = 0;
    for (int j = 0; j < SUM_LANES; j++)
        total += v[j];
    return total;
}

/* sums[0] += Σ(a − a_shift), sums[1] += Σ(a − a_shift)·(b − b_shift) over n values: with a = b =
 * x, forward's shifted sum and sum of squares; with a = g (shift 0) and b = x (shift the mean),
 * backward's Σg and Σg·(x − mean). */
static void paired_moments(const float *a, float a_shift, const float *b, float b_shift, size_t n, double sums[2])
{
    for (size_t start = 0; start < n; start += SUM_BLOCK) {
        size_t end = n - start < SUM_BLOCK ? n : start + SUM_BLOCK, i = start;
        lanes s = {0}, p = {0};
        for (; i + SUM_LANES <= end; i += SUM_LANES) {
            lanes d = load_lanes(a + i) - a_shift;
            s += d;
            p += d * (load_lanes(b + i) - b_shift);
        }
        for (; i < end; i++) {
            float d = a[i] - a_shift;
            s[0] += d;
            p[0] += d * (b[i] - b_shift);
        }
        sums[0] += lanes_total(s);
        sums[1] += lanes_total(p);
    }
}

/* Channel c's output: ReLU(scale·x + shift), pooled or not (map->relu is set). */
static void apply(const struct batchnorm *bn, int c, const float *x, float *y, uint8_t *argmax,
                  const struct pool_map *map)
{
    float scale = map->scale, shift = map->shift;
    size_t count = (size_t)bn->samples * bn->height * bn->width;
    const float *in = x + (size_t)c * count;
    if (bn->pool) {
        size_t outputs = count / 4;
        maxpool_forward(in, y + (size_t)c * outputs, argmax + (size_t)c * outputs,
                        &(struct pool_shape){(size_t)bn->samples, bn->height, bn->width}, map);
        return;
    }
    float *restrict out = y + (size_t)c * count;
    for (size_t i = 0; i < count; i++) {
        float v = in[i] * scale + shift;
        out[i] = v < 0.0f ? 0.0f : v; /* NaN passes: a diverging rank shows in its loss */
    }
}

void batchnorm_forward_train(const struct batchnorm *bn, const float *x, float *y, const struct batchnorm_saved *saved)
{
    size_t count = (size_t)bn->samples * bn->height * bn->width;
    for (int c = 0; c < bn->channels; c++) {
        const float *in = x + (size_t)c * count;
        double sums[2] = {0, 0};
        /* Shifted by the first value so the float lanes do not lose the variance of a channel
         * whose mean is far from zero. */
        paired_moments(in, in[0], in, in[0], count, sums);
        double mean = in[0] + sums[0] / (double)count;
        double variance = sums[1] / (double)count - (sums[0] / (double)count) * (sums[0] / (double)count);
        if (variance < 0)
            variance = 0;
        float istd = (float)(1.0 / sqrt(variance + BN_EPSILON)), scale = bn->gamma[c] * istd;
        saved->mean[c] = (float)mean;
        saved->inv_std[c] = istd;
        apply(bn, c, x, y, saved->argmax, &(struct pool_map){scale, bn->beta[c] - (float)mean * scale, 1});
        double unbiased = count > 1 ? variance * (double)count / (double)(count - 1) : variance;
        bn->running_mean[c] = (1 - BN_MOMENTUM) * bn->running_mean[c] + BN_MOMENTUM * (float)mean;
        bn->running_var[c] = (1 - BN_MOMENTUM) * bn->running_var[c] + BN_MOMENTUM * (float)unbiased;
    }
}

void batchnorm_forward_eval(const struct batchnorm *bn, const float *x, float *y, uint8_t *argmax)
{
    for (int c = 0; c < bn->channels; c++) {
        float scale = bn->gamma[c] / sqrtf(bn->running_var[c] + BN_EPSILON);
        apply(bn, c, x, y, argmax, &(struct pool_map){scale, bn->beta[c] - bn->running_mean[c] * scale, 1});
    }
}

/* One channel's slices of backward's tensors. */
struct channel {
    const float *x, *y, *dy;
    const uint8_t *argmax;              /* NULL: not pooled */
    float *dx;
    size_t count;                       /* N·H·W inputs */
    int width;
};

/* Inputs per chunk of backward's first pass: the chunk's gradient stays in L1 while it is summed. */
enum { GRAD_CHUNK = 2048 };

/* v where condition holds, else 0, without a branch: whether ReLU passed is a coin toss, and
 * mispredicted branches (with GCC's byte spills around them) made a scalar scatter of the pooled
 * gradient slower than the three unfused layers (perf). NaN does not pass y > 0, as in
 * relu_backward. */
static inline float keep_if(float v, int condition)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits &= -(uint32_t)(condition != 0);
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* One row pair's inputs from its W/2 windows: each input takes its window's gradient d where
 * it is the window's winner, else 0. Four windows (eight columns) at a time in vector registers:
 * GCC left the plain loop scalar, and it was 5% of a CNN step (perf). */
static void unpool_row_pair(const float *d, const uint8_t *which, float *restrict top, int width)
{
    typedef float quad __attribute__((vector_size(4 * sizeof(float))));
    typedef int32_t quad_index __attribute__((vector_size(4 * sizeof(int32_t))));
    float *restrict bottom = top + width;
    int half = width / 2, ox = 0;
    const lane_mask columns = {0, 1, 0, 1, 0, 1, 0, 1}; /* which winner each column is */
    for (; ox + 4 <= half; ox += 4) {
        quad window;
        memcpy(&window, d + ox, sizeof window);
        quad_index winner = {which[ox], which[ox + 1], which[ox + 2], which[ox + 3]};
        lanes spread = __builtin_shufflevector(window, window, 0, 0, 1, 1, 2, 2, 3, 3);
        lane_mask at = __builtin_shufflevector(winner, winner, 0, 0, 1, 1, 2, 2, 3, 3);
        lanes up = (lanes)((lane_mask)spread & (at == columns));
        lanes down = (lanes)((lane_mask)spread & (at == columns + 2));
        memcpy(top + 2 * ox, &up, sizeof up);
        memcpy(bottom + 2 * ox, &down, sizeof down);
    }
    for (; ox < half; ox++)
        for (int column = 0; column < 2; column++) {
            top[2 * ox + column] = keep_if(d[ox], which[ox] == column);
            bottom[2 * ox + column] = keep_if(d[ox], which[ox] == 2 + column);
        }
}

/* g, the gradient at the block's input before normalisation, for the chunk of inputs starting
 * at `start`: dy where ReLU passed; when pooled, at each window's winner, 0 at the other three
 * (a chunk is whole row pairs: W ≤ GRAD_CHUNK / 2). Returns the chunk's length. */
static size_t chunk_gradient(const struct channel *ch, size_t start, float *restrict g)
{
    size_t n = ch->count - start < GRAD_CHUNK ? ch->count - start : GRAD_CHUNK;
    if (!ch->argmax) {
        for (size_t i = 0; i < n; i++)
            g[i] = keep_if(ch->dy[start + i], ch->y[start + i] > 0.0f);
        return n;
    }
    size_t pair = 2 * (size_t)ch->width;
    n -= n % pair;
    float passed[GRAD_CHUNK / 4];
    const float *restrict y = ch->y + start / 4, *restrict dy = ch->dy + start / 4;
    for (size_t k = 0; k < n / 4; k++)
        passed[k] = keep_if(dy[k], y[k] > 0.0f);
    const uint8_t *restrict which = ch->argmax + start / 4;
    for (size_t r = 0; r < n / pair; r++) {
        size_t first = r * (size_t)ch->width / 2;
        unpool_row_pair(passed + first, which + first, g + r * pair, ch->width);
    }
    return n;
}

/* dx = gamma·istd·(g − Σg/n − xhat·Σ(g·xhat)/n) with xhat = (x − mean)·istd, written as
 * gain·g − offset − slope·(x − mean). The first pass writes g into dx chunk by chunk and sums
 * it while it is in L1; the second turns it into dx in place. */
static void channel_backward(const struct channel *ch, const float *gamma, float saved[2], float grads[2])
{
    float mean = saved[0], istd = saved[1];
    double sums[2] = {0, 0};
    for (size_t start = 0, n; start < ch->count; start += n) {
        n = chunk_gradient(ch, start, ch->dx + start);
        paired_moments(ch->dx + start, 0.0f, ch->x + start, mean, n, sums);
    }
    grads[0] = (float)(istd * sums[1]);                 /* dgamma = Σ g·xhat */
    grads[1] = (float)sums[0];                          /* dbeta = Σ g */
    float gain = *gamma * istd, n_inv = 1.0f / (float)ch->count;
    float offset = gain * grads[1] * n_inv, slope = gain * istd * grads[0] * n_inv;
    float *restrict dx = ch->dx;
    const float *restrict x = ch->x;
    for (size_t i = 0; i < ch->count; i++)
        dx[i] = gain * dx[i] - offset - slope * (x[i] - mean);
}

void batchnorm_backward(const struct batchnorm *bn, const struct batchnorm_saved *saved,
                        const struct batchnorm_backward_io *io)
{
    size_t count = (size_t)bn->samples * bn->height * bn->width, outputs = bn->pool ? count / 4 : count;
    for (int c = 0; c < bn->channels; c++) {
        struct channel ch = {io->x + (size_t)c * count, io->y + (size_t)c * outputs, io->dy + (size_t)c * outputs,
                             bn->pool ? saved->argmax + (size_t)c * outputs : NULL, io->dx + (size_t)c * count, count,
                             bn->width};
        float state[2] = {saved->mean[c], saved->inv_std[c]}, grads[2];
        channel_backward(&ch, &bn->gamma[c], state, grads);
        io->dgamma[c] = grads[0];
        io->dbeta[c] = grads[1];
    }
}

/* ---- the layer kind (layer.h) ---------------------------------------------------------- */

static void bn_params(const struct layer *l, struct layer_params *p)
{
    *p = (struct layer_params){(size_t)l->channels, (size_t)l->channels, 0};
}

static void bn_init(struct layer *l, struct rng *rng)
{
    (void)rng;
    for (int c = 0; c < l->channels; c++) {
        l->weight[c] = 1.0f;
        l->bias[c] = 0.0f;
        l->running_mean[c] = 0.0f;
        l->running_var[c] = 1.0f;
    }
}

static size_t bn_buffers(const struct layer *l)
{
    return 2 * (size_t)l->channels;
}

static int bn_allocate(struct layer *l, int max_batch)
{
    l->batch_mean = tensor_alloc((size_t)l->channels);
    l->inv_std = tensor_alloc((size_t)l->channels);
    if (l->pool)
        l->argmax = malloc((size_t)max_batch * l->out_size + 1);
    return l->batch_mean && l->inv_std && (!l->pool || l->argmax) ? 0 : -1;
}

static void bn_release(struct layer *l)
{
    tensor_free(l->batch_mean);
    tensor_free(l->inv_std);
    free(l->argmax);
    l->batch_mean = l->inv_std = NULL;
    l->argmax = NULL;
}

static struct batchnorm layer_bn(const struct layer *l, int batch)
{
    return (struct batchnorm){l->channels, batch, l->height, l->width, l->pool,
                              l->weight, l->bias, l->running_mean, l->running_var};
}

static void bn_forward(struct layer *l, const struct layer_pass *p)
{
    struct batchnorm bn = layer_bn(l, p->batch);
    if (p->training)
        batchnorm_forward_train(&bn, p->x, p->y, &(struct batchnorm_saved){l->batch_mean, l->inv_std, l->argmax});
    else
        batchnorm_forward_eval(&bn, p->x, p->y, l->argmax);
}

static void bn_backward(struct layer *l, const struct layer_pass *p)
{
    struct batchnorm bn = layer_bn(l, p->batch);
    batchnorm_backward(&bn, &(struct batchnorm_saved){l->batch_mean, l->inv_std, l->argmax},
                       &(struct batchnorm_backward_io){p->x, p->y, p->dy, p->dx, l->grad_weight, l->grad_bias});
}

const struct layer_ops layer_batchnorm = {
    .forward_name = "bn+relu forward", .backward_name = "bn+relu backward",
    .params = bn_params, .init = bn_init, .buffers = bn_buffers,
    .allocate = bn_allocate, .release = bn_release,
    .forward = bn_forward, .backward = bn_backward,
};
