#include "dptrain/checkpoint.h"

#include "dptrain/check.h"
#include "dptrain/h5io.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HISTORY_COLUMNS (sizeof(struct epoch_record) / sizeof(double))

/* ---- writing ------------------------------------------------------------------------- */

static int write_floats(hid_t g, const char *name, const float *data, size_t n, const char *path, char *err)
{
    hsize_t dims[1] = {n};
    return h5io_write_array(g, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, dims, data, path, err);
}

static int write_config(hid_t f, const struct checkpoint *c, const char *path, char *err)
{
    CHECK_DP(h5io_write_attr_string(f, "format", CHECKPOINT_FORMAT, path, err));
    CHECK_DP(h5io_write_attr_long(f, "format_version", CHECKPOINT_VERSION, path, err));
    CHECK_DP(h5io_write_attr_string(f, "dptrain_version", DPTRAIN_VERSION, path, err));
    CHECK_DP(h5io_write_attr_string(f, "model", c->model, path, err));
    CHECK_DP(h5io_write_attr_string(f, "optimizer", c->optimizer, path, err));
    CHECK_DP(h5io_write_attr_string(f, "schedule", c->schedule, path, err));
    CHECK_DP(h5io_write_attr_string(f, "name", c->name, path, err));
    const struct { const char *name; long long value; } longs[] = {
        {"pca_components", c->pca_components}, {"global_batch", c->global_batch},
        {"ranks", c->ranks}, {"epochs", c->epochs}, {"validation", c->validation},
        {"augment", c->augment}, {"tta", c->tta}, {"seed", (long long)c->seed}, {"epoch", c->epoch},
        {"step", c->step}, {"opt_step", c->opt_step}, {"best_epoch", c->best_epoch},
        {"param_count", (long long)c->param_count}, {"buffer_count", (long long)c->buffer_count},
    };
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
        CHECK_DP(h5io_write_attr_long(f, longs[i].name, longs[i].value, path, err));
    const struct { const char *name; double value; } doubles[] = {
        {"lr", c->lr}, {"momentum", c->momentum}, {"weight_decay", c->weight_decay},
        {"warmup", c->warmup}, {"dropout", c->dropout}, {"label_smoothing", c->label_smoothing},
        {"train_seconds", c->train_seconds}, {"epoch_seconds", c->epoch_seconds},
        {"best_val", c->best_val}, {"norm_mean", c->norm.mean}, {"norm_std", c->norm.std},
    };
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++)
        CHECK_DP(h5io_write_attr_double(f, doubles[i].name, doubles[i].value, path, err));
    return 0;
fail:
    return -1;
}

