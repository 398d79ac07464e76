#include "dptrain/dataset.h"

#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/files.h"
#include "dptrain/h5io.h"
#include "dptrain/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

const char *const dataset_class_names[DATASET_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

void dataset_block(size_t n, int ranks, int r, size_t *first, size_t *count)
{
    size_t base = n / (size_t)ranks, extra = n % (size_t)ranks;
    size_t rr = (size_t)r;
    *first = rr * base + (rr < extra ? rr : extra);
    *count = base + (rr < extra ? 1 : 0);
}

void split_free(struct split *s)
{
    free(s->images);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* ---- convert ------------------------------------------------------------------------- */

/* Find DIR/NAME or DIR/NAME.gz. */
static int locate(const char *dir, const char *name, char *path, size_t size, char *err)
{
    struct stat info;
    if (stat(dir, &info) != 0)
        FAIL("--source %s: %s", dir, strerror(errno));
    if (!S_ISDIR(info.st_mode))
        FAIL("--source %s: is not a folder (give the folder of the four IDX files)", dir);
    snprintf(path, size, "%s/%s", dir, name);
    if (stat(path, &info) == 0)
        return 0;
    snprintf(path, size, "%s/%s.gz", dir, name);
    if (stat(path, &info) == 0)
        return 0;
    err_set(err, "%s/%s: not found (nor %s.gz)", dir, name, name);
fail:
    return -1;
}

/* An IDX source must be a regular file, and not the file convert is about to write. */
static int check_source(const char *path, const char *out_path, char *err)
{
    CHECK_DP(files_check_input(path, "--source", err));
    if (files_same(path, out_path))
        FAIL("--out %s: is the source file %s (convert would overwrite its own input)", out_path, path);
    return 0;
fail:
    return -1;
}

static int read_pair(const char *dir, const char *images_name, const char *labels_name,
                     struct idx_array *images, struct idx_array *labels, const char *out_path, char *err)
{
    char images_path[4096], labels_path[4096];
    CHECK_DP(locate(dir, images_name, images_path, sizeof images_path, err));
    CHECK_DP(locate(dir, labels_name, labels_path, sizeof labels_path, err));
    CHECK_DP(check_source(images_path, out_path, err));
    CHECK_DP(check_source(labels_path, out_path, err));
    CHECK_DP(idx_read(images_path, 3, images, err));
    CHECK_DP(idx_read(labels_path, 1, labels, err));
    if (images->dims[1] != DATASET_ROWS || images->dims[2] != DATASET_COLS)
        FAIL("%s: images are %ux%u, expected %dx%d", images_path, images->dims[1],
             images->dims[2], DATASET_ROWS, DATASET_COLS);
    if (images->dims[0] == 0)
        FAIL("%s: contains no images", images_path);
    if (images->dims[0] != labels->dims[0])
        FAIL("%s: %u labels, but %s has %u images", labels_path, labels->dims[0], images_path,
             images->dims[0]);
    for (size_t i = 0; i < labels->count; i++)
        if (labels->data[i] >= DATASET_CLASSES)
            FAIL("%s: label %u at index %zu is out of range 0..%d", labels_path,
                 labels->data[i], i, DATASET_CLASSES - 1);
    return 0;
fail:
    return -1;
}

static int write_group(hid_t file, const char *group_name, const struct idx_array *images,
                       const struct idx_array *labels, const char *path, char *err)
{
    hid_t group = -1;
    hsize_t image_dims[3] = {images->dims[0], DATASET_ROWS, DATASET_COLS};
    hsize_t label_dims[1] = {labels->dims[0]};
    CHECK_H5(group = H5Gcreate2(file, group_name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create group %s", path, group_name);
    CHECK_DP(h5io_write_array(group, "images", H5T_NATIVE_UINT8, H5T_STD_U8LE, 3, image_dims,
                              images->data, path, err));
    CHECK_DP(h5io_write_array(group, "labels", H5T_NATIVE_UINT8, H5T_STD_U8LE, 1, label_dims,
                              labels->data, path, err));
    H5Gclose(group);
    return 0;
fail:
    if (group >= 0)
        H5Gclose(group);
    return -1;
}

static int write_data_file(const char *out_path, const char *source_dir,
                           const struct idx_array *train_images, const struct idx_array *train_labels,
                           const struct idx_array *test_images, const struct idx_array *test_labels,
                           char *err)
{
    hid_t file = -1;
    CHECK_DP((file = h5io_create_in_memory(out_path, err)) < 0);
    CHECK_DP(write_group(file, "train", train_images, train_labels, out_path, err));
    CHECK_DP(write_group(file, "test", test_images, test_labels, out_path, err));
    CHECK_DP(h5io_write_strings_attr(file, "class_names", dataset_class_names, DATASET_CLASSES,
                                       out_path, err));
    const char *source[1] = {source_dir};
    CHECK_DP(h5io_write_strings_attr(file, "source", source, 1, out_path, err));
    hid_t finished = file;
    file = -1;
    CHECK_DP(h5io_publish(finished, out_path, err));
    return 0;
fail:
    if (file >= 0)
        H5Fclose(file);
    return -1;
}

int dataset_convert(const char *source_dir, const char *out_path, char *err)
{
    struct idx_array train_images = {0}, train_labels = {0}, test_images = {0}, test_labels = {0};
    int status = -1;
    CHECK_DP(read_pair(source_dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       &train_images, &train_labels, out_path, err));
    CHECK_DP(read_pair(source_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                       &test_images, &test_labels, out_path, err));
    CHECK_DP(write_data_file(out_path, source_dir, &train_images, &train_labels, &test_images,
                             &test_labels, err));
    status = 0;
fail:
    idx_free(&train_images);
    idx_free(&train_labels);
    idx_free(&test_images);
    idx_free(&test_labels);
    return status;
}

/* ---- parallel read ------------------------------------------------------------------- */

/* Open GROUP/images and GROUP/labels and check their types and shapes. */
static int open_pair(hid_t file, const char *group, hid_t *images, hid_t *labels, hsize_t *n,
                     const char *path, char *err)
{
    char name[64];
    hid_t space = -1, type = -1;
    hsize_t dims[3];
    snprintf(name, sizeof name, "/%s/images", group);
    if (H5Lexists(file, group, H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0)
        FAIL("%s: missing dataset %s (convert the data with 'dptrain convert')", path, name);
    CHECK_H5(*images = H5Dopen2(file, name, H5P_DEFAULT), "%s: cannot open %s", path, name);
    CHECK_H5(type = H5Dget_type(*images), "%s: cannot read type of %s", path, name);
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 || H5Tget_sign(type) != H5T_SGN_NONE)
        FAIL("%s: %s has the wrong type (expected uint8)", path, name);
    H5Tclose(type);
    type = -1;
    CHECK_H5(space = H5Dget_space(*images), "%s: cannot read shape of %s", path, name);
    if (H5Sget_simple_extent_ndims(space) != 3)
        FAIL("%s: %s has %d dimensions, expected 3 [N][28][28]", path, name,
             H5Sget_simple_extent_ndims(space));
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (dims[1] != DATASET_ROWS || dims[2] != DATASET_COLS)
        FAIL("%s: %s has shape [%llu][%llu][%llu], expected [N][28][28]", path, name,
             (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2]);
    H5Sclose(space);
    space = -1;
    *n = dims[0];

    snprintf(name, sizeof name, "/%s/labels", group);
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        FAIL("%s: missing dataset %s", path, name);
    CHECK_H5(*labels = H5Dopen2(file, name, H5P_DEFAULT), "%s: cannot open %s", path, name);
    CHECK_H5(type = H5Dget_type(*labels), "%s: cannot read type of %s", path, name);
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 || H5Tget_sign(type) != H5T_SGN_NONE)
        FAIL("%s: %s has the wrong type (expected uint8)", path, name);
    CHECK_H5(space = H5Dget_space(*labels), "%s: cannot read shape of %s", path, name);
    if (H5Sget_simple_extent_ndims(space) != 1)
        FAIL("%s: %s must be one-dimensional", path, name);
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (dims[0] != *n)
        FAIL("%s: %s has %llu labels for %llu images", path, name, (unsigned long long)dims[0],
             (unsigned long long)*n);
    H5Tclose(type);
    H5Sclose(space);
    return 0;
fail:
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    return -1;
}

/* Collective read of rows [first, first + count) of a [N][...] uint8 dataset; count may be 0,
 * in which case the rank still takes part with an empty selection. */
static int read_rows(hid_t set, hsize_t first, hsize_t count, hsize_t row_bytes, uint8_t *out,
                     hid_t transfer, const char *path, char *err)
{
    hid_t file_space = -1, mem_space = -1;
    int ndims;
    hsize_t start[3] = {0}, extent[3];
    CHECK_H5(file_space = H5Dget_space(set), "%s: cannot get dataspace", path);
    ndims = H5Sget_simple_extent_ndims(file_space);
    H5Sget_simple_extent_dims(file_space, extent, NULL);
    start[0] = first;
    extent[0] = count;
    hsize_t mem_dims[1] = {count * row_bytes > 0 ? count * row_bytes : 1};
    CHECK_H5(mem_space = H5Screate_simple(1, mem_dims, NULL), "%s: cannot create dataspace", path);
    if (count == 0) {
        CHECK_H5(H5Sselect_none(file_space), "%s: cannot select", path);
        CHECK_H5(H5Sselect_none(mem_space), "%s: cannot select", path);
    } else {
        CHECK_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, extent, NULL),
                 "%s: cannot select rows %llu..%llu", path, (unsigned long long)first,
                 (unsigned long long)(first + count));
    }
    (void)ndims;
    CHECK_H5(H5Dread(set, H5T_NATIVE_UINT8, mem_space, file_space, transfer, out),
             "%s: cannot read rows %llu..%llu", path, (unsigned long long)first,
             (unsigned long long)(first + count));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    return 0;
fail:
    if (mem_space >= 0)
        H5Sclose(mem_space);
    if (file_space >= 0)
        H5Sclose(file_space);
    return -1;
}

static int alloc_split(struct split *s, size_t first, size_t count, char *err)
{
    s->first = first;
    s->count = count;
    CHECK_PTR(s->images = malloc(count * DATASET_PIXELS + 1), "cannot allocate %zu images", count);
    CHECK_PTR(s->labels = malloc(count + 1), "cannot allocate %zu labels", count);
    return 0;
fail:
    return -1;
}

static int check_labels(const struct split *s, const char *group, const char *path, char *err)
{
    for (size_t i = 0; i < s->count; i++)
        if (s->labels[i] >= DATASET_CLASSES)
            FAIL("%s: /%s/labels[%zu] = %u is out of range 0..%d", path, group, s->first + i,
                 s->labels[i], DATASET_CLASSES - 1);
    return 0;
fail:
    return -1;
}

/* Everything collective happens here; the steps that can fail differently on different ranks
 * (label checks) come after the file is closed, and the caller agrees on the outcome. */
static int read_collective(MPI_Comm comm, const char *path, int test_reader, struct split *train,
                           struct split *test, size_t *train_total, char *err)
{
    int rank, ranks;
    hid_t file_access = -1, transfer = -1, file = -1;
    hid_t train_images = -1, train_labels = -1, test_images = -1, test_labels = -1;
    hsize_t n_train = 0, n_test = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);

    CHECK_H5(file_access = H5Pcreate(H5P_FILE_ACCESS), "cannot create HDF5 property list");
    CHECK_H5(H5Pset_fapl_mpio(file_access, comm, MPI_INFO_NULL), "cannot set MPI-IO file access");
    CHECK_H5(file = H5Fopen(path, H5F_ACC_RDONLY, file_access), "%s: not a readable HDF5 file", path);
    CHECK_H5(transfer = H5Pcreate(H5P_DATASET_XFER), "cannot create HDF5 property list");
    CHECK_H5(H5Pset_dxpl_mpio(transfer, H5FD_MPIO_COLLECTIVE), "cannot set collective transfer");

    CHECK_DP(open_pair(file, "train", &train_images, &train_labels, &n_train, path, err));
    CHECK_DP(open_pair(file, "test", &test_images, &test_labels, &n_test, path, err));
    if (n_test == 0)
        FAIL("%s: /test/images holds no images (nothing to evaluate on)", path);
    if (n_train == 0)
        FAIL("%s: /train/images holds no images (nothing to train on)", path);
    if (n_train < (hsize_t)ranks)
        FAIL("%s: %llu training samples cannot be shared among %d ranks", path,
             (unsigned long long)n_train, ranks);

    size_t first, count;
    dataset_block((size_t)n_train, ranks, rank, &first, &count);
    CHECK_DP(alloc_split(train, first, count, err));
    CHECK_DP(read_rows(train_images, first, count, DATASET_PIXELS, train->images, transfer, path, err));
    CHECK_DP(read_rows(train_labels, first, count, 1, train->labels, transfer, path, err));
    size_t test_count = rank == test_reader ? (size_t)n_test : 0;
    CHECK_DP(alloc_split(test, 0, test_count, err));
    CHECK_DP(read_rows(test_images, 0, test_count, DATASET_PIXELS, test->images, transfer, path, err));
    CHECK_DP(read_rows(test_labels, 0, test_count, 1, test->labels, transfer, path, err));
    *train_total = (size_t)n_train;

    H5Dclose(train_images);
    H5Dclose(train_labels);
    H5Dclose(test_images);
    H5Dclose(test_labels);
    H5Pclose(transfer);
    H5Pclose(file_access);
    CHECK_H5(H5Fclose(file), "%s: cannot close", path);
    return 0;
fail:
    if (train_images >= 0) H5Dclose(train_images);
    if (train_labels >= 0) H5Dclose(train_labels);
    if (test_images >= 0) H5Dclose(test_images);
    if (test_labels >= 0) H5Dclose(test_labels);
    if (transfer >= 0) H5Pclose(transfer);
    if (file_access >= 0) H5Pclose(file_access);
    if (file >= 0) H5Fclose(file);
    return -1;
}

