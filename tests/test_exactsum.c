/* Exact sums (--deterministic's gradient sum): the same bits in any grouping and order, close to
 * the true sum, non-finite terms reported; the layouts of virtual shards and evaluation chunks. */
#include "dptrain/comm.h"
#include "dptrain/exactsum.h"
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

#define TERMS 12
#define N 5000

/* Terms of very different magnitudes and signs, so that float sums depend on their order. */
static void make_terms(float terms[TERMS][N])
{
    struct rng rng;
    rng_seed(&rng, 42, 9, 0, 0);
    for (int t = 0; t < TERMS; t++)
        for (int i = 0; i < N; i++)
            terms[t][i] = rng_normal(&rng) * ldexpf(1.0f, (int)rng_below(&rng, 40) - 30);
}

/* The terms summed as `groups` ranks would: each its block of terms, then the partial sums. */
static void grouped_sum(float terms[TERMS][N], int groups, int exponent, float *out)
{
    static double partial[TERMS][N], total[N];
    memset(total, 0, sizeof total);
    for (int g = 0; g < groups; g++) {
        size_t first, count;
        comm_block(TERMS, groups, g, &first, &count);
        const float *mine[TERMS];
        for (size_t t = 0; t < count; t++)
            mine[t] = terms[first + t];
        memset(partial[g], 0, sizeof partial[g]);
        exactsum_add(partial[g], mine, (int)count, N, exponent);
    }
    for (int g = groups - 1; g >= 0; g--) /* the partial sums in reverse: order must not matter */
        for (int i = 0; i < N; i++)
            total[i] += partial[g][i];
    exactsum_result(total, out, N, exponent);
}

static void test_any_grouping_same_bits(void **state)
{
    (void)state;
    static float terms[TERMS][N], one[N], other[N];
    make_terms(terms);
    double biggest = 0;
    for (int t = 0; t < TERMS; t++) {
        double m = exactsum_max_abs(terms[t], N);
        biggest = m > biggest ? m : biggest;
    }
    int exponent = exactsum_exponent(biggest, TERMS);
    grouped_sum(terms, 1, exponent, one);
    int float_differs = 0;
    for (int groups = 2; groups <= TERMS; groups++) {
        grouped_sum(terms, groups, exponent, other);
        assert_memory_equal(one, other, sizeof one);
    }
    for (int i = 0; i < N; i++) {
        double exact = 0;
        float forward = 0, backward = 0;
        for (int t = 0; t < TERMS; t++) {
            exact += terms[t][i];
            forward += terms[t][i];
            backward += terms[TERMS - 1 - t][i];
        }
        float_differs |= forward != backward;
        /* the grid is 2^-e: 48 bits below the largest term */
        assert_true(fabs(one[i] - exact) <= fabs(exact) * 1e-7 + ldexp(1.0, -exponent) * TERMS);
    }
    assert_true(float_differs); /* the test would catch a plain float sum */
}

static void test_exponent_and_limits(void **state)
{
    (void)state;
    float x[4] = {1.0f, -3.5f, 0.25f, 2.0f};
    assert_true(exactsum_max_abs(x, 4) == 3.5);
    /* 12 terms of at most 3.5 (< 2^2) stay below 2^52 */
    int e = exactsum_exponent(3.5, 12);
    assert_true(12 * 3.5 * ldexp(1.0, e) <= ldexp(1.0, 52));
    assert_true(12 * 3.5 * ldexp(1.0, e + 1) > ldexp(1.0, 52) / 2);
    assert_int_equal(exactsum_exponent(0.0, 12), 0);
    x[2] = NAN;
    assert_true(isinf(exactsum_max_abs(x, 4)));
    x[2] = -INFINITY;
    assert_true(isinf(exactsum_max_abs(x, 4)));
}

static void test_shard_and_chunk_layouts(void **state)
{
    (void)state;
    /* 12 virtual shards of 1000 items on 1..12 ranks: each rank's block is its whole shards */
    for (int ranks = 1; ranks <= 12; ranks++) {
        size_t next = 0;
        for (int r = 0; r < ranks; r++) {
            size_t first, count, shard_first, shards;
            comm_shard_block(1000, 12, ranks, r, &first, &count);
            comm_block(12, ranks, r, &shard_first, &shards);
            size_t expect_first, unused, expect_end;
            comm_block(1000, 12, (int)shard_first, &expect_first, &unused);
            comm_block(1000, 12, (int)(shard_first + shards), &expect_end, &unused);
            assert_int_equal(first, next);
            assert_int_equal(first, expect_first);
            assert_int_equal(first + count, expect_end);
            next = first + count;
        }
        assert_int_equal(next, 1000);
    }
    /* 450 items in chunks of 200 on 4 ranks: 200, 200, 50, nothing */
    size_t expected[4][2] = {{0, 200}, {200, 200}, {400, 50}, {450, 0}};
    for (int r = 0; r < 4; r++) {
        size_t first, count;
        comm_chunk_block(450, 200, 4, r, &first, &count);
        assert_int_equal(first, expected[r][0]);
        assert_int_equal(count, expected[r][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_grouping_same_bits),
        cmocka_unit_test(test_exponent_and_limits),
        cmocka_unit_test(test_shard_and_chunk_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
