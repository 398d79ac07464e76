#include "dptrain/checkpoint.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/h5io.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define HISTORY_COLUMNS RESULTS_HISTORY_COLUMNS
#define CRC_PREFIX "crc32_"

/* ---- the scalar attributes: one table for writing, reading and their checksum ----------- */

enum field_type { F_STRING, F_INT, F_LONG, F_LLONG, F_U64, F_SIZE, F_U32, F_DOUBLE, F_FLOAT };

struct field {
    const char *name;
    enum field_type type;
    size_t offset, size; /* size: of a string's buffer */
};

#define FIELD(name, type, member) {name, type, offsetof(struct checkpoint, member), sizeof(((struct checkpoint *)0)->member)}

static const struct field fields[] = {
    FIELD("model", F_STRING, model),
    FIELD("optimizer", F_STRING, optimizer),
    FIELD("schedule", F_STRING, schedule),
    FIELD("name", F_STRING, name),
    FIELD("compress", F_STRING, compress),
    FIELD("pca_components", F_INT, pca_components),
    FIELD("global_batch", F_INT, global_batch),
    FIELD("ranks", F_INT, ranks),
    FIELD("units", F_INT, units),
    FIELD("deterministic", F_INT, deterministic),
    FIELD("memory_budget", F_INT, memory_budget),
    FIELD("epochs", F_INT, epochs),
    FIELD("validation", F_INT, validation),
    FIELD("augment", F_INT, augment),
    FIELD("augment_shift", F_INT, augment_shift),
    FIELD("tta", F_INT, tta),
    FIELD("tta_shift", F_INT, tta_shift),
    FIELD("flip", F_INT, flip),
    FIELD("seed", F_U64, seed),
    FIELD("epoch", F_INT, epoch),
    FIELD("step", F_LONG, step),
    FIELD("opt_step", F_LONG, opt_step),
    FIELD("best_epoch", F_INT, best_epoch),
    FIELD("param_count", F_SIZE, param_count),
    FIELD("buffer_count", F_SIZE, buffer_count),
    FIELD("powersgd_q_count", F_SIZE, powersgd_q_count),
    FIELD("lr", F_DOUBLE, lr),
    FIELD("momentum", F_DOUBLE, momentum),
    FIELD("weight_decay", F_DOUBLE, weight_decay),
    FIELD("warmup", F_DOUBLE, warmup),
    FIELD("dropout", F_DOUBLE, dropout),
    FIELD("label_smoothing", F_DOUBLE, label_smoothing),
    FIELD("erase", F_DOUBLE, erase),
    FIELD("train_seconds", F_DOUBLE, train_seconds),
    FIELD("epoch_seconds", F_DOUBLE, epoch_seconds),
    FIELD("best_val", F_DOUBLE, best_val),
    FIELD("data_image_height", F_INT, data.image.height),
    FIELD("data_image_width", F_INT, data.image.width),
    FIELD("data_image_channels", F_INT, data.image.channels),
    FIELD("data_classes", F_INT, data.classes),
    FIELD("data_train_samples", F_LLONG, data.train_samples),
    FIELD("data_test_samples", F_LLONG, data.test_samples),
    FIELD("data_crc32_train_images", F_U32, data.train_images),
    FIELD("data_crc32_train_labels", F_U32, data.train_labels),
    FIELD("data_crc32_test_images", F_U32, data.test_images),
    FIELD("data_crc32_test_labels", F_U32, data.test_labels),
};
#define FIELD_COUNT (sizeof fields / sizeof fields[0])

static int is_real(enum field_type type)
{
    return type == F_DOUBLE || type == F_FLOAT;
}

/* A whole-number field as long long (the attribute's type in the file). */
static long long get_whole(const struct checkpoint *c, const struct field *f)
{
    const char *at = (const char *)c + f->offset;
    switch (f->type) {
    case F_INT: return *(const int *)at;
    case F_LONG: return *(const long *)at;
    case F_LLONG: return *(const long long *)at;
    case F_U64: return (long long)*(const uint64_t *)at;
    case F_SIZE: return (long long)*(const size_t *)at;
    case F_U32: return *(const uint32_t *)at;
    default: return 0;
    }
}