int dataset_read(MPI_Comm comm, const char *path, int test_reader, struct split *train,
                 struct split *test, size_t *train_total, char *err)
{
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    /* Every rank checks the file before the collective open, which would otherwise leave the
     * ranks that can read it waiting for one that cannot (a folder, a FIFO, a missing file). */
    int ok = files_check_input(path, "--data", err) == 0;
    if (!ok && access(path, F_OK) != 0)
        err_append_hint(err, "make the data file with 'dptrain convert'");
    if (comm_agree(comm, ok, err) != 0)
        return -1;
    ok = read_collective(comm, path, test_reader, train, test, train_total, err) == 0;
    if (ok)
        ok = check_labels(train, "train", path, err) == 0 &&
             check_labels(test, "test", path, err) == 0;
    /* Failures before the collective reads are the same on every rank (same file, same
     * metadata); label errors are local. comm_agree hands the first failing rank's message
     * to every rank, so the caller prints it once. */
    if (comm_agree(comm, ok, err) != 0) {
        split_free(train);
        split_free(test);
        return -1;
    }
    return 0;
}

/* CRC-32 of one rank's block, and then of the whole array: the blocks combined in rank order,
 * which is file order (dataset_block). */
static int combine_blocks(MPI_Comm comm, uint32_t mine, unsigned long long bytes, uint32_t *whole, char *err)
{
    int ranks;
    unsigned long long pair[2] = {mine, bytes}, *all = NULL;
    CHECK_MPI(MPI_Comm_size(comm, &ranks), "MPI_Comm_size failed");
    CHECK_PTR(all = malloc(sizeof pair * (size_t)ranks), "cannot allocate the data checksums");
    CHECK_MPI(MPI_Allgather(pair, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, comm),
              "cannot combine the data checksums");
    uLong crc = (uLong)all[0];
    for (int r = 1; r < ranks; r++)
        crc = crc32_combine(crc, (uLong)all[2 * r], (z_off_t)all[2 * r + 1]);
    *whole = (uint32_t)crc;
    free(all);
    return 0;
fail:
    free(all);
    return -1;
}

static uint32_t crc_of(const uint8_t *bytes, size_t length)
{
    return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), bytes, length);
}

int dataset_identify(MPI_Comm comm, const struct split *train, const struct split *test, int test_reader,
                     struct data_identity *id, char *err)
{
    unsigned long long counts[2] = {train->count, test->count}, totals[2] = {0, 0};
    uint32_t test_crcs[2] = {crc_of(test->images, test->count * DATASET_PIXELS), crc_of(test->labels, test->count)};
    CHECK_MPI(MPI_Allreduce(counts, totals, 2, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm), "cannot count the data");
    CHECK_DP(combine_blocks(comm, crc_of(train->images, train->count * DATASET_PIXELS),
                            train->count * DATASET_PIXELS, &id->train_images, err));
    CHECK_DP(combine_blocks(comm, crc_of(train->labels, train->count), train->count, &id->train_labels, err));
    CHECK_MPI(MPI_Bcast(test_crcs, 2, MPI_UINT32_T, test_reader, comm), "cannot share the test-set checksums");
    id->train_samples = (long long)totals[0];
    id->test_samples = (long long)totals[1];
    id->test_images = test_crcs[0];
    id->test_labels = test_crcs[1];
    return 0;
fail:
    return -1;
}
