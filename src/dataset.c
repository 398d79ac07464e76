#include "dptrain/dataset.h"

#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/comm_mpi.h"
#include "dptrain/files.h"
#include "dptrain/h5io.h"
#include "dptrain/seal.h"

#include <errno.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

size_t image_values(const struct image_shape *s)
{
    return (size_t)s->height * (size_t)s->width * (size_t)s->channels;
}

int image_shape_check(unsigned long long height, unsigned long long width, unsigned long long channels, char *why,
                      size_t size)
{
    if (height == 0 || width == 0 || channels == 0) {
        snprintf(why, size, ": a side or the channels are 0");
        return -1;
    }
    /* the sides first: their product cannot overflow once they are held to the limits */
    if (height > DATASET_MAX_SIDE || width > DATASET_MAX_SIDE || channels > DATASET_MAX_CHANNELS ||
        height * width * channels > (unsigned long long)DATASET_MAX_IMAGE_VALUES) {
        snprintf(why, size, ", more than dptrain takes (sides up to %d, channels up to %d, %ld values per image)",
                 DATASET_MAX_SIDE, DATASET_MAX_CHANNELS, DATASET_MAX_IMAGE_VALUES);
        return -1;
    }
    return 0;
}

void image_shape_text(const struct image_shape *s, char *out, size_t size)
{
    snprintf(out, size, "%dx%dx%d", s->height, s->width, s->channels);
}

void data_description_free(struct data_description *d)
{
    free((void *)d->class_names);
    memset(d, 0, sizeof *d);
}

