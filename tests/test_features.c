/* What the network sees: standardised pixels, test-time augmentation's placed views (mirrored,
 * shifted), and augmentation that moves an image by a flip and a shift of at most SHIFT
 * pixels, drawn from its own stream. */
#include "dptrain/check.h"
#include "dptrain/features.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

enum { ROWS = 28, COLS = 28, PIXELS = ROWS * COLS };
static const struct image_shape shape = {ROWS, COLS, 1};

/* One image, black but for one white pixel at (10, 5), and a grey ramp image. */
static uint8_t images[2 * PIXELS];
static uint8_t labels[2] = {3, 7};
static const struct normaliser norm = {1, {0.25f}, {0.5f}};
enum { SHIFT = 2 }; /* the augmentation's largest shift, the default of --augment-shift */

static void make_images(void)
{
    memset(images, 0, sizeof images);
    images[10 * COLS + 5] = 255;
    for (int i = 0; i < PIXELS; i++)
        images[PIXELS + i] = (uint8_t)(i % 251);
}

static float standardised(uint8_t pixel)
{
    return ((float)pixel / 255.0f - norm.mean[0]) / norm.std[0];
}

static void test_standardise_and_labels(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    struct features f;
    struct split set = {2, PIXELS, 0, images, labels};
    uint32_t order[2] = {1, 0};
    float out[2 * PIXELS];
    uint8_t got[2];
    make_images();
    assert_int_equal(features_create(&f, &(struct feature_source){&set, &shape, &norm, NULL, 0}, err), 0);
    features_gather(&f, order, 2, out, got, NULL);
    assert_int_equal(got[0], 7);
    assert_int_equal(got[1], 3);
    for (int i = 0; i < PIXELS; i++)
        assert_true(fabsf(out[i] - standardised(images[PIXELS + i])) < 1e-5f);
    assert_true(fabsf(out[PIXELS + 10 * COLS + 5] - standardised(255)) < 1e-5f);
    features_free(&f);
}

/* Test-time augmentation's views of raw inputs: each image's standardised pixels placed as asked
 * (mirrored, then moved dy rows down and dx columns right), background where nothing moved in. */
static void test_gather_placed(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    struct features f;
    struct split set = {2, PIXELS, 0, images, labels};
    uint32_t order[2] = {1, 0};
    float out[2 * PIXELS];
    make_images();
    assert_int_equal(features_create(&f, &(struct feature_source){&set, &shape, &norm, NULL, 0}, err), 0);
    const struct placement views[] = {{1, 0, 0}, {0, 1, -1}, {1, -1, 1}, {1, 2, 2}};
    for (size_t v = 0; v < sizeof views / sizeof *views; v++) {
        const struct placement *at = &views[v];
        features_gather_placed(&f, order, 2, at, out);
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < ROWS; r++)
                for (int c = 0; c < COLS; c++) {
                    int sr = r - at->dy, sc = c - at->dx;
                    int inside = sr >= 0 && sr < ROWS && sc >= 0 && sc < COLS;
                    int col = at->flip ? COLS - 1 - sc : sc;
                    uint8_t pixel = inside ? images[order[b] * PIXELS + sr * COLS + col] : 0;
                    assert_true(fabsf(out[b * PIXELS + r * COLS + c] - standardised(pixel)) < 1e-5f);
                }
    }
    /* the white pixel at (10, 5), mirrored to column 22 and moved one row up, one column right */
    features_gather_placed(&f, order, 2, &views[2], out);
    assert_true(fabsf(out[PIXELS + 9 * COLS + 23] - standardised(255)) < 1e-5f);
    features_free(&f);
}

/* A made-up PCA of 3 components (any basis will do: the features only apply it): the projection
 * in double of an image placed by (flip, dy, dx), whitened. */
enum { COMPONENTS = 3 };
static float basis[COMPONENTS * PIXELS];
static double mean[PIXELS], variance[COMPONENTS] = {4.0, 1.0, 0.25};
static const struct pca made_up = {PIXELS, COMPONENTS, 100, mean, basis, variance, NULL, 0, 0};

static void make_pca(void)
{
    for (int i = 0; i < COMPONENTS * PIXELS; i++)
        basis[i] = sinf(0.37f * (float)i);
    for (int j = 0; j < PIXELS; j++)
        mean[j] = (j % 7) / 10.0;
}

static void reference_projection(const uint8_t *image, const int at[3], double out[COMPONENTS])
{
    for (int k = 0; k < COMPONENTS; k++) {
        double sum = 0;
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < COLS; c++) {
                int sr = r - at[1], sc = at[0] ? COLS - 1 - (c - at[2]) : c - at[2];
                int inside = sr >= 0 && sr < ROWS && c - at[2] >= 0 && c - at[2] < COLS;
                double x = inside ? image[sr * COLS + sc] / 255.0 : 0.0;
                sum += (x - mean[r * COLS + c]) * basis[k * PIXELS + r * COLS + c];
            }
        out[k] = sum / sqrt(variance[k]);
    }
}

