/* The HDF5 data file (layout in README.md):
 *   /train/images uint8 [N][28][28], /train/labels uint8 [N],
 *   /test/images  uint8 [M][28][28], /test/labels  uint8 [M],
 *   attributes on /: class_names (10 strings), source. */
#ifndef DPTRAIN_DATASET_H
#define DPTRAIN_DATASET_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#define DATASET_ROWS 28
#define DATASET_COLS 28
#define DATASET_PIXELS (DATASET_ROWS * DATASET_COLS)
#define DATASET_CLASSES 10

extern const char *const dataset_class_names[DATASET_CLASSES];

/* A block of samples held in memory: images [count][784], labels [count]. */
struct split {
    size_t count;
    size_t first;        /* index of images[0] in the file's array */
    uint8_t *images;
    uint8_t *labels;
};

/* What a checkpoint remembers of the data it was trained on: the sizes and CRC-32s of the four
 * arrays of the data file, as stored (independent of the rank count). */
struct data_identity {
    long long train_samples, test_samples;
    uint32_t train_images, train_labels, test_images, test_labels;
};

/* Collective: the identity of the data that dataset_read returned (before any hold-out). Each
 * rank checksums its block; the blocks' CRCs are combined in file order. */
int dataset_identify(MPI_Comm comm, const struct split *train, const struct split *test, int test_reader,
                     struct data_identity *id, char *err);

/* Convert the four IDX files in source_dir (each plain or .gz) into out_path, atomically:
 * the file appears complete under its name, or not at all. */
int dataset_convert(const char *source_dir, const char *out_path, char *err);

/* Collective over comm. Every rank reads its contiguous block of /train (block sizes differ by
 * at most one); rank `test_reader` also reads the whole of /test, the others get an empty
 * test split. Labels are checked to be in 0..9. On error every rank returns -1, with the same
 * message; no rank is left waiting. */
int dataset_read(MPI_Comm comm, const char *path, int test_reader, struct split *train,
                 struct split *test, size_t *train_total, char *err);

/* Block [first, first + count) of n items for rank r of size ranks. */
void dataset_block(size_t n, int ranks, int r, size_t *first, size_t *count);

void split_free(struct split *s);

#endif