/* Store a whole number read from the file; 0 when it does not fit the field. */
static int set_whole(struct checkpoint *c, const struct field *f, long long value)
{
    char *at = (char *)c + f->offset;
    switch (f->type) {
    case F_INT:
        if (value < INT_MIN || value > INT_MAX)
            return 0;
        *(int *)at = (int)value;
        return 1;
    case F_LONG: *(long *)at = (long)value; return 1;
    case F_LLONG: *(long long *)at = value; return 1;
    case F_U64: *(uint64_t *)at = (uint64_t)value; return 1;
    case F_SIZE:
        if (value < 0)
            return 0;
        *(size_t *)at = (size_t)value;
        return 1;
    case F_U32:
        if (value < 0 || value > (long long)UINT32_MAX)
            return 0;
        *(uint32_t *)at = (uint32_t)value;
        return 1;
    default: return 0;
    }
}

static double get_real(const struct checkpoint *c, const struct field *f)
{
    const char *at = (const char *)c + f->offset;
    return f->type == F_FLOAT ? (double)*(const float *)at : *(const double *)at;
}

static void set_real(struct checkpoint *c, const struct field *f, double value)
{
    char *at = (char *)c + f->offset;
    if (f->type == F_FLOAT)
        *(float *)at = (float)value;
    else
        *(double *)at = value;
}

/* The attributes' checksum folds each name and its value as stored, in table order. */
static uLong fold(uLong crc, const char *name, const void *value, size_t size)
{
    crc = crc32_z(crc, (const Bytef *)name, strlen(name) + 1);
    return crc32_z(crc, (const Bytef *)value, size);
}

static uLong fold_field(uLong crc, const struct checkpoint *c, const struct field *f)
{
    if (f->type == F_STRING) {
        const char *text = (const char *)c + f->offset;
        return fold(crc, f->name, text, strlen(text) + 1);
    }
    if (is_real(f->type)) {
        double value = get_real(c, f);
        return fold(crc, f->name, &value, sizeof value);
    }
    long long value = get_whole(c, f);
    return fold(crc, f->name, &value, sizeof value);
}

static uint32_t attributes_crc(const struct checkpoint *c)
{
    uLong crc = crc32_z(0, Z_NULL, 0);
    for (size_t i = 0; i < FIELD_COUNT; i++)
        crc = fold_field(crc, c, &fields[i]);
    return (uint32_t)crc;
}

static uint32_t crc_of(const void *data, size_t bytes)
{
    return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), (const Bytef *)data, bytes);
}

/* ---- writing ------------------------------------------------------------------------- */

static int write_field(hid_t f, const struct checkpoint *c, const struct field *field, const char *path, char *err)
{
    if (field->type == F_STRING)
        return h5io_write_attr_string(f, field->name, (const char *)c + field->offset, path, err);
    if (is_real(field->type))
        return h5io_write_attr_double(f, field->name, get_real(c, field), path, err);
    return h5io_write_attr_long(f, field->name, get_whole(c, field), path, err);
}

static int write_config(hid_t f, const struct checkpoint *c, const char *path, char *err)
{
    CHECK_DP(h5io_write_attr_string(f, "format", CHECKPOINT_FORMAT, path, err));
    CHECK_DP(h5io_write_attr_long(f, "format_version", CHECKPOINT_VERSION, path, err));
    CHECK_DP(h5io_write_attr_string(f, "dptrain_version", DPTRAIN_VERSION, path, err));
    for (size_t i = 0; i < FIELD_COUNT; i++)
        CHECK_DP(write_field(f, c, &fields[i], path, err));
    CHECK_DP(h5io_write_attr_long(f, "attributes_crc32", attributes_crc(c), path, err));
    return 0;
fail:
    return -1;
}

/* An array and its checksum (over the values as held in memory: little-endian, as in the file). */
static int write_checked(hid_t f, const struct h5io_array *a, const void *data, const char *path, char *err)
{
    char crc_name[64];
    snprintf(crc_name, sizeof crc_name, CRC_PREFIX "%s", a->name);
    CHECK_DP(h5io_write_array(f, a, data, path, err));
    CHECK_DP(h5io_write_attr_long(f, crc_name, crc_of(data, h5io_array_bytes(a)), path, err));
    return 0;
fail:
    return -1;
}

