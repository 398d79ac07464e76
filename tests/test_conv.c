/* Convolution, im2col, max pooling, batch normalisation and the layout transposes: finite-
 * difference gradient checks, and a whole small CNN's flat gradient. */
#include "dptrain/batchnorm.h"
#include "dptrain/check.h"
#include "dptrain/conv.h"
#include "dptrain/layers.h"
#include "dptrain/model.h"
#include "dptrain/pool.h"
#include "dptrain/rng.h"
#include "test_util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cblas.h>

#define STEP 1e-3f

/* finite-difference checks: absolute tolerance 3e-3 plus 1% */
#define GRADIENT_TOLERANCE 3e-3

enum { B = 2, CI = 2, CO = 3, H = 4, W = 6 };

static double conv_probe(const struct conv_shape *s, const float *x, const float *w, const float *r,
                         float *y, float *col)
{
    conv_forward(s, B, x, w, y, col);
    return test_dot(y, r, (size_t)CO * B * H * W);
}

static void test_conv_gradients(void **state)
{
    (void)state;
    struct conv_shape s = {CI, CO, H, W, 3, 0, 0};
    struct rng rng;
    rng_seed(&rng, 21, 0, 0, 0);
    float x[CI * B * H * W], w[CO * CI * 9], r[CO * B * H * W], y[CO * B * H * W];
    float dx[CI * B * H * W], dw[CO * CI * 9], col[CI * 9 * B * H * W];
    test_fill_normal(x, sizeof x / sizeof *x, &rng);
    test_fill_normal(w, sizeof w / sizeof *w, &rng);
    test_fill_normal(r, sizeof r / sizeof *r, &rng);
    conv_backward(&s, B, &(struct conv_inputs){x, w, col}, r, &(struct conv_grads){dx, dw});
    float *targets[2] = {x, w}, *grads[2] = {dx, dw};
    size_t sizes[2] = {sizeof x / sizeof *x, sizeof w / sizeof *w};
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < sizes[t]; i++) {
            float keep = targets[t][i];
            targets[t][i] = keep + STEP;
            double up = conv_probe(&s, x, w, r, y, col);
            targets[t][i] = keep - STEP;
            double down = conv_probe(&s, x, w, r, y, col);
            targets[t][i] = keep;
            test_assert_gradient(grads[t][i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, t ? "conv dw" : "conv dx", i);
        }
}

static void test_conv_matches_direct_sum(void **state)
{
    (void)state;
    struct conv_shape s = {CI, CO, H, W, 3, 0, 0};
    struct rng rng;
    rng_seed(&rng, 22, 0, 0, 0);
    float x[CI * B * H * W], w[CO * CI * 9], y[CO * B * H * W], col[CI * 9 * B * H * W];
    test_fill_normal(x, sizeof x / sizeof *x, &rng);
    test_fill_normal(w, sizeof w / sizeof *w, &rng);
    conv_forward(&s, B, x, w, y, col);
    for (int co = 0; co < CO; co++)
        for (int n = 0; n < B; n++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) {
                    double sum = 0;
                    for (int ci = 0; ci < CI; ci++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int sy = yy + ky - 1, sx = xx + kx - 1;
                                if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                                    sum += w[(co * CI + ci) * 9 + ky * 3 + kx] *
                                           x[((ci * B + n) * H + sy) * W + sx];
                            }
                    assert_float_equal(y[((co * B + n) * H + yy) * W + xx], sum, 1e-4);
                }
}

