/* The file formats: a checkpoint written and read back holds every field and array as given; a
 * results file holds the run's attributes, history and mistakes; the h5io readers refuse a
 * missing dataset, a wrong element count and a missing attribute. */
#include "dptrain/check.h"
#include "dptrain/checkpoint.h"
#include "dptrain/h5io.h"
#include "dptrain/kernels.h"
#include "dptrain/results.h"
#include "test_util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define PARAMS 37
#define RANKS 3
#define BUFFERS 4
#define EPOCHS 2

/* A checkpoint of a made-up run, every value distinct. */
struct sample {
    float params[PARAMS], first[PARAMS], second[PARAMS], best[PARAMS], buffers[RANKS * BUFFERS];
    float best_buffers[BUFFERS];
    struct epoch_record history[EPOCHS];
    struct rng dropout[RANKS], augment[RANKS];
    double losses[RANKS];
    int64_t corrects[RANKS];
};

static struct checkpoint make_checkpoint(struct sample *s)
{
    for (int i = 0; i < PARAMS; i++) {
        s->params[i] = 0.5f * (float)i - 3.0f;
        s->first[i] = 0.01f * (float)i;
        s->second[i] = 0.001f * (float)(i + 1);
        s->best[i] = -s->params[i];
    }
    for (int i = 0; i < RANKS * BUFFERS; i++)
        s->buffers[i] = (float)i / 7.0f;
    for (int i = 0; i < BUFFERS; i++)
        s->best_buffers[i] = -(float)i / 3.0f;
    for (int e = 0; e < EPOCHS; e++)
        s->history[e] = (struct epoch_record){e + 1, 0.5 / (e + 1), 0.8, 0.6, 0.79, 0.61, 0.78, 1.5, 40000.0};
    /* an epoch --eval-every did not evaluate: NaN test and validation figures travel as they are */
    s->history[0].test_loss = s->history[0].test_accuracy = s->history[0].val_loss = s->history[0].val_accuracy = NAN;
    for (int r = 0; r < RANKS; r++) {
        rng_seed(&s->dropout[r], 7, 1, 2, (uint64_t)r);
        rng_seed(&s->augment[r], 7, 3, 4, (uint64_t)r);
        s->losses[r] = 10.0 + r;
        s->corrects[r] = 100 + r;
    }
    struct checkpoint c = {
        .model = "mlp:8", .optimizer = "adam", .schedule = "cosine", .name = "raw", .compress = "none",
        .global_batch = 128, .ranks = 2, .units = RANKS, .deterministic = 1, .epochs = 5, .validation = 10, .augment = 1, .augment_shift = 3, .tta = 1, .tta_shift = 2,
        .seed = 99,
        .lr = 0.001, .momentum = 0.9, .weight_decay = 1e-4, .warmup = 1, .dropout = 0.1, .label_smoothing = 0.05,
        .epoch = EPOCHS, .step = 17, .train_seconds = 3.25, .epoch_seconds = 0.75, .param_count = PARAMS,
        .params = s->params, .opt_first = s->first, .opt_second = s->second, .opt_step = 2 * 100 + 17,
        .best_params = s->best, .best_buffers = s->best_buffers, .best_val = 0.81, .best_epoch = 1, .norm_mean = {0.28f, 0.5f, 0.125f},
        .norm_std = {0.35f, 0.25f, 0.75f}, .flip = 1,
        .data = {{9, 13, 3}, 12, 60000, 10000, 0x12345678u, 0x9abcdef0u, 0x0fedcba9u, 0x87654321u},
        .history_length = EPOCHS, .history = s->history, .dropout_rng = s->dropout, .augment_rng = s->augment,
        .partial_loss = s->losses, .partial_correct = s->corrects, .buffer_count = BUFFERS, .buffers = s->buffers,
    };
    return c;
}

