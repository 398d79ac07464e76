/* Kernel figures for scripts/bench.sh, measured on this machine in the same run as the training
 * figures they are compared with.
 *
 *   bench_kernels sgemm                 single-core cblas_sgemm peak (GFLOP/s), square 1024..2048
 *   mpiexec -n 2 bench_kernels allreduce|iallreduce|rsag N [REPS]
 *                                        median seconds of one sum of N floats over the ranks, by
 *                                        MPI_Allreduce, MPI_Iallreduce + MPI_Wait, or
 *                                        MPI_Reduce_scatter + MPI_Allgatherv, over REPS sums
 *                                        (300; fewer for large sums on slow links) after
 *                                        min(REPS, 20) untimed
 *
 * Prints "name value" lines; exits non-zero with one line on stderr on any failure. */
#include "dptrain/check.h"
#include "dptrain/tensor.h"

#include <cblas.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Best of several repetitions per size: the peak the library reaches, not an average over noise. */
static int sgemm_peak(void)
{
    openblas_set_num_threads(1);
    double best = 0;
    int best_n = 0;
    for (int n = 1024; n <= 2048; n *= 2) {
        size_t count = (size_t)n * n;
        float *a = tensor_alloc(count), *b = tensor_alloc(count), *c = tensor_alloc(count);
        if (!a || !b || !c) {
            fprintf(stderr, "bench_kernels: cannot allocate %d x %d matrices\n", n, n);
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            a[i] = (float)(i % 7) * 0.25f;
            b[i] = (float)(i % 5) * 0.5f;
        }
        for (int rep = 0; rep < 5; rep++) {
            double start = MPI_Wtime();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double seconds = MPI_Wtime() - start;
            double gflops = 2.0 * n * n * (double)n / seconds * 1e-9;
            if (gflops > best) {
                best = gflops;
                best_n = n;
            }
        }
        tensor_free(a);
        tensor_free(b);
        tensor_free(c);
    }
    /* The kernels OpenBLAS chose (OPENBLAS_CORETYPE can force others): figures depend on them. */
    printf("sgemm_peak_gflops %.2f\nsgemm_peak_size %d\nopenblas_core %s\n", best, best_n, openblas_get_corename());
    return 0;
}

/* One sum over the ranks by the chosen method: MPI_Allreduce, MPI_Iallreduce + MPI_Wait, or
 * MPI_Reduce_scatter + MPI_Allgatherv (the ring's two halves, called directly). */
static int sum_once(const char *method, float *data, long count, int *counts, int *displs)
{
    if (strcmp(method, "allreduce") == 0)
        return MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (strcmp(method, "iallreduce") == 0) {
        MPI_Request request;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request);
        return rc != MPI_SUCCESS ? rc : MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int rc = MPI_Reduce_scatter(MPI_IN_PLACE, data, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return rc;
    /* in place: this rank's block arrived at the start of data; move it to its offset */
    memmove(data + displs[rank], data, (size_t)counts[rank] * sizeof(float));
    return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}

/* Small integers: every sum is exact in float whatever the order, so a collective that loses,
 * repeats or misplaces a block (as a broken algorithm or component would) is caught. */
static void fill_addends(float *data, long count, int rank)
{
    for (long i = 0; i < count; i++)
        data[i] = (float)(rank + 1 + i % 5);
}

static float expected_sum(long i, int size)
{
    return (float)(size * (size + 1) / 2 + size * (i % 5));
}

/* The first element that is not the sum over the ranks, or -1. */
static long sum_wrong(const float *data, long count, int size)
{
    for (long i = 0; i < count; i++)
        if (data[i] != expected_sum(i, size))
            return i;
    return -1;
}

static int allreduce_time(const char *method, long count, int reps)
{
    char err[DP_ERR_LEN];
    int rank = 0;
    double *times = malloc(sizeof(double) * (size_t)reps);
    float *data = tensor_alloc((size_t)count);
    CHECK_PTR(times, "cannot allocate");
    CHECK_PTR(data, "cannot allocate %ld floats", count);
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank failed");
    int size = 1;
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size failed");
    int counts[256], displs[256];
    if (size > 256)
        FAIL("at most 256 ranks");
    fill_addends(data, count, rank);
    for (int r = 0; r < size; r++) {
        displs[r] = (int)(count * r / size);
        counts[r] = (int)(count * (r + 1) / size) - displs[r];
    }
    int warm = reps < 20 ? reps : 20; /* the first sums set up connections and buffers */
    for (int rep = -warm; rep < reps; rep++) {
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD), "barrier failed");
        double start = MPI_Wtime();
        CHECK_MPI(sum_once(method, data, count, counts, displs), "%s failed", method);
        double seconds = MPI_Wtime() - start, slowest = 0;
        CHECK_MPI(MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "allreduce failed");
        if (rep >= 0)
            times[rep] = slowest;
        long wrong = sum_wrong(data, count, size);
        if (wrong >= 0)
            FAIL("%s of %ld floats on %d ranks: element %ld is %g, not the sum %g", method, count, size, wrong,
                 (double)data[wrong], (double)expected_sum(wrong, size));
        fill_addends(data, count, rank);
    }
    qsort(times, (size_t)reps, sizeof *times, compare_doubles);
    if (rank == 0)
        printf("%s_floats %ld\n%s_median_seconds %.6f\n", method, count, method, times[reps / 2]);
    free(times);
    tensor_free(data);
    return 0;
