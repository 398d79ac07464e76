/* IDX parsing: valid files, plain and gzip, and every kind of broken file. */
#include "dptrain/check.h"
#include "dptrain/idx.h"
#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <zlib.h>

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = test_make_dir("idx");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_remove_dir(dir);
    free(dir);
    return 0;
}

static uint8_t *sample_images(size_t n, size_t *len)
{
    uint8_t *payload = malloc(n * 784);
    for (size_t i = 0; i < n * 784; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    uint32_t dims[3] = {(uint32_t)n, 28, 28};
    uint8_t *bytes = test_idx_bytes(0x08, 3, dims, payload, n * 784, len);
    free(payload);
    return bytes;
}

/* Write bytes to a file and read it back as IDX; returns idx_read's status and fills err. */
static int read_bytes(const char *name, const uint8_t *bytes, size_t len, int ndims,
                      struct idx_array *out, char *err)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    test_write_file(path, bytes, len);
    return idx_read(path, ndims, out, err);
}

static void expect_error(const char *name, const uint8_t *bytes, size_t len, int ndims,
                         const char *fragment)
{
    char err[DP_ERR_LEN] = "";
    struct idx_array a;
    assert_int_equal(read_bytes(name, bytes, len, ndims, &a, err), -1);
    if (!strstr(err, fragment))
        fail_msg("message '%s' lacks '%s'", err, fragment);
    assert_non_null(strstr(err, name)); /* the message names the file */
    assert_null(strchr(err, '\n'));     /* one line */
}

static void test_plain_and_gzip_agree(void **state)
{
    (void)state;
    size_t len, gz_len;
    uint8_t *bytes = sample_images(5, &len);
    uint8_t *packed = test_gzip(bytes, len, &gz_len);
    char err[DP_ERR_LEN] = "";
    struct idx_array plain, gz;
    assert_int_equal(read_bytes("plain", bytes, len, 3, &plain, err), 0);
    assert_int_equal(read_bytes("packed.gz", packed, gz_len, 3, &gz, err), 0);
    assert_int_equal(plain.dims[0], 5);
    assert_int_equal(plain.dims[1], 28);
    assert_int_equal(plain.count, 5 * 784);
    assert_memory_equal(plain.data, bytes + 16, 5 * 784);
    assert_memory_equal(plain.data, gz.data, plain.count);
    idx_free(&plain);
    idx_free(&gz);
    free(bytes);
    free(packed);
}

static void test_labels(void **state)
{
    (void)state;
    uint8_t labels[4] = {0, 9, 3, 3};
    uint32_t dims[1] = {4};
    size_t len;
    uint8_t *bytes = test_idx_bytes(0x08, 1, dims, labels, 4, &len);
    char err[DP_ERR_LEN] = "";
    struct idx_array a;
    assert_int_equal(read_bytes("labels", bytes, len, 1, &a, err), 0);
    assert_int_equal(a.ndims, 1);
    assert_memory_equal(a.data, labels, 4);
    idx_free(&a);
    free(bytes);
}

static void test_multi_member_gzip_is_accepted(void **state)
{
    (void)state;
    size_t len, first_len, second_len;
    uint8_t *bytes = sample_images(3, &len);
    size_t half = len / 2;
    uint8_t *first = test_gzip(bytes, half, &first_len);
    uint8_t *second = test_gzip(bytes + half, len - half, &second_len);
    uint8_t *joined = malloc(first_len + second_len);
    memcpy(joined, first, first_len);
    memcpy(joined + first_len, second, second_len);
    char err[DP_ERR_LEN] = "";
    struct idx_array a;
    assert_int_equal(read_bytes("members.gz", joined, first_len + second_len, 3, &a, err), 0);
    assert_memory_equal(a.data, bytes + 16, a.count);
    idx_free(&a);
    free(bytes);
    free(first);
    free(second);
    free(joined);
}

static void test_bad_magic(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = sample_images(2, &len);
    bytes[0] = 0x12;
    expect_error("magic", bytes, len, 3, "not an IDX file");
    free(bytes);
}

static void test_wrong_type(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = sample_images(2, &len);
    bytes[2] = 0x0D; /* float */
    expect_error("type", bytes, len, 3, "not unsigned byte");
    free(bytes);
}

static void test_wrong_dimension_count(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = sample_images(2, &len);
    expect_error("dims", bytes, len, 1, "3 dimensions, expected 1");
    free(bytes);
}

static void test_empty_and_short_header(void **state)
{
    (void)state;
    uint8_t bytes[6] = {0, 0, 8, 3, 0, 0};
    expect_error("empty", bytes, 0, 3, "too short");
    expect_error("short", bytes, 6, 3, "truncated IDX header");
}

static void test_truncated_data(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = sample_images(2, &len);
    expect_error("truncated", bytes, len - 100, 3, "truncated");
    free(bytes);
}

