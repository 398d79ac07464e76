/* Under mpiexec -n 1, 2, 3: the allreduced gradient of one global batch split across the ranks
 * equals the gradient of the same samples on one rank, and the optimizer step that follows
 * leaves bitwise identical parameters on every rank; bucketing, bf16 and PowerSGD on the wire. */
#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/comm_mpi.h"
#include "dptrain/dataset.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/reducer.h"
#include "dptrain/shards.h"
#include "dptrain/step.h"

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

enum { GLOBAL = 37, INPUT = 20, CLASSES = 10 };

static float input_value(size_t sample, size_t feature)
{
    return sinf((float)(sample * 31 + feature * 7)) * 1.5f;
}

static struct model *make_model(int capacity)
{
    char err[DP_ERR_LEN];
    struct model *m = model_create("mlp:16,12", &(struct model_io){1, INPUT, 1, INPUT, CLASSES}, capacity, 0.0f, err);
    assert_non_null(m);
    struct rng rng;
    rng_seed(&rng, 5, RNG_INIT, 0, 0);
    model_init_params(m, &rng);
    return m;
}

static void load_rows(struct model *m, uint8_t *labels, size_t first, size_t count)
{
    float *x = model_input(m);
    for (size_t i = 0; i < count; i++) {
        for (size_t f = 0; f < INPUT; f++)
            x[i * INPUT + f] = input_value(first + i, f);
        labels[i] = (uint8_t)((first + i) * 7 % CLASSES);
    }
}

/* One global batch through the production path: a reducer over comm (bucket_bytes 0: the fused
 * allreduce that training uses by default; bf16: bfloat16 on the wire) and step_batch_gradient. */
static void gradient_on_wire(const struct comm *comm, struct model *m, const uint8_t *labels, int n,
                             size_t bucket_bytes, int bf16)
{
    char err[DP_ERR_LEN];
    struct reducer r;
    struct batch b = {labels, n, GLOBAL, 0.0f, NULL};
    struct batch_sums sums = {0, 0};
    assert_int_equal(reducer_init(&r, comm, m, &(struct reducer_options){bucket_bytes, bf16, 0, 0}, err), 0);
    assert_int_equal(step_batch_gradient(m, &r, &b, &sums, err), 0);
    assert_int_equal(reducer_free(&r, err), 0);
}

static void gradient(const struct comm *comm, struct model *m, const uint8_t *labels, int n, size_t bucket_bytes)
{
    gradient_on_wire(comm, m, labels, n, bucket_bytes, 0);
}

static void test_split_gradient_matches_single_rank(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    uint8_t labels[GLOBAL];
    /* Reference: all samples on one rank (a communicator of one). */
    struct comm self = comm_mpi_self();
    struct model *reference = make_model(GLOBAL);
    load_rows(reference, labels, 0, GLOBAL);
    gradient(&self, reference, labels, GLOBAL, 0);
    /* Split: each rank its contiguous share. */
    size_t first, count;
    comm_block(GLOBAL, world.size, world.rank, &first, &count);
    struct model *split = make_model(GLOBAL);
    load_rows(split, labels, first, count);
    gradient(&world, split, labels, (int)count, 0);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < split->param_count; i++) {
        worst = fmax(worst, fabs((double)split->grads[i] - reference->grads[i]));
        scale = fmax(scale, fabs((double)reference->grads[i]));
    }
    assert_true(scale > 1e-3);        /* the gradient is not trivially zero */
    assert_true(worst <= 1e-6 * scale + 1e-8);

    /* The optimizer step: identical parameters everywhere, to the bit. */
    struct optimizer *opt = optim_create(OPT_ADAM, split->param_count, 0.9, 1e-4, err);
    for (int step = 0; step < 3; step++)
        optim_step(opt, split->params, split->grads, split->ranges, split->range_count, 1e-3);
    float *from_root = malloc(split->param_count * sizeof(float));
    memcpy(from_root, split->params, split->param_count * sizeof(float));
    MPI_Bcast(from_root, (int)split->param_count, MPI_FLOAT, 0, MPI_COMM_WORLD);
    assert_memory_equal(from_root, split->params, split->param_count * sizeof(float));
    free(from_root);
    optim_free(opt);
    model_free(reference);
    model_free(split);
}