static int write_state(hid_t f, const struct checkpoint *c, const char *path, char *err)
{
    hsize_t ranks = (hsize_t)c->ranks;
    hsize_t rng_dims[2] = {ranks, 4}, history_dims[2] = {(hsize_t)c->history_length, HISTORY_COLUMNS};
    hsize_t rank_dims[1] = {ranks};
    CHECK_DP(write_floats(f, "params", c->params, c->param_count, path, err));
    CHECK_DP(write_floats(f, "opt_first", c->opt_first, c->param_count, path, err));
    if (c->opt_second)
        CHECK_DP(write_floats(f, "opt_second", c->opt_second, c->param_count, path, err));
    if (c->best_params)
        CHECK_DP(write_floats(f, "best_params", c->best_params, c->param_count, path, err));
    CHECK_DP(h5io_write_array(f, "history", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, history_dims,
                              c->history, path, err));
    CHECK_DP(h5io_write_array(f, "rng_dropout", H5T_NATIVE_UINT64, H5T_STD_U64LE, 2, rng_dims,
                              c->dropout_rng, path, err));
    CHECK_DP(h5io_write_array(f, "rng_augment", H5T_NATIVE_UINT64, H5T_STD_U64LE, 2, rng_dims,
                              c->augment_rng, path, err));
    CHECK_DP(h5io_write_array(f, "partial_loss", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, rank_dims,
                              c->partial_loss, path, err));
    CHECK_DP(h5io_write_array(f, "partial_correct", H5T_NATIVE_INT64, H5T_STD_I64LE, 1, rank_dims,
                              c->partial_correct, path, err));
    hsize_t buffer_dims[2] = {ranks, (hsize_t)c->buffer_count};
    CHECK_DP(h5io_write_array(f, "buffers", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, buffer_dims,
                              c->buffers, path, err));
    if (c->pca_components > 0) {
        const struct pca *p = &c->pca;
        hsize_t dim[1] = {(hsize_t)p->dim}, k[1] = {(hsize_t)p->components};
        hsize_t basis[2] = {(hsize_t)p->components, (hsize_t)p->dim};
        CHECK_DP(h5io_write_array(f, "pca_mean", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, dim, p->mean, path, err));
        CHECK_DP(h5io_write_array(f, "pca_basis", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, basis, p->basis, path, err));
        CHECK_DP(h5io_write_array(f, "pca_variance", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, k,
                                  p->explained_variance, path, err));
        CHECK_DP(h5io_write_array(f, "pca_ratio", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, k,
                                  p->explained_ratio, path, err));
        CHECK_DP(h5io_write_attr_double(f, "pca_total_variance", p->total_variance, path, err));
        CHECK_DP(h5io_write_attr_long(f, "pca_samples", (long long)p->samples, path, err));
    }
    return 0;
fail:
    return -1;
}

int checkpoint_write(const char *path, const struct checkpoint *c, char *err)
{
    char tmp[4096] = "";
    hid_t file = -1;
    CHECK_DP(h5io_temp_name(path, tmp, sizeof tmp, err));
    CHECK_H5(file = H5Fcreate(tmp, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), "%s: cannot create", tmp);
    CHECK_DP(write_config(file, c, tmp, err));
    CHECK_DP(write_state(file, c, tmp, err));
    hid_t closing = file;
    file = -1;
    CHECK_H5(H5Fclose(closing), "%s: cannot close", tmp);
    CHECK_DP(h5io_commit(tmp, path, err));
    return 0;
fail:
    if (file >= 0)
        H5Fclose(file);
    if (tmp[0])
        unlink(tmp);
    return -1;
}

/* ---- reading ------------------------------------------------------------------------- */

static int read_attr(hid_t f, const char *name, hid_t type, void *out, const char *path, char *err)
{
    hid_t attr = -1;
    if (H5Aexists(f, name) <= 0)
        FAIL("%s: not a dptrain checkpoint (no attribute %s)", path, name);
    CHECK_H5(attr = H5Aopen(f, name, H5P_DEFAULT), "%s: cannot open attribute %s", path, name);
    CHECK_H5(H5Aread(attr, type, out), "%s: cannot read attribute %s", path, name);
    H5Aclose(attr);
    return 0;
fail:
    if (attr >= 0)
        H5Aclose(attr);
    return -1;
}

static int read_string_attr(hid_t f, const char *name, char *out, size_t size, const char *path, char *err)
{
    hid_t type = -1;
    char *value = NULL;
    CHECK_H5(type = H5Tcopy(H5T_C_S1), "cannot create string type");
    CHECK_H5(H5Tset_size(type, H5T_VARIABLE), "cannot size string type");
    CHECK_H5(H5Tset_cset(type, H5T_CSET_UTF8), "cannot set string encoding");
    CHECK_DP(read_attr(f, name, type, &value, path, err));
    snprintf(out, size, "%s", value ? value : "");
    H5free_memory(value);
    H5Tclose(type);
    return 0;
fail:
    if (type >= 0)
        H5Tclose(type);
    return -1;
}

static int read_long(hid_t f, const char *name, long long *out, const char *path, char *err)
{
    return read_attr(f, name, H5T_NATIVE_LLONG, out, path, err);
}