void split_free(struct split *s)
{
    free(s->images);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

void dataset_part_free(struct dataset_part *part)
{
    split_free(&part->train);
    split_free(&part->test);
    data_description_free(&part->about);
}

/* ---- parallel read ------------------------------------------------------------------- */

/* The data file open for a collective read: MPI-IO access, and per set (train, test) its images
 * and labels datasets and their row count. */
struct data_file {
    const char *path;
    hid_t access, transfer, file;
    hid_t images[2], labels[2];
    hsize_t rows[2];
    struct image_shape shape[2];
};

static const char *const set_names[2] = {"train", "test"};

static void close_file(struct data_file *f)
{
    for (int i = 0; i < 2; i++) {
        if (f->images[i] >= 0)
            H5Dclose(f->images[i]);
        if (f->labels[i] >= 0)
            H5Dclose(f->labels[i]);
    }
    if (f->transfer >= 0)
        H5Pclose(f->transfer);
    if (f->access >= 0)
        H5Pclose(f->access);
    if (f->file >= 0)
        H5Fclose(f->file);
}

/* NAME exists and it and the group holding it are plain (hard) links: a soft link (/test
 * pointing at /train) or an external one (into another file) would train or test on other
 * images than the file seems to hold. */
static int check_plain_link(hid_t file, const char *name, const char *path, char *err)
{
    char part[64];
    H5L_info_t info;
    for (const char *end = strchr(name + 1, '/');; end = strchr(end + 1, '/')) {
        size_t length = end ? (size_t)(end - name) : strlen(name);
        snprintf(part, sizeof part, "%.*s", (int)length, name);
        if (H5Lexists(file, part, H5P_DEFAULT) <= 0)
            FAIL("%s: missing dataset %s (convert the data with 'dptrain convert')", path, name);
        CHECK_H5(H5Lget_info(file, part, &info, H5P_DEFAULT), "%s: cannot read the link %s", path, part);
        if (info.type != H5L_TYPE_HARD)
            FAIL("%s: %s is %s link; dptrain reads only arrays stored in the data file itself (copy the data in)",
                 path, part, info.type == H5L_TYPE_SOFT ? "a soft" : "an external");
        if (!end)
            return 0;
    }
fail:
    return -1;
}

/* Every filter a dataset's chunks pass through must be available to this HDF5 (lzf, written by
 * h5py, is not: the read failed with "can't open directory .../plugins" and no dataset named). */
static int check_filters(hid_t set, const char *name, const char *path, char *err)
{
    hid_t creation = -1;
    char filter_name[64];
    unsigned flags = 0, config = 0;
    size_t values = 0;
    CHECK_H5(creation = H5Dget_create_plist(set), "%s: cannot read how %s is stored", path, name);
    int count = H5Pget_nfilters(creation);
    CHECK_H5(count, "%s: cannot read the filters of %s", path, name);
    for (int i = 0; i < count; i++) {
        H5Z_filter_t id = H5Pget_filter2(creation, (unsigned)i, &flags, &values, NULL, sizeof filter_name,
                                         filter_name, &config);
        CHECK_H5(id, "%s: cannot read filter %d of %s", path, i, name);
        if (H5Zfilter_avail(id) <= 0)
            FAIL("%s: %s is stored with HDF5 filter %d (%s), which this HDF5 cannot decode: write it uncompressed or "
                 "with gzip (h5py: compression=\"gzip\")", path, name, (int)id, filter_name[0] ? filter_name : "unnamed");
    }
    CHECK_H5(H5Pclose(creation), "%s: cannot close a property list", path);
    return 0;
fail:
    if (creation >= 0)
        H5Pclose(creation);
    return -1;
}

/* An array's shape: ndims sizes. */
struct array_shape {
    hsize_t dims[4];
    int ndims;
};

/* Open NAME, which must be uint8 with between ranks[0] and ranks[1] dimensions; its shape goes
 * to *shape. */
static int open_uint8(const struct data_file *f, const char *name, const int ranks[2], struct array_shape *shape,
                      hid_t *set, char *err)
{
    hsize_t *dims = shape->dims;
    int *ndims = &shape->ndims;
    hid_t type = -1, space = -1;
    CHECK_DP(check_plain_link(f->file, name, f->path, err));
    CHECK_H5(*set = H5Dopen2(f->file, name, H5P_DEFAULT), "%s: cannot open %s", f->path, name);
    CHECK_DP(check_filters(*set, name, f->path, err));
    CHECK_H5(type = H5Dget_type(*set), "%s: cannot read type of %s", f->path, name);
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 || H5Tget_sign(type) != H5T_SGN_NONE)
        FAIL("%s: %s has the wrong type (expected uint8)", f->path, name);
    CHECK_H5(space = H5Dget_space(*set), "%s: cannot read shape of %s", f->path, name);
    *ndims = H5Sget_simple_extent_ndims(space);
    if (*ndims < ranks[0] || *ndims > ranks[1])
        FAIL("%s: %s has %d dimensions, expected %s", f->path, name, *ndims,
             ranks[0] == 1 ? "1 ([N])" : "3 ([N][H][W]) or 4 ([N][H][W][C])");
    CHECK_H5(H5Sget_simple_extent_dims(space, dims, NULL), "%s: cannot read shape of %s", f->path, name);
    CHECK_H5(H5Tclose(type), "%s: cannot close a type", f->path);
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", f->path);
    return 0;
fail:
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    return -1;
}

/* An image shape from an images array's dims [N][H][W] or [N][H][W][C], held to the limits in
 * dataset.h: a zero side or one no data set has (an allocation overflow waiting) is refused. */
static int shape_of(const struct data_file *f, const char *name, const hsize_t *dims, int ndims,
                    struct image_shape *shape, char *err)
{
    unsigned long long h = dims[1], w = dims[2], c = ndims == 4 ? dims[3] : 1;
    char why[160];
    if (image_shape_check(h, w, c, why, sizeof why) != 0)
        FAIL("%s: %s has images of %llux%llux%llu%s", f->path, name, h, w, c, why);
    *shape = (struct image_shape){(int)h, (int)w, (int)c};
    return 0;
fail:
    return -1;
}

/* Open SET/images [N][H][W] or [N][H][W][C] and SET/labels [N]. */
static int open_set(struct data_file *f, int which, char *err)
{
    char name[64];
    struct array_shape array;
    const hsize_t *dims = array.dims;
    snprintf(name, sizeof name, "/%s/images", set_names[which]);
    if (H5Lexists(f->file, set_names[which], H5P_DEFAULT) <= 0)
        FAIL("%s: missing dataset %s (convert the data with 'dptrain convert')", f->path, name);
    CHECK_DP(open_uint8(f, name, (const int[2]){3, 4}, &array, &f->images[which], err));
    CHECK_DP(shape_of(f, name, dims, array.ndims, &f->shape[which], err));
    f->rows[which] = dims[0];
    snprintf(name, sizeof name, "/%s/labels", set_names[which]);
    CHECK_DP(open_uint8(f, name, (const int[2]){1, 1}, &array, &f->labels[which], err));
    if (dims[0] != f->rows[which])
        FAIL("%s: %s has %llu labels for %llu images", f->path, name, (unsigned long long)dims[0],
             (unsigned long long)f->rows[which]);
    return 0;
fail:
    return -1;
}

