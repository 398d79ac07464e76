/* Finite-difference gradient checks of every layer, the loss, and a whole model. */
#include "dptrain/check.h"
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

/* finite-difference checks: absolute tolerance 2e-3 plus 1% */
#define GRADIENT_TOLERANCE 2e-3

/* Probe loss L = Σ y·r for a random r makes dL/dy = r. */
static double dense_probe(const float *x, const float *w, const float *b, const float *r, float *y,
                          int batch, int in, int out)
{
    dense_forward(x, w, b, y, &(struct dense_shape){batch, in, out});
    return test_dot(y, r, (size_t)batch * out);
}

static void test_dense(void **state)
{
    (void)state;
    enum { B = 3, IN = 5, OUT = 4 };
    struct rng rng;
    rng_seed(&rng, 7, 0, 0, 0);
    float x[B * IN], w[OUT * IN], b[OUT], r[B * OUT], y[B * OUT];
    float dx[B * IN], dw[OUT * IN], db[OUT];
    test_fill_normal(x, B * IN, &rng);
    test_fill_normal(w, OUT * IN, &rng);
    test_fill_normal(b, OUT, &rng);
    test_fill_normal(r, B * OUT, &rng);
    dense_forward(x, w, b, y, &(struct dense_shape){B, IN, OUT});
    dense_backward(x, w, r, &(struct dense_grads){dx, dw, db}, &(struct dense_shape){B, IN, OUT});
    float *targets[3] = {x, w, b};
    float *grads[3] = {dx, dw, db};
    size_t sizes[3] = {B * IN, OUT * IN, OUT};
    const char *names[3] = {"dx", "dw", "db"};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < sizes[t]; i++) {
            float keep = targets[t][i];
            targets[t][i] = keep + STEP;
            double up = dense_probe(x, w, b, r, y, B, IN, OUT);
            targets[t][i] = keep - STEP;
            double down = dense_probe(x, w, b, r, y, B, IN, OUT);
            targets[t][i] = keep;
            test_assert_gradient(grads[t][i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, names[t], i);
        }
}

