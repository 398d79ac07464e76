/* The HDF5 data file (layout in README.md):
 *   /train/images uint8 [N][28][28], /train/labels uint8 [N],
 *   /test/images  uint8 [M][28][28], /test/labels  uint8 [M],
 *   attributes on /: class_names (10 strings), source. */
#ifndef DPTRAIN_DATASET_H
#define DPTRAIN_DATASET_H

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

struct comm; /* comm.h: the readers are collective */

/* What one rank reads of the data file: its block of the training set and, on rank 0, the whole
 * test set (an empty split elsewhere); the training set's size over all ranks. */
struct dataset_part {
    struct split train, test;
    size_t train_total;
};

/* What a checkpoint remembers of the data it was trained on: the sizes and CRC-32s of the four
 * arrays of the data file, as stored (independent of the rank count). */
struct data_identity {
    long long train_samples, test_samples;
    uint32_t train_images, train_labels, test_images, test_labels;
};

/* Collective: the identity of the data that dataset_read returned (before any hold-out). Each
 * rank checksums its block; the blocks' CRCs are combined in file order. */
int dataset_identify(const struct comm *comm, const struct dataset_part *part, struct data_identity *id, char *err);

/* Convert the four IDX files in source_dir (each plain or .gz) into out_path, atomically:
 * the file appears complete under its name, or not at all. */
int dataset_convert(const char *source_dir, const char *out_path, char *err);

/* The data file must be a readable regular file (files_check_input; `label` names it in the
 * message); a missing one gets the hint to make it with 'dptrain convert'. */
int dataset_check_file(const char *path, const char *label, char *err);

/* Collective over comm. Every rank reads its contiguous block of /train (comm_shard_block: with
 * `shards` 0 block sizes differ by at most one; else the rank's whole virtual shards); rank 0
 * also reads the whole of /test. Labels are checked to be in 0..9. On error every rank returns
 * -1, with the same message; no rank is left waiting. */
int dataset_read(const struct comm *comm, const char *path, int shards, struct dataset_part *part, char *err);

void split_free(struct split *s);

#endif