/* The training and test images must have one shape: a network takes one size of input. */
static int check_same_shape(const struct data_file *f, char *err)
{
    const struct image_shape *a = &f->shape[0], *b = &f->shape[1];
    char train[48], test[48];
    image_shape_text(a, train, sizeof train);
    image_shape_text(b, test, sizeof test);
    if (a->channels != b->channels)
        FAIL("%s: /train/images have %d channel%s, /test/images %d (%s against %s)", f->path, a->channels,
             a->channels == 1 ? "" : "s", b->channels, train, test);
    if (a->height != b->height || a->width != b->width)
        FAIL("%s: /train/images are %s, /test/images %s: both sets need one image shape", f->path, train, test);
    return 0;
fail:
    return -1;
}

/* mirror_invariant: "yes" or "no" (as convert writes it), or an integer 1 or 0. */
static int read_mirror_invariant(const struct data_file *f, struct data_description *about, char *err)
{
    char text[16];
    long long value = -1;
    if (H5Aexists(f->file, "mirror_invariant") <= 0)
        FAIL("%s: lacks the attribute mirror_invariant, which says whether a mirror image keeps its class: add it "
             "(h5py: f.attrs[\"mirror_invariant\"] = \"no\", or \"yes\" for clothes and objects) or convert again",
             f->path);
    if (h5io_attr_is_string(f->file, "mirror_invariant") > 0) {
        CHECK_DP(h5io_read_attr_string(f->file, "mirror_invariant", text, sizeof text, f->path, err));
        value = strcmp(text, "yes") == 0 ? 1 : strcmp(text, "no") == 0 ? 0 : -1;
    } else if (h5io_read_attr(f->file, "mirror_invariant", H5T_NATIVE_LLONG, &value, f->path, err) != 0) {
        value = -1;
    }
    if (value != 0 && value != 1)
        FAIL("%s: attribute mirror_invariant must be \"yes\" or \"no\" (or 1 or 0)", f->path);
    about->mirror_invariant = (int)value;
    return 0;
fail:
    return -1;
}

/* class_names gives K; the data set's name is optional. */
static int read_description(const struct data_file *f, struct data_description *about, char *err)
{
    about->image = f->shape[0];
    if (H5Aexists(f->file, "class_names") <= 0)
        FAIL("%s: lacks the attribute class_names, which gives the classes (K names; every label below K): add "
             "it (h5py: f.attrs[\"class_names\"] = [\"cat\", \"dog\", ...]) or convert with --class-names", f->path);
    CHECK_DP(h5io_read_attr_strings(f->file, "class_names", &(struct h5io_strings){DATASET_MAX_CLASSES,
                                    DATASET_NAME_MAX, &about->class_names, &about->classes}, f->path, err));
    if (about->classes < 2)
        FAIL("%s: class_names holds %d name%s; a classifier needs at least 2 classes", f->path, about->classes,
             about->classes == 1 ? "" : "s");
    CHECK_DP(read_mirror_invariant(f, about, err));
    if (H5Aexists(f->file, "name") > 0)
        CHECK_DP(h5io_read_attr_string(f->file, "name", about->name, sizeof about->name, f->path, err));
    return 0;
fail:
    return -1;
}

