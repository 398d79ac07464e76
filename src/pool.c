#include "dptrain/pool.h"

#include <stdlib.h>
#include <string.h>

/* Row pairs per pass of max pooling: the vertical maxima of this many input row pairs stay in
 * L1 while the horizontal pass reads them. */
enum { POOL_CHUNK = 2048 };

/* Which of the four won: 2 × row + column, the first in row-major order among equal maxima
 * (as PyTorch; equal values are common where flat background gives equal activations). The
 * right column wins a tie only with a top-row value against a bottom-row one. Its own function:
 * inlined into the loop below, GCC left it scalar. */
static __attribute__((noinline)) void pool_which(const float *restrict vmax, const uint8_t *restrict vbit,
                                                 uint8_t *restrict which, size_t outputs)
{
    for (size_t k = 0; k < outputs; k++) {
        float left = vmax[2 * k], right = vmax[2 * k + 1];
        uint8_t left_row = vbit[2 * k], right_row = vbit[2 * k + 1];
        uint8_t take_right = (right > left) | ((right == left) & (left_row > right_row));
        which[k] = (uint8_t)(take_right ? 2 * right_row + 1 : 2 * left_row);
    }
}

/* The mapped maximum of each column of `count` row pairs (which row won: vbit). */
static void vertical_pass(const float *x, float *restrict vmax, uint8_t *restrict vbit, size_t count, int width,
                          const struct pool_map *map)
{
    float scale = map->scale, shift = map->shift;
    for (size_t q = 0; q < count; q++) {
        const float *restrict top = x + q * 2 * (size_t)width, *restrict bottom = top + width;
        float *restrict m = vmax + q * (size_t)width;
        uint8_t *restrict b = vbit + q * (size_t)width;
        for (int i = 0; i < width; i++) {
            float t = top[i] * scale + shift, u = bottom[i] * scale + shift;
            m[i] = u > t ? u : t;
            b[i] = u > t;
        }
    }
}

/* The tensor is [planes][H][W] with H even, so its rows pair up without straddling planes: one
 * flat sequence of row pairs. First the maximum of each column of a pair, then of each
 * horizontal pair of those, over a flat chunk (W is even, so pairs never straddle rows). Each
 * pass is a separate plain loop that GCC vectorises; the one-loop version with stride-2 loads
 * and a byte store was scalar and took 8.6% of a CNN step (perf). */
/* Odd sides: each window read directly, the last row or column of an odd side left out (rare:
 * small odd images; the vectorised passes below need rows that pair up). */
static void maxpool_odd(const float *x, float *y, uint8_t *argmax, const struct pool_shape *s,
                        const struct pool_map *map)
{
    int oh = s->height / 2, ow = s->width / 2;
    for (size_t p = 0; p < s->planes; p++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const float *top = x + (p * (size_t)s->height + (size_t)(2 * oy)) * s->width + 2 * ox;
                float best = top[0] * map->scale + map->shift;
                uint8_t which = 0;
                for (uint8_t k = 1; k < 4; k++) {
                    float v = top[(k >> 1) * s->width + (k & 1)] * map->scale + map->shift;
                    if (v > best) {
                        best = v;
                        which = k;
                    }
                }
                size_t out = (p * (size_t)oh + (size_t)oy) * ow + (size_t)ox;
                y[out] = map->relu && best < 0.0f ? 0.0f : best;
                argmax[out] = which;
            }
}

void maxpool_forward(const float *x, float *y, uint8_t *argmax, const struct pool_shape *s,
                     const struct pool_map *map)
{
    if (s->height % 2 || s->width % 2) {
        maxpool_odd(x, y, argmax, s, map);
        return;
    }
    float vmax[POOL_CHUNK];
    uint8_t vbit[POOL_CHUNK];
    int width = s->width;
    size_t pairs = s->planes * (size_t)(s->height / 2), per_chunk = POOL_CHUNK / (size_t)width;
    for (size_t first = 0; first < pairs; first += per_chunk) {
        size_t count = pairs - first < per_chunk ? pairs - first : per_chunk;
        vertical_pass(x + first * 2 * (size_t)width, vmax, vbit, count, width, map);
        size_t outputs = count * (size_t)width / 2;
        float *restrict out = y + first * (size_t)width / 2;
        const float *restrict m = vmax;
        for (size_t k = 0; k < outputs; k++)
            out[k] = m[2 * k + 1] > m[2 * k] ? m[2 * k + 1] : m[2 * k];
        if (map->relu) /* NaN passes, as in relu_forward */
            for (size_t k = 0; k < outputs; k++)
                out[k] = out[k] < 0.0f ? 0.0f : out[k];
        pool_which(vmax, vbit, argmax + first * (size_t)width / 2, outputs);
    }
}

/* Index of the winning input of the output at row oy, column ox of plane p. */
static size_t winner(const struct pool_shape *s, size_t p, int oy, int ox, uint8_t which)
{
    return (p * (size_t)s->height + (size_t)(2 * oy + (which >> 1))) * (size_t)s->width +
           (size_t)(2 * ox + (which & 1));
}

void maxpool_backward(const float *dy, const uint8_t *argmax, float *dx, const struct pool_shape *s)
{
    int oh = s->height / 2, ow = s->width / 2;
    memset(dx, 0, s->planes * (size_t)s->height * (size_t)s->width * sizeof(float));
    for (size_t p = 0; p < s->planes; p++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                size_t k = (p * (size_t)oh + (size_t)oy) * (size_t)ow + (size_t)ox;
                dx[winner(s, p, oy, ox, argmax[k])] = dy[k];
            }
}

/* ---- the layer kind (layer.h) ---------------------------------------------------------- */

static int pool_allocate(struct layer *l, int max_batch)
{
    l->argmax = malloc((size_t)max_batch * l->out_size + 1);
    return l->argmax ? 0 : -1;
}

static void pool_release(struct layer *l)
{
    free(l->argmax);
    l->argmax = NULL;
}

static struct pool_shape layer_pool_shape(const struct layer *l, int batch)
{
    return (struct pool_shape){(size_t)l->channels * batch, l->height, l->width};
}

static void pool_layer_forward(struct layer *l, const struct layer_pass *p)
{
    struct pool_shape s = layer_pool_shape(l, p->batch);
    maxpool_forward(p->x, p->y, l->argmax, &s, &(struct pool_map){1.0f, 0.0f, 0});
}

static void pool_layer_backward(struct layer *l, const struct layer_pass *p)
{
    struct pool_shape s = layer_pool_shape(l, p->batch);
    if (p->dx)
        maxpool_backward(p->dy, l->argmax, p->dx, &s);
}

const struct layer_ops layer_maxpool = {
    .forward_name = "maxpool forward", .backward_name = "maxpool backward",
    .allocate = pool_allocate, .release = pool_release,
    .forward = pool_layer_forward, .backward = pool_layer_backward,
};