static int read_double(hid_t f, const char *name, double *out, const char *path, char *err)
{
    return read_attr(f, name, H5T_NATIVE_DOUBLE, out, path, err);
}

/* Read a whole dataset of `count` elements, checking its size. */
static void *read_array(hid_t f, const char *name, hid_t type, size_t element, size_t count,
                        const char *path, char *err)
{
    hid_t set = -1, space = -1;
    void *data = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        FAIL("%s: checkpoint lacks %s", path, name);
    CHECK_H5(set = H5Dopen2(f, name, H5P_DEFAULT), "%s: cannot open %s", path, name);
    CHECK_H5(space = H5Dget_space(set), "%s: cannot read shape of %s", path, name);
    if ((size_t)H5Sget_simple_extent_npoints(space) != count)
        FAIL("%s: %s has %lld elements, expected %zu", path, name,
             (long long)H5Sget_simple_extent_npoints(space), count);
    CHECK_PTR(data = malloc(count * element + 64), "cannot allocate %s", name);
    if (count > 0)
        CHECK_H5(H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "%s: cannot read %s", path, name);
    H5Sclose(space);
    H5Dclose(set);
    return data;
fail:
    free(data);
    if (space >= 0)
        H5Sclose(space);
    if (set >= 0)
        H5Dclose(set);
    return NULL;
}

static int read_config(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    char format[64];
    long long version;
    CHECK_DP(read_string_attr(f, "format", format, sizeof format, path, err));
    if (strcmp(format, CHECKPOINT_FORMAT) != 0)
        FAIL("%s: not a dptrain checkpoint (format '%s')", path, format);
    CHECK_DP(read_long(f, "format_version", &version, path, err));
    if (version != CHECKPOINT_VERSION)
        FAIL("%s: checkpoint format version %lld, this dptrain reads version %d", path, version,
             CHECKPOINT_VERSION);
    CHECK_DP(read_string_attr(f, "model", c->model, sizeof c->model, path, err));
    CHECK_DP(read_string_attr(f, "optimizer", c->optimizer, sizeof c->optimizer, path, err));
    CHECK_DP(read_string_attr(f, "schedule", c->schedule, sizeof c->schedule, path, err));
    CHECK_DP(read_string_attr(f, "name", c->name, sizeof c->name, path, err));
    /* Read by position: value[i] is long_names[i], and both sizes follow the list. */
    const char *long_names[] = {"pca_components", "global_batch", "ranks", "epochs", "validation",
                                "augment", "seed", "epoch", "step", "opt_step", "best_epoch", "param_count",
                                "buffer_count", "tta"};
    long long value[sizeof long_names / sizeof long_names[0]];
    for (size_t i = 0; i < sizeof long_names / sizeof long_names[0]; i++)
        CHECK_DP(read_long(f, long_names[i], &value[i], path, err));
    c->pca_components = (int)value[0];
    c->global_batch = (int)value[1];
    c->ranks = (int)value[2];
    c->epochs = (int)value[3];
    c->validation = (int)value[4];
    c->augment = (int)value[5];
    c->seed = (uint64_t)value[6];
    c->epoch = (int)value[7];
    c->step = (long)value[8];
    c->opt_step = (long)value[9];
    c->best_epoch = (int)value[10];
    c->param_count = (size_t)value[11];
    c->buffer_count = (size_t)value[12];
    c->tta = value[13] != 0;
    if (c->ranks < 1 || c->ranks > 1 << 20 || c->epoch < 0 || c->epoch > c->epochs || c->step < 0 ||
        value[11] < 1 || value[12] < 0 || c->pca_components < 0 || c->pca_components > 784)
        FAIL("%s: corrupt checkpoint (inconsistent position or sizes)", path);
    double norm_mean, norm_std;
    CHECK_DP(read_double(f, "lr", &c->lr, path, err));
    CHECK_DP(read_double(f, "momentum", &c->momentum, path, err));
    CHECK_DP(read_double(f, "weight_decay", &c->weight_decay, path, err));
    CHECK_DP(read_double(f, "warmup", &c->warmup, path, err));
    CHECK_DP(read_double(f, "dropout", &c->dropout, path, err));
    CHECK_DP(read_double(f, "label_smoothing", &c->label_smoothing, path, err));
    CHECK_DP(read_double(f, "train_seconds", &c->train_seconds, path, err));
    CHECK_DP(read_double(f, "epoch_seconds", &c->epoch_seconds, path, err));
    CHECK_DP(read_double(f, "best_val", &c->best_val, path, err));
    CHECK_DP(read_double(f, "norm_mean", &norm_mean, path, err));
    CHECK_DP(read_double(f, "norm_std", &norm_std, path, err));
    c->norm.mean = (float)norm_mean;
    c->norm.std = (float)norm_std;
    return 0;
fail:
    return -1;
}