static int open_file(const struct comm *comm, struct data_file *f, struct data_description *about, char *err)
{
    CHECK_H5(f->access = H5Pcreate(H5P_FILE_ACCESS), "cannot create HDF5 property list");
    CHECK_H5(H5Pset_fapl_mpio(f->access, comm_mpi_world(comm), MPI_INFO_NULL), "cannot set MPI-IO file access");
    CHECK_H5(f->file = H5Fopen(f->path, H5F_ACC_RDONLY, f->access), "%s: not a readable HDF5 file", f->path);
    CHECK_H5(f->transfer = H5Pcreate(H5P_DATASET_XFER), "cannot create HDF5 property list");
    CHECK_H5(H5Pset_dxpl_mpio(f->transfer, H5FD_MPIO_COLLECTIVE), "cannot set collective transfer");
    CHECK_DP(open_set(f, 0, err));
    CHECK_DP(open_set(f, 1, err));
    CHECK_DP(check_same_shape(f, err));
    if (f->rows[1] == 0)
        FAIL("%s: /test/images holds no images (nothing to evaluate on)", f->path);
    if (f->rows[0] == 0)
        FAIL("%s: /train/images holds no images (nothing to train on)", f->path);
    if (f->rows[0] < (hsize_t)comm->size)
        FAIL("%s: %llu training samples cannot be shared among %d ranks", f->path, (unsigned long long)f->rows[0],
             comm->size);
    CHECK_DP(read_description(f, about, err));
    return 0;
fail:
    return -1;
}

/* Collective read of rows [first, first + count) of a [N][...] uint8 dataset into out; count may
 * be 0, in which case the rank still takes part with an empty selection. */
static int read_rows(const struct data_file *f, hid_t set, const struct split *block, size_t row_bytes, uint8_t *out,
                     char *err)
{
    hid_t file_space = -1, mem_space = -1;
    hsize_t start[4] = {0}, extent[4];
    unsigned long long first = block->first, last = block->first + block->count;
    CHECK_H5(file_space = H5Dget_space(set), "%s: cannot get dataspace", f->path);
    CHECK_H5(H5Sget_simple_extent_dims(file_space, extent, NULL), "%s: cannot read a shape", f->path);
    start[0] = block->first;
    extent[0] = block->count;
    hsize_t mem_dims[1] = {block->count * row_bytes > 0 ? block->count * row_bytes : 1};
    CHECK_H5(mem_space = H5Screate_simple(1, mem_dims, NULL), "%s: cannot create dataspace", f->path);
    if (block->count == 0) {
        CHECK_H5(H5Sselect_none(file_space), "%s: cannot select", f->path);
        CHECK_H5(H5Sselect_none(mem_space), "%s: cannot select", f->path);
    } else {
        CHECK_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, extent, NULL),
                 "%s: cannot select rows %llu..%llu", f->path, first, last);
    }
    CHECK_H5(H5Dread(set, H5T_NATIVE_UINT8, mem_space, file_space, f->transfer, out),
             "%s: cannot read rows %llu..%llu", f->path, first, last);
    CHECK_H5(H5Sclose(mem_space), "%s: cannot close a dataspace", f->path);
    CHECK_H5(H5Sclose(file_space), "%s: cannot close a dataspace", f->path);
    return 0;
fail:
    if (mem_space >= 0)
        H5Sclose(mem_space);
    if (file_space >= 0)
        H5Sclose(file_space);
    return -1;
}

/* Allocate a block and read set `which`'s images and labels into it (collective). */
static int read_block(const struct data_file *f, int which, size_t first, size_t count, struct split *out, char *err)
{
    size_t bytes = image_values(&f->shape[which]);
    out->first = first;
    out->count = count;
    out->image_bytes = bytes;
    if (count > (SIZE_MAX - 1) / bytes)
        FAIL("%s: /%s/images: %zu images are more than this machine can address", f->path, set_names[which], count);
    CHECK_PTR(out->images = malloc(count * bytes + 1),
              "%s: /%s/images: cannot allocate this rank's %zu images (%.3g GB; more ranks or hosts share a large set)",
              f->path, set_names[which], count, (double)count * (double)bytes / 1e9);
    CHECK_PTR(out->labels = malloc(count + 1), "%s: /%s/labels: cannot allocate this rank's %zu labels", f->path,
              set_names[which], count);
    CHECK_DP(read_rows(f, f->images[which], out, bytes, out->images, err));
    CHECK_DP(read_rows(f, f->labels[which], out, 1, out->labels, err));
    return 0;
fail:
    return -1;
}