static int write_floats(hid_t f, const char *name, const float *data, size_t n, const char *path, char *err)
{
    hsize_t dims[1] = {n};
    return write_checked(f, &(struct h5io_array){name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, dims}, data, path, err);
}

static int write_doubles(hid_t f, const char *name, const double *data, size_t n, const char *path, char *err)
{
    hsize_t dims[1] = {n};
    return write_checked(f, &(struct h5io_array){name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, dims}, data, path, err);
}

static int write_pca(hid_t f, const struct pca *p, const char *path, char *err)
{
    hsize_t basis[2] = {(hsize_t)p->components, (hsize_t)p->dim};
    CHECK_DP(write_doubles(f, "pca_mean", p->mean, (size_t)p->dim, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"pca_basis", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, basis}, p->basis, path, err));
    CHECK_DP(write_doubles(f, "pca_variance", p->explained_variance, (size_t)p->components, path, err));
    CHECK_DP(write_doubles(f, "pca_ratio", p->explained_ratio, (size_t)p->components, path, err));
    double totals[2] = {p->total_variance, (double)p->samples};
    CHECK_DP(write_doubles(f, "pca_totals", totals, 2, path, err));
    return 0;
fail:
    return -1;
}

/* The history as rows of doubles (results_history_row). */
static int write_history(hid_t f, const struct checkpoint *c, const hsize_t dims[2], const char *path, char *err)
{
    size_t n = (size_t)c->history_length;
    double *rows = malloc((n * HISTORY_COLUMNS + 1) * sizeof(double));
    if (!rows)
        FAIL("%s: cannot allocate the history", path);
    for (size_t e = 0; e < n; e++)
        results_history_row(&c->history[e], rows + e * HISTORY_COLUMNS);
    int status = write_checked(f, &(struct h5io_array){"history", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, dims}, rows, path, err);
    free(rows);
    return status;
fail:
    return -1;
}

static int write_state(hid_t f, const struct checkpoint *c, const char *path, char *err)
{
    hsize_t ranks = (hsize_t)c->units; /* one row per unit */
    hsize_t rng_dims[2] = {ranks, 4}, history_dims[2] = {(hsize_t)c->history_length, HISTORY_COLUMNS};
    hsize_t rank_dims[1] = {ranks}, buffer_dims[2] = {ranks, (hsize_t)c->buffer_count};
    CHECK_DP(write_floats(f, "params", c->params, c->param_count, path, err));
    CHECK_DP(write_floats(f, "opt_first", c->opt_first, c->param_count, path, err));
    if (c->opt_second)
        CHECK_DP(write_floats(f, "opt_second", c->opt_second, c->param_count, path, err));
    if (c->best_params)
        CHECK_DP(write_floats(f, "best_params", c->best_params, c->param_count, path, err));
    if (c->best_buffers)
        CHECK_DP(write_floats(f, "best_buffers", c->best_buffers, c->buffer_count, path, err));
    CHECK_DP(write_history(f, c, history_dims, path, err));
    CHECK_DP(write_floats(f, "norm_mean", c->norm_mean, (size_t)c->data.image.channels, path, err));
    CHECK_DP(write_floats(f, "norm_std", c->norm_std, (size_t)c->data.image.channels, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"rng_dropout", H5T_NATIVE_UINT64, H5T_STD_U64LE, 2, rng_dims}, c->dropout_rng, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"rng_augment", H5T_NATIVE_UINT64, H5T_STD_U64LE, 2, rng_dims}, c->augment_rng, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"partial_loss", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, rank_dims}, c->partial_loss, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"partial_correct", H5T_NATIVE_INT64, H5T_STD_I64LE, 1, rank_dims}, c->partial_correct, path, err));
    CHECK_DP(write_checked(f, &(struct h5io_array){"buffers", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, buffer_dims}, c->buffers, path, err));
    if (c->residual) {
        hsize_t residual_dims[2] = {ranks, (hsize_t)c->param_count};
        CHECK_DP(write_checked(f, &(struct h5io_array){"residual", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, residual_dims},
                               c->residual, path, err));
    }
    if (c->powersgd_q)
        CHECK_DP(write_floats(f, "powersgd_q", c->powersgd_q, c->powersgd_q_count, path, err));
    if (c->pca_components > 0)
        CHECK_DP(write_pca(f, &c->pca, path, err));
    return 0;
