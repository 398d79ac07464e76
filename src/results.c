#include "dptrain/results.h"

#include "dptrain/check.h"
#include "dptrain/h5io.h"
#include "dptrain/kernels.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void run_result_free(struct run_result *run)
{
    free(run->history);
    free(run->labels);
    free(run->predictions);
    free(run->confidence);
    free(run->rank_seconds);
    free(run->rank_hosts);
    metrics_free(&run->metrics);
    pca_free(&run->pca);
    memset(run, 0, sizeof *run);
}

static int write_doubles(hid_t parent, const char *name, const double *data, size_t n,
                         const char *path, char *err)
{
    hsize_t dims[1] = {n};
    return h5io_write_array(parent, &(struct h5io_array){name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, dims}, data, path, err);
}

const char *const results_history_columns[RESULTS_HISTORY_COLUMNS] = {
    "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss", "val_accuracy", "seconds",
    "samples_per_second",
};

void results_history_row(const struct epoch_record *e, double row[RESULTS_HISTORY_COLUMNS])
{
    const double values[RESULTS_HISTORY_COLUMNS] = {e->epoch, e->train_loss, e->train_accuracy, e->test_loss,
                                                    e->test_accuracy, e->val_loss, e->val_accuracy, e->seconds,
                                                    e->samples_per_second};
    memcpy(row, values, sizeof values);
}

void results_history_record(const double row[RESULTS_HISTORY_COLUMNS], struct epoch_record *e)
{
    *e = (struct epoch_record){(int)row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]};
}

static int is_validation_column(const char *name)
{
    return strncmp(name, "val_", 4) == 0;
}

static int write_history(hid_t run_group, const struct run_result *run, const char *path, char *err)
{
    hid_t group = -1;
    double *column = NULL, row[RESULTS_HISTORY_COLUMNS];
    size_t n = (size_t)run->history_length;
    CHECK_H5(group = H5Gcreate2(run_group, "history", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create history group", path);
    CHECK_PTR(column = malloc((n + 1) * sizeof(double)), "cannot allocate history column");
    for (int c = 0; c < RESULTS_HISTORY_COLUMNS; c++) {
        if (is_validation_column(results_history_columns[c]) && !run->has_validation)
            continue;
        for (size_t e = 0; e < n; e++) {
            results_history_row(&run->history[e], row);
            column[e] = row[c];
        }
        CHECK_DP(write_doubles(group, results_history_columns[c], column, n, path, err));
    }
    free(column);
    column = NULL;
    hid_t closing = group;
    group = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close the history group", path);
    return 0;
fail:
    free(column);
    if (group >= 0)
        H5Gclose(group);
    return -1;
}

static int write_metrics(hid_t group, const struct run_result *run, const char *path, char *err)
{
    const struct metrics *m = &run->metrics;
    int classes = m->classes;
    hsize_t square[2] = {(hsize_t)classes, (hsize_t)classes}, line[1] = {(hsize_t)classes};
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"confusion", H5T_NATIVE_INT32, H5T_STD_I32LE, 2, square}, m->confusion, path, err));
    CHECK_DP(write_doubles(group, "precision", m->precision, (size_t)classes, path, err));
    CHECK_DP(write_doubles(group, "recall", m->recall, (size_t)classes, path, err));
    CHECK_DP(write_doubles(group, "f1", m->f1, (size_t)classes, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"support", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, line}, m->support, path, err));
    return 0;
fail:
    return -1;
}

static int write_predictions(hid_t run_group, const struct run_result *run, const char *path, char *err)
{
    hid_t group = -1;
    int32_t *index = NULL;
    uint8_t *true_label = NULL, *predicted = NULL;
    float *confidence = NULL;
    size_t n = run->test_count, wrong = 0;
    hsize_t dims[1] = {n};
    CHECK_DP(h5io_write_array(run_group, &(struct h5io_array){"predictions", H5T_NATIVE_UINT8, H5T_STD_U8LE, 1, dims}, run->predictions, path, err));
    for (size_t i = 0; i < n; i++)
        wrong += run->predictions[i] != run->labels[i];
    CHECK_PTR(index = malloc((wrong + 1) * sizeof *index), "cannot allocate");
    CHECK_PTR(true_label = malloc(wrong + 1), "cannot allocate");
    CHECK_PTR(predicted = malloc(wrong + 1), "cannot allocate");
    CHECK_PTR(confidence = malloc((wrong + 1) * sizeof *confidence), "cannot allocate");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (run->predictions[i] != run->labels[i]) {
            index[k] = (int32_t)i;
            true_label[k] = run->labels[i];
            predicted[k] = run->predictions[i];
            confidence[k] = run->confidence[i];
            k++;
        }
    CHECK_H5(group = H5Gcreate2(run_group, "misclassified", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create misclassified group", path);
    dims[0] = wrong;
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"index", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, dims}, index, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"true_label", H5T_NATIVE_UINT8, H5T_STD_U8LE, 1, dims}, true_label, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"predicted", H5T_NATIVE_UINT8, H5T_STD_U8LE, 1, dims}, predicted, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"confidence", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, dims}, confidence, path, err));
    hid_t closing = group;
    group = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close the misclassified group", path);
    free(index);
    free(true_label);
    free(predicted);
    free(confidence);
    return 0;