/* One shape against plain sums in double: forward, dw and dx. */
static void check_conv_against_sums(const struct conv_shape *s, int batch)
{
    int cin = s->channels_in, cout = s->channels_out, h = s->height, w = s->width, plane = h * w;
    size_t nx = (size_t)cin * batch * plane, ny = (size_t)cout * batch * plane, nw = (size_t)cout * cin * 9;
    float *x = malloc(nx * sizeof(float)), *dx = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float));
    float *dy = malloc(ny * sizeof(float)), *wt = malloc(nw * sizeof(float)), *dw = malloc(nw * sizeof(float));
    float *work = malloc(conv_workspace_floats(s, batch) * sizeof(float));
    double *ex = calloc(nx, sizeof(double)), *ew = calloc(nw, sizeof(double));
    struct rng rng;
    rng_seed(&rng, 27, 0, 0, 0);
    test_fill_normal(x, nx, &rng);
    test_fill_normal(dy, ny, &rng);
    test_fill_normal(wt, nw, &rng);
    conv_forward(s, batch, x, wt, y, work);
    conv_backward(s, batch, &(struct conv_inputs){x, wt, work}, dy, &(struct conv_grads){dx, dw});
    for (int co = 0; co < cout; co++)
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < plane; p++) {
                size_t o = ((size_t)co * batch + n) * plane + p;
                double sum = 0;
                for (int ci = 0; ci < cin; ci++)
                    for (int t = 0; t < 9; t++) {
                        int sy = p / w + t / 3 - 1, sx = p % w + t % 3 - 1;
                        if (sy < 0 || sy >= h || sx < 0 || sx >= w)
                            continue;
                        size_t i = ((size_t)ci * batch + n) * plane + (size_t)sy * w + sx, k = ((size_t)co * cin + ci) * 9 + t;
                        sum += (double)wt[k] * x[i];
                        ew[k] += (double)dy[o] * x[i];
                        ex[i] += (double)dy[o] * wt[k];
                    }
                if (fabs(y[o] - sum) > 1e-4 * (1 + sqrt(cin * 9.0)))
                    fail_msg("%dx%dx%dx%d y[%zu] %g, expected %g", cin, cout, h, w, o, y[o], sum);
            }
    for (size_t k = 0; k < nw; k++)
        if (fabs(dw[k] - ew[k]) > 1e-4 * (1 + sqrt((double)batch * plane)))
            fail_msg("%dx%dx%dx%d dw[%zu] %g, expected %g", cin, cout, h, w, k, dw[k], ew[k]);
    for (size_t i = 0; i < nx; i++)
        if (fabs(dx[i] - ex[i]) > 1e-4 * (1 + sqrt(cout * 9.0)))
            fail_msg("%dx%dx%dx%d dx[%zu] %g, expected %g", cin, cout, h, w, i, dx[i], ex[i]);
    void *buffers[] = {x, dx, y, dy, wt, dw, work, ex, ew};
    for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++)
        free(buffers[b]);
}

/* Both methods (im2col and GEMM; Winograd from 16 input channels, where at least 3/4 of its tiles
 * are real), each over several chunks of samples with the last one short, and Winograd on odd
 * sides (cropped tiles); the plans of one BLAS thread and of two (im2col over the whole batch for
 * every layer), each run at both thread counts (a plan is correct at any). */
static void test_conv_methods_and_chunks(void **state)
{
    (void)state;
    struct conv_shape direct = {8, 3, 28, 28, 3, 0, 0}, winograd = {32, 4, 14, 14, 3, 0, 0};
    struct conv_shape odd = {16, 3, 7, 15, 3, 0, 0}, many_chunks = {64, 64, 14, 14, 3, 0, 0};
    struct conv_shape small = {32, 8, 7, 7, 3, 0, 0}; /* 4 tiles a row, padded to 8: im2col */
    struct conv_shape *shapes[] = {&direct, &winograd, &odd, &many_chunks, &small};
    for (int threads = 1; threads <= 2; threads++) {
        for (int i = 0; i < 5; i++)
            conv_plan(shapes[i], threads);
        if (threads == 1) {
            assert_true(direct.method == CONV_IM2COL && direct.chunk < 5 && 5 % direct.chunk != 0);
            assert_true(winograd.method == CONV_WINOGRAD && odd.method == CONV_WINOGRAD);
            assert_true(many_chunks.method == CONV_WINOGRAD && small.method == CONV_IM2COL && small.chunk > 0);
        } else {
            for (int i = 0; i < 5; i++)
                assert_true(shapes[i]->method == CONV_IM2COL && shapes[i]->chunk == 0);
        }
        for (int run_threads = 1; run_threads <= 2; run_threads++) {
            openblas_set_num_threads(run_threads);
            check_conv_against_sums(&direct, 5);
            check_conv_against_sums(&winograd, 5);
            check_conv_against_sums(&odd, 3);
            /* Winograd's chunks: its tiles of 5 images do not fit one (1 MB; 458 KB per image) */
            check_conv_against_sums(&many_chunks, 5);
            check_conv_against_sums(&small, 3);
        }
    }
    openblas_set_num_threads(1);
}

