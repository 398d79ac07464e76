#include "dptrain/convert.h"

#include "dptrain/check.h"
#include "dptrain/dataset.h"
#include "dptrain/files.h"
#include "dptrain/h5io.h"
#include "dptrain/idx.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *const standard_names[CONVERT_FILES] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/* Data sets convert recognises by the CRC-32 of their label arrays, to give them their class
 * names and mirror invariance without flags. A set not here gets "0".."K-1" and no mirroring. */
struct known_set {
    const char *name;
    uint32_t train_labels, test_labels;
    int classes;
    const char *const *class_names;
    int mirror_invariant;
};

static const char *const fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
static const struct known_set known_sets[] = {
    {"Fashion-MNIST", 0x2ed6e46au, 0x242bc73fu, (int)(sizeof fashion_names / sizeof fashion_names[0]), fashion_names,
     1},
};

/* The images and labels of one set (train or test), as IDX arrays, and the paths read. */
struct idx_pair {
    struct idx_array images, labels;
    char images_path[4096], labels_path[4096];
};

static void pair_free(struct idx_pair *pair)
{
    idx_free(&pair->images);
    idx_free(&pair->labels);
}

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

/* Every file's path: in the source folder, or as named. */
static int locate_all(const struct convert_request *q, char paths[CONVERT_FILES][4096], char *err)
{
    for (int i = 0; i < CONVERT_FILES; i++) {
        if (q->source_dir)
            CHECK_DP(locate(q->source_dir, standard_names[i], paths[i], sizeof paths[i], err));
        else
            snprintf(paths[i], sizeof paths[i], "%s", q->files[i]);
        CHECK_DP(files_check_input(paths[i], "IDX file", err));
    }
    return 0;
fail:
    return -1;
}

static void image_shape_of(const struct idx_array *images, struct image_shape *shape)
{
    *shape = (struct image_shape){(int)images->dims[1], (int)images->dims[2],
                                  images->ndims == 4 ? (int)images->dims[3] : 1};
}

/* One set's two files, read and checked against each other and dataset.h's limits. */
static int read_pair(const char *images_path, const char *labels_path, struct idx_pair *pair, char *err)
{
    struct idx_array *images = &pair->images, *labels = &pair->labels;
    snprintf(pair->images_path, sizeof pair->images_path, "%s", images_path);
    snprintf(pair->labels_path, sizeof pair->labels_path, "%s", labels_path);
    CHECK_DP(idx_read(images_path, IDX_IMAGES, images, err));
    CHECK_DP(idx_read(labels_path, IDX_LABELS, labels, err));
    unsigned channels = images->ndims == 4 ? images->dims[3] : 1;
    char why[160];
    if (images->dims[0] == 0)
        FAIL("%s: contains no images", images_path);
    if (image_shape_check(images->dims[1], images->dims[2], channels, why, sizeof why) != 0)
        FAIL("%s: images of %ux%ux%u%s", images_path, images->dims[1], images->dims[2], channels, why);
    if (images->dims[0] != labels->dims[0])
        FAIL("%s: %u labels, but %s has %u images", labels_path, labels->dims[0], images_path, images->dims[0]);
    return 0;
fail:
    return -1;
}

/* The training and test images must share one shape. */
static int check_shapes(const struct idx_pair sets[2], char *err)
{
    struct image_shape train, test;
    char a[48], b[48];
    image_shape_of(&sets[0].images, &train);
    image_shape_of(&sets[1].images, &test);
    if (train.height != test.height || train.width != test.width || train.channels != test.channels) {
        image_shape_text(&train, a, sizeof a);
        image_shape_text(&test, b, sizeof b);
        FAIL("%s: test images are %s, but the training images (%s) are %s", sets[1].images_path, b,
             sets[0].images_path, a);
    }
    return 0;
fail:
    return -1;
}

static uint32_t crc_of(const struct idx_array *a)
{
    return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), a->data, a->count);
}

static const struct known_set *recognise(const struct idx_pair sets[2])
{
    uint32_t train = crc_of(&sets[0].labels), test = crc_of(&sets[1].labels);
    for (size_t i = 0; i < sizeof known_sets / sizeof known_sets[0]; i++)
        if (known_sets[i].train_labels == train && known_sets[i].test_labels == test)
            return &known_sets[i];
    return NULL;
}

/* The classes' names: --class-names split at commas, a known set's, or "0".."K-1" with K the
 * largest label + 1. `text` holds the strings that names[] points into. */
struct class_list {
    int count;
    const char *names[DATASET_MAX_CLASSES];
    char text[DATASET_MAX_CLASSES * DATASET_NAME_MAX];
};

static int split_names(const char *given, struct class_list *list, char *err)
{
    if (strlen(given) >= sizeof list->text)
        FAIL("--class-names: longer than %zu characters", sizeof list->text - 1);
    snprintf(list->text, sizeof list->text, "%s", given);
    list->count = 0;
    for (char *name = list->text;; name++) {
        char *comma = strchr(name, ',');
        if (comma)
            *comma = '\0';
        if (*name == '\0')
            FAIL("--class-names '%s': name %d is empty (give names separated by commas: a,b,c)", given,
                 list->count + 1);
        if (strlen(name) >= DATASET_NAME_MAX)
            FAIL("--class-names: name %d is longer than %d bytes", list->count + 1, DATASET_NAME_MAX - 1);
        if (list->count == DATASET_MAX_CLASSES)
            FAIL("--class-names: more than %d names (labels are uint8)", DATASET_MAX_CLASSES);
        list->names[list->count++] = name;
        if (!comma)
            return 0;
        name = comma;
    }
fail:
    return -1;
}