static int read_pca(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    struct pca *p = &c->pca;
    long long samples;
    p->dim = 784;
    p->components = c->pca_components;
    size_t k = (size_t)p->components;
    CHECK_DP((p->mean = read_array(f, "pca_mean", H5T_NATIVE_DOUBLE, sizeof(double), 784, path, err)) == NULL);
    CHECK_DP((p->basis = read_array(f, "pca_basis", H5T_NATIVE_FLOAT, sizeof(float), k * 784, path, err)) == NULL);
    CHECK_DP((p->explained_variance = read_array(f, "pca_variance", H5T_NATIVE_DOUBLE, sizeof(double), k, path, err)) == NULL);
    CHECK_DP((p->explained_ratio = read_array(f, "pca_ratio", H5T_NATIVE_DOUBLE, sizeof(double), k, path, err)) == NULL);
    CHECK_DP(read_double(f, "pca_total_variance", &p->total_variance, path, err));
    CHECK_DP(read_long(f, "pca_samples", &samples, path, err));
    p->samples = (size_t)samples;
    return 0;
fail:
    return -1;
}

static int read_state(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    size_t n = c->param_count, ranks = (size_t)c->ranks;
    CHECK_DP((c->params = read_array(f, "params", H5T_NATIVE_FLOAT, sizeof(float), n, path, err)) == NULL);
    CHECK_DP((c->opt_first = read_array(f, "opt_first", H5T_NATIVE_FLOAT, sizeof(float), n, path, err)) == NULL);
    if (strcmp(c->optimizer, "adam") == 0)
        CHECK_DP((c->opt_second = read_array(f, "opt_second", H5T_NATIVE_FLOAT, sizeof(float), n, path, err)) == NULL);
    if (c->validation > 0)
        CHECK_DP((c->best_params = read_array(f, "best_params", H5T_NATIVE_FLOAT, sizeof(float), n, path, err)) == NULL);
    c->history_length = c->epoch;
    CHECK_DP((c->history = read_array(f, "history", H5T_NATIVE_DOUBLE, sizeof(double),
                                      (size_t)c->epoch * HISTORY_COLUMNS, path, err)) == NULL);
    CHECK_DP((c->dropout_rng = read_array(f, "rng_dropout", H5T_NATIVE_UINT64, sizeof(uint64_t), ranks * 4, path, err)) == NULL);
    CHECK_DP((c->augment_rng = read_array(f, "rng_augment", H5T_NATIVE_UINT64, sizeof(uint64_t), ranks * 4, path, err)) == NULL);
    CHECK_DP((c->partial_loss = read_array(f, "partial_loss", H5T_NATIVE_DOUBLE, sizeof(double), ranks, path, err)) == NULL);
    CHECK_DP((c->partial_correct = read_array(f, "partial_correct", H5T_NATIVE_INT64, sizeof(int64_t), ranks, path, err)) == NULL);
    CHECK_DP((c->buffers = read_array(f, "buffers", H5T_NATIVE_FLOAT, sizeof(float), ranks * c->buffer_count,
                                      path, err)) == NULL);
    if (c->pca_components > 0)
        CHECK_DP(read_pca(f, c, path, err));
    return 0;
fail:
    return -1;
}