fail:
    return -1;
}

void *checkpoint_image(const char *path, const struct checkpoint *c, size_t *size, char *err)
{
    hid_t file = -1;
    CHECK_DP((file = h5io_create_in_memory(path, err)) < 0);
    CHECK_DP(write_config(file, c, path, err));
    CHECK_DP(write_state(file, c, path, err));
    hid_t finished = file;
    file = -1;
    return h5io_finish(finished, path, size, err);
fail:
    if (file >= 0)
        H5Fclose(file);
    return NULL;
}

int checkpoint_write(const char *path, const struct checkpoint *c, char *err)
{
    size_t size = 0;
    void *image = checkpoint_image(path, c, &size, err);
    int status = image ? files_write(path, image, size, err) : -1;
    free(image);
    return status;
}

/* ---- reading ------------------------------------------------------------------------- */

static int read_field(hid_t f, struct checkpoint *c, const struct field *field, const char *path, char *err)
{
    if (field->type == F_STRING)
        return h5io_read_attr_string(f, field->name, (char *)c + field->offset, field->size, path, err);
    if (is_real(field->type)) {
        double value;
        CHECK_DP(h5io_read_attr(f, field->name, H5T_NATIVE_DOUBLE, &value, path, err));
        set_real(c, field, value);
        return 0;
    }
    long long value;
    CHECK_DP(h5io_read_attr(f, field->name, H5T_NATIVE_LLONG, &value, path, err));
    if (!set_whole(c, field, value))
        FAIL("%s: corrupt checkpoint: %s = %lld is out of range", path, field->name, value);
    return 0;
fail:
    return -1;
}

static int read_crc(hid_t f, const char *name, uint32_t *crc, const char *path, char *err)
{
    long long value;
    CHECK_DP(h5io_read_attr(f, name, H5T_NATIVE_LLONG, &value, path, err));
    if (value < 0 || value > (long long)UINT32_MAX)
        FAIL("%s: corrupt checkpoint: %s is not a CRC-32", path, name);
    *crc = (uint32_t)value;
    return 0;
fail:
    return -1;
}

/* Read a whole dataset of `count` elements, checking its size and its checksum. */
/* Read a whole dataset of `count` elements and verify its checksum. */
static void *read_array(hid_t f, const struct h5io_array *a, const char *path, char *err)
{
    char crc_name[64];
    uint32_t expected;
    void *data = NULL;
    snprintf(crc_name, sizeof crc_name, CRC_PREFIX "%s", a->name);
    CHECK_DP(read_crc(f, crc_name, &expected, path, err));
    CHECK_DP((data = h5io_read_array(f, a, path, err)) == NULL);
    if (crc_of(data, h5io_array_bytes(a)) != expected)
        FAIL("%s: corrupt checkpoint: %s fails its checksum (the file was damaged after it was written)", path,
             a->name);
    return data;
fail:
    free(data);
    return NULL;
}

