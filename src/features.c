#include "dptrain/features.h"

#include "dptrain/check.h"
#include "dptrain/dataset.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <string.h>

void normaliser_add(struct normaliser_sums *s, const uint8_t *values, size_t count, int channels)
{
    for (size_t i = 0; i < count; i += (size_t)channels)
        for (int c = 0; c < channels; c++) {
            uint8_t v = values[i + (size_t)c];
            s->sum[c] += v;
            s->squares[c] += (uint64_t)v * v;
        }
    s->pixels += count / (size_t)channels;
}

int normaliser_agree(const struct comm *comm, const struct normaliser_sums *s, int channels, struct normaliser *norm,
                     char *err)
{
    /* Integer sums are exact and order-independent, so every rank count gives the same answer.
     * totals: each channel's sum, each channel's sum of squares, then the values per channel. */
    double totals[2 * DATASET_MAX_CHANNELS + 1];
    for (int c = 0; c < channels; c++) {
        totals[c] = (double)s->sum[c];
        totals[channels + c] = (double)s->squares[c];
    }
    totals[2 * channels] = (double)s->pixels;
    CHECK_DP(comm_allreduce_doubles(comm, totals, (size_t)(2 * channels + 1), err));
    norm->channels = channels;
    for (int c = 0; c < channels; c++) {
        double count = totals[2 * channels];
        double mean = totals[c] / count / 255.0;
        double variance = totals[channels + c] / count / (255.0 * 255.0) - mean * mean;
        norm->mean[c] = (float)mean;
        norm->std[c] = (float)(variance > 1e-12 ? sqrt(variance) : 1.0);
    }
    return 0;
fail:
    return -1;
}

int normaliser_fit(const struct comm *comm, const struct split *samples, const struct image_shape *shape,
                   struct normaliser *norm, char *err)
{
    struct normaliser_sums sums;
    memset(&sums, 0, sizeof sums);
    normaliser_add(&sums, samples->images, samples->count * image_values(shape), shape->channels);
    return normaliser_agree(comm, &sums, shape->channels, norm, err);
}

/* The whitened projection as one matrix and offset, for images augmented on the fly:
 * out_k = (x/255 - mean) . basis_k / sqrt(var_k) = x . projector_k - centre_k. */
static int make_projector(struct features *f, const struct pca *pca, char *err)
{
    int dim = pca->dim;
    CHECK_PTR(f->projector = tensor_alloc((size_t)f->dim * dim), "cannot allocate the PCA projector");
    CHECK_PTR(f->centre = tensor_alloc((size_t)f->dim), "cannot allocate the PCA projector");
    CHECK_PTR(f->scratch = tensor_alloc((size_t)AUGMENT_GROUP * dim), "cannot allocate the augmentation scratch");
    for (int k = 0; k < f->dim; k++) {
        double v = pca->explained_variance[k];
        double inv = v > 1e-12 ? 1.0 / sqrt(v) : 0.0, centre = 0;
        for (int j = 0; j < dim; j++) {
            f->projector[(size_t)k * dim + j] = (float)(pca->basis[(size_t)k * dim + j] * inv / 255.0);
            centre += pca->basis[(size_t)k * dim + j] * pca->mean[j];
        }
        f->centre[k] = (float)(centre * inv);
    }
    return 0;
fail:
    return -1;
}

int features_create(struct features *f, const struct feature_source *from, char *err)
{
    const struct split *samples = from->samples;
    const struct pca *pca = from->pca;
    const uint8_t *pixels = samples->images;
    size_t count = samples->count, piece = from->piece, values = image_values(from->shape);
    memset(f, 0, sizeof *f);
    f->count = count;
    f->first = samples->first;
    f->labels = samples->labels;
    f->shape = *from->shape;
    f->norm = *from->norm;
    f->pixels = pixels;
    if (!pca) {
        f->dim = (int)values;
        return 0;
    }
    f->dim = pca->components;
    CHECK_PTR(f->projected = tensor_alloc(count * (size_t)f->dim), "cannot allocate projected inputs");
    /* Whitened: each component divided by its standard deviation, so that every input has
     * unit variance (measured: PCA-50 88.4% vs 88.2% unwhitened after 20 epochs). */
    if (piece == 0)
        piece = count;
    for (size_t start = 0; start < count; start += piece) {
        size_t rows = count - start < piece ? count - start : piece;
        CHECK_DP(pca_project(pca, pixels + start * values, rows, 1.0f, f->projected + start * (size_t)f->dim, err));
    }
    for (int k = 0; k < f->dim; k++) {
        double v = pca->explained_variance[k];
        float inv = v > 1e-12 ? (float)(1.0 / sqrt(v)) : 0.0f;
        for (size_t i = 0; i < count; i++)
            f->projected[i * f->dim + k] *= inv;
    }
    CHECK_DP(make_projector(f, pca, err));
    return 0;
fail:
    features_free(f);
    return -1;
}