int checkpoint_read(const char *path, struct checkpoint *c, char *err)
{
    hid_t file = -1;
    memset(c, 0, sizeof *c);
    c->owned = 1;
    if (access(path, R_OK) != 0)
        FAIL("--checkpoint %s: cannot read the checkpoint", path);
    CHECK_H5(file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), "%s: not a readable HDF5 file", path);
    CHECK_DP(read_config(file, c, path, err));
    CHECK_DP(read_state(file, c, path, err));
    H5Fclose(file);
    return 0;
fail:
    if (file >= 0)
        H5Fclose(file);
    checkpoint_free(c);
    return -1;
}

void checkpoint_free(struct checkpoint *c)
{
    if (c->owned) {
        free(c->params);
        free(c->opt_first);
        free(c->opt_second);
        free(c->best_params);
        free(c->history);
        free(c->dropout_rng);
        free(c->augment_rng);
        free(c->partial_loss);
        free(c->partial_correct);
        free(c->buffers);
        free(c->pca.mean);
        free(c->pca.basis);
        free(c->pca.explained_variance);
        free(c->pca.explained_ratio);
    }
    memset(c, 0, sizeof *c);
}

int checkpoint_check_config(const struct checkpoint *c, const struct options *o, int ranks,
                            const char *path, char *err)
{
#define DIFFERS(cond, flag, fmt, saved, now)                                                  \
    if (cond)                                                                                 \
        FAIL("--resume: %s was saved with %s " fmt ", this run has %s " fmt                  \
             " (resume with the same settings)", path, flag, saved, flag, now)
    DIFFERS(strcmp(c->model, o->model) != 0, "--model", "%s", c->model, o->model);
    DIFFERS(c->pca_components != o->pca, "--pca", "%d", c->pca_components, o->pca);
    DIFFERS(c->global_batch != o->batch, "--batch", "%d", c->global_batch, o->batch);
    DIFFERS(c->ranks != ranks, "ranks", "%d", c->ranks, ranks);
    DIFFERS(c->epochs != o->epochs, "--epochs", "%d", c->epochs, o->epochs);
    DIFFERS(c->seed != o->seed, "--seed", "%llu", (unsigned long long)c->seed, (unsigned long long)o->seed);
    DIFFERS(strcmp(c->optimizer, o->optimizer) != 0, "--optimizer", "%s", c->optimizer, o->optimizer);
    DIFFERS(c->lr != o->lr, "--lr", "%g", c->lr, o->lr);
    DIFFERS(c->momentum != o->momentum, "--momentum", "%g", c->momentum, o->momentum);
    DIFFERS(c->weight_decay != o->weight_decay, "--weight-decay", "%g", c->weight_decay, o->weight_decay);
    DIFFERS(strcmp(c->schedule, o->schedule) != 0, "--schedule", "%s", c->schedule, o->schedule);
    DIFFERS(c->warmup != o->warmup, "--warmup", "%g", c->warmup, o->warmup);
    DIFFERS(c->dropout != o->dropout, "--dropout", "%g", c->dropout, o->dropout);
    DIFFERS(c->label_smoothing != o->label_smoothing, "--label-smoothing", "%g", c->label_smoothing, o->label_smoothing);
    DIFFERS(c->augment != o->augment, "--augment", "%d", c->augment, o->augment);
    DIFFERS(c->tta != o->tta, "--tta", "%d", c->tta, o->tta);
    DIFFERS(c->validation != o->validation, "--validation", "%d", c->validation, o->validation);
#undef DIFFERS
    return 0;
fail:
    return -1;
}