/* Ranges that hold for every checkpoint, whatever the run resuming it. */
static int check_scalars(const struct checkpoint *c, const char *path, char *err)
{
#define REQUIRE(cond, what, ...)                                                               \
    if (!(cond))                                                                               \
        FAIL("%s: corrupt checkpoint: " what, path, __VA_ARGS__)
    REQUIRE(c->ranks >= 1 && c->ranks <= 1 << 20, "ranks = %d", c->ranks);
    REQUIRE(c->units >= 1 && c->units <= 1 << 20 && (c->deterministic == 0 || c->deterministic == 1),
            "units = %d, deterministic = %d", c->units, c->deterministic);
    REQUIRE(c->memory_budget >= 0 && c->memory_budget <= 1 << 24, "memory_budget = %d", c->memory_budget);
    REQUIRE(c->epochs >= 1 && c->global_batch >= 1, "epochs = %d, global_batch = %d", c->epochs, c->global_batch);
    REQUIRE(c->epoch >= 0 && c->epoch <= c->epochs, "epoch %d of %d", c->epoch, c->epochs);
    REQUIRE(c->step >= 0 && c->opt_step >= 0, "step %ld, optimizer step %ld", c->step, c->opt_step);
    REQUIRE(c->best_epoch >= 0 && c->best_epoch <= c->epoch, "best epoch %d after %d epochs", c->best_epoch,
            c->epoch);
    REQUIRE(c->param_count >= 1 && c->param_count <= (size_t)1 << 31, "param_count = %zu", c->param_count);
    REQUIRE(c->buffer_count <= (size_t)1 << 28, "buffer_count = %zu", c->buffer_count);
    const struct image_shape *shape = &c->data.image;
    char why[160];
    /* a negative side read back becomes a huge one here, and is refused as such */
    REQUIRE(image_shape_check((unsigned long long)shape->height, (unsigned long long)shape->width,
                              (unsigned long long)shape->channels, why, sizeof why) == 0,
            "image shape %dx%dx%d", shape->height, shape->width, shape->channels);
    REQUIRE(c->data.classes >= 2 && c->data.classes <= DATASET_MAX_CLASSES, "classes = %d", c->data.classes);
    REQUIRE(c->pca_components >= 0 && (size_t)c->pca_components <= image_values(shape), "pca_components = %d",
            c->pca_components);
    REQUIRE(c->flip == 0 || c->flip == 1, "flip = %d", c->flip);
    REQUIRE(c->validation >= 0 && (c->augment == 0 || c->augment == 1) && (c->tta == 0 || c->tta == 1) &&
            c->tta_shift >= 0 && c->tta_shift <= CONFIG_TTA_SHIFT_MAX && c->augment_shift >= 0 &&
                c->augment_shift <= CONFIG_AUGMENT_SHIFT_MAX,
            "validation %d, augment %d, augment_shift %d, tta %d, tta_shift %d", c->validation, c->augment,
            c->augment_shift, c->tta, c->tta_shift);
    REQUIRE(isfinite(c->lr) && c->lr > 0 && c->momentum >= 0 && c->momentum < 1 && c->weight_decay >= 0 &&
            c->weight_decay <= 1, "lr %g, momentum %g, weight decay %g", c->lr, c->momentum, c->weight_decay);
    REQUIRE(c->warmup >= 0 && c->warmup <= 1000 && c->dropout >= 0 && c->dropout <= 0.95 &&
            c->label_smoothing >= 0 && c->label_smoothing <= 0.5 && c->erase >= 0 && c->erase <= 1,
            "warmup %g, dropout %g, label smoothing %g, erase %g", c->warmup, c->dropout, c->label_smoothing, c->erase);
    REQUIRE(isfinite(c->train_seconds) && c->train_seconds >= 0 && isfinite(c->epoch_seconds) &&
            c->epoch_seconds >= 0, "train_seconds %g, epoch_seconds %g", c->train_seconds, c->epoch_seconds);
    REQUIRE(c->best_val == -1 || (c->best_val >= 0 && c->best_val <= 1), "best_val %g", c->best_val);
    REQUIRE(c->data.train_samples >= 1 && c->data.test_samples >= 1, "data sizes %lld and %lld",
            c->data.train_samples, c->data.test_samples);
#undef REQUIRE
    return 0;
fail:
    return -1;
}

static int read_config(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    char format[64];
    long long version;
    uint32_t stored;
    if (H5Aexists(f, "format") <= 0)
        FAIL("%s: not a dptrain checkpoint (no attribute format)", path);
    CHECK_DP(h5io_read_attr_string(f, "format", format, sizeof format, path, err));
    if (strcmp(format, CHECKPOINT_FORMAT) != 0)
        FAIL("%s: not a dptrain checkpoint (format '%s')", path, format);
    CHECK_DP(h5io_read_attr(f, "format_version", H5T_NATIVE_LLONG, &version, path, err));
    if (version != CHECKPOINT_VERSION)
        FAIL("%s: checkpoint format version %lld, this dptrain reads version %d (%s): start the run afresh, "
             "or finish it with the dptrain that wrote it", path, version, CHECKPOINT_VERSION,
             version < CHECKPOINT_VERSION ? "the file is older" : "the file is newer");
    for (size_t i = 0; i < FIELD_COUNT; i++)
        CHECK_DP(read_field(f, c, &fields[i], path, err));
    CHECK_DP(read_crc(f, "attributes_crc32", &stored, path, err));
    if (attributes_crc(c) != stored)
        FAIL("%s: corrupt checkpoint: its attributes fail their checksum (the file was changed after it was "
             "written)", path);
    return check_scalars(c, path, err);
fail:
    return -1;
}

