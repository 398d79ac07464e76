/* Metrics against hand-computed cases; optimizer steps and schedules against hand-computed
 * values; the random generators' contracts. */
#include "dptrain/check.h"
#include "dptrain/metrics.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/rng.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void test_metrics_hand_case(void **state)
{
    (void)state;
    uint8_t labels[5] = {0, 0, 1, 1, 2}, predicted[5] = {0, 1, 1, 1, 0};
    struct metrics m;
    assert_int_equal(metrics_compute(labels, predicted, 5, 3, &m), 0);
    int32_t expected[3][3] = {{1, 1, 0}, {0, 2, 0}, {1, 0, 0}};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            assert_int_equal(metrics_confusion(&m, r, c), expected[r][c]);
    assert_float_equal(m.accuracy, 0.6, 1e-12);
    assert_float_equal(m.precision[0], 0.5, 1e-12);
    assert_float_equal(m.precision[1], 2.0 / 3, 1e-12);
    assert_float_equal(m.precision[2], 0.0, 1e-12); /* never predicted: 0, as zero_division=0 */
    assert_float_equal(m.recall[0], 0.5, 1e-12);
    assert_float_equal(m.recall[1], 1.0, 1e-12);
    assert_float_equal(m.f1[1], 0.8, 1e-12);
    assert_int_equal(m.support[0], 2);
    assert_int_equal(m.support[2], 1);
    assert_float_equal(m.macro_f1, 1.3 / 3, 1e-12);
    assert_float_equal(m.weighted_f1, 0.52, 1e-12);
    assert_float_equal(m.weighted_recall, 0.6, 1e-12); /* weighted recall is accuracy */
    metrics_free(&m);
}

/* 30 classes: too many for a readable matrix, so the most confused pairs, largest first. */
static void test_confused_pairs(void **state)
{
    (void)state;
    enum { N = 300, K = 30 };
    uint8_t labels[N], predicted[N];
    for (int i = 0; i < N; i++) {
        labels[i] = (uint8_t)(i % K);
        predicted[i] = labels[i];
    }
    for (int i = 0; i < 7; i++)
        predicted[i * K + 4] = 9;  /* 4 -> 9 seven times */
    for (int i = 0; i < 3; i++)
        predicted[i * K + 20] = 1; /* 20 -> 1 three times */
    struct metrics m;
    assert_int_equal(metrics_compute(labels, predicted, N, K, &m), 0);
    const char *names[K];
    char text_names[K][8];
    for (int c = 0; c < K; c++) {
        snprintf(text_names[c], sizeof text_names[c], "c%d", c);
        names[c] = text_names[c];
    }
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    metrics_print_confusion(out, &m, names);
    fclose(out);
    assert_non_null(strstr(text, "most confused pairs of the 30 classes"));
    char *first = strstr(text, "c4 -> c9"), *second = strstr(text, "c20 -> c1");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    assert_null(strstr(text, "confusion matrix"));
    free(text);
    metrics_free(&m);
}

static void test_report_layout(void **state)
{
    (void)state;
    uint8_t labels[4] = {0, 1, 1, 0}, predicted[4] = {0, 1, 0, 0};
    struct metrics m;
    assert_int_equal(metrics_compute(labels, predicted, 4, 2, &m), 0);
    const char *names[2] = {"cat", "dog"};
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    metrics_print_report(out, &m, names);
    fclose(out);
    assert_non_null(strstr(text, "precision    recall  f1-score   support"));
    assert_non_null(strstr(text, "           cat       0.67      1.00      0.80         2"));
    assert_non_null(strstr(text, "      accuracy                           0.75         4"));
    assert_non_null(strstr(text, "     macro avg"));
    assert_non_null(strstr(text, "  weighted avg"));
    free(text);
    metrics_free(&m);
}

/* Two steps of an SGD-family optimizer on a weight and a bias (p = 1, g = 0.5, lr 0.1, momentum
 * 0.9, decay 0.1 on the weight only): the weight after one, the bias after one and after two. */
static void check_two_steps(enum optimizer_kind kind, const float expected[3])
{
    char err[256];
    struct optimizer *opt = optim_create(kind, 2, 0.9, 0.1, err);
    float p[2] = {1.0f, 1.0f}, g[2] = {0.5f, 0.5f};
    struct param_range ranges[2] = {{0, 1, 1}, {1, 1, 0}}; /* a weight, then a bias */
    optim_step(opt, p, g, ranges, 2, 0.1);
    assert_float_equal(p[0], expected[0], 1e-6);
    assert_float_equal(p[1], expected[1], 1e-6);
    optim_step(opt, p, g, ranges, 2, 0.1);
    assert_float_equal(p[1], expected[2], 1e-6);
    optim_free(opt);
}

static void test_sgd_momentum_and_decay(void **state)
{
    (void)state;
    /* v = 0.5; weight: p -= 0.1 (0.5 + 0.1·1) = 0.94; bias: p -= 0.1·0.5 = 0.95; then
     * v = 0.9·0.5 + 0.5 = 0.95; bias: 0.95 − 0.095 = 0.855 */
    check_two_steps(OPT_SGD, (const float[3]){0.94f, 0.95f, 0.855f});
}

