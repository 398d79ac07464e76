/* Under mpiexec -n 1, 2, 3: the allreduced gradient of one global batch split across the ranks
 * equals the gradient of the same samples on one rank, and the optimizer step that follows
 * leaves bitwise identical parameters on every rank. */
#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static struct comm world;

enum { GLOBAL = 37, INPUT = 20, CLASSES = 10 };

static float input_value(size_t sample, size_t feature)
{
    return sinf((float)(sample * 31 + feature * 7)) * 1.5f;
}

static struct model *make_model(int capacity)
{
    char err[DP_ERR_LEN];
    struct model *m = model_create("mlp:16,12", INPUT, CLASSES, capacity, 0.0f, err);
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

static void test_split_gradient_matches_single_rank(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    uint8_t labels[GLOBAL];
    double loss = 0;
    long correct = 0;
    /* Reference: all samples on one rank (a communicator of one). */
    struct comm self = {MPI_COMM_SELF, 0, 1};
    struct model *reference = make_model(GLOBAL);
    load_rows(reference, labels, 0, GLOBAL);
    assert_int_equal(train_batch_gradient(&self, reference, labels, GLOBAL, GLOBAL, 0.0f, NULL, NULL,
                                          &loss, &correct, err), 0);
    /* Split: each rank its contiguous share. */
    size_t first, count;
    dataset_block(GLOBAL, world.size, world.rank, &first, &count);
    struct model *split = make_model(GLOBAL);
    load_rows(split, labels, first, count);
    assert_int_equal(train_batch_gradient(&world, split, labels, (int)count, GLOBAL, 0.0f, NULL, NULL,
                                          &loss, &correct, err), 0);
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
                train_local_share(count, steps, s, &first, &n);
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
    char err[DP_ERR_LEN];
    if (comm_init(&argc, &argv, &world, err) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_gradient_matches_single_rank),
        cmocka_unit_test(test_local_shares),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    comm_finalize();
    return failed;
}