/* The plan sizes the workspace: one chunk's im2col, Winograd's tiles, or the whole batch's
 * im2col; an unplanned shape is im2col over the whole batch. */
static void test_conv_workspace(void **state)
{
    (void)state;
    struct conv_shape first = {1, 32, 28, 28, 3, 0, 0}, second = {32, 64, 14, 14, 3, 0, 0};
    size_t whole = (size_t)32 * 9 * 128 * 14 * 14;
    assert_int_equal(conv_workspace_floats(&second, 128), whole);
    conv_plan(&first, 1);
    conv_plan(&second, 1);
    assert_true(first.chunk > 0 && conv_workspace_floats(&first, 128) == (size_t)9 * first.chunk * 28 * 28);
    assert_true(conv_workspace_floats(&first, 128) * sizeof(float) <= 512 * 1024);
    assert_true(conv_workspace_floats(&second, 128) < whole / 4);
    conv_plan(&second, 2);
    assert_int_equal(conv_workspace_floats(&second, 128), whole);
}

static void test_maxpool(void **state)
{
    (void)state;
    enum { P = 3, PH = 4, PW = 6 };
    struct rng rng;
    rng_seed(&rng, 23, 0, 0, 0);
    float x[P * PH * PW], y[P * PH * PW / 4], r[P * PH * PW / 4], dx[P * PH * PW];
    uint8_t arg[P * PH * PW / 4];
    test_fill_normal(x, P * PH * PW, &rng);
    test_fill_normal(r, P * PH * PW / 4, &rng);
    struct pool_shape shape = {P, PH, PW};
    struct pool_map plain = {1.0f, 0.0f, 0};
    maxpool_forward(x, y, arg, &shape, &plain);
    maxpool_backward(r, arg, dx, &shape);
    assert_float_equal(y[0], fmaxf(fmaxf(x[0], x[1]), fmaxf(x[PW], x[PW + 1])), 0);
    for (size_t i = 0; i < P * PH * PW; i++) {
        float keep = x[i];
        x[i] = keep + STEP;
        maxpool_forward(x, y, arg, &shape, &plain);
        double up = test_dot(y, r, P * PH * PW / 4);
        x[i] = keep - STEP;
        maxpool_forward(x, y, arg, &shape, &plain);
        double down = test_dot(y, r, P * PH * PW / 4);
        x[i] = keep;
        test_assert_gradient(dx[i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, "maxpool dx", i);
    }
}

/* Against a plain reference on values with many ties (three levels), for the CNN's widths and
 * more planes than one pass holds: the same maxima, and the first maximum in row-major order. */
static void test_maxpool_ties_and_widths(void **state)
{
    (void)state;
    int shapes[][3] = {{300, 28, 28}, {700, 14, 14}, {5, 4, 6}, {1, 2, 2}};
    struct rng rng;
    rng_seed(&rng, 23, 0, 0, 0);
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int planes = shapes[t][0], h = shapes[t][1], w = shapes[t][2];
        size_t in = (size_t)planes * h * w, out = in / 4;
        float *x = malloc(in * sizeof(float)), *y = malloc(out * sizeof(float));
        uint8_t *arg = malloc(out);
        for (size_t i = 0; i < in; i++)
            x[i] = (float)rng_below(&rng, 3);
        maxpool_forward(x, y, arg, &(struct pool_shape){(size_t)planes, h, w}, &(struct pool_map){1.0f, 0.0f, 0});
        for (int p = 0; p < planes; p++)
            for (int oy = 0; oy < h / 2; oy++)
                for (int ox = 0; ox < w / 2; ox++) {
                    const float *window = x + ((size_t)p * h + 2 * oy) * w + 2 * ox;
                    float v[4] = {window[0], window[1], window[w], window[w + 1]};
                    int first = 0;
                    for (int k = 1; k < 4; k++)
                        if (v[k] > v[first])
                            first = k;
                    size_t o = ((size_t)p * (h / 2) + oy) * (w / 2) + ox;
                    assert_true(y[o] == v[first]);
                    assert_int_equal(arg[o], first);
                }
        free(x);
        free(y);
        free(arg);
    }
}