/* Buckets are cut at layer boundaries, counted from the end of the buffer. mlp:16,12 on 20
 * inputs: layer parameters [0, 336), [336, 540), [540, 670). */
static void test_bucket_layout(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    struct model *m = make_model(4);
    struct reducer r;
    assert_int_equal(reducer_init(&r, &world, m, &(struct reducer_options){1, 0, 0, 0}, err), 0); /* every layer its own bucket */
    assert_int_equal(r.bucket_count, 3);
    assert_int_equal(r.starts[0], 0);
    assert_int_equal(r.starts[1], 336);
    assert_int_equal(r.starts[2], 540);
    assert_int_equal(r.starts[3], 670);
    assert_int_equal(reducer_free(&r, err), 0);
    assert_int_equal(reducer_init(&r, &world, m, &(struct reducer_options){600, 0, 0, 0}, err), 0); /* the last layer (520 bytes) joins the middle one */
    assert_int_equal(r.bucket_count, 2);
    assert_int_equal(r.starts[1], 336);
    assert_int_equal(reducer_free(&r, err), 0);
    assert_int_equal(reducer_init(&r, &world, m, &(struct reducer_options){1 << 30, 0, 0, 0}, err), 0);
    assert_int_equal(r.bucket_count, 1);
    assert_int_equal(reducer_free(&r, err), 0);
    assert_int_equal(reducer_init(&r, &world, m, &(struct reducer_options){0, 0, 0, 0}, err), 0);
    assert_true(r.fused);
    assert_int_equal(reducer_free(&r, err), 0);
    model_free(m);
}

/* Buckets reduced during backward give the same sums as one allreduce after it: bitwise on up
 * to two ranks (a + b is exact either way round), to rounding on three. A rank without samples
 * (four ranks would leave none empty; here the last rank of three gets none) keeps in step. */
static void test_bucketed_matches_fused(void **state)
{
    (void)state;
    uint8_t labels[GLOBAL];
    size_t first, count;
    comm_block(GLOBAL, world.size, world.rank, &first, &count);
    struct model *fused = make_model(GLOBAL);
    load_rows(fused, labels, first, count);
    gradient(&world, fused, labels, (int)count, 0);
    size_t sizes[] = {1, 600, 1 << 30};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (int empty_last = 0; empty_last < 2; empty_last++) {
            if (empty_last && world.size == 1) /* one rank cannot be left without samples */
                continue;
            struct model *bucketed = make_model(GLOBAL);
            struct model *reference = fused;
            int n = (int)count;
            if (empty_last) { /* the last rank's samples move to rank 0 */
                size_t f0, c0, fl, cl;
                comm_block(GLOBAL, world.size, 0, &f0, &c0);
                comm_block(GLOBAL, world.size, world.size - 1, &fl, &cl);
                if (world.rank == 0) {
                    load_rows(bucketed, labels, f0, c0);
                    /* append the last rank's rows after rank 0's own */
                    float *x = model_input(bucketed);
                    for (size_t i = 0; i < cl; i++)
                        for (size_t f = 0; f < INPUT; f++)
                            x[(c0 + i) * INPUT + f] = input_value(fl + i, f);
                    for (size_t i = 0; i < cl; i++)
                        labels[c0 + i] = (uint8_t)((fl + i) * 7 % CLASSES);
                    n = (int)(c0 + cl);
                } else if (world.rank == world.size - 1) {
                    n = 0;
                } else {
                    load_rows(bucketed, labels, first, count);
                }
            } else {
                load_rows(bucketed, labels, first, count);
            }
            gradient(&world, bucketed, labels, n, sizes[k]);
            if (!empty_last && world.size <= 2) {
                assert_memory_equal(bucketed->grads, reference->grads, bucketed->param_count * sizeof(float));
            } else {
                double worst = 0, scale = 0;
                for (size_t i = 0; i < bucketed->param_count; i++) {
                    worst = fmax(worst, fabs((double)bucketed->grads[i] - reference->grads[i]));
                    scale = fmax(scale, fabs((double)reference->grads[i]));
                }
                assert_true(worst <= 1e-6 * scale + 1e-8);
            }
            if (!empty_last) /* restore this rank's labels for the next case */
                load_rows(bucketed, labels, first, count);
            model_free(bucketed);
        }
    model_free(fused);
}

/* bf16 on the wire: on one rank nothing is rounded; on more, the sum is within bfloat16's
 * rounding of the float32 one, and buckets give the same bits as one allreduce on two ranks. */