int dataset_check_labels(const struct split *s, int classes, const char *group, const char *path, char *err)
{
    for (size_t i = 0; s->labels && i < s->count; i++)
        if (s->labels[i] >= classes)
            FAIL("%s: /%s/labels[%zu] = %u, but class_names names %d classes (labels 0..%d)", path, group,
                 s->first + i, s->labels[i], classes, classes - 1);
    return 0;
fail:
    return -1;
}

/* Where a training array's bytes are: contiguous storage in this file, or an error that says how
 * to make it so. */
static int locate(const struct data_file *f, hid_t set, const char *name, long long *at, char *err)
{
    hid_t creation = -1;
    CHECK_H5(creation = H5Dget_create_plist(set), "%s: cannot read how %s is stored", f->path, name);
    H5D_layout_t layout = H5Pget_layout(creation);
    CHECK_H5(layout, "%s: cannot read the layout of %s", f->path, name);
    int external = H5Pget_external_count(creation);
    CHECK_H5(external, "%s: cannot read the storage of %s", f->path, name);
    CHECK_H5(H5Pclose(creation), "%s: cannot close a property list", f->path);
    creation = -1;
    if (layout != H5D_CONTIGUOUS || external > 0)
        FAIL("%s: %s is stored %s; --memory-budget reads it with plain reads and needs it contiguous in the file "
             "(h5repack -l %s:CONTI %s COPY.h5 makes a copy that is)", f->path, name,
             external > 0 ? "in external files" : layout == H5D_CHUNKED ? "in chunks" : "compact", name, f->path);
    haddr_t address = H5Dget_offset(set);
    if (address == HADDR_UNDEF)
        FAIL("%s: %s has no data stored in the file", f->path, name);
    *at = (long long)address;
    return 0;
fail:
    if (creation >= 0)
        H5Pclose(creation);
    return -1;
}

/* Everything collective happens here; the steps that can fail differently on different ranks
 * (label checks) come after the file is closed, and the caller agrees on the outcome. With
 * `stream`, the training block is placed and located, not read. */
static int read_collective(const struct comm *comm, const char *path, int shards, int stream,
                           struct dataset_part *part, char *err)
{
    struct data_file f = {path, -1, -1, -1, {-1, -1}, {-1, -1}, {0, 0}, {{0, 0, 0}, {0, 0, 0}}};
    size_t first, count;
    CHECK_DP(open_file(comm, &f, &part->about, err));
    comm_shard_block((size_t)f.rows[0], shards, comm->size, comm->rank, &first, &count);
    if (stream) {
        part->train = (struct split){count, image_values(&f.shape[0]), first, NULL, NULL};
        CHECK_DP(locate(&f, f.images[0], "/train/images", &part->train_at.images_at, err));
        CHECK_DP(locate(&f, f.labels[0], "/train/labels", &part->train_at.labels_at, err));
    } else {
        CHECK_DP(read_block(&f, 0, first, count, &part->train, err));
    }
    CHECK_DP(read_block(&f, 1, 0, comm->rank == 0 ? (size_t)f.rows[1] : 0, &part->test, err));
    part->train_total = (size_t)f.rows[0];
    hid_t file = f.file;
    f.file = -1;
    close_file(&f);
    CHECK_H5(H5Fclose(file), "%s: cannot close", path);
    return 0;
fail:
    close_file(&f);
    return -1;
}

int dataset_check_file(const char *path, const char *label, char *err)
{
    if (files_check_input(path, label, err) == 0)
        return 0;
    if (access(path, F_OK) != 0)
        err_append_hint(err, "make the data file with 'dptrain convert'");
    return -1;
}

static int read_checked(const struct comm *comm, const char *path, int shards, int stream, struct dataset_part *part,
                        char *err)
{
    memset(part, 0, sizeof *part);
    /* Every rank checks the file before the collective open, which would otherwise leave the
     * ranks that can read it waiting for one that cannot (a folder, a FIFO, a missing file).
     * Across hosts the likely cause is a path that is not on a filesystem they all share. */
    int ok = comm->hosts > 1 ? files_check_input(path, "data file", err) == 0
                             : dataset_check_file(path, "data file", err) == 0;
    /* The seal too (seal.h): a damaged file must not reach HDF5's parser on any rank. */
    ok = ok && seal_check(path, err) >= 0;
    if (!ok && comm->hosts > 1)
        err_append_hint(err, "every host must see the data file: is it on a filesystem that all %d hosts share?",
                        comm->hosts);
    if (comm_agree(comm, ok, err) != 0)
        return -1;
    ok = read_collective(comm, path, shards, stream, part, err) == 0;
    int classes = part->about.classes;
    ok = ok && dataset_check_labels(&part->train, classes, "train", path, err) == 0 &&
         dataset_check_labels(&part->test, classes, "test", path, err) == 0;
    /* Failures before the collective reads are the same on every rank (same file, same
     * metadata); label errors are local. comm_agree hands the first failing rank's message
     * to every rank, so the caller prints it once. */
    if (comm_agree(comm, ok, err) != 0) {
        dataset_part_free(part);
        return -1;
    }
    return 0;
}