static void test_checkpoint_round_trip(void **state)
{
    const char *dir = *state;
    char path[512], err[DP_ERR_LEN] = "";
    struct sample s;
    struct checkpoint c = make_checkpoint(&s), back;
    snprintf(path, sizeof path, "%s/c.h5", dir);
    assert_int_equal(checkpoint_write(path, &c, err), 0);
    if (checkpoint_read(path, &back, err) != 0)
        fail_msg("read: %s", err);
    assert_string_equal(back.model, "mlp:8");
    assert_string_equal(back.optimizer, "adam");
    assert_string_equal(back.schedule, "cosine");
    assert_string_equal(back.name, "raw");
    assert_int_equal(back.global_batch, 128);
    assert_int_equal(back.ranks, 2);
    assert_int_equal(back.units, RANKS);
    assert_int_equal(back.deterministic, 1);
    assert_int_equal(back.epochs, 5);
    assert_int_equal(back.validation, 10);
    assert_true(back.augment == 1 && back.augment_shift == 3 && back.tta == 1 && back.tta_shift == 2 && back.seed == 99);
    assert_true(back.lr == 0.001 && back.momentum == 0.9 && back.weight_decay == 1e-4 && back.warmup == 1);
    assert_true(back.dropout == 0.1 && back.label_smoothing == 0.05);
    assert_true(back.epoch == EPOCHS && back.step == 17 && back.opt_step == 217);
    assert_true(back.train_seconds == 3.25 && back.epoch_seconds == 0.75);
    assert_true(back.best_val == 0.81 && back.best_epoch == 1);
    assert_true(back.norm_mean[0] == 0.28f && back.norm_std[0] == 0.35f && back.norm_mean[2] == 0.125f &&
                back.norm_std[2] == 0.75f && back.flip == 1);
    assert_true(back.data.image.height == 9 && back.data.image.width == 13 && back.data.image.channels == 3 &&
                back.data.classes == 12);
    assert_memory_equal(&back.data, &c.data, sizeof c.data);
    assert_memory_equal(back.params, s.params, sizeof s.params);
    assert_memory_equal(back.opt_first, s.first, sizeof s.first);
    assert_memory_equal(back.opt_second, s.second, sizeof s.second);
    assert_memory_equal(back.best_params, s.best, sizeof s.best);
    assert_memory_equal(back.buffers, s.buffers, sizeof s.buffers);
    assert_memory_equal(back.best_buffers, s.best_buffers, sizeof s.best_buffers);
    assert_memory_equal(back.dropout_rng, s.dropout, sizeof s.dropout);
    assert_memory_equal(back.augment_rng, s.augment, sizeof s.augment);
    assert_memory_equal(back.partial_loss, s.losses, sizeof s.losses);
    assert_memory_equal(back.partial_correct, s.corrects, sizeof s.corrects);
    assert_int_equal(back.history_length, EPOCHS);
    for (int e = 0; e < EPOCHS; e++) { /* field by field: the record has padding after the int */
        double a[RESULTS_HISTORY_COLUMNS], b[RESULTS_HISTORY_COLUMNS];
        results_history_row(&back.history[e], a);
        results_history_row(&s.history[e], b);
        assert_memory_equal(a, b, sizeof a);
    }
    checkpoint_free(&back);
    /* A position the run cannot be at is refused: the optimizer's steps must match. */
    c.opt_step = 5;
    assert_int_equal(checkpoint_write(path, &c, err), 0);
    assert_int_equal(checkpoint_read(path, &back, err), 0);
    assert_int_equal(checkpoint_check_position(&back, 100, PARAMS, BUFFERS, path, err), -1);
    assert_non_null(strstr(err, "5 optimizer steps at epoch 3, step 18 (expected 217)"));
    assert_int_equal(checkpoint_check_position(&back, 0, PARAMS + 1, BUFFERS, path, err), -1);
    assert_non_null(strstr(err, "37 parameters"));
    checkpoint_free(&back);
}