static void test_bf16_on_the_wire(void **state)
{
    (void)state;
    uint8_t labels[GLOBAL];
    size_t first, count;
    comm_block(GLOBAL, world.size, world.rank, &first, &count);
    struct model *exact = make_model(GLOBAL), *fused = make_model(GLOBAL), *bucketed = make_model(GLOBAL);
    load_rows(exact, labels, first, count);
    load_rows(fused, labels, first, count);
    load_rows(bucketed, labels, first, count);
    gradient(&world, exact, labels, (int)count, 0);
    gradient_on_wire(&world, fused, labels, (int)count, 0, 1);
    gradient_on_wire(&world, bucketed, labels, (int)count, 1, 1);
    size_t bytes = exact->param_count * sizeof(float);
    if (world.size == 1)
        assert_memory_equal(fused->grads, exact->grads, bytes);
    if (world.size <= 2)
        assert_memory_equal(bucketed->grads, fused->grads, bytes);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < exact->param_count; i++) {
        worst = fmax(worst, fabs((double)fused->grads[i] - exact->grads[i]));
        scale = fmax(scale, fabs((double)exact->grads[i]));
    }
    assert_true(worst <= scale * world.size / 128.0);
    model_free(exact);
    model_free(fused);
    model_free(bucketed);
}

/* PowerSGD: the reducer driven as backward drives it, on gradients set by hand. */
static void reduce_given(struct reducer *r, const struct model *m)
{
    char err[DP_ERR_LEN];
    size_t offsets[MODEL_MAX_LAYERS];
    int count = model_param_boundaries(m, offsets, MODEL_MAX_LAYERS);
    reducer_begin(r);
    for (int i = 0; i < count; i++)
        reducer_ready(r, offsets[i]);
    reducer_ready(r, 0);
    assert_int_equal(reducer_finish(r, err), 0);
}

static struct reducer *powersgd_reducer(struct model *m, size_t bucket_bytes, int rank)
{
    char err[DP_ERR_LEN];
    struct reducer *r = malloc(sizeof *r);
    assert_non_null(r);
    assert_int_equal(reducer_init(r, &world, m, &(struct reducer_options){bucket_bytes, 0, rank, 0}, err), 0);
    return r;
}

static void powersgd_free_reducer(struct reducer *r)
{
    char err[DP_ERR_LEN];
    assert_int_equal(reducer_free(r, err), 0);
    free(r);
}

/* This rank's gradient at `step`: weights (rank + 1) u v^T (the sum over the ranks has rank 1)
 * when rank_one, else full rank; biases anything. */
static void set_gradient(struct model *m, int rank_one, int step)
{
    for (int k = 0; k < m->range_count; k++) {
        const struct param_range *range = &m->ranges[k];
        int rows, cols;
        float *g = m->grads + range->offset;
        if (!model_weight_shape(m, range->offset, &rows, &cols))
            rows = 1, cols = (int)range->count;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                g[(size_t)i * cols + j] = rank_one && range->decay
                    ? (float)(world.rank + 1) * sinf(0.3f * (float)i + 1.0f) * cosf(0.7f * (float)j)
                    : sinf(1.3f * (float)world.rank + 0.71f * (float)step + 0.19f * (float)k + 0.37f * (float)(i * cols + j));
    }
}

/* mlp:16,12 on 20 inputs at rank 1: every weight matrix qualifies (16x20, 12x16, 10x12). The
 * wire holds P0 (16), bias 0 (16), P1 (12), bias 1 (12), P2 (10), bias 2 (10); Q 20 + 16 + 12. A
 * sum of rank-1 gradients comes through exactly (to rounding), the biases as a plain sum, and
 * the ranks' residuals sum to zero. On one rank nothing is compressed. */
