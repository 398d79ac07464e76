/* The training stream of --memory-budget (stream.h): the budget's geometry, and the stream over a
 * plain file laid out as a data file's arrays are (images, then labels, at byte offsets): every
 * kept row once an epoch, held rows never, orders that change with the epoch and repeat with the
 * seed, a resume anywhere that continues exactly, and one-line failures for a truncated or
 * changed file. */
#include "dptrain/check.h"
#include "dptrain/stream.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define ROWS 1000
#define BYTES 3000    /* a chunk of STREAM_CHUNK_BYTES holds 349 rows */
#define OFFSET 512    /* where the images start, as after a data file's seal */
#define CLASSES 10

/* Row r's image is r's 4 bytes over and over; its label r % CLASSES. */
static uint32_t row_of(const uint8_t *image)
{
    uint32_t r;
    memcpy(&r, image, sizeof r);
    return r;
}

struct fixture {
    char path[64];
    struct stream_source src;
    uint8_t held[ROWS];
    uint8_t *images, *labels; /* room for one epoch */
};

static void write_file(const char *path, size_t rows)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    static const uint8_t zeros[OFFSET];
    assert_int_equal(fwrite(zeros, 1, OFFSET, f), OFFSET);
    uint8_t image[BYTES];
    for (uint32_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < BYTES; i += 4)
            memcpy(image + i, &r, 4);
        assert_int_equal(fwrite(image, 1, BYTES, f), BYTES);
    }
    for (uint32_t r = 0; r < rows; r++)
        assert_int_equal(fputc((int)(r % CLASSES), f), (int)(r % CLASSES));
    assert_int_equal(fclose(f), 0);
}

static int set_up(void **state)
{
    struct fixture *x = calloc(1, sizeof *x);
    assert_non_null(x);
    snprintf(x->path, sizeof x->path, "/tmp/dptrain-stream-%ld.bin", (long)getpid());
    write_file(x->path, ROWS);
    for (size_t r = 0; r < ROWS; r++)
        x->held[r] = r % 7 == 3;
    /* this rank's rows: 900 of them from row 50 */
    x->src = (struct stream_source){x->path, OFFSET, OFFSET + (long long)ROWS * BYTES, 50, 900, BYTES, x->held + 50, CLASSES};
    x->images = malloc((size_t)ROWS * BYTES);
    x->labels = malloc(ROWS);
    assert_non_null(x->images);
    *state = x;
    return 0;
}

static int tear_down(void **state)
{
    struct fixture *x = *state;
    unlink(x->path);
    free(x->images);
    free(x->labels);
    free(x);
    return 0;
}

/* A budget of 6 MB for BYTES-byte rows and a step of 32: windows of two 349-row chunks, so the
 * rank's 900 rows make two windows. */
static struct stream *open_stream(struct fixture *x, uint64_t seed)
{
    char err[DP_ERR_LEN] = "";
    struct stream_geometry g;
    assert_int_equal(stream_plan(6u << 20, BYTES, 32, &g, err), 0);
    assert_int_equal(g.chunk_rows, 349);
    assert_int_equal(g.window_chunks, 2);
    struct stream *s = NULL;
    assert_int_equal(stream_open(&s, &(struct stream_start){&x->src, g, seed, 1}, err), 0);
    return s;
}

/* Epoch `epoch` taken in steps of `step` samples from sample `from` on, into x's room. */
static void take_epoch(struct stream *s, struct fixture *x, int epoch, size_t from, size_t step)
{
    char err[DP_ERR_LEN] = "";
    size_t total = stream_samples(s);
    for (size_t p = from; p < total; p += step) {
        size_t n = total - p < step ? total - p : step;
        struct stream_take t = {epoch, p, n, x->images + p * BYTES, x->labels + p};
        assert_int_equal(stream_take(s, &t, err), 0);
    }
}

static void test_the_budget_sets_chunks_and_windows(void **state)
{
    (void)state;
    char err[DP_ERR_LEN] = "";
    struct stream_geometry g;
    /* Fashion-MNIST's 784-byte images, 8 MB, a step of 128: 1337-row chunks, 3 to a window */
    assert_int_equal(stream_plan(8u << 20, 784, 128, &g, err), 0);
    assert_int_equal(g.chunk_rows, 1337);
    size_t window = g.chunk_rows * g.window_chunks;
    assert_true(2 * window * (784 + 1 + 4) + 128 * 785 <= 8u << 20);
    assert_true(2 * (window + g.chunk_rows) * (784 + 1 + 4) + 128 * 785 > 8u << 20); /* no room for a chunk more */
    /* a budget below one window a step long: the message says how much is needed */
    assert_int_equal(stream_plan(100000, 784, 128, &g, err), -1);
    assert_non_null(strstr(err, "need 0.3 MB"));
    /* images larger than a chunk: a chunk of one image */
    assert_int_equal(stream_plan(64u << 20, 4u << 20, 2, &g, err), 0);
    assert_int_equal(g.chunk_rows, 1);
}

