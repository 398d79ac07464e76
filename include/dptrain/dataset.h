/* The HDF5 data file (schema in docs/your-own-data.md and docs/file-formats.md):
 *   /train/images uint8 [N][H][W] (one channel) or [N][H][W][C], /train/labels uint8 [N],
 *   /test/images  uint8 [M][H][W] or [M][H][W][C] (the same H, W and C), /test/labels uint8 [M],
 *   attributes on /: class_names (K strings; every label is below K), mirror_invariant ("yes"
 *   or "no": whether a mirror image keeps its class), source, and optionally name.
 * Nothing in dptrain knows a data set's shape: it comes from here. */
#ifndef DPTRAIN_DATASET_H
#define DPTRAIN_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Labels are uint8, so at most 256 classes; a class name is at most 63 bytes. Sides and channels
 * are held to sizes no image data set comes near, so that every product of them fits the int
 * arithmetic of the layers (an image of at most 2^24 values). */
#define DATASET_MAX_CLASSES 256
#define DATASET_NAME_MAX 64
#define DATASET_MAX_SIDE 16384
#define DATASET_MAX_CHANNELS 64
#define DATASET_MAX_IMAGE_VALUES (1L << 24)

/* One image: H rows of W pixels of C channels, stored [H][W][C] (channels last, as in the file). */
struct image_shape {
    int height, width, channels;
};
size_t image_values(const struct image_shape *s);
/* 0 for an image of height x width x channels that dptrain takes (no side or channel count of 0,
 * within the limits above); else -1 and what is wrong in why, worded to follow the shape
 * ("28x28x0: a side ...", "...x1, more than ..."). The one check of the data file, convert and the
 * checkpoint. */
int image_shape_check(unsigned long long height, unsigned long long width, unsigned long long channels, char *why,
                      size_t size);
/* "28x28x1" */
void image_shape_text(const struct image_shape *s, char *out, size_t size);

/* What the data file says of itself: the shape of its images, its classes and their names, and
 * whether a horizontal flip keeps an image's class. */
struct data_description {
    struct image_shape image;
    int classes;                 /* K */
    int mirror_invariant;        /* 1 yes, 0 no */
    const char **class_names;    /* [K], one allocation with the strings after the pointers */
    char name[DATASET_NAME_MAX]; /* the data set's name, "" when the file gives none */
};
void data_description_free(struct data_description *d);

/* A block of samples held in memory: images [count][image_bytes], labels [count]. */
struct split {
    size_t count;
    size_t image_bytes;  /* H * W * C */
    size_t first;        /* index of images[0] in the file's array */
    uint8_t *images;
    uint8_t *labels;
};

struct comm; /* comm.h: the readers are collective */

/* Where the bytes of /train/images and /train/labels are in the file, for --memory-budget's
 * plain reads (stream.h). */
struct data_location {
    long long images_at, labels_at;
};

/* What one rank reads of the data file: its block of the training set and, on rank 0, the whole
 * test set (an empty split elsewhere); the training set's size over all ranks. */
struct dataset_part {
    struct split train, test;
    size_t train_total;
    struct data_description about;
    struct data_location train_at; /* dataset_read_to_stream only */
};

/* What a checkpoint remembers of the data it was trained on: the sizes and CRC-32s of the four
 * arrays of the data file, as stored (independent of the rank count). */
struct data_identity {
    struct image_shape image;
    int classes;
    long long train_samples, test_samples;
    uint32_t train_images, train_labels, test_images, test_labels;
};

/* CRC-32s of one rank's block of the training arrays (images, labels) and its rows, for
 * dataset_identify when the block is streamed rather than held. */
struct block_crcs {
    uint32_t images, labels;
    size_t rows;
};

/* Collective: the identity of the data that dataset_read returned (before any hold-out). Each
 * rank checksums its block (or gives its streamed block's CRCs in `streamed`; NULL otherwise);
 * the blocks' CRCs are combined in file order. */
int dataset_identify(const struct comm *comm, const struct dataset_part *part, const struct block_crcs *streamed,
                     struct data_identity *id, char *err);

/* The data file must be a readable regular file (files_check_input; `label` names it in the
 * message); a missing one gets the hint to make it with 'dptrain convert'. */
int dataset_check_file(const char *path, const char *label, char *err);

/* Collective over comm. Every rank reads its contiguous block of /train (comm_shard_block: with
 * `shards` 0 block sizes differ by at most one; else the rank's whole virtual shards); rank 0
 * also reads the whole of /test. The file's description is read and checked on every rank
 * (its shape and classes, dataset.h's schema) and every label is checked to be below K. On error every rank returns
 * -1, with the same message; no rank is left waiting. */
int dataset_read(const struct comm *comm, const char *path, int shards, struct dataset_part *part, char *err);

/* dataset_read for --memory-budget: the same checks and the test set, but the rank's block of
 * the training set is only placed (train.first and train.count; no images or labels in memory,
 * their labels unchecked) and located (train_at). Both training arrays must be stored
 * contiguous, HDF5's default and what convert writes: a chunked, compact or external one is
 * refused with the h5repack command that makes a contiguous copy. */
int dataset_read_to_stream(const struct comm *comm, const char *path, struct dataset_part *part, char *err);

/* Every label of s (rows s->first on of /GROUP/labels) below `classes`, or the first that is not,
 * named with its row; a split without labels in memory (a streamed block) passes. */
int dataset_check_labels(const struct split *s, int classes, const char *group, const char *path, char *err);

void split_free(struct split *s);
void dataset_part_free(struct dataset_part *part);

#endif