static int all_finite(const void *values, int is_double, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(is_double ? ((const double *)values)[i] : (double)((const float *)values)[i]))
            return 0;
    return 1;
}

static int read_pca(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    struct pca *p = &c->pca;
    double *totals = NULL;
    size_t dim = image_values(&c->data.image);
    p->dim = (int)dim;
    p->components = c->pca_components;
    size_t k = (size_t)p->components;
    CHECK_DP((p->mean = read_array(f, &(struct h5io_array){"pca_mean", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){dim}}, path, err)) == NULL);
    CHECK_DP((p->basis = read_array(f, &(struct h5io_array){"pca_basis", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){k * dim}}, path, err)) == NULL);
    CHECK_DP((p->explained_variance = read_array(f, &(struct h5io_array){"pca_variance", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){k}}, path, err)) == NULL);
    CHECK_DP((p->explained_ratio = read_array(f, &(struct h5io_array){"pca_ratio", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){k}}, path, err)) == NULL);
    CHECK_DP((totals = read_array(f, &(struct h5io_array){"pca_totals", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){2}}, path, err)) == NULL);
    if (!all_finite(p->mean, 1, dim) || !all_finite(p->basis, 0, k * dim) ||
        !all_finite(p->explained_variance, 1, k) || !(totals[0] > 0) || !(totals[1] >= 1))
        FAIL("%s: corrupt checkpoint: the PCA basis holds values that are not finite", path);
    p->total_variance = totals[0];
    p->samples = (size_t)totals[1];
    free(totals);
    return 0;
fail:
    free(totals);
    return -1;
}

/* The standardisation per channel: finite means, positive finite deviations. */
static int read_normalisation(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    size_t channels = (size_t)c->data.image.channels;
    float *mean = NULL, *std = NULL;
    CHECK_DP((mean = read_array(f, &(struct h5io_array){"norm_mean", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){channels}}, path, err)) == NULL);
    CHECK_DP((std = read_array(f, &(struct h5io_array){"norm_std", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){channels}}, path, err)) == NULL);
    for (size_t i = 0; i < channels; i++) {
        if (!isfinite(mean[i]) || !isfinite(std[i]) || !(std[i] > 0))
            FAIL("%s: corrupt checkpoint: input normalisation of channel %zu: mean %g, standard deviation %g", path, i,
                 (double)mean[i], (double)std[i]);
        c->norm_mean[i] = mean[i];
        c->norm_std[i] = std[i];
    }
    free(mean);
    free(std);
    return 0;
fail:
    free(mean);
    free(std);
    return -1;
}

/* A history row's columns 3..6 (test and validation loss and accuracy) are NaN for an epoch that
 * --eval-every did not evaluate; every other value, and those when evaluated, must be finite. */
static int history_row_ok(const double *row)
{
    for (int i = 1; i < HISTORY_COLUMNS; i++)
        if (!isfinite(row[i]) && !(i >= 3 && i <= 6 && isnan(row[i])))
            return 0;
    return 1;
}

/* The history's rows: the epoch column must count 1..epoch, every value finite or not evaluated. */
static int read_history(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    size_t n = (size_t)c->epoch;
    double *rows = read_array(f, &(struct h5io_array){"history", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){n * HISTORY_COLUMNS}}, path, err);
    CHECK_DP(rows == NULL);
    CHECK_PTR(c->history = calloc(n + 1, sizeof *c->history), "cannot allocate the history");
    c->history_length = (int)n;
    for (size_t e = 0; e < n; e++) {
        const double *row = rows + e * HISTORY_COLUMNS;
        if (row[0] != (double)(e + 1) || !history_row_ok(row))
            FAIL("%s: corrupt checkpoint: history row %zu is not epoch %zu with finite values", path, e, e + 1);
        results_history_record(row, &c->history[e]);
    }
    free(rows);
    return 0;