enum { BN_C = 3, BN_N = 3, BN_H = 2, BN_W = 10, BN_COUNT = BN_C * BN_N * BN_H * BN_W };

/* The block computed plainly, in double: batch statistics, normalisation, ReLU, then pooling.
 * 60 values per channel and rows of 5 windows: the vector loops' tails are covered too. */
static void batchnorm_reference(const float *x, const float *gamma, const float *beta, int pool, double *y)
{
    enum { PER = BN_N * BN_H * BN_W };
    for (int c = 0; c < BN_C; c++) {
        double mean = 0, var = 0, v[PER];
        for (int i = 0; i < PER; i++)
            mean += x[c * PER + i] / PER;
        for (int i = 0; i < PER; i++)
            var += (x[c * PER + i] - mean) * (x[c * PER + i] - mean) / PER;
        for (int i = 0; i < PER; i++)
            v[i] = fmax(0, gamma[c] * (x[c * PER + i] - mean) / sqrt(var + 1e-5) + beta[c]);
        if (!pool) {
            memcpy(y + c * PER, v, sizeof v);
            continue;
        }
        for (int n = 0; n < BN_N; n++)
            for (int oy = 0; oy < BN_H / 2; oy++)
                for (int ox = 0; ox < BN_W / 2; ox++) {
                    const double *w = v + (n * BN_H + 2 * oy) * BN_W + 2 * ox;
                    y[((c * BN_N + n) * (BN_H / 2) + oy) * (BN_W / 2) + ox] = fmax(fmax(w[0], w[1]), fmax(w[BN_W], w[BN_W + 1]));
                }
    }
}

/* Batch normalisation with ReLU, plain and pooled: the output against the plain reference, the
 * running statistics, every gradient against finite differences (gamma of both signs), and
 * evaluation with the batch's statistics as running ones. */
static void test_batchnorm(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++) {
        int outputs = pool ? BN_COUNT / 4 : BN_COUNT;
        struct rng rng;
        rng_seed(&rng, 24, 0, 0, 0);
        float x[BN_COUNT], y[BN_COUNT], r[BN_COUNT], dx[BN_COUNT], batch_mean[BN_C], inv[BN_C];
        float gamma[BN_C] = {1.5f, 0.7f, -0.3f}, beta[BN_C] = {0.1f, -0.2f, 0.3f}, dg[BN_C], db[BN_C];
        float mean[BN_C] = {0}, var[BN_C] = {1, 1, 1};
        uint8_t arg[BN_COUNT];
        double expected[BN_COUNT];
        test_fill_normal(x, BN_COUNT, &rng);
        test_fill_normal(r, BN_COUNT, &rng);
        struct batchnorm bn = {BN_C, BN_N, BN_H, BN_W, pool, gamma, beta, mean, var};
        struct batchnorm_saved saved = {batch_mean, inv, arg};
        batchnorm_forward_train(&bn, x, y, &saved);
        batchnorm_reference(x, gamma, beta, pool, expected);
        for (int i = 0; i < outputs; i++)
            assert_float_equal(y[i], expected[i], 1e-5);
        batchnorm_backward(&bn, &saved, &(struct batchnorm_backward_io){x, y, r, dx, dg, db});
        /* Running statistics: one update with momentum 0.1 from (0, 1), with the batch's mean and
         * its unbiased variance. */
        enum { PER = BN_N * BN_H * BN_W };
        float eval_mean[BN_C], eval_var[BN_C];
        for (int c = 0; c < BN_C; c++) {
            double xm = 0, xv = 0;
            for (int i = 0; i < PER; i++)
                xm += x[c * PER + i] / PER;
            for (int i = 0; i < PER; i++)
                xv += (x[c * PER + i] - xm) * (x[c * PER + i] - xm) / (PER - 1);
            assert_float_equal(mean[c], 0.1 * xm, 1e-6);
            assert_float_equal(var[c], 0.9 + 0.1 * xv, 1e-5);
            eval_mean[c] = (float)xm;
            eval_var[c] = (float)(xv * (PER - 1) / PER);
        }
        float *targets[3] = {x, gamma, beta}, *grads[3] = {dx, dg, db};
        size_t sizes[3] = {BN_COUNT, BN_C, BN_C};
        const char *names[2][3] = {{"bn dx", "bn dgamma", "bn dbeta"}, {"pooled bn dx", "pooled bn dgamma", "pooled bn dbeta"}};
        /* A ReLU kink within the step spoils a quotient: such a value is checked again with a
         * tenth of the step, where a wiring mistake still shows. */
        for (int t = 0; t < 3; t++)
            for (size_t i = 0; i < sizes[t]; i++) {
                double numeric = 0;
                for (float step = STEP; step > STEP / 20; step /= 10) {
                    float keep = targets[t][i];
                    targets[t][i] = keep + step;
                    batchnorm_forward_train(&bn, x, y, &saved);
                    double up = test_dot(y, r, (size_t)outputs);
                    targets[t][i] = keep - step;
                    batchnorm_forward_train(&bn, x, y, &saved);
                    double down = test_dot(y, r, (size_t)outputs);
                    targets[t][i] = keep;
                    numeric = (up - down) / (2 * step);
                    if (fabs(grads[t][i] - numeric) <= GRADIENT_TOLERANCE + 1e-2 * fabs(numeric))
                        break;
                }
                test_assert_gradient(grads[t][i], numeric, GRADIENT_TOLERANCE, names[pool][t], i);
            }
        /* Evaluation with the batch's statistics as the running ones reproduces training. */
        float ye[BN_COUNT];
        uint8_t eval_arg[BN_COUNT];
        batchnorm_forward_train(&bn, x, y, &saved);
        batchnorm_forward_eval(&(struct batchnorm){BN_C, BN_N, BN_H, BN_W, pool, gamma, beta, eval_mean, eval_var},
                               x, ye, eval_arg);
        for (int i = 0; i < outputs; i++)
            assert_float_equal(ye[i], y[i], 1e-4);
    }
}