void features_free(struct features *f)
{
    tensor_free(f->projected);
    tensor_free(f->projector);
    tensor_free(f->centre);
    tensor_free(f->scratch);
    memset(f, 0, sizeof *f);
}

/* input = pixel * scale[c] + offset[c] for channel c: the standardisation as one multiply-add
 * per value, and the image's shape. */
struct linear {
    struct image_shape shape;
    float scale[DATASET_MAX_CHANNELS], offset[DATASET_MAX_CHANNELS];
};

/* `pixels` pixels of a row, [pixels][C], mapped. One channel is the common case and the loop
 * the compiler vectorises best. */
static void map_pixels(const uint8_t *src, float *dst, int pixels, const struct linear *map)
{
    int channels = map->shape.channels;
    if (channels == 1) {
        float scale = map->scale[0], offset = map->offset[0];
        for (int i = 0; i < pixels; i++)
            dst[i] = (float)src[i] * scale + offset;
        return;
    }
    for (int i = 0; i < pixels; i++)
        for (int c = 0; c < channels; c++)
            dst[i * channels + c] = (float)src[i * channels + c] * map->scale[c] + map->offset[c];
}

/* One background pixel (value 0 in every channel) mapped. */
static void background(float *dst, const struct linear *map)
{
    for (int c = 0; c < map->shape.channels; c++)
        dst[c] = map->offset[c];
}

/* One row of the placed image: source row `srow` (NULL: outside the image), its columns
 * mirrored and moved by dx. */
static void place_row(const uint8_t *srow, float *row, const struct linear *map, const struct placement *at)
{
    int width = map->shape.width, channels = map->shape.channels;
    if (channels == 1) { /* the common case, as one tight loop */
        float scale = map->scale[0], offset = map->offset[0];
        for (int c = 0; c < width; c++) {
            int sc = c - at->dx;
            if (at->flip)
                sc = width - 1 - sc;
            row[c] = !srow || sc < 0 || sc >= width ? offset : (float)srow[sc] * scale + offset;
        }
        return;
    }
    for (int c = 0; c < width; c++) {
        int sc = c - at->dx;
        if (at->flip)
            sc = width - 1 - sc;
        if (!srow || sc < 0 || sc >= width)
            background(row + c * channels, map);
        else
            map_pixels(srow + sc * channels, row + c * channels, 1, map);
    }
}

/* Standardise one image, optionally mirrored and shifted by (dy, dx) with background fill.
 * Background is pixel 0, which standardises to `offset`. */
static void standardise_image(const uint8_t *src, float *dst, const struct linear *map, const struct placement *at)
{
    int height = map->shape.height, row_values = map->shape.width * map->shape.channels;
    if (!at->flip && at->dy == 0 && at->dx == 0) {
        map_pixels(src, dst, height * map->shape.width, map);
        return;
    }
    for (int r = 0; r < height; r++) {
        int sr = r - at->dy;
        const uint8_t *srow = sr < 0 || sr >= height ? NULL : src + (size_t)sr * row_values;
        place_row(srow, dst + (size_t)r * row_values, map, at);
    }
}

/* Random erasing: up to 10 draws of a rectangle's area and aspect ratio until it fits the image
 * (as the paper and torchvision do), then its place; its values in every channel become 0, the
 * mean pixel. */
static void erase_rectangle(float *image, const struct image_shape *shape, struct rng *rng)
{
    int height = shape->height, width = shape->width, channels = shape->channels;
    for (int attempt = 0; attempt < 10; attempt++) {
        double area = (0.02 + 0.38 * rng_uniform(rng)) * (double)(height * width);
        double ratio = exp(log(0.3) + 2.0 * log(1 / 0.3) * rng_uniform(rng));
        long h = lround(sqrt(area * ratio)), w = lround(sqrt(area / ratio));
        if (h < 1 || w < 1 || h >= height || w >= width)
            continue;
        int top = (int)rng_below(rng, (uint64_t)(height - h + 1));
        int left = (int)rng_below(rng, (uint64_t)(width - w + 1));
        for (long r = 0; r < h; r++)
            memset(image + ((size_t)(top + r) * width + left) * channels, 0, (size_t)(w * channels) * sizeof(float));
        return;
    }
}