fail:
    free(rows);
    return -1;
}

static int read_state(hid_t f, struct checkpoint *c, const char *path, char *err)
{
    size_t n = c->param_count, ranks = (size_t)c->units; /* one row per unit */
    CHECK_DP((c->params = read_array(f, &(struct h5io_array){"params", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){n}}, path, err)) == NULL);
    CHECK_DP((c->opt_first = read_array(f, &(struct h5io_array){"opt_first", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){n}}, path, err)) == NULL);
    if (strcmp(c->optimizer, "adam") == 0)
        CHECK_DP((c->opt_second = read_array(f, &(struct h5io_array){"opt_second", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){n}}, path, err)) == NULL);
    if (c->validation > 0)
        CHECK_DP((c->best_params = read_array(f, &(struct h5io_array){"best_params", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){n}}, path, err)) == NULL);
    if (c->validation > 0 && c->buffer_count > 0)
        CHECK_DP((c->best_buffers = read_array(f, &(struct h5io_array){"best_buffers", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){c->buffer_count}}, path, err)) == NULL);
    CHECK_DP(read_history(f, c, path, err));
    CHECK_DP(read_normalisation(f, c, path, err));
    CHECK_DP((c->dropout_rng = read_array(f, &(struct h5io_array){"rng_dropout", H5T_NATIVE_UINT64, H5T_NATIVE_UINT64, 1, (hsize_t[]){ranks * 4}}, path, err)) == NULL);
    CHECK_DP((c->augment_rng = read_array(f, &(struct h5io_array){"rng_augment", H5T_NATIVE_UINT64, H5T_NATIVE_UINT64, 1, (hsize_t[]){ranks * 4}}, path, err)) == NULL);
    CHECK_DP((c->partial_loss = read_array(f, &(struct h5io_array){"partial_loss", H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, 1, (hsize_t[]){ranks}}, path, err)) == NULL);
    CHECK_DP((c->partial_correct = read_array(f, &(struct h5io_array){"partial_correct", H5T_NATIVE_INT64, H5T_NATIVE_INT64, 1, (hsize_t[]){ranks}}, path, err)) == NULL);
    CHECK_DP((c->buffers = read_array(f, &(struct h5io_array){"buffers", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1, (hsize_t[]){ranks * c->buffer_count}}, path, err)) == NULL);
    struct compression compress;
    if (config_compress_parse(c->compress, &compress) != 0)
        FAIL("%s: corrupt checkpoint: unknown compression '%s'", path, c->compress);
    if ((compress.kind == COMPRESS_POWERSGD) != (c->powersgd_q_count > 0))
        FAIL("%s: corrupt checkpoint: compression %s with %zu values of PowerSGD's Q", path, c->compress,
             c->powersgd_q_count);
    if (compress.kind != COMPRESS_NONE) {
        CHECK_DP((c->residual = read_array(f, &(struct h5io_array){"residual", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1,
                                                                    (hsize_t[]){ranks * n}}, path, err)) == NULL);
        if (!all_finite(c->residual, 0, ranks * n))
            FAIL("%s: corrupt checkpoint: the error-feedback residuals hold values that are not finite", path);
    }
    if (compress.kind == COMPRESS_POWERSGD) {
        CHECK_DP((c->powersgd_q = read_array(f, &(struct h5io_array){"powersgd_q", H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, 1,
                                                                      (hsize_t[]){c->powersgd_q_count}}, path, err)) == NULL);
        if (!all_finite(c->powersgd_q, 0, c->powersgd_q_count))
            FAIL("%s: corrupt checkpoint: PowerSGD's Q holds values that are not finite", path);
    }
    if (!all_finite(c->params, 0, n) || (c->best_params && !all_finite(c->best_params, 0, n)) ||
        !all_finite(c->buffers, 0, ranks * c->buffer_count) ||
        (c->best_buffers && !all_finite(c->best_buffers, 0, c->buffer_count)))
        FAIL("%s: corrupt checkpoint: the parameters hold values that are not finite", path);
    for (size_t r = 0; r < ranks; r++)
        if (!rng_valid(&c->dropout_rng[r]) || !rng_valid(&c->augment_rng[r]))
            FAIL("%s: corrupt checkpoint: unit %zu's random stream has the all-zero state, which no run reaches", path,
                 r);
    for (size_t r = 0; r < ranks; r++)
        if (!isfinite(c->partial_loss[r]) || c->partial_loss[r] < 0 || c->partial_correct[r] < 0 ||
            c->partial_correct[r] > c->data.train_samples)
            FAIL("%s: corrupt checkpoint: unit %zu's partial sums are impossible", path, r);
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
    CHECK_DP(files_check_input(path, "checkpoint", err));
    CHECK_DP((file = h5io_open_sealed(path, H5P_DEFAULT, 1, err)) < 0);
    CHECK_DP(read_config(file, c, path, err));
    CHECK_DP(read_state(file, c, path, err));
    hid_t closing = file;
    file = -1;
    CHECK_H5(H5Fclose(closing), "%s: cannot close", path);
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
        free(c->best_buffers);
        free(c->history);
        free(c->dropout_rng);
        free(c->augment_rng);
        free(c->partial_loss);
        free(c->partial_correct);
        free(c->buffers);
        free(c->residual);
        free(c->powersgd_q);
        free(c->pca.mean);
        free(c->pca.basis);
        free(c->pca.explained_variance);
        free(c->pca.explained_ratio);
    }
    memset(c, 0, sizeof *c);
}