static void test_trailing_data(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = sample_images(2, &len);
    uint8_t *longer = calloc(len + 10, 1);
    memcpy(longer, bytes, len);
    expect_error("trailing", longer, len + 10, 3, "10 bytes of trailing data");
    free(bytes);
    free(longer);
}

static void test_truncated_gzip(void **state)
{
    (void)state;
    size_t len, gz_len;
    uint8_t *bytes = sample_images(20, &len);
    uint8_t *packed = test_gzip(bytes, len, &gz_len);
    expect_error("cut.gz", packed, gz_len / 2, 3, "truncated gzip stream");
    expect_error("cut-trailer.gz", packed, gz_len - 4, 3, "truncated gzip stream");
    free(bytes);
    free(packed);
}

static void test_corrupt_gzip(void **state)
{
    (void)state;
    size_t len, gz_len;
    uint8_t *bytes = sample_images(20, &len);
    uint8_t *packed = test_gzip(bytes, len, &gz_len);
    packed[gz_len - 6] ^= 0xff; /* inside the CRC-32 of the trailer */
    expect_error("crc.gz", packed, gz_len, 3, "corrupt gzip stream");
    packed[gz_len - 6] ^= 0xff;
    packed[20] ^= 0x55; /* inside the deflate data */
    expect_error("data.gz", packed, gz_len, 3, "gzip");
    free(bytes);
    free(packed);
}

static void test_gzip_trailing_garbage(void **state)
{
    (void)state;
    size_t len, gz_len;
    uint8_t *bytes = sample_images(2, &len);
    uint8_t *packed = test_gzip(bytes, len, &gz_len);
    uint8_t *longer = malloc(gz_len + 5);
    memcpy(longer, packed, gz_len);
    memcpy(longer + gz_len, "junk!", 5);
    expect_error("garbage.gz", longer, gz_len + 5, 3, "trailing garbage after the gzip stream");
    free(bytes);
    free(packed);
    free(longer);
}

/* gzip of a 1-dimensional IDX header promising `promised` labels followed by `zeros` zero
 * bytes, deflated in 1 MiB pieces so that the test itself never holds the inflated bomb. */
static uint8_t *gzip_bomb(uint32_t promised, size_t zeros, size_t *gz_len)
{
    static const uint8_t piece[1 << 20];
    uint8_t header[8] = {0, 0, 0x08, 1, (uint8_t)(promised >> 24), (uint8_t)(promised >> 16),
                         (uint8_t)(promised >> 8), (uint8_t)promised};
    z_stream s;
    memset(&s, 0, sizeof s);
    assert_int_equal(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t capacity = deflateBound(&s, (uLong)(zeros + sizeof header)) + 64;
    uint8_t *out = malloc(capacity);
    s.next_out = out;
    s.avail_out = (uInt)capacity;
    s.next_in = header;
    s.avail_in = sizeof header;
    assert_int_equal(deflate(&s, Z_NO_FLUSH), Z_OK);
    for (size_t left = zeros; left > 0;) {
        size_t n = left < sizeof piece ? left : sizeof piece;
        s.next_in = (Bytef *)piece;
        s.avail_in = (uInt)n;
        assert_int_equal(deflate(&s, Z_NO_FLUSH), Z_OK);
        left -= n;
    }
    assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
    *gz_len = capacity - s.avail_out;
    deflateEnd(&s);
    return out;
}

/* A gzip bomb: a header that promises 100 labels, then 256 MiB of zeros (a 255 KiB file). The
 * inflation stops one byte past the promise: refused, and the process's peak memory grows by far
 * less than the bomb (before the bound it grew to 1.1 GB for a 1 MB file). */
static void test_gzip_bomb_stops_at_the_promise(void **state)
{
    (void)state;
    size_t gz_len;
    uint8_t *packed = gzip_bomb(100, (size_t)256 << 20, &gz_len);
    long before = test_peak_rss_kb();
    expect_error("bomb.gz", packed, gz_len, 1, "holds more than the 100 data bytes its IDX header promises");
    long grown_kb = test_peak_rss_kb() - before;
    if (grown_kb > 32 * 1024)
        fail_msg("peak memory grew by %ld KiB reading a %zu-byte bomb", grown_kb, gz_len);
    free(packed);
}

static void test_missing_file(void **state)
{
    (void)state;
    char err[DP_ERR_LEN] = "";
    struct idx_array a;
    assert_int_equal(idx_read("/nonexistent/file-idx3-ubyte", 3, &a, err), -1);
    assert_non_null(strstr(err, "/nonexistent/file-idx3-ubyte: cannot open: No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_gzip_agree),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_multi_member_gzip_is_accepted),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_wrong_dimension_count),
        cmocka_unit_test(test_empty_and_short_header),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_trailing_data),
        cmocka_unit_test(test_truncated_gzip),
        cmocka_unit_test(test_corrupt_gzip),
        cmocka_unit_test(test_gzip_trailing_garbage),
        cmocka_unit_test(test_gzip_bomb_stops_at_the_promise),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