/* The block's backward in double for one channel of n values in planes of h x w: y = ReLU of
 * the normalised x (pooled when pool), r the gradient of y; writes dx and returns dgamma, dbeta. */
static void reference_channel_backward(const float *x, const float *r, const int shape[4], float gamma,
                                       double *dx, double grads[2])
{
    int n = shape[0] * shape[1] * shape[2], w = shape[2], pool = shape[3];
    double mean = 0, var = 0, beta = 0.1;
    for (int i = 0; i < n; i++)
        mean += x[i] / (double)n;
    for (int i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean) / n;
    double istd = 1 / sqrt(var + 1e-5), *g = calloc((size_t)n, sizeof(double));
    for (int i = 0, k = 0; i < n; i += pool ? 2 : 1) {
        if (pool && (i / w) % 2) { /* a bottom row: its windows were done with the top row */
            i += w - 2;
            continue;
        }
        int best = i;
        if (pool) {
            int cells[4] = {i, i + 1, i + w, i + w + 1};
            for (int c = 1; c < 4; c++)
                if (gamma * (x[cells[c]] - mean) > gamma * (x[best] - mean))
                    best = cells[c];
        }
        if (gamma * (x[best] - mean) * istd + beta > 0)
            g[best] = r[k];
        k++;
    }
    grads[0] = grads[1] = 0;
    for (int i = 0; i < n; i++) {
        grads[0] += g[i] * (x[i] - mean) * istd;
        grads[1] += g[i];
    }
    for (int i = 0; i < n; i++)
        dx[i] = gamma * istd * (g[i] - grads[1] / n - (x[i] - mean) * istd * grads[0] / n);
    free(g);
}

/* CNN-sized channels (8 images of 28 x 28: several chunks of backward's first pass), pooled and
 * not: the gradients against the reference in double. */