static void test_an_epoch_takes_every_kept_row_once(void **state)
{
    struct fixture *x = *state;
    struct stream *s = open_stream(x, 7);
    size_t kept = 0;
    for (size_t r = 50; r < 950; r++)
        kept += !x->held[r];
    assert_int_equal(stream_samples(s), kept);
    for (int epoch = 1; epoch <= 2; epoch++) {
        int seen[ROWS] = {0};
        take_epoch(s, x, epoch, 0, 32);
        for (size_t i = 0; i < kept; i++) {
            uint32_t r = row_of(x->images + i * BYTES);
            assert_true(r >= 50 && r < 950);
            assert_false(x->held[r]);
            assert_int_equal(x->labels[i], r % CLASSES);
            assert_int_equal(row_of(x->images + i * BYTES + BYTES - 4), r); /* the whole image, not a torn one */
            seen[r]++;
        }
        for (size_t r = 50; r < 950; r++)
            assert_int_equal(seen[r], !x->held[r]);
    }
    stream_close(s);
}

/* The rows of epoch e in order, as row numbers. */
static void rows_of_epoch(struct fixture *x, uint64_t seed, int epoch, size_t step, uint32_t *rows)
{
    struct stream *s = open_stream(x, seed);
    take_epoch(s, x, epoch, 0, step);
    for (size_t i = 0; i < stream_samples(s); i++)
        rows[i] = row_of(x->images + i * BYTES);
    stream_close(s);
}

static void test_orders_follow_the_seed_and_the_epoch(void **state)
{
    struct fixture *x = *state;
    static uint32_t a[ROWS], b[ROWS], c[ROWS], d[ROWS];
    rows_of_epoch(x, 7, 1, 32, a);
    rows_of_epoch(x, 7, 1, 50, b); /* another step size: the same order */
    rows_of_epoch(x, 7, 2, 32, c);
    rows_of_epoch(x, 8, 1, 32, d);
    size_t n = 0; /* the kept rows */
    for (size_t r = 50; r < 950; r++)
        n += !x->held[r];
    assert_memory_equal(a, b, n * sizeof *a);
    assert_memory_not_equal(a, c, n * sizeof *a);
    assert_memory_not_equal(a, d, n * sizeof *a);
    /* shuffled within windows, not only chunk by chunk: neighbours are rarely consecutive rows */
    size_t consecutive = 0;
    for (size_t i = 1; i < n; i++)
        consecutive += a[i] == a[i - 1] + 1;
    assert_true(consecutive < n / 10);
}

static void test_a_resume_anywhere_continues_the_stream(void **state)
{
    struct fixture *x = *state;
    static uint32_t whole[ROWS];
    rows_of_epoch(x, 7, 3, 32, whole);
    const size_t starts[] = {0, 1, 339, 400, 600, 770};
    for (size_t k = 0; k < sizeof starts / sizeof *starts; k++) {
        struct stream *s = open_stream(x, 7);
        take_epoch(s, x, 3, starts[k], 32);
        for (size_t i = starts[k]; i < stream_samples(s); i++)
            assert_int_equal(row_of(x->images + i * BYTES), whole[i]);
        /* and the next epoch after it, read ahead, is the next epoch's */
        static uint32_t next[ROWS], fresh[ROWS];
        size_t n = stream_samples(s);
        take_epoch(s, x, 4, 0, 32);
        for (size_t i = 0; i < n; i++)
            next[i] = row_of(x->images + i * BYTES);
        stream_close(s);
        rows_of_epoch(x, 7, 4, 32, fresh);
        assert_memory_equal(next, fresh, n * sizeof *next);
    }
}

/* Epoch 1 in steps of 32 until a take fails: 1 when one did (its message in err). */
static int take_until_failure(struct stream *s, struct fixture *x, char *err)
{
    for (size_t p = 0; p < stream_samples(s); p += 32) {
        size_t n = stream_samples(s) - p < 32 ? stream_samples(s) - p : 32;
        if (stream_take(s, &(struct stream_take){1, p, n, x->images, x->labels}, err) != 0)
            return 1;
    }
    return 0;
}

static void test_a_file_cut_short_fails_with_its_name(void **state)
{
    struct fixture *x = *state;
    struct stream *s = open_stream(x, 7);
    assert_int_equal(truncate(x->path, OFFSET + 600L * BYTES), 0); /* after the stream was opened */
    char err[DP_ERR_LEN] = "";
    assert_true(take_until_failure(s, x, err));
    assert_non_null(strstr(err, x->path));
    assert_non_null(strstr(err, "truncated"));
    stream_close(s);
}

static void test_a_label_changed_under_the_stream_fails(void **state)
{
    struct fixture *x = *state;
    FILE *f = fopen(x->path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, OFFSET + (long)ROWS * BYTES + 600, SEEK_SET), 0);
    assert_int_equal(fputc(CLASSES + 3, f), CLASSES + 3);
    assert_int_equal(fclose(f), 0);
    struct stream *s = open_stream(x, 7);
    char err[DP_ERR_LEN] = "";
    assert_true(take_until_failure(s, x, err));
    assert_non_null(strstr(err, "is now 13, not below the 10 classes"));
    stream_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_budget_sets_chunks_and_windows),
        cmocka_unit_test_setup_teardown(test_an_epoch_takes_every_kept_row_once, set_up, tear_down),
        cmocka_unit_test_setup_teardown(test_orders_follow_the_seed_and_the_epoch, set_up, tear_down),
        cmocka_unit_test_setup_teardown(test_a_resume_anywhere_continues_the_stream, set_up, tear_down),
        cmocka_unit_test_setup_teardown(test_a_file_cut_short_fails_with_its_name, set_up, tear_down),
        cmocka_unit_test_setup_teardown(test_a_label_changed_under_the_stream_fails, set_up, tear_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