static void test_relu(void **state)
{
    (void)state;
    enum { N = 40 };
    struct rng rng;
    rng_seed(&rng, 8, 0, 0, 0);
    float x[N], y[N], r[N], dx[N];
    test_fill_normal(x, N, &rng);
    test_fill_normal(r, N, &rng);
    relu_forward(x, y, N);
    relu_backward(y, r, dx, N);
    for (size_t i = 0; i < N; i++) {
        float keep = x[i];
        x[i] = keep + STEP;
        relu_forward(x, y, N);
        double up = test_dot(y, r, N);
        x[i] = keep - STEP;
        relu_forward(x, y, N);
        double down = test_dot(y, r, N);
        x[i] = keep;
        test_assert_gradient(dx[i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, "relu dx", i);
    }
}

static void test_dropout(void **state)
{
    (void)state;
    enum { N = 200 };
    struct rng rng, mask_rng;
    rng_seed(&rng, 9, 0, 0, 0);
    float x[N], y[N], r[N], dx[N], mask[N];
    test_fill_normal(x, N, &rng);
    test_fill_normal(r, N, &rng);
    rng_seed(&mask_rng, 10, 0, 0, 0);
    dropout_forward(x, y, mask, N, 0.25f, &mask_rng);
    dropout_backward(mask, r, dx, N);
    int dropped = 0;
    for (size_t i = 0; i < N; i++) {
        dropped += mask[i] == 0.0f;
        if (mask[i] != 0.0f)
            assert_float_equal(mask[i], 1.0f / 0.75f, 1e-6);
        /* Same seed, same mask: the derivative of Σ dropout(x)·r. */
        float keep = x[i];
        x[i] = keep + STEP;
        rng_seed(&mask_rng, 10, 0, 0, 0);
        dropout_forward(x, y, mask, N, 0.25f, &mask_rng);
        double up = test_dot(y, r, N);
        x[i] = keep - STEP;
        rng_seed(&mask_rng, 10, 0, 0, 0);
        dropout_forward(x, y, mask, N, 0.25f, &mask_rng);
        double down = test_dot(y, r, N);
        x[i] = keep;
        test_assert_gradient(dx[i], (up - down) / (2 * STEP), GRADIENT_TOLERANCE, "dropout dx", i);
    }
    assert_in_range(dropped, 25, 80); /* about a quarter of 200 */
}

static void check_loss_gradient(float smoothing)
{
    enum { B = 4, C = 5 };
    struct rng rng;
    rng_seed(&rng, 11, 0, 0, 0);
    float z[B * C], dz[B * C];
    uint8_t labels[B] = {0, 4, 2, 2};
    test_fill_normal(z, B * C, &rng);
    long correct = 0;
    float scale = 1.0f / B;
    softmax_cross_entropy(&(struct loss_input){z, labels, B, C, smoothing}, &(struct loss_output){dz, scale, &correct, NULL, NULL});
    for (size_t i = 0; i < B * C; i++) {
        float keep = z[i];
        z[i] = keep + STEP;
        double up = softmax_cross_entropy(&(struct loss_input){z, labels, B, C, smoothing}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        z[i] = keep - STEP;
        double down = softmax_cross_entropy(&(struct loss_input){z, labels, B, C, smoothing}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        z[i] = keep;
        test_assert_gradient(dz[i], scale * (up - down) / (2 * STEP), GRADIENT_TOLERANCE, "dlogits", i);
    }
}

static void test_loss_gradient(void **state)
{
    (void)state;
    check_loss_gradient(0.0f);
    check_loss_gradient(0.1f);
}

static void test_loss_values(void **state)
{
    (void)state;
    /* Uniform logits: loss log(C) per sample, every class probability 1/C. */
    float z[2 * 4] = {0};
    uint8_t labels[2] = {1, 3}, predicted[2];
    float confidence[2];
    long correct = 0;
    double loss = softmax_cross_entropy(&(struct loss_input){z, labels, 2, 4, 0}, &(struct loss_output){NULL, 0, &correct, predicted, confidence});
    assert_float_equal(loss, 2 * log(4.0), 1e-9);
    assert_float_equal(confidence[0], 0.25, 1e-7);
    assert_int_equal(predicted[0], 0); /* ties go to the first class */
    /* A large logit gives a confident, correct prediction and a loss near 0. */
    z[4 + 3] = 30.0f;
    correct = 0;
    loss = softmax_cross_entropy(&(struct loss_input){z + 4, labels + 1, 1, 4, 0}, &(struct loss_output){NULL, 0, &correct, predicted, confidence});
    assert_int_equal(correct, 1);
    assert_int_equal(predicted[0], 3);
    assert_true(loss < 1e-10);
}

/* Whole model: the flat gradient buffer equals the finite differences of the mean loss. */
static void test_model_gradient(void **state)
{
    (void)state;
    enum { B = 3, IN = 6, C = 4 };
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("mlp:7,5", &(struct model_io){1, IN, 1, IN, C}, B, 0.0f, err);
    assert_non_null(m);
    assert_int_equal(m->param_count, (size_t)(IN * 7 + 7 + 7 * 5 + 5 + 5 * C + C));
    struct rng rng;
    rng_seed(&rng, 12, 0, 0, 0);
    model_init_params(m, &rng);
    test_fill_normal(m->params, m->param_count, &rng); /* biases non-zero too */
    float x[B * IN];
    uint8_t labels[B] = {3, 0, 1};
    test_fill_normal(x, B * IN, &rng);
    long correct = 0;
    memcpy(model_input(m), x, sizeof x);
    const float *z = model_forward(m, B, 1, NULL);
    softmax_cross_entropy(&(struct loss_input){z, labels, B, C, 0}, &(struct loss_output){model_grad_logits(m), 1.0f / B, &correct, NULL, NULL});
    model_backward(m, B, NULL);
    for (size_t i = 0; i < m->param_count; i++) {
        float keep = m->params[i];
        m->params[i] = keep + STEP;
        double up = softmax_cross_entropy(&(struct loss_input){model_forward(m, B, 0, NULL), labels, B, C, 0}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        m->params[i] = keep - STEP;
        double down = softmax_cross_entropy(&(struct loss_input){model_forward(m, B, 0, NULL), labels, B, C, 0}, &(struct loss_output){NULL, 0, &correct, NULL, NULL});
        m->params[i] = keep;
        test_assert_gradient(m->grads[i], (up - down) / (2 * STEP) / B, GRADIENT_TOLERANCE, "model grad", i);
    }
    model_free(m);
}

static void test_model_specs(void **state)
{
    (void)state;
    char err[DP_ERR_LEN] = "";
    struct model *m = model_create("mlp", &(struct model_io){28, 28, 1, 784, 10}, 4, 0.2f, err);
    assert_non_null(m);
    assert_int_equal(m->param_count, 235146); /* 784·256+256 + 256·128+128 + 128·10+10 */
    /* Views tile the flat buffers with no gaps: each dense layer's weights, then its biases, then
     * the next layer's weights, to the end; gradients at the same offsets. */
    const float *next = m->params;
    int dense = 0;
    for (int i = 0; i < m->layer_count; i++) {
        const struct layer *l = &m->layers[i];
        if (l->kind != LAYER_DENSE)
            continue;
        dense++;
        assert_ptr_equal(l->weight, next);
        assert_ptr_equal(l->bias, l->weight + (size_t)l->in_size * l->out_size);
        assert_ptr_equal(l->grad_weight, m->grads + (l->weight - m->params));
        assert_ptr_equal(l->grad_bias, m->grads + (l->bias - m->params));
        next = l->bias + l->out_size;
    }
    assert_int_equal(dense, 3);
    assert_ptr_equal(next, m->params + m->param_count);
    model_free(m);
    const char *bad[] = {"cnnx", "mlp:", "mlp:12,", "mlp:0", "mlp:a", "mlp:1,2,3,4,5,6,7,8,9", "MLP"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(model_create(bad[i], &(struct model_io){28, 28, 1, 784, 10}, 4, 0, err));
        assert_non_null(strstr(err, bad[i])); /* the message quotes the spec */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_loss_gradient),
        cmocka_unit_test(test_loss_values),
        cmocka_unit_test(test_model_gradient),
        cmocka_unit_test(test_model_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