static int largest_label(const struct idx_pair sets[2])
{
    int largest = 0;
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < sets[s].labels.count; i++)
            largest = sets[s].labels.data[i] > largest ? sets[s].labels.data[i] : largest;
    return largest;
}

static int class_list_of(const struct convert_request *q, const struct idx_pair sets[2],
                         const struct known_set *known, struct class_list *list, char *err)
{
    int largest = largest_label(sets);
    if (q->class_names) {
        CHECK_DP(split_names(q->class_names, list, err));
    } else if (known) {
        list->count = known->classes;
        for (int c = 0; c < known->classes; c++)
            list->names[c] = known->class_names[c];
    } else {
        list->count = largest + 1;
        char *next = list->text;
        for (int c = 0; c < list->count; c++) {
            list->names[c] = next;
            next += snprintf(next, 4, "%d", c) + 1;
        }
    }
    if (list->count < 2)
        FAIL("%s: every label is %d: a classifier needs at least 2 classes (give --class-names for them all)",
             sets[0].labels_path, largest);
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < sets[s].labels.count; i++)
            if (sets[s].labels.data[i] >= list->count)
                FAIL("%s: label %u at index %zu, but %d class names were given (labels 0..%d)", sets[s].labels_path,
                     sets[s].labels.data[i], i, list->count, list->count - 1);
    return 0;
fail:
    return -1;
}

static int write_group(hid_t file, const char *group_name, const struct idx_pair *pair, const char *path, char *err)
{
    hid_t group = -1;
    const struct idx_array *images = &pair->images;
    hsize_t image_dims[4] = {images->dims[0], images->dims[1], images->dims[2], images->dims[3]};
    hsize_t label_dims[1] = {pair->labels.dims[0]};
    CHECK_H5(group = H5Gcreate2(file, group_name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create group %s", path, group_name);
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"images", H5T_NATIVE_UINT8, H5T_STD_U8LE, images->ndims, image_dims}, images->data, path, err));
    CHECK_DP(h5io_write_array(group, &(struct h5io_array){"labels", H5T_NATIVE_UINT8, H5T_STD_U8LE, 1, label_dims}, pair->labels.data, path, err));
    hid_t closing = group;
    group = -1;
    CHECK_H5(H5Gclose(closing), "%s: cannot close group %s", path, group_name);
    return 0;
fail:
    if (group >= 0)
        H5Gclose(group);
    return -1;
}

/* What the file says of itself besides its arrays. */
struct description {
    const struct class_list *classes;
    int mirror_invariant;
    const char *source, *name;
};

static int write_data_file(const char *out_path, const struct idx_pair sets[2], const struct description *about,
                           char *err)
{
    hid_t file = -1;
    CHECK_DP((file = h5io_create_in_memory(out_path, err)) < 0);
    CHECK_DP(write_group(file, "train", &sets[0], out_path, err));
    CHECK_DP(write_group(file, "test", &sets[1], out_path, err));
    CHECK_DP(h5io_write_attr_strings(file, "class_names", about->classes->names, (size_t)about->classes->count,
                                     out_path, err));
    CHECK_DP(h5io_write_attr_string(file, "mirror_invariant", about->mirror_invariant ? "yes" : "no", out_path, err));
    CHECK_DP(h5io_write_attr_string(file, "source", about->source, out_path, err));
    if (about->name)
        CHECK_DP(h5io_write_attr_string(file, "name", about->name, out_path, err));
    hid_t finished = file;
    file = -1;
    CHECK_DP(h5io_publish(finished, out_path, err));
    return 0;
fail:
    if (file >= 0)
        H5Fclose(file);
    return -1;
}

/* The output may name no source, nor any of the eight files a source folder offers, whether or
 * not convert reads that one: DIR/NAME.gz beside DIR/NAME is not read, but would be overwritten
 * all the same. */
static int check_not_a_source(const struct convert_request *q, char *err)
{
    char candidate[4096];
    for (int i = 0; i < CONVERT_FILES; i++)
        for (int gz = 0; gz < 2; gz++) {
            if (q->source_dir)
                snprintf(candidate, sizeof candidate, "%s/%s%s", q->source_dir, standard_names[i], gz ? ".gz" : "");
            else if (gz == 0)
                snprintf(candidate, sizeof candidate, "%s", q->files[i]);
            else
                continue;
            if (files_same(candidate, q->out))
                FAIL("--out %s: names the IDX source %s (convert would overwrite a source of the data set)", q->out,
                     candidate);
        }
    return 0;
fail:
    return -1;
}

int convert_idx_set(const struct convert_request *q, char *err)
{
    struct idx_pair *sets = calloc(2, sizeof *sets);
    struct class_list *classes = malloc(sizeof *classes);
    char paths[CONVERT_FILES][4096];
    int status = -1;
    if (!sets || !classes)
        FAIL("cannot allocate the conversion's state");
    CHECK_DP(check_not_a_source(q, err));
    CHECK_DP(locate_all(q, paths, err));
    CHECK_DP(read_pair(paths[0], paths[1], &sets[0], err));
    CHECK_DP(read_pair(paths[2], paths[3], &sets[1], err));
    CHECK_DP(check_shapes(sets, err));
    const struct known_set *known = recognise(sets);
    CHECK_DP(class_list_of(q, sets, known, classes, err));
    struct description about = {classes, q->mirror_invariant >= 0 ? q->mirror_invariant : known && known->mirror_invariant,
                                q->source_dir ? q->source_dir : paths[0], known ? known->name : NULL};
    CHECK_DP(write_data_file(q->out, sets, &about, err));
    status = 0;
fail:
    if (sets) {
        pair_free(&sets[0]);
        pair_free(&sets[1]);
    }
    free(sets);
    free(classes);
    return status;
}