int checkpoint_check_shape(const struct checkpoint *c, const struct data_identity *now, const char *data,
                           const char *path, char *err)
{
    const struct data_identity *then = &c->data;
    char a[48], b[48];
    image_shape_text(&then->image, a, sizeof a);
    image_shape_text(&now->image, b, sizeof b);
    if (strcmp(a, b) != 0 || then->classes != now->classes)
        FAIL("%s was trained on %s images of %d classes; %s holds %s images of %d classes (a network takes one "
             "shape and gives one count of classes)", path, a, then->classes, data, b, now->classes);
    return 0;
fail:
    return -1;
}

int checkpoint_check_data(const struct checkpoint *c, const struct data_identity *now, const char *data,
                          const char *path, const char *action, char *err)
{
    const struct data_identity *then = &c->data;
    CHECK_DP(checkpoint_check_shape(c, now, data, path, err));
    if (then->train_samples != now->train_samples || then->test_samples != now->test_samples)
        FAIL("%s was trained on data with %lld training and %lld test images; %s has %lld and "
             "%lld (%s with the data file the run began with)", path, then->train_samples, then->test_samples,
             data, now->train_samples, now->test_samples, action);
    const char *differs = then->train_images != now->train_images ? "training images"
                          : then->train_labels != now->train_labels ? "training labels"
                          : then->test_images != now->test_images   ? "test images"
                          : then->test_labels != now->test_labels   ? "test labels"
                                                                    : NULL;
    if (differs)
        FAIL("%s was trained on other data: the %s of %s differ from the run's (CRC-32 "
             "mismatch; %s with the data file the run began with)", path, differs, data, action);
    return 0;
fail:
    return -1;
}

int checkpoint_check_position(const struct checkpoint *c, long steps_per_epoch, size_t param_count,
                              size_t buffer_count, const char *path, char *err)
{
    if (c->param_count != param_count || c->buffer_count != buffer_count)
        FAIL("%s: corrupt checkpoint: %zu parameters and %zu statistics, the model %s has %zu and %zu", path,
             c->param_count, c->buffer_count, c->model, param_count, buffer_count);
    if (steps_per_epoch <= 0) /* eval: the sizes alone */
        return 0;
    if (c->step >= steps_per_epoch || (c->epoch == c->epochs && c->step != 0))
        FAIL("%s: corrupt checkpoint: step %ld of epoch %d, but an epoch has %ld steps", path, c->step + 1,
             c->epoch + 1, steps_per_epoch);
    if (c->opt_step != (long)c->epoch * steps_per_epoch + c->step)
        FAIL("%s: corrupt checkpoint: %ld optimizer steps at epoch %d, step %ld (expected %ld)", path, c->opt_step,
             c->epoch + 1, c->step + 1, (long)c->epoch * steps_per_epoch + c->step);
    return 0;
fail:
    return -1;
}