fail:
    if (group >= 0)
        H5Gclose(group);
    free(index);
    free(true_label);
    free(predicted);
    free(confidence);
    return -1;
}

static int write_pca(hid_t run_group, const struct pca *pca, const char *path, char *err)
{
    hid_t group = -1;
    hsize_t mean_dims[1] = {(hsize_t)pca->dim};
    hsize_t basis_dims[2] = {(hsize_t)pca->components, (hsize_t)pca->dim};
    CHECK_H5(group = H5Gcreate2(run_group, "pca", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create pca group", path);
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"mean", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, mean_dims}, pca->mean, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"components", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, basis_dims}, pca->basis, path, err));
    CHECK_DP(write_doubles(group, "explained_variance", pca->explained_variance, (size_t)pca->components, path, err));
    CHECK_DP(write_doubles(group, "explained_variance_ratio", pca->explained_ratio, (size_t)pca->components, path, err));
    CHECK_DP(h5io_write_attr_double(group, "fit_seconds", pca->fit_seconds, path, err));
    hid_t closing = group;
    group = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close the pca group", path);
    return 0;
fail:
    if (group >= 0)
        H5Gclose(group);
    return -1;
}

static int write_run_attrs(hid_t g, const struct run_result *run, const char *path, char *err)
{
    CHECK_DP(h5io_write_attr_string(g, "model", run->model, path, err));
    CHECK_DP(h5io_write_attr_long(g, "pca_components", run->pca_components, path, err));
    CHECK_DP(h5io_write_attr_long(g, "flip", run->flip, path, err));
    CHECK_DP(h5io_write_attr_long(g, "epochs", run->epochs, path, err));
    CHECK_DP(h5io_write_attr_long(g, "global_batch", run->global_batch, path, err));
    CHECK_DP(h5io_write_attr_string(g, "optimizer", run->optimizer, path, err));
    CHECK_DP(h5io_write_attr_string(g, "settings", run->settings, path, err));
    CHECK_DP(h5io_write_attr_double(g, "lr", run->lr, path, err));
    CHECK_DP(h5io_write_attr_long(g, "seed", (long long)run->seed, path, err));
    CHECK_DP(h5io_write_attr_long(g, "ranks", run->ranks, path, err));
    CHECK_DP(h5io_write_attr_long(g, "parameters", (long long)run->parameters, path, err));
    CHECK_DP(h5io_write_attr_u64(g, "parameter_hash", run->parameter_hash, path, err));
    CHECK_DP(h5io_write_attr_double(g, "train_seconds", run->train_seconds, path, err));
    CHECK_DP(h5io_write_attr_double(g, "test_accuracy", run->test_accuracy, path, err));
    CHECK_DP(h5io_write_attr_double(g, "test_loss", run->test_loss, path, err));
    CHECK_DP(h5io_write_attr_long(g, "test_views", run->test_views, path, err));
    CHECK_DP(h5io_write_attr_string(g, "evaluated_set", run->on_validation ? "validation" : "test", path, err));
    CHECK_DP(h5io_write_attr_string(g, "ended_by", run->ended_by_budget ? "max-time" : "epochs", path, err));
    CHECK_DP(h5io_write_attr_long(g, "epochs_trained", run->history_length, path, err));
    if (run->has_validation)
        CHECK_DP(h5io_write_attr_long(g, "best_epoch", run->best_epoch, path, err));
    if (run->partial_steps > 0)
        CHECK_DP(h5io_write_attr_long(g, "partial_epoch_steps", run->partial_steps, path, err));
    char why[256];
    int diverged = results_did_not_learn(run, why, sizeof why);
    CHECK_DP(h5io_write_attr_long(g, "diverged", diverged, path, err));
    if (diverged)
        CHECK_DP(h5io_write_attr_string(g, "diverged_reason", why, path, err));
    return 0;
fail:
    return -1;
}

int results_did_not_learn(const struct run_result *run, char *why, size_t size)
{
    const struct metrics *m = &run->metrics;
    double chance = 0;
    for (int c = 0; c < m->classes && m->total > 0; c++)
        if ((double)m->support[c] / (double)m->total > chance)
            chance = (double)m->support[c] / (double)m->total;
    double last_train_loss = run->history_length > 0 ? run->history[run->history_length - 1].train_loss : 0;
    /* A uniform guess loses ln K: a short run still near it has not learned yet, which is no
     * failure; far above it, the network has been driven away (too high a rate). */
    double uniform_loss = log(m->classes > 1 ? m->classes : 2);
    if (!isfinite(run->test_loss) || !isfinite(last_train_loss))
        snprintf(why, size, "its loss is not finite (test %g, training %g)", run->test_loss, last_train_loss);
    else if (run->test_accuracy < chance + 0.05 * (1 - chance) && run->test_loss > 2 * uniform_loss)
        snprintf(why, size, "its accuracy %.2f%% is at chance (%.2f%% for always the most frequent class) and its test "
                 "loss %g is more than twice a uniform guess's (%.3g)", 100 * run->test_accuracy, 100 * chance,
                 run->test_loss, uniform_loss);
    else
        return 0;
    return 1;
}

