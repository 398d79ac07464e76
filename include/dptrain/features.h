/* What the network sees: one rank's samples as model inputs, and mini-batches of them.
 * Raw pixels are standardised on the fly with the training set's mean and standard deviation
 * per channel (agreed over all ranks); with PCA the samples are projected once and whitened
 * (each component divided by its standard deviation). An input keeps the file's layout,
 * [H][W][C]: an MLP does not care, PCA fits that order, and a CNN's first layer reorders it
 * (model.h). */
#ifndef DPTRAIN_FEATURES_H
#define DPTRAIN_FEATURES_H

#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/pca.h"
#include "dptrain/rng.h"

#include <stddef.h>
#include <stdint.h>

/* With PCA inputs, augmented images are projected this many at a time (one GEMM each). */
#define AUGMENT_GROUP 32

/* The evaluation sets are cut into chunks of this many images: every rank holds whole chunks
 * (comm_chunk_block), projects and evaluates each as one batch of exactly that shape, and the
 * per-chunk sums are added in chunk order, so that evaluation gives the same bits on any number
 * of ranks. */
#define EVAL_CHUNK 200

struct normaliser {
    int channels;
    float mean[DATASET_MAX_CHANNELS], std[DATASET_MAX_CHANNELS]; /* of pixel / 255, per channel */
};

struct features {
    size_t count;
    size_t first;              /* index of sample 0 in the whole set */
    struct image_shape shape;
    int dim;                   /* H*W*C raw, or K */
    const uint8_t *pixels;     /* raw: borrowed [count][H*W*C] */
    float *projected;          /* PCA: owned [count][K] */
    float *projector;          /* PCA: owned [K][H*W*C], the whitened basis over 255, and */
    float *centre;             /* [K] the mean's projection: augmented images project on the fly */
    float *scratch;            /* PCA: owned [AUGMENT_GROUP][H*W*C], augmented pixels */
    const uint8_t *labels;     /* borrowed [count] */
    struct normaliser norm;
};

/* The exact integer sums behind the normalisation, added block by block where a shard is streamed
 * (stream.h) rather than held. */
struct normaliser_sums {
    uint64_t sum[DATASET_MAX_CHANNELS], squares[DATASET_MAX_CHANNELS];
    uint64_t pixels;              /* per channel */
};
/* Add `values` pixel values laid out [..][channels]. */
void normaliser_add(struct normaliser_sums *s, const uint8_t *values, size_t count, int channels);
/* Collective: the normalisation from every rank's sums. */
int normaliser_agree(const struct comm *comm, const struct normaliser_sums *s, int channels, struct normaliser *norm,
                     char *err);

/* Collective: mean and std of pixel/255 of each channel over every rank's images of `shape`. */
int normaliser_fit(const struct comm *comm, const struct split *samples, const struct image_shape *shape,
                   struct normaliser *norm, char *err);

/* Raw view of pixels of `shape` (nothing copied) or, with pca != NULL, their projection,
 * computed in independent pieces of `piece` rows from the first (0: one piece), so that a
 * sample's projection depends only on its place in its piece. */
struct feature_source {
    const struct split *samples;
    const struct image_shape *shape;
    const struct normaliser *norm;
    const struct pca *pca;
    size_t piece;
};
int features_create(struct features *f, const struct feature_source *from, char *err);
void features_free(struct features *f);

/* --augment: the stream that draws each image's flip, shift and erasing, the probability that a
 * random rectangle of the image is erased (set to the mean pixel: 0 once standardised; with PCA,
 * to background), as in Zhong et al., "Random Erasing Data Augmentation" (2020): 2-40% of the
 * image, aspect ratio 0.3-3.3, the largest shift each way in pixels (--augment-shift), and
 * whether a flip may be drawn at all (the data file's mirror_invariant, or --flip). */
struct augmentation {
    struct rng *rng;
    double erase;
    int shift;
    int flip;
};

/* Copy the samples at indices into out[n][dim] and their labels into labels_out. With an
 * augmentation: a random horizontal flip and shift of each image, and erasing; PCA inputs are then
 * the projections of the augmented images. */
void features_gather(const struct features *f, const uint32_t *indices, int n, float *out, uint8_t *labels_out,
                     const struct augmentation *augment);

/* Where an image lands: mirrored left to right or not, then shifted by dy rows and dx columns
 * (what moves out is lost, what moves in is background). */
struct placement {
    int flip, dy, dx;
};

/* The samples at indices placed as `at` says, as inputs (raw or projected: with PCA, the placed
 * image's projection), into out[n][dim]: the views of test-time augmentation. */
void features_gather_placed(const struct features *f, const uint32_t *indices, int n, const struct placement *at,
                            float *out);

#endif