static void test_powersgd_rank_one(void **state)
{
    (void)state;
    struct model *m = make_model(4);
    struct reducer *r = powersgd_reducer(m, 0, 1);
    assert_int_equal(r->psgd.count, 3);
    assert_int_equal(r->wire_starts[1], 76);
    assert_int_equal(r->psgd.q_count, 48);
    assert_int_equal(reducer_wire_bytes(r), world.size == 1 ? 0 : (76 + 48) * sizeof(float));
    size_t n = m->param_count;
    float *given = malloc(n * sizeof(float)), *sum = malloc(n * sizeof(float)), *owed = malloc(n * sizeof(float));
    set_gradient(m, 1, 0);
    memcpy(given, m->grads, n * sizeof(float));
    MPI_Allreduce(given, sum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    reduce_given(r, m);
    if (world.size == 1)
        assert_memory_equal(m->grads, given, n * sizeof(float));
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)m->grads[i] - sum[i]));
        scale = fmax(scale, fabs((double)sum[i]));
    }
    assert_true(worst <= 1e-5 * scale);
    MPI_Allreduce(r->residual, owed, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs((double)owed[i]) <= 1e-5 * scale);
    free(given);
    free(sum);
    free(owed);
    powersgd_free_reducer(r);
    model_free(m);
}

/* Full-rank gradients at rank 2 over three steps: nothing is lost (what was delivered plus what
 * the ranks still owe is every gradient given), P's columns are orthonormal, and buckets started
 * during backward give the same bits as the fused path on up to two ranks. */
static void test_powersgd_error_feedback(void **state)
{
    (void)state;
    struct model *fused = make_model(4), *bucketed = make_model(4);
    struct reducer *a = powersgd_reducer(fused, 0, 2), *b = powersgd_reducer(bucketed, 1, 2);
    assert_int_equal(a->psgd.count, 1); /* only 16x20 is worth it at rank 2 */
    assert_int_equal(b->bucket_count, 3);
    size_t n = fused->param_count;
    double *delivered = calloc(n, sizeof(double)), *given = calloc(n, sizeof(double));
    float *sum = malloc(n * sizeof(float)), *owed = malloc(n * sizeof(float));
    for (int step = 0; step < 3; step++) {
        set_gradient(fused, 0, step);
        set_gradient(bucketed, 0, step);
        MPI_Allreduce(fused->grads, sum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        reduce_given(a, fused);
        reduce_given(b, bucketed);
        if (world.size <= 2) {
            assert_memory_equal(bucketed->grads, fused->grads, n * sizeof(float));
            assert_memory_equal(b->residual, a->residual, n * sizeof(float));
        }
        for (size_t i = 0; i < n; i++) {
            delivered[i] += fused->grads[i];
            given[i] += sum[i];
        }
    }
    MPI_Allreduce(a->residual, owed, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(delivered[i] + owed[i] - given[i]));
        scale = fmax(scale, fabs(given[i]));
    }
    assert_true(scale > 0.5);
    assert_true(worst <= 1e-5 * scale);
    if (world.size > 1) { /* P [16][2] orthonormal */
        const float *p = a->factors + a->psgd.matrices[0].p;
        for (int c = 0; c < 2; c++)
            for (int d = 0; d < 2; d++) {
                double dot = 0;
                for (int i = 0; i < 16; i++)
                    dot += (double)p[i * 2 + c] * p[i * 2 + d];
                assert_true(fabs(dot - (c == d)) < 1e-5);
            }
    }
    free(delivered);
    free(given);
    free(sum);
    free(owed);
    powersgd_free_reducer(a);
    powersgd_free_reducer(b);
    model_free(fused);
    model_free(bucketed);
}

static void test_local_shares(void **state)
{
    (void)state;
    /* Over an epoch the shares cover every sample once, and differ by at most one. */
    for (size_t count = 0; count < 50; count += 7)
        for (long steps = 1; steps < 9; steps++) {
            size_t next = 0;
            int smallest = 1 << 30, largest = 0;
            for (long s = 0; s < steps; s++) {
                size_t first;
                int n;
                shards_step_share(count, steps, s, &first, &n);
                assert_int_equal(first, next);
                next += (size_t)n;
                smallest = n < smallest ? n : smallest;
                largest = n > largest ? n : largest;
            }
            assert_int_equal(next, count);
            assert_true(largest - smallest <= 1);
        }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_gradient_matches_single_rank),
        cmocka_unit_test(test_bucket_layout),
        cmocka_unit_test(test_bucketed_matches_fused),
        cmocka_unit_test(test_bf16_on_the_wire),
        cmocka_unit_test(test_powersgd_rank_one),
        cmocka_unit_test(test_powersgd_error_feedback),
        cmocka_unit_test(test_local_shares),
    };
    return test_mpi_main(&argc, &argv, &world, TEST_GROUP("parallel_gradient", tests, NULL, NULL));
}