fail:
    fprintf(stderr, "bench_kernels: %s\n", err);
    free(times);
    tensor_free(data);
    return 1;
}

/* Does a row of a GEMM's result depend on the other rows computed with it? The MLP's three
 * forward products (batch x 784 x 256, x 256 x 128, x 128 x 10) for units of 11 rows: each unit
 * alone against the same rows in one call with all 12 units stacked (--deterministic's reason for
 * one call per unit). Prints how many unit blocks differ in any bit. */
static int gemm_rows(void)
{
    enum { UNIT = 11, UNITS = 12, ROWS = UNIT * UNITS };
    const int shapes[3][2] = {{784, 256}, {256, 128}, {128, 10}};
    int differ = 0, blocks = 0;
    for (int s = 0; s < 3; s++) {
        int k = shapes[s][0], n = shapes[s][1];
        float *x = tensor_alloc((size_t)ROWS * k), *w = tensor_alloc((size_t)n * k);
        float *all = tensor_alloc((size_t)ROWS * n), *alone = tensor_alloc((size_t)UNIT * n);
        if (!x || !w || !all || !alone) {
            fprintf(stderr, "bench_kernels: cannot allocate\n");
            return 1;
        }
        for (size_t i = 0; i < (size_t)ROWS * k; i++)
            x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (size_t i = 0; i < (size_t)n * k; i++)
            w[i] = (float)((i * 40503u) % 997) / 997.0f - 0.5f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ROWS, n, k, 1.0f, x, k, w, k, 0.0f, all, n);
        for (int u = 0; u < UNITS; u++, blocks++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, UNIT, n, k, 1.0f, x + (size_t)u * UNIT * k, k, w, k,
                        0.0f, alone, n);
            differ += memcmp(alone, all + (size_t)u * UNIT * n, sizeof(float) * UNIT * n) != 0;
        }
        tensor_free(x);
        tensor_free(w);
        tensor_free(all);
        tensor_free(alone);
    }
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("gemm_rows_differ %d of %d unit blocks (OpenBLAS kernels %s)\n", differ, blocks,
           core ? core : openblas_get_corename());
    return 0;
}

int main(int argc, char **argv)
{
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "bench_kernels: cannot start MPI\n");
        return 1;
    }
    int status = 2;
    if (argc == 2 && strcmp(argv[1], "sgemm") == 0)
        status = sgemm_peak();
    else if (argc == 2 && strcmp(argv[1], "gemm-rows") == 0)
        status = gemm_rows();
    else if ((argc == 3 || argc == 4) &&
             (strcmp(argv[1], "allreduce") == 0 || strcmp(argv[1], "iallreduce") == 0 ||
              strcmp(argv[1], "rsag") == 0) &&
             atol(argv[2]) > 0 && (argc == 3 || (atoi(argv[3]) >= 1 && atoi(argv[3]) <= 100000)))
        status = allreduce_time(argv[1], atol(argv[2]), argc == 4 ? atoi(argv[3]) : 300);
    else
        fprintf(stderr, "usage: bench_kernels sgemm | gemm-rows | allreduce|iallreduce|rsag FLOATS [REPS 1..100000]\n");
    MPI_Finalize();
    return status;
}
