/* Convolution, im2col, max pooling, batch normalisation and the layout transposes: finite-
 * difference gradient checks, and a whole small CNN's flat gradient. */
#include "dptrain/check.h"
#include "dptrain/conv.h"
#include "dptrain/layers.h"
#include "dptrain/model.h"
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
    struct conv_shape s = {CI, CO, H, W, 3};
    struct rng rng;
    rng_seed(&rng, 21, 0, 0, 0);
    float x[CI * B * H * W], w[CO * CI * 9], r[CO * B * H * W], y[CO * B * H * W];
    float dx[CI * B * H * W], dw[CO * CI * 9], col[CI * 9 * B * H * W];
    test_fill_normal(x, sizeof x / sizeof *x, &rng);
    test_fill_normal(w, sizeof w / sizeof *w, &rng);
    test_fill_normal(r, sizeof r / sizeof *r, &rng);
    conv_backward(&s, B, &(struct conv_inputs){x, w, col, 0}, r, &(struct conv_grads){dx, dw});
    /* Reusing forward's im2col (the workspace still holding it) gives the same gradients. */
    float dx_reused[CI * B * H * W], dw_reused[CO * CI * 9];
    conv_forward(&s, B, x, w, y, col);
    conv_backward(&s, B, &(struct conv_inputs){x, w, col, 1}, r, &(struct conv_grads){dx_reused, dw_reused});
    assert_memory_equal(dx, dx_reused, sizeof dx);
    assert_memory_equal(dw, dw_reused, sizeof dw);
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
    struct conv_shape s = {CI, CO, H, W, 3};
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
    maxpool_forward(x, y, arg, P, PH, PW);
    maxpool_backward(r, arg, dx, P, PH, PW);
    assert_float_equal(y[0], fmaxf(fmaxf(x[0], x[1]), fmaxf(x[PW], x[PW + 1])), 0);
    for (size_t i = 0; i < P * PH * PW; i++) {
        float keep = x[i];
        x[i] = keep + STEP;
        maxpool_forward(x, y, arg, P, PH, PW);
        double up = test_dot(y, r, P * PH * PW / 4);
        x[i] = keep - STEP;
        maxpool_forward(x, y, arg, P, PH, PW);
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
        maxpool_forward(x, y, arg, planes, h, w);
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

static void test_batchnorm(void **state)
{
    (void)state;
    enum { C = 3, N = 10 };
    struct rng rng;
    rng_seed(&rng, 24, 0, 0, 0);
    float x[C * N], y[C * N], r[C * N], xhat[C * N], inv[C], dx[C * N];
    float gamma[C] = {1.5f, 0.7f, -0.3f}, beta[C] = {0.1f, -0.2f, 0.3f}, dg[C], db[C];
    float mean[C] = {0}, var[C] = {1, 1, 1};
    test_fill_normal(x, C * N, &rng);
    test_fill_normal(r, C * N, &rng);
    batchnorm_forward_train(&(struct batchnorm){C, N, gamma, beta, mean, var}, x, y, xhat, inv);
    batchnorm_backward(&(struct batchnorm){C, N, gamma, NULL, NULL, NULL}, r, xhat, inv, &(struct batchnorm_grads){dx, dg, db});
    /* Normalised output: each channel's xhat has mean 0 and variance 1. */
    for (int c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int i = 0; i < N; i++)
            m += xhat[c * N + i] / N;
        for (int i = 0; i < N; i++)
            v += (xhat[c * N + i] - m) * (xhat[c * N + i] - m) / N;
        assert_float_equal(m, 0, 1e-6);
        assert_float_equal(v, 1, 1e-3);
        /* Running statistics: one update with momentum 0.1 from (0, 1), with the batch's mean and
         * its unbiased variance. */
        double xm = 0, xv = 0;
        for (int i = 0; i < N; i++)
            xm += x[c * N + i] / N;
        for (int i = 0; i < N; i++)
            xv += (x[c * N + i] - xm) * (x[c * N + i] - xm) / (N - 1);
        assert_float_equal(mean[c], 0.1 * xm, 1e-6);
        assert_float_equal(var[c], 0.9 + 0.1 * xv, 1e-5);
    }
    float *targets[3] = {x, gamma, beta}, *grads[3] = {dx, dg, db};
    size_t sizes[3] = {C * N, C, C};
    const char *names[3] = {"bn dx", "bn dgamma", "bn dbeta"};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < sizes[t]; i++) {
            float keep = targets[t][i];
            targets[t][i] = keep + STEP;
            batchnorm_forward_train(&(struct batchnorm){C, N, gamma, beta, mean, var}, x, y, xhat, inv);
            double up = test_dot(y, r, C * N);
            targets[t][i] = keep - STEP;
            batchnorm_forward_train(&(struct batchnorm){C, N, gamma, beta, mean, var}, x, y, xhat, inv);
            double down = test_dot(y, r, C * N);
            targets[t][i] = keep;
            test_assert_gradient(grads[t][i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, names[t], i);
        }
    /* Evaluation with running statistics equal to the batch's reproduces training's output,
     * up to the unbiased variance the running statistics keep. */
    float batch_mean[C], batch_var[C], ye[C * N];
    for (int c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int i = 0; i < N; i++)
            m += x[c * N + i] / N;
        for (int i = 0; i < N; i++)
            v += (x[c * N + i] - m) * (x[c * N + i] - m) / N;
        batch_mean[c] = (float)m;
        batch_var[c] = (float)v;
    }
    batchnorm_forward_train(&(struct batchnorm){C, N, gamma, beta, mean, var}, x, y, xhat, inv);
    batchnorm_forward_eval(&(struct batchnorm){C, N, gamma, beta, batch_mean, batch_var}, x, ye);
    for (int i = 0; i < C * N; i++)
        assert_float_equal(ye[i], y[i], 1e-4);
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