int dataset_read(const struct comm *comm, const char *path, int shards, struct dataset_part *part, char *err)
{
    return read_checked(comm, path, shards, 0, part, err);
}

int dataset_read_to_stream(const struct comm *comm, const char *path, struct dataset_part *part, char *err)
{
    return read_checked(comm, path, 0, 1, part, err);
}

/* CRC-32 of one rank's block, and then of the whole array: the blocks combined in rank order,
 * which is file order (comm_shard_block). */
static int combine_blocks(const struct comm *comm, uint32_t mine, unsigned long long bytes, uint32_t *whole,
                          char *err)
{
    int ranks = comm->size;
    uint64_t *crcs = NULL, *lengths = NULL;
    CHECK_PTR(crcs = malloc(sizeof *crcs * (size_t)ranks), "cannot allocate the data checksums");
    CHECK_PTR(lengths = malloc(sizeof *lengths * (size_t)ranks), "cannot allocate the data checksums");
    CHECK_DP(comm_allgather_u64(comm, mine, crcs, err));
    CHECK_DP(comm_allgather_u64(comm, bytes, lengths, err));
    uLong crc = (uLong)crcs[0];
    for (int r = 1; r < ranks; r++)
        crc = crc32_combine(crc, (uLong)crcs[r], (z_off_t)lengths[r]);
    *whole = (uint32_t)crc;
    free(crcs);
    free(lengths);
    return 0;
fail:
    free(crcs);
    free(lengths);
    return -1;
}

/* The sum of every rank's `mine`. */
static int count_samples(const struct comm *comm, size_t mine, size_t *total, char *err)
{
    size_t *all = NULL;
    CHECK_PTR(all = malloc(sizeof *all * (size_t)comm->size), "cannot allocate the sample counts");
    CHECK_DP(comm_allgather_size(comm, mine, all, err));
    *total = 0;
    for (int r = 0; r < comm->size; r++)
        *total += all[r];
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

int dataset_identify(const struct comm *comm, const struct dataset_part *part, const struct block_crcs *streamed,
                     struct data_identity *id, char *err)
{
    const struct split *train = &part->train, *test = &part->test;
    size_t bytes = image_values(&part->about.image), totals[2] = {0, 0};
    size_t test_crcs[2] = {crc_of(test->images, test->count * bytes), crc_of(test->labels, test->count)};
    struct block_crcs held = {0, 0, train->count};
    if (!streamed) {
        held.images = crc_of(train->images, train->count * bytes);
        held.labels = crc_of(train->labels, train->count);
    }
    const struct block_crcs *mine = streamed ? streamed : &held;
    CHECK_DP(count_samples(comm, mine->rows, &totals[0], err));
    CHECK_DP(count_samples(comm, test->count, &totals[1], err));
    CHECK_DP(combine_blocks(comm, mine->images, mine->rows * bytes, &id->train_images, err));
    CHECK_DP(combine_blocks(comm, mine->labels, mine->rows, &id->train_labels, err));
    CHECK_DP(comm_bcast_size(comm, &test_crcs[0], 0, err)); /* rank 0 holds the test set */
    CHECK_DP(comm_bcast_size(comm, &test_crcs[1], 0, err));
    id->image = part->about.image;
    id->classes = part->about.classes;
    id->train_samples = (long long)totals[0];
    id->test_samples = (long long)totals[1];
    id->test_images = (uint32_t)test_crcs[0];
    id->test_labels = (uint32_t)test_crcs[1];
    return 0;
fail:
    return -1;
}