/* The per-rank timing table: rank_timing [epochs][ranks][2] (compute, wait), rank_hosts [ranks]. */
static int write_rank_timing(hid_t g, const struct run_result *run, const char *path, char *err)
{
    const char **hosts = NULL;
    hsize_t dims[3] = {(hsize_t)run->history_length, (hsize_t)run->timing_ranks, 2};
    CHECK_PTR(hosts = malloc((size_t)run->timing_ranks * sizeof *hosts), "cannot allocate the host names");
    for (int r = 0; r < run->timing_ranks; r++)
        hosts[r] = run->rank_hosts[r];
    CHECK_DP(h5io_write_array(g, &(struct h5io_array){"rank_timing", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 3, dims},
                              run->rank_seconds, path, err));
    CHECK_DP(h5io_write_attr_strings(g, "rank_hosts", hosts, (size_t)run->timing_ranks, path, err));
    free(hosts);
    return 0;
fail:
    free(hosts);
    return -1;
}

static int write_run(hid_t runs_group, const struct run_result *run, const char *path, char *err)
{
    hid_t g = -1;
    CHECK_H5(g = H5Gcreate2(runs_group, run->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create group /runs/%s", path, run->name);
    CHECK_DP(write_run_attrs(g, run, path, err));
    CHECK_DP(write_history(g, run, path, err));
    CHECK_DP(write_metrics(g, run, path, err));
    CHECK_DP(write_predictions(g, run, path, err));
    if (run->pca_components > 0)
        CHECK_DP(write_pca(g, &run->pca, path, err));
    if (run->timing_ranks > 0 && run->history_length > 0)
        CHECK_DP(write_rank_timing(g, run, path, err));
    hid_t closing = g;
    g = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close group /runs/%s", path, run->name);
    return 0;
fail:
    if (g >= 0)
        H5Gclose(g);
    return -1;
}

/* What the data file said of itself, so that a results file is read without it (scripts/report.py
 * takes names and shape from here). */
static int write_data_attrs(hid_t file, const struct data_description *d, const char *path, char *err)
{
    CHECK_DP(h5io_write_attr_strings(file, "class_names", d->class_names, (size_t)d->classes, path, err));
    CHECK_DP(h5io_write_attr_long(file, "image_height", d->image.height, path, err));
    CHECK_DP(h5io_write_attr_long(file, "image_width", d->image.width, path, err));
    CHECK_DP(h5io_write_attr_long(file, "image_channels", d->image.channels, path, err));
    CHECK_DP(h5io_write_attr_string(file, "mirror_invariant", d->mirror_invariant ? "yes" : "no", path, err));
    if (d->name[0])
        CHECK_DP(h5io_write_attr_string(file, "data_name", d->name, path, err));
    return 0;
fail:
    return -1;
}

int results_write(const char *path, const struct results_origin *origin, const struct run_result *runs,
                  int run_count, char *err)
{
    hid_t file = -1, group = -1;
    char created[64], kernels[KERNELS_DESCRIPTION_LENGTH];
    kernels_describe(kernels, sizeof kernels);
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    CHECK_DP((file = h5io_create_in_memory(path, err)) < 0);
    CHECK_DP(h5io_write_attr_string(file, "dptrain_version", DPTRAIN_VERSION, path, err));
    CHECK_DP(h5io_write_attr_string(file, "created", created, path, err));
    CHECK_DP(h5io_write_attr_long(file, "ranks", origin->ranks, path, err));
    CHECK_DP(h5io_write_attr_long(file, "hosts", origin->hosts, path, err));
    CHECK_DP(h5io_write_attr_string(file, "command", origin->command, path, err));
    CHECK_DP(h5io_write_attr_string(file, "blas_kernels", kernels, path, err));
    CHECK_DP(write_data_attrs(file, origin->data, path, err));
    CHECK_H5(group = H5Gcreate2(file, "runs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create /runs", path);
    for (int r = 0; r < run_count; r++)
        CHECK_DP(write_run(group, &runs[r], path, err));
    hid_t closing = group;
    group = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close /runs", path);
    hid_t finished = file;
    file = -1;
    CHECK_DP(h5io_publish(finished, path, err));
    return 0;
fail:
    if (group >= 0)
        H5Gclose(group);
    if (file >= 0)
        H5Fclose(file);
    return -1;
}