static void test_cnn_model_gradient(void **state)
{
    (void)state;
    enum { BATCH = 2 };
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("cnn:2,p,3", 784, 10, BATCH, 0.0f, err);
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
    long correct = 0;
    memcpy(model_input(m), x, sizeof x);
    const float *z = model_forward(m, BATCH, 1, NULL);
    softmax_cross_entropy(&(struct loss_input){z, labels, BATCH, 10, 0}, &(struct loss_output){model_grad_logits(m), 1.0f / BATCH, &correct, NULL, NULL});
    model_backward(m, BATCH, NULL);
    float *analytic = malloc(m->param_count * sizeof(float));
    memcpy(analytic, m->grads, m->param_count * sizeof(float));
    /* Every parameter of the convolutional blocks; a sample of the dense layer. A ReLU crossing
     * zero inside the finite step can spoil a few quotients (a gradient that is a small sum of
     * cancelling terms moves by one term), while a wiring mistake spoils most: so at most 2% may
     * miss the tight tolerance, and none the loose one. */
    int checked = 0, missed = 0;
    for (size_t i = 0; i < m->param_count; i += i < 82 || i > 5950 ? 1 : 37) {
        float keep = m->params[i];
        m->params[i] = keep + STEP;
        double up = softmax_cross_entropy(&(struct loss_input){model_forward(m, BATCH, 1, NULL), labels, BATCH, 10, 0}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        m->params[i] = keep - STEP;
        double down = softmax_cross_entropy(&(struct loss_input){model_forward(m, BATCH, 1, NULL), labels, BATCH, 10, 0}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        m->params[i] = keep;
        double numeric = (up - down) / (2 * STEP) / BATCH, gap = fabs(analytic[i] - numeric);
        checked++;
        missed += gap > 3e-3 + 1e-2 * fabs(numeric);
        if (gap > 2e-2 + 0.1 * fabs(numeric))
            fail_msg("cnn grad[%zu]: analytic %.6f vs numeric %.6f", i, analytic[i], numeric);
    }
    if (missed * 50 > checked)
        fail_msg("cnn grad: %d of %d parameters miss the tight tolerance", missed, checked);
    free(analytic);
    model_free(m);
}

static void test_cnn_specs(void **state)
{
    (void)state;
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("cnn", 784, 10, 2, 0.1f, err);
    assert_non_null(m);
    model_free(m);
    const char *bad[] = {"cnn:", "cnn:p", "cnn:32,p,p,p,p", "cnn:f10", "cnn:32,f10,32", "cnn:x", "cnn:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        struct model *wrong = model_create(bad[i], 784, 10, 2, 0, err);
        if (wrong)
            fail_msg("spec '%s' was accepted", bad[i]);
        if (!strstr(err, bad[i])) /* the message quotes the spec */
            fail_msg("'%s': %s", bad[i], err);
    }
    assert_null(model_create("cnn", 50, 10, 2, 0, err));
    assert_non_null(strstr(err, "needs raw 28x28 images"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_gradients),
        cmocka_unit_test(test_conv_matches_direct_sum),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_maxpool_ties_and_widths),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_layout_transposes),
        cmocka_unit_test(test_cnn_model_gradient),
        cmocka_unit_test(test_cnn_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