static void test_batchnorm_large(void **state)
{
    (void)state;
    enum { C = 2, N = 8, SIDE = 28, PER = N * SIDE * SIDE };
    float *x = malloc(C * PER * sizeof(float)), *y = malloc(C * PER * sizeof(float));
    float *r = malloc(C * PER * sizeof(float)), *dx = malloc(C * PER * sizeof(float));
    double *expected = malloc(PER * sizeof(double));
    float gamma[C] = {1.2f, -0.8f}, beta[C] = {0.1f, 0.1f}, mean[C] = {0}, var[C] = {1, 1};
    float batch_mean[C], inv[C], dg[C], db[C];
    uint8_t *arg = malloc(C * PER);
    struct rng rng;
    rng_seed(&rng, 28, 0, 0, 0);
    test_fill_normal(x, C * PER, &rng);
    test_fill_normal(r, C * PER, &rng);
    for (int pool = 0; pool <= 1; pool++) {
        struct batchnorm bn = {C, N, SIDE, SIDE, pool, gamma, beta, mean, var};
        struct batchnorm_saved saved = {batch_mean, inv, arg};
        batchnorm_forward_train(&bn, x, y, &saved);
        batchnorm_backward(&bn, &saved, &(struct batchnorm_backward_io){x, y, r, dx, dg, db});
        for (int c = 0; c < C; c++) {
            double grads[2];
            reference_channel_backward(x + c * PER, r + c * (pool ? PER / 4 : PER), (int[4]){N, SIDE, SIDE, pool},
                                       gamma[c], expected, grads);
            assert_float_equal(dg[c], grads[0], 1e-3 * (1 + fabs(grads[0])));
            assert_float_equal(db[c], grads[1], 1e-3 * (1 + fabs(grads[1])));
            for (int i = 0; i < PER; i++)
                if (fabs(dx[c * PER + i] - expected[i]) > 1e-4)
                    fail_msg("pool %d channel %d dx[%d]: %g, expected %g", pool, c, i, dx[c * PER + i], expected[i]);
        }
    }
    void *buffers[] = {x, y, r, dx, expected, arg};
    for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++)
        free(buffers[b]);
}

/* A channel whose mean is far from zero (1000 + noise of 0.01): the statistics keep its
 * variance, and a long channel (128 images x 28 x 28, as the CNN's first block) keeps its
 * mean and variance to float precision. */
static void test_batchnorm_precision(void **state)
{
    (void)state;
    enum { N = 128, SIDE = 28, COUNT = N * SIDE * SIDE };
    float *x = malloc(COUNT * sizeof(float)), *y = malloc(COUNT * sizeof(float));
    float gamma = 1, beta = 0, mean = 0, var = 1, batch_mean, inv;
    struct rng rng;
    rng_seed(&rng, 26, 0, 0, 0);
    double sum = 0, squares = 0;
    for (int i = 0; i < COUNT; i++) {
        x[i] = 1000.0f + 0.01f * rng_normal(&rng);
        sum += x[i];
    }
    for (int i = 0; i < COUNT; i++)
        squares += (x[i] - sum / COUNT) * (x[i] - sum / COUNT);
    struct batchnorm bn = {1, N, SIDE, SIDE, 0, &gamma, &beta, &mean, &var};
    batchnorm_forward_train(&bn, x, y, &(struct batchnorm_saved){&batch_mean, &inv, NULL});
    assert_float_equal(batch_mean, sum / COUNT, 1e-3);
    assert_float_equal(1.0 / ((double)inv * inv), squares / COUNT + 1e-5, 2e-6);
    free(x);
    free(y);
}

static void test_layout_transposes(void **state)
{
    (void)state;
    enum { C = 3, N = 4, P = 5 };
    float in[C * N * P], rows[C * N * P], back[C * N * P];
    for (int i = 0; i < C * N * P; i++)
        in[i] = (float)i;
    channels_to_rows(in, rows, C, N, P);
    assert_float_equal(rows[(1 * C + 2) * P + 3], in[(2 * N + 1) * P + 3], 0); /* n=1, c=2, p=3 */
    rows_to_channels(rows, back, C, N, P);
    assert_memory_equal(in, back, sizeof in);
}

/* Which parameters a gradient check visits: every one, but only each `step`-th of [from, to]. */
struct sampled {
    size_t from, to, step;
};

/* The batch in model_input(m) with `labels`: each visited parameter's gradient against the central
 * finite difference of the mean loss. A ReLU crossing zero inside the finite step can spoil a few
 * quotients (a gradient that is a small sum of cancelling terms moves by one term), while a wiring
 * mistake spoils most: so at most 2% may miss the tight tolerance, and none the loose one. */
