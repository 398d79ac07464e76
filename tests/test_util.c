#include "test_util.h"

#include "dptrain/rng.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

char *test_make_dir(const char *tag)
{
    char *path = malloc(256);
    snprintf(path, 256, "/tmp/dptrain-test-%s-XXXXXX", tag);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(1);
    }
    return path;
}

void test_remove_dir(const char *dir)
{
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
}

uint8_t *test_idx_bytes(uint8_t type, int ndims, const uint32_t *dims, const uint8_t *payload,
                        size_t payload_len, size_t *out_len)
{
    size_t header = 4 + 4 * (size_t)ndims;
    uint8_t *bytes = malloc(header + payload_len + 1);
    bytes[0] = 0;
    bytes[1] = 0;
    bytes[2] = type;
    bytes[3] = (uint8_t)ndims;
    for (int d = 0; d < ndims; d++) {
        bytes[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        bytes[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        bytes[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        bytes[7 + 4 * d] = (uint8_t)dims[d];
    }
    if (payload_len)
        memcpy(bytes + header, payload, payload_len);
    *out_len = header + payload_len;
    return bytes;
}

uint8_t *test_gzip(const uint8_t *bytes, size_t len, size_t *out_len)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(1);
    size_t capacity = deflateBound(&s, (uLong)len) + 64;
    uint8_t *out = malloc(capacity);
    s.next_in = (Bytef *)bytes;
    s.avail_in = (uInt)len;
    s.next_out = out;
    s.avail_out = (uInt)capacity;
    if (deflate(&s, Z_FINISH) != Z_STREAM_END)
        exit(1);
    *out_len = capacity - s.avail_out;
    deflateEnd(&s);
    return out;
}

long test_peak_rss_kb(void)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0) {
        perror("getrusage");
        exit(1);
    }
    return usage.ru_maxrss;
}

void test_write_file(const char *path, const uint8_t *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int test_file_exists(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0;
}

uint8_t test_pixel(size_t i, size_t p)
{
    return (uint8_t)((i * 7 + p * 13) % 256);
}

uint8_t test_label(size_t i)
{
    return (uint8_t)((i * 3) % 10);
}

static void write_idx(const char *dir, const char *name, int ndims, const uint32_t *dims,
                      const uint8_t *payload, size_t len, int gz)
{
    char path[512];
    size_t idx_len, gz_len;
    uint8_t *idx = test_idx_bytes(0x08, ndims, dims, payload, len, &idx_len);
    snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    if (gz) {
        uint8_t *packed = test_gzip(idx, idx_len, &gz_len);
        test_write_file(path, packed, gz_len);
        free(packed);
    } else {
        test_write_file(path, idx, idx_len);
    }
    free(idx);
}

static void write_set(const char *dir, const char *images_name, const char *labels_name,
                      size_t n, size_t offset, int gz)
{
    uint8_t *images = malloc(n * 784 + 1), *labels = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        for (size_t p = 0; p < 784; p++)
            images[i * 784 + p] = test_pixel(i + offset, p);
        labels[i] = test_label(i + offset);
    }
    uint32_t image_dims[3] = {(uint32_t)n, 28, 28}, label_dims[1] = {(uint32_t)n};
    write_idx(dir, images_name, 3, image_dims, images, n * 784, gz);
    write_idx(dir, labels_name, 1, label_dims, labels, n, gz);
    free(images);
    free(labels);
}

void test_write_dataset(const char *dir, size_t n_train, size_t n_test, int gz)
{
    write_set(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", n_train, 0, gz);
    write_set(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n_test, 1000000, gz);
}

int test_folder_setup(void **state)
{
    *state = test_make_dir("test");
    return *state ? 0 : -1;
}

int test_folder_teardown(void **state)
{
    test_remove_dir(*state);
    free(*state);
    return 0;
}

void test_fill_normal(float *x, size_t n, struct rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rng_normal(rng);
}

double test_dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

void test_assert_gradient(double analytic, double numeric, double absolute, const char *what, size_t i)
{
    if (fabs(analytic - numeric) > absolute + 1e-2 * fabs(numeric))
        fail_msg("%s[%zu]: analytic %.6f vs numeric %.6f", what, i, analytic, numeric);
}