static void test_results_file(void **state)
{
    const char *dir = *state;
    char path[512], err[DP_ERR_LEN] = "";
    struct epoch_record history[EPOCHS] = {{1, 0.7, 0.8, 0.6, 0.81, 0, 0, 1.0, 500}, {2, 0.5, 0.85, 0.55, 0.84, 0, 0, 1.1, 480}};
    uint8_t labels[6] = {0, 1, 2, 3, 4, 5}, predictions[6] = {0, 1, 9, 3, 4, 2};
    float confidence[6] = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f};
    struct run_result run = {.name = "raw", .model = "mlp", .optimizer = "adam", .epochs = EPOCHS, .global_batch = 4,
                             .ranks = 2, .lr = 0.001, .seed = 1, .parameters = 10, .train_seconds = 2.1,
                             .test_accuracy = 4.0 / 6.0, .test_loss = 0.9, .history_length = EPOCHS, .history = history,
                             .test_count = 6, .labels = labels, .predictions = predictions, .confidence = confidence};
    assert_int_equal(metrics_compute(labels, predictions, 6, 10, &run.metrics), 0);
    snprintf(path, sizeof path, "%s/r.h5", dir);
    const char *names[10] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
    struct data_description about = {{28, 28, 1}, 10, 1, names, "made-up"};
    assert_int_equal(results_write(path, &(struct results_origin){"dptrain train", 2, 1, &about}, &run, 1, err), 0);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t epochs[1] = {EPOCHS}, wrong[1] = {2}, six[1] = {6};
    double *epoch = h5io_read_array(f, &(struct h5io_array){"runs/raw/history/epoch", H5T_NATIVE_DOUBLE, 0, 1, epochs},
                                    path, err);
    assert_non_null(epoch);
    assert_true(epoch[0] == 1 && epoch[1] == 2);
    double *loss = h5io_read_array(f, &(struct h5io_array){"runs/raw/history/train_loss", H5T_NATIVE_DOUBLE, 0, 1,
                                                           epochs}, path, err);
    assert_true(loss[1] == 0.5);
    int32_t *index = h5io_read_array(f, &(struct h5io_array){"runs/raw/misclassified/index", H5T_NATIVE_INT32, 0, 1,
                                                             wrong}, path, err);
    assert_non_null(index);
    assert_true(index[0] == 2 && index[1] == 5);
    assert_null(h5io_read_array(f, &(struct h5io_array){"runs/raw/predictions", H5T_NATIVE_UINT8, 0, 1, wrong}, path,
                                err));
    assert_non_null(strstr(err, "runs/raw/predictions has 6 elements, expected 2"));
    uint8_t *kept = h5io_read_array(f, &(struct h5io_array){"runs/raw/predictions", H5T_NATIVE_UINT8, 0, 1, six}, path,
                                    err);
    assert_memory_equal(kept, predictions, 6);
    assert_null(h5io_read_array(f, &(struct h5io_array){"runs/raw/absent", H5T_NATIVE_UINT8, 0, 1, six}, path, err));
    assert_non_null(strstr(err, "lacks the dataset runs/raw/absent"));
    hid_t g = H5Gopen2(f, "runs/raw", H5P_DEFAULT);
    double accuracy;
    char model[16];
    assert_int_equal(h5io_read_attr(g, "test_accuracy", H5T_NATIVE_DOUBLE, &accuracy, path, err), 0);
    assert_true(accuracy == 4.0 / 6.0);
    assert_int_equal(h5io_read_attr_string(g, "model", model, sizeof model, path, err), 0);
    assert_string_equal(model, "mlp");
    assert_int_equal(h5io_read_attr_string(g, "model", model, 3, path, err), -1);
    char kernels[KERNELS_DESCRIPTION_LENGTH], running[KERNELS_DESCRIPTION_LENGTH];
    assert_int_equal(h5io_read_attr_string(f, "blas_kernels", kernels, sizeof kernels, path, err), 0);
    kernels_describe(running, sizeof running); /* the kernels that wrote it, named as the run line names them */
    assert_string_equal(kernels, running);
    assert_non_null(strstr(err, "longer than 2 characters"));
    assert_int_equal(h5io_read_attr(g, "best_epoch", H5T_NATIVE_DOUBLE, &accuracy, path, err), -1);
    assert_non_null(strstr(err, "no attribute best_epoch"));
    H5Gclose(g);
    H5Fclose(f);
    metrics_free(&run.metrics);
    free(epoch);
    free(loss);
    free(index);
    free(kept);
}

int main(void)
{
    check_quiet_hdf5();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkpoint_round_trip, test_folder_setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_results_file, test_folder_setup, test_folder_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