static void check_model_gradient(struct model *m, const uint8_t *labels, int batch, const struct sampled *visit,
                                 const char *what)
{
    int classes = m->classes;
    long correct = 0;
    const float *z = model_forward(m, batch, 1, NULL);
    softmax_cross_entropy(&(struct loss_input){z, labels, batch, classes, 0}, &(struct loss_output){model_grad_logits(m), 1.0f / batch, &correct, NULL, NULL});
    model_backward(m, batch, NULL);
    float *analytic = malloc(m->param_count * sizeof(float));
    memcpy(analytic, m->grads, m->param_count * sizeof(float));
    int checked = 0, missed = 0;
    for (size_t i = 0; i < m->param_count; i += i < visit->from || i > visit->to ? 1 : visit->step) {
        float keep = m->params[i];
        double loss[2];
        for (int side = 0; side < 2; side++) {
            m->params[i] = keep + (side ? -STEP : STEP);
            loss[side] = softmax_cross_entropy(&(struct loss_input){model_forward(m, batch, 1, NULL), labels, batch, classes, 0}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        }
        m->params[i] = keep;
        double numeric = (loss[0] - loss[1]) / (2 * STEP) / batch, gap = fabs(analytic[i] - numeric);
        checked++;
        missed += gap > 3e-3 + 1e-2 * fabs(numeric);
        if (gap > 2e-2 + 0.1 * fabs(numeric))
            fail_msg("%s grad[%zu]: analytic %.6f vs numeric %.6f", what, i, analytic[i], numeric);
    }
    if (missed * 50 > checked)
        fail_msg("%s grad: %d of %d parameters miss the tight tolerance", what, missed, checked);
    free(analytic);
}

static void test_cnn_model_gradient(void **state)
{
    (void)state;
    enum { BATCH = 2 };
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("cnn:2,p,3", &(struct model_io){28, 28, 1, 784, 10}, BATCH, 0.0f, err);
    if (!m)
        fail_msg("%s", err);
    assert_int_equal(m->param_count, (size_t)(18 + 4 + 54 + 6 + 3 * 14 * 14 * 10 + 10));
    assert_int_equal(m->buffer_count, (size_t)(4 + 6));
    struct rng rng;
    rng_seed(&rng, 25, 0, 0, 0);
    model_init_params(m, &rng);
    float x[BATCH * 784];
    uint8_t labels[BATCH] = {4, 9};
    test_fill_normal(x, BATCH * 784, &rng);
    memcpy(model_input(m), x, sizeof x);
    /* Every parameter of the convolutional blocks; a sample of the dense layer. */
    check_model_gradient(m, labels, BATCH, &(struct sampled){82, 5950, 37}, "cnn");
    model_free(m);
}

static void test_cnn_specs(void **state)
{
    (void)state;
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("cnn", &(struct model_io){28, 28, 1, 784, 10}, 2, 0.1f, err);
    assert_non_null(m);
    model_free(m);
    const char *bad[] = {"cnn:", "cnn:p", "cnn:32,p,p,p,p,p", "cnn:f10", "cnn:32,f10,32", "cnn:x", "cnn:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        struct model *wrong = model_create(bad[i], &(struct model_io){28, 28, 1, 784, 10}, 2, 0, err);
        if (wrong)
            fail_msg("spec '%s' was accepted", bad[i]);
        if (!strstr(err, bad[i])) /* the message quotes the spec */
            fail_msg("'%s': %s", bad[i], err);
    }
    assert_null(model_create("cnn", &(struct model_io){28, 28, 1, 50, 10}, 2, 0, err));
    assert_non_null(strstr(err, "needs the raw 28x28x1 images"));
    /* pooling a side of 1 */
    assert_null(model_create("cnn:4,p,p", &(struct model_io){3, 9, 1, 27, 2}, 2, 0, err));
    assert_non_null(strstr(err, "pools a 1x4 feature map"));
}

/* A CNN over colour images with odd sides (5x7x3): the first layer reorders [N][H][W][C] to
 * channel-major, the pooling of the odd map is a layer of its own that drops the last row and
 * column (5x7 -> 2x3), and every parameter's gradient matches its finite difference. */
static void test_cnn_colour_odd_gradient(void **state)
{
    (void)state;
    enum { BATCH = 3, ROWS5 = 5, COLS7 = 7, C = 3, K = 4, IN = ROWS5 * COLS7 * C };
    char err[DP_ERR_LEN] = "";
    /* the reordering itself: [n][p][c] to [c][n][p] and back */
    float pixels[2 * 6 * C], planes[2 * 6 * C], back[2 * 6 * C];
    for (int n = 0; n < 2; n++)
        for (int p = 0; p < 6; p++)
            for (int c = 0; c < C; c++)
                pixels[(n * 6 + p) * C + c] = (float)(100 * n + 10 * p + c);
    pixels_to_channels(pixels, planes, C, 2, 6);
    for (int c = 0; c < C; c++)
        for (int n = 0; n < 2; n++)
            for (int p = 0; p < 6; p++)
                assert_true(planes[(c * 2 + n) * 6 + p] == (float)(100 * n + 10 * p + c));
    channels_to_pixels(planes, back, C, 2, 6);
    assert_memory_equal(back, pixels, sizeof pixels);
    struct model *m = model_create("cnn:2,p,3", &(struct model_io){ROWS5, COLS7, C, IN, K}, BATCH, 0.0f, err);
    if (!m)
        fail_msg("%s", err);
    assert_int_equal(m->layers[0].kind, LAYER_TO_CHANNELS);
    assert_int_equal(m->layers[3].kind, LAYER_MAXPOOL); /* to_channels, conv, bn, pool */
    assert_int_equal(m->layers[3].out_size, 2 * 2 * 3);
    assert_int_equal(m->param_count, (size_t)(2 * 3 * 9 + 4 + 3 * 2 * 9 + 6 + 3 * 2 * 3 * K + K));
    struct rng rng;
    rng_seed(&rng, 26, 0, 0, 0);
    model_init_params(m, &rng);
    float x[BATCH * IN];
    uint8_t labels[BATCH] = {3, 0, 2};
    test_fill_normal(x, BATCH * IN, &rng);
    memcpy(model_input(m), x, sizeof x);
    check_model_gradient(m, labels, BATCH, &(struct sampled){0, 0, 1}, "colour cnn"); /* every parameter */
    model_free(m);
}

/* Odd sides: each output the maximum of its 2x2 window, the last row and column left out, and
 * backward placing each gradient at its window's winner. */
static void test_pool_odd(void **state)
{
    (void)state;
    enum { P = 2, PH = 5, PW = 3 };
    float x[P * PH * PW], y[P * 2 * 1], dx[P * PH * PW], dy[P * 2 * 1] = {1, 2, 3, 4};
    uint8_t argmax[P * 2];
    for (int i = 0; i < P * PH * PW; i++)
        x[i] = (float)((i * 37) % 11);
    maxpool_forward(x, y, argmax, &(struct pool_shape){P, PH, PW}, &(struct pool_map){1.0f, 0.0f, 0});
    maxpool_backward(dy, argmax, dx, &(struct pool_shape){P, PH, PW});
    for (int p = 0; p < P; p++)
        for (int oy = 0; oy < 2; oy++) {
            const float *top = x + (p * PH + 2 * oy) * PW;
            float best = fmaxf(fmaxf(top[0], top[1]), fmaxf(top[PW], top[PW + 1]));
            assert_true(y[p * 2 + oy] == best);
        }
    float total = 0;
    for (int i = 0; i < P * PH * PW; i++)
        total += dx[i];
    assert_true(total == 10.0f); /* every gradient placed once */
    for (int p = 0; p < P; p++)
        for (int r = 0; r < PH; r++)
            assert_true(dx[(p * PH + r) * PW + 2] == 0.0f && (r < 4 || dx[(p * PH + r) * PW] == 0.0f));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_gradients),
        cmocka_unit_test(test_conv_matches_direct_sum),
        cmocka_unit_test(test_conv_methods_and_chunks),
        cmocka_unit_test(test_conv_workspace),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_maxpool_ties_and_widths),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_batchnorm_large),
        cmocka_unit_test(test_batchnorm_precision),
        cmocka_unit_test(test_layout_transposes),
        cmocka_unit_test(test_cnn_model_gradient),
        cmocka_unit_test(test_cnn_specs),
        cmocka_unit_test(test_cnn_colour_odd_gradient),
        cmocka_unit_test(test_pool_odd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