/* One training image as the network's pixels would see it: flipped (where flips are allowed),
 * shifted and erased as the augmentation draws (in this order: the streams must draw as they
 * always have). */
static void augment_image(const uint8_t *src, float *dst, const struct linear *map, const struct augmentation *augment)
{
    struct placement at = {0, 0, 0};
    at.flip = augment->flip ? (int)rng_below(augment->rng, 2) : 0;
    int shift = augment->shift;
    at.dy = (int)rng_below(augment->rng, (uint64_t)(2 * shift + 1)) - shift;
    at.dx = (int)rng_below(augment->rng, (uint64_t)(2 * shift + 1)) - shift;
    standardise_image(src, dst, map, &at);
    /* drawn after the rest, and only when asked: runs without erasing draw as before */
    if (augment->erase > 0 && rng_uniform(augment->rng) < augment->erase)
        erase_rectangle(dst, &map->shape, augment->rng);
}

/* The identity map (pixel values as they are, background 0) or the standardisation
 * (pixel / 255 with the training set's mean and standard deviation per channel). */
static struct linear map_of(const struct features *f, int standardise)
{
    struct linear map;
    map.shape = f->shape;
    for (int c = 0; c < f->shape.channels; c++) {
        map.scale[c] = standardise ? 1.0f / (255.0f * f->norm.std[c]) : 1.0f;
        map.offset[c] = standardise ? -f->norm.mean[c] / f->norm.std[c] : 0.0f;
    }
    return map;
}

/* PCA inputs of augmented or mirrored images: each group of images is placed in pixel space
 * (pixel values as they are, background 0) and projected by one GEMM; an erased rectangle becomes
 * background there. */
static void gather_projected(const struct features *f, const uint32_t *indices, int n, float *out,
                             const struct augmentation *augment, const struct placement *at)
{
    const struct linear identity = map_of(f, 0);
    int dim = f->dim, values = (int)image_values(&f->shape);
    for (int first = 0; first < n; first += AUGMENT_GROUP) {
        int rows = n - first < AUGMENT_GROUP ? n - first : AUGMENT_GROUP;
        for (int r = 0; r < rows; r++) {
            const uint8_t *src = f->pixels + (size_t)indices[first + r] * values;
            float *dst = f->scratch + (size_t)r * values;
            if (augment)
                augment_image(src, dst, &identity, augment);
            else
                standardise_image(src, dst, &identity, at);
        }
        float *dst = out + (size_t)first * dim;
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < dim; k++)
                dst[(size_t)r * dim + k] = -f->centre[k];
        tensor_gemm(&(struct gemm){0, 1, rows, dim, values, 1.0f, f->scratch, values, f->projector, values, 1.0f, dst,
                    dim});
    }
}

void features_gather(const struct features *f, const uint32_t *indices, int n, float *out, uint8_t *labels_out,
                     const struct augmentation *augment)
{
    size_t dim = (size_t)f->dim, values = image_values(&f->shape);
    const struct linear map = map_of(f, 1);
    for (int b = 0; b < n; b++)
        labels_out[b] = f->labels[indices[b]];
    if (f->projected && augment) {
        gather_projected(f, indices, n, out, augment, NULL);
        return;
    }
    for (int b = 0; b < n; b++) {
        size_t i = indices[b];
        float *dst = out + (size_t)b * dim;
        if (f->projected)
            memcpy(dst, f->projected + i * dim, dim * sizeof(float));
        else if (augment)
            augment_image(f->pixels + i * values, dst, &map, augment);
        else
            standardise_image(f->pixels + i * values, dst, &map, &(struct placement){0, 0, 0});
    }
}

void features_gather_placed(const struct features *f, const uint32_t *indices, int n, const struct placement *at,
                            float *out)
{
    const struct linear map = map_of(f, 1);
    size_t values = image_values(&f->shape);
    if (f->projected) {
        gather_projected(f, indices, n, out, NULL, at);
        return;
    }
    for (int b = 0; b < n; b++)
        standardise_image(f->pixels + (size_t)indices[b] * values, out + (size_t)b * values, &map, at);
}