static void assert_projection(const float *got, const uint8_t *image, const int at[3])
{
    double want[COMPONENTS];
    reference_projection(image, at, want);
    for (int k = 0; k < COMPONENTS; k++)
        assert_true(fabs(got[k] - want[k]) < 1e-4 * (1 + fabs(want[k])));
}

/* PCA inputs: as stored, placed (mirrored, shifted), and augmented on the fly (projected in
 * groups of AUGMENT_GROUP, here 40 images: a whole group and a short one), each against the
 * projection in double of the image placed as the replayed stream says. */
static void test_projected_views(void **state)
{
    (void)state;
    char err[DP_ERR_LEN];
    struct features f;
    struct split set = {2, PIXELS, 0, images, labels};
    enum { N = 40 };
    uint32_t order[N];
    float out[N * COMPONENTS];
    uint8_t got[N];
    make_images();
    make_pca();
    assert_int_equal(features_create(&f, &(struct feature_source){&set, &shape, &norm, &made_up, 0}, err), 0);
    for (int b = 0; b < N; b++)
        order[b] = (uint32_t)(b % 2);
    features_gather(&f, order, 2, out, got, NULL);
    features_gather_placed(&f, order, 2, &(struct placement){1, 0, 0}, out + 2 * COMPONENTS);
    features_gather_placed(&f, order, 2, &(struct placement){1, -1, 1}, out + 4 * COMPONENTS);
    for (int b = 0; b < 2; b++) {
        assert_projection(out + b * COMPONENTS, images + b * PIXELS, (int[3]){0, 0, 0});
        assert_projection(out + (2 + b) * COMPONENTS, images + b * PIXELS, (int[3]){1, 0, 0});
        assert_projection(out + (4 + b) * COMPONENTS, images + b * PIXELS, (int[3]){1, -1, 1});
    }
    struct rng rng, replay;
    rng_seed(&rng, 7, RNG_AUGMENT, 1, 0);
    rng_seed(&replay, 7, RNG_AUGMENT, 1, 0);
    features_gather(&f, order, N, out, got, &(struct augmentation){&rng, 0, SHIFT, 1});
    for (int b = 0; b < N; b++) {
        int at[3];
        at[0] = (int)rng_below(&replay, 2);
        at[1] = (int)rng_below(&replay, 2 * SHIFT + 1) - SHIFT;
        at[2] = (int)rng_below(&replay, 2 * SHIFT + 1) - SHIFT;
        assert_int_equal(got[b], labels[b % 2]);
        assert_projection(out + b * COMPONENTS, images + (b % 2) * PIXELS, at);
    }
    features_free(&f);
}

/* Where the white pixel went in an augmented copy; every other pixel is background. */
static void find_bright(const float *image, int *row, int *col)
{
    int found = 0;
    for (int i = 0; i < PIXELS; i++) {
        if (fabsf(image[i] - standardised(255)) < 1e-5f) {
            *row = i / COLS;
            *col = i % COLS;
            found++;
        } else {
            assert_true(fabsf(image[i] - standardised(0)) < 1e-5f);
        }
    }
    assert_int_equal(found, 1);
}

/* Features of the first image alone (black but for a white pixel at row 10, column 5). */
static void first_image_only(struct features *f)
{
    char err[DP_ERR_LEN];
    struct split set = {1, PIXELS, 0, images, labels};
    make_images();
    assert_int_equal(features_create(f, &(struct feature_source){&set, &shape, &norm, NULL, 0}, err), 0);
}

/* Flips and shifts of at most `shift` pixels each way: every placement drawn often, none beyond. */
static void check_augment(int shift)
{
    struct features f;
    uint32_t order[1] = {0};
    float out[PIXELS], again[PIXELS];
    uint8_t got[1];
    int seen_flip[2] = {0, 0}, seen_dy[2 * SHIFT + 1] = {0}, seen_dx[2 * SHIFT + 1] = {0};
    first_image_only(&f);
    struct rng rng, replay;
    rng_seed(&rng, 5, RNG_AUGMENT, 1, 0);
    rng_seed(&replay, 5, RNG_AUGMENT, 1, 0);
    for (int draw = 0; draw < 400; draw++) {
        int row = -1, col = -1;
        features_gather(&f, order, 1, out, got, &(struct augmentation){&rng, 0, shift, 1});
        features_gather(&f, order, 1, again, got, &(struct augmentation){&replay, 0, shift, 1});
        assert_memory_equal(out, again, sizeof out); /* the same stream, the same images */
        find_bright(out, &row, &col);
        int dy = row - 10, flip = col > COLS / 2, dx = flip ? col - (COLS - 1 - 5) : col - 5;
        assert_true(abs(dy) <= shift && abs(dx) <= shift);
        seen_flip[flip]++;
        seen_dy[dy + shift]++;
        seen_dx[dx + shift]++;
    }
    assert_true(seen_flip[0] > 100 && seen_flip[1] > 100);
    for (int s = 0; s <= 2 * shift; s++)
        assert_true(seen_dy[s] > 20 && seen_dx[s] > 20);
    features_free(&f);
}