static void test_nesterov(void **state)
{
    (void)state;
    /* v = 0.5, step g + 0.9 v = 0.95; weight: p -= 0.1 (0.95 + 0.1·1) = 0.895; bias: 1 − 0.095 =
     * 0.905; then v = 0.95, step 0.5 + 0.855 = 1.355; bias: 0.905 − 0.1355 = 0.7695 */
    check_two_steps(OPT_NESTEROV, (const float[3]){0.895f, 0.905f, 0.7695f});
}

static void test_adam_first_steps(void **state)
{
    (void)state;
    char err[256];
    struct optimizer *opt = optim_create(OPT_ADAM, 1, 0, 0, err);
    float p[1] = {0.0f}, g[1] = {-3.0f};
    struct param_range ranges[1] = {{0, 1, 1}};
    /* With bias correction the first step is lr · g/|g|, whatever the gradient's size. */
    optim_step(opt, p, g, ranges, 1, 0.01);
    assert_float_equal(p[0], 0.01f, 1e-6);
    optim_step(opt, p, g, ranges, 1, 0.01);
    assert_float_equal(p[0], 0.02f, 1e-6);
    optim_free(opt);
}

/* A sharded optimizer: the update of three slices (cut inside ranges) equals one whole update,
 * bit for bit, with decay on the weights only. */
static void test_update_in_slices(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    enum { N = 37 };
    struct param_range ranges[2] = {{0, 30, 1}, {30, 7, 0}};
    float whole[N], parts[N], grads[N];
    for (int i = 0; i < N; i++) {
        whole[i] = parts[i] = 0.1f * (float)(i % 11) - 0.5f;
        grads[i] = 0.03f * (float)((i * 7) % 13) - 0.2f;
    }
    struct optimizer *a = optim_create(OPT_ADAM, N, 0.9, 0.01, err), *b = optim_create(OPT_ADAM, N, 0.9, 0.01, err);
    assert_non_null(a);
    assert_non_null(b);
    for (int step = 0; step < 3; step++) {
        optim_step(a, whole, grads, ranges, 2, 0.01);
        size_t cuts[4] = {0, 13, 32, N};
        for (int k = 0; k < 3; k++) {
            struct optim_part part = {parts, grads, ranges, 2, cuts[k], cuts[k + 1] - cuts[k]};
            optim_step_part(b, &part, 0.01);
            b->step -= k < 2; /* one step per update, whichever slices it took */
        }
    }
    assert_memory_equal(whole, parts, sizeof whole);
    assert_memory_equal(a->first, b->first, sizeof(float) * N);
    assert_memory_equal(a->second, b->second, sizeof(float) * N);
    optim_free(a);
    optim_free(b);
}

static void test_schedules(void **state)
{
    (void)state;
    struct schedule s = {SCHEDULE_COSINE, 1.0, 10, 110};
    assert_float_equal(schedule_lr(&s, 0), 0.1, 1e-12);
    assert_float_equal(schedule_lr(&s, 9), 1.0, 1e-12);
    assert_float_equal(schedule_lr(&s, 10), 1.0, 1e-12);
    assert_float_equal(schedule_lr(&s, 60), 0.5, 1e-12);
    assert_float_equal(schedule_lr(&s, 110), 0.0, 1e-12);
    s.kind = SCHEDULE_STEP;
    assert_float_equal(schedule_lr(&s, 59), 1.0, 1e-12);
    assert_float_equal(schedule_lr(&s, 60), 0.1, 1e-12);
    assert_float_equal(schedule_lr(&s, 100), 0.01, 1e-12);
    s.kind = SCHEDULE_CONSTANT;
    assert_float_equal(schedule_lr(&s, 100), 1.0, 1e-12);
}

static void test_rng_contracts(void **state)
{
    (void)state;
    struct rng a, b, c;
    rng_seed(&a, 42, RNG_SHUFFLE, 3, 1);
    rng_seed(&b, 42, RNG_SHUFFLE, 3, 1);
    rng_seed(&c, 42, RNG_SHUFFLE, 3, 2);
    uint64_t x = rng_next(&a);
    assert_int_equal(x, rng_next(&b));
    assert_int_not_equal(x, rng_next(&c));
    enum { N = 1000 };
    uint32_t items[N];
    int seen[N] = {0};
    for (uint32_t i = 0; i < N; i++)
        items[i] = i;
    rng_shuffle(&a, items, N);
    int moved = 0;
    for (uint32_t i = 0; i < N; i++) {
        seen[items[i]]++;
        moved += items[i] != i;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > N / 2);
    double sum = 0, squares = 0;
    for (int i = 0; i < 20000; i++) {
        float z = rng_normal(&a);
        sum += z;
        squares += z * z;
    }
    assert_float_equal(sum / 20000, 0.0, 0.05);
    assert_float_equal(squares / 20000, 1.0, 0.05);
    for (int i = 0; i < 1000; i++)
        assert_true(rng_below(&a, 7) < 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_hand_case),
        cmocka_unit_test(test_confused_pairs),
        cmocka_unit_test(test_report_layout),
        cmocka_unit_test(test_sgd_momentum_and_decay),
        cmocka_unit_test(test_nesterov),
        cmocka_unit_test(test_adam_first_steps),
        cmocka_unit_test(test_update_in_slices),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_rng_contracts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
