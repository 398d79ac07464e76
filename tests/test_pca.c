/* Under mpiexec -n 1, 2, 3: PCA recovers known components, agrees with a one-rank fit, and its
 * reconstruction error falls with K to (nearly) zero at full rank. */
#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/comm_mpi.h"
#include "dptrain/dataset.h"
#include "dptrain/pca.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_mpi.h"

static struct comm world;
enum { N = 600, DIM = 784 };

/* Two independent ±1 factors: one drives pixels 0..99 by ±60, the other pixels 200..249 by ±30. */
static uint8_t *two_factor_images(void)
{
    uint8_t *x = malloc((size_t)N * DIM);
    for (size_t i = 0; i < N; i++) {
        int a = i % 2 == 0 ? 1 : -1, b = (i / 2) % 2 == 0 ? 1 : -1;
        for (size_t p = 0; p < DIM; p++) {
            int v = 100;
            if (p < 100)
                v += 60 * a;
            else if (p >= 200 && p < 250)
                v += 30 * b;
            x[i * DIM + p] = (uint8_t)v;
        }
    }
    return x;
}

static void test_known_components(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    uint8_t *x = two_factor_images();
    size_t first, count;
    comm_block(N, world.size, world.rank, &first, &count);
    struct pca pca;
    assert_int_equal(pca_fit(&world, &(struct pca_data){x + first * DIM, count, DIM}, 3, &pca, err), 0);
    double unbiased = (double)N / (N - 1);
    double l1 = 100 * pow(60.0 / 255, 2) * unbiased, l2 = 50 * pow(30.0 / 255, 2) * unbiased;
    assert_int_equal(pca.samples, N);
    assert_float_equal(pca.explained_variance[0], l1, 1e-9);
    assert_float_equal(pca.explained_variance[1], l2, 1e-9);
    assert_float_equal(pca.explained_variance[2], 0.0, 1e-9);
    assert_float_equal(pca.explained_ratio[0], l1 / (l1 + l2), 1e-9);
    assert_float_equal(pca_variance_kept(&pca), 1.0, 1e-9);
    assert_float_equal(pca.mean[0], 100.0 / 255, 1e-12);
    for (size_t p = 0; p < DIM; p++) {
        /* Unit vectors on each block, signed so the largest entry is positive. */
        assert_float_equal(pca.basis[p], p < 100 ? 0.1f : 0.0f, 1e-5);
        assert_float_equal(pca.basis[DIM + p], p >= 200 && p < 250 ? 1 / sqrt(50.0) : 0.0, 1e-5);
    }
    pca_free(&pca);
    free(x);
}

static uint8_t *varied_images(size_t n)
{
    uint8_t *x = malloc(n * DIM);
    uint64_t state = 12345;
    for (size_t i = 0; i < n * DIM; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t p = i % DIM;
        /* Smooth structure plus noise, so many components matter. */
        x[i] = (uint8_t)((state >> 56) / 2 + (p % 28) * 4 + (i / DIM % 5) * 10);
    }
    return x;
}

static void test_ranks_agree_with_one_rank(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    enum { M = 900, K = 20 };
    uint8_t *x = varied_images(M);
    size_t first, count;
    comm_block(M, world.size, world.rank, &first, &count);
    struct pca split, whole;
    assert_int_equal(pca_fit(&world, &(struct pca_data){x + first * DIM, count, DIM}, K, &split, err), 0);
    struct comm self = comm_mpi_self();
    assert_int_equal(pca_fit(&self, &(struct pca_data){x, M, DIM}, K, &whole, err), 0);
    for (int k = 0; k < K; k++) {
        assert_float_equal(split.explained_ratio[k], whole.explained_ratio[k], 1e-10);
        for (size_t p = 0; p < DIM; p++)
            assert_float_equal(split.basis[k * DIM + p], whole.basis[k * DIM + p], 1e-4);
    }
    for (size_t p = 0; p < DIM; p++)
        assert_float_equal(split.mean[p], whole.mean[p], 1e-12);
    pca_free(&split);
    pca_free(&whole);
    free(x);
}

static double reconstruction_error(const uint8_t *x, size_t n, int k)
{
    char err[DP_ERR_LEN];
    struct comm self = comm_mpi_self();
    struct pca pca;
    assert_int_equal(pca_fit(&self, &(struct pca_data){x, n, DIM}, k, &pca, err), 0);
    float *z = malloc(n * (size_t)k * sizeof(float));
    assert_int_equal(pca_project(&pca, x, n, 1.0f, z, err), 0);
    double error = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < DIM; p++) {
            double back = pca.mean[p];
            for (int c = 0; c < k; c++)
                back += (double)z[i * k + c] * pca.basis[(size_t)c * DIM + p];
            double diff = back - x[i * DIM + p] / 255.0;
            error += diff * diff;
        }
    free(z);
    pca_free(&pca);
    return error / (double)(n * DIM);
}

static void test_reconstruction_error_falls(void **state)
{
    (void)state;
    /* A property of the fit itself, on one rank: the same under every rank count, so it runs
     * once (np1) rather than again on rank 0 of the larger runs. */
    if (world.size != 1)
        skip();
    enum { M = 1200 };
    uint8_t *x = varied_images(M);
    int ks[] = {1, 10, 50, 200, 784};
    double previous = INFINITY, first = 0;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        double e = reconstruction_error(x, M, ks[i]);
        if (i == 0)
            first = e;
        assert_true(e < previous);
        previous = e;
    }
    assert_true(previous < 1e-9 * first + 1e-10); /* full rank: exact up to rounding */
    free(x);
}

static void test_bad_component_counts(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    uint8_t x[DIM] = {0};
    struct pca pca;
    assert_int_equal(pca_fit(&world, &(struct pca_data){x, 1, DIM}, 0, &pca, err), -1);
    assert_non_null(strstr(err, "0 principal components is out of range 1..784"));
    assert_int_equal(pca_fit(&world, &(struct pca_data){x, 1, DIM}, 785, &pca, err), -1);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_components),
        cmocka_unit_test(test_ranks_agree_with_one_rank),
        cmocka_unit_test(test_reconstruction_error_falls),
        cmocka_unit_test(test_bad_component_counts),
    };
    return test_mpi_main(&argc, &argv, &world, TEST_GROUP("pca", tests, NULL, NULL));
}