static void test_augment(void **state)
{
    (void)state;
    check_augment(SHIFT);
    check_augment(1); /* --augment-shift 1 */
    check_augment(0); /* flips only */
}

/* Random erasing: at probability 1 every image has one rectangle of zeros (the mean pixel),
 * 2-40% of the image with rounding; at 0.5 about half the images have one; the same stream
 * erases the same rectangles. */
static void test_erase(void **state)
{
    (void)state;
    struct features f;
    uint32_t order[1] = {0};
    float out[PIXELS], again[PIXELS];
    uint8_t got[1];
    first_image_only(&f);
    struct rng rng, replay;
    rng_seed(&rng, 6, RNG_AUGMENT, 1, 0);
    rng_seed(&replay, 6, RNG_AUGMENT, 1, 0);
    int erased_at_half = 0, smallest = PIXELS, largest = 0;
    for (int draw = 0; draw < 400; draw++) {
        double p = draw < 200 ? 1.0 : 0.5;
        features_gather(&f, order, 1, out, got, &(struct augmentation){&rng, p, SHIFT, 1});
        features_gather(&f, order, 1, again, got, &(struct augmentation){&replay, p, SHIFT, 1});
        assert_memory_equal(out, again, sizeof out);
        int top = ROWS, bottom = -1, left = COLS, right = -1, zeros = 0;
        for (int i = 0; i < PIXELS; i++) /* no pixel of these images standardises to 0 */
            if (out[i] == 0.0f) {
                int r = i / COLS, c = i % COLS;
                zeros++;
                top = r < top ? r : top, bottom = r > bottom ? r : bottom;
                left = c < left ? c : left, right = c > right ? c : right;
            }
        if (draw < 200)
            assert_true(zeros > 0);
        if (zeros == 0)
            continue;
        erased_at_half += draw >= 200;
        assert_int_equal(zeros, (bottom - top + 1) * (right - left + 1)); /* one whole rectangle */
        smallest = zeros < smallest ? zeros : smallest;
        largest = zeros > largest ? zeros : largest;
    }
    assert_true(smallest >= 10 && largest <= 0.45 * PIXELS && largest > 0.3 * PIXELS);
    assert_true(erased_at_half > 70 && erased_at_half < 130);
    features_free(&f);
}

/* Colour images keep the file's [H][W][C] layout: each channel standardised with its own mean
 * and deviation, a placed view moving whole pixels (all channels together), the background of
 * each channel its own offset; without flips an augmentation never mirrors. */
static void test_channels(void **state)
{
    (void)state;
    enum { H = 3, W = 4, C = 3, V = H * W * C };
    static const struct image_shape colour = {H, W, C};
    static const struct normaliser channels = {C, {0.1f, 0.5f, 0.9f}, {0.25f, 0.5f, 2.0f}};
    uint8_t pixels[V], label = 2;
    for (int i = 0; i < V; i++)
        pixels[i] = (uint8_t)(i * 7);
    struct split set = {1, V, 0, pixels, &label};
    struct features f;
    char err[DP_ERR_LEN];
    assert_int_equal(features_create(&f, &(struct feature_source){&set, &colour, &channels, NULL, 0}, err), 0);
    assert_int_equal(f.dim, V);
    uint32_t order[1] = {0};
    float out[V];
    uint8_t got[1];
    features_gather(&f, order, 1, out, got, NULL);
    for (int i = 0; i < V; i++) {
        int c = i % C;
        float want = ((float)pixels[i] / 255.0f - channels.mean[c]) / channels.std[c];
        assert_true(fabsf(out[i] - want) < 1e-5f);
    }
    /* mirrored and moved down a row: row 0 is background, row r the mirror of row r - 1 */
    features_gather_placed(&f, order, 1, &(struct placement){1, 1, 0}, out);
    for (int r = 0; r < H; r++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) {
                int source = r == 0 ? -1 : ((r - 1) * W + (W - 1 - x)) * C + c;
                float value = source < 0 ? 0.0f : (float)pixels[source];
                float want = (value / 255.0f - channels.mean[c]) / channels.std[c];
                assert_true(fabsf(out[(r * W + x) * C + c] - want) < 1e-5f);
            }
    /* no flips allowed: with no shift either, every augmented view is the image itself */
    struct rng rng;
    rng_seed(&rng, 3, RNG_AUGMENT, 0, 0);
    float plain[V];
    features_gather(&f, order, 1, plain, got, NULL);
    for (int draw = 0; draw < 50; draw++) {
        features_gather(&f, order, 1, out, got, &(struct augmentation){&rng, 0, 0, 0});
        assert_memory_equal(out, plain, sizeof out);
    }
    features_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standardise_and_labels),
        cmocka_unit_test(test_gather_placed),
        cmocka_unit_test(test_projected_views),
        cmocka_unit_test(test_augment),
        cmocka_unit_test(test_erase),
        cmocka_unit_test(test_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
