/* dptrain convert: a byte-for-byte round trip, any sample count, and broken inputs that leave no
 * output and never damage an existing one. */
#include "dptrain/check.h"
#include "dptrain/convert.h"
#include "test_util.h"

#include <hdf5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static uint8_t *read_dataset(hid_t file, const char *name, hsize_t *dims, int *rank)
{
    hid_t set = H5Dopen2(file, name, H5P_DEFAULT);
    assert_true(set >= 0);
    hid_t space = H5Dget_space(set);
    *rank = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    hsize_t n = 1;
    for (int d = 0; d < *rank; d++)
        n *= dims[d];
    uint8_t *data = malloc(n + 1);
    assert_true(H5Dread(set, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Sclose(space);
    H5Dclose(set);
    return data;
}

/* convert the standard four files of dir, with optional class names. */
static int convert_dir(const char *dir, const char *out, const char *class_names, char *err)
{
    struct convert_request request = {dir, {NULL, NULL, NULL, NULL}, class_names, -1, out};
    return convert_idx_set(&request, err);
}

static void check_round_trip(size_t n_train, size_t n_test, int gz)
{
    char *dir = test_make_dir("convert");
    char out[512], err[DP_ERR_LEN] = "";
    test_write_dataset(dir, n_train, n_test, gz);
    snprintf(out, sizeof out, "%s/data.h5", dir);
    assert_int_equal(convert_dir(dir, out, NULL, err), 0);
    hid_t file = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    const struct {
        const char *images, *labels;
        size_t n, offset;
    } sets[2] = {{"/train/images", "/train/labels", n_train, 0},
                 {"/test/images", "/test/labels", n_test, 1000000}};
    for (int s = 0; s < 2; s++) {
        hsize_t dims[3];
        int rank;
        uint8_t *images = read_dataset(file, sets[s].images, dims, &rank);
        assert_int_equal(rank, 3);
        assert_int_equal(dims[0], sets[s].n);
        assert_int_equal(dims[1], 28);
        assert_int_equal(dims[2], 28);
        for (size_t i = 0; i < sets[s].n; i++)
            for (size_t p = 0; p < 784; p++)
                if (images[i * 784 + p] != test_pixel(i + sets[s].offset, p))
                    fail_msg("%s[%zu] pixel %zu differs", sets[s].images, i, p);
        uint8_t *labels = read_dataset(file, sets[s].labels, dims, &rank);
        assert_int_equal(rank, 1);
        assert_int_equal(dims[0], sets[s].n);
        for (size_t i = 0; i < sets[s].n; i++)
            assert_int_equal(labels[i], test_label(i + sets[s].offset));
        free(images);
        free(labels);
    }
    assert_true(H5Aexists(file, "class_names") > 0);
    assert_true(H5Aexists(file, "source") > 0);
    assert_true(H5Aexists(file, "mirror_invariant") > 0);
    H5Fclose(file);
    test_remove_dir(dir);
    free(dir);
}

static void test_round_trip_gzip(void **state)
{
    (void)state;
    check_round_trip(1000, 500, 1);
}

static void test_round_trip_plain_odd_sizes(void **state)
{
    (void)state;
    check_round_trip(37, 1, 0);
}

/* Convert a broken set; the error must name the file and the problem, no output may appear,
 * and an existing output must stay exactly as it was. */
static void expect_failure_named(void (*breaker)(const char *dir), const char *class_names, const char *fragment)
{
    char *dir = test_make_dir("broken");
    char out[512], err[DP_ERR_LEN] = "";
    test_write_dataset(dir, 30, 10, 1);
    breaker(dir);
    snprintf(out, sizeof out, "%s/data.h5", dir);
    assert_int_equal(convert_dir(dir, out, class_names, err), -1);
    if (!strstr(err, fragment))
        fail_msg("message '%s' lacks '%s'", err, fragment);
    assert_false(test_file_exists(out));
    /* An existing output is left alone. */
    test_write_file(out, (const uint8_t *)"precious", 8);
    assert_int_equal(convert_dir(dir, out, class_names, err), -1);
    FILE *f = fopen(out, "rb");
    char buffer[16] = "";
    assert_int_equal(fread(buffer, 1, sizeof buffer, f), 8);
    fclose(f);
    assert_memory_equal(buffer, "precious", 8);
    char listing[600];
    snprintf(listing, sizeof listing, "ls %s | grep -q tmp", dir);
    assert_int_not_equal(system(listing), 0); /* no temporary file left behind */
    test_remove_dir(dir);
    free(dir);
}

static void expect_failure(void (*breaker)(const char *dir), const char *fragment)
{
    expect_failure_named(breaker, NULL, fragment);
}

static void write_labels(const char *dir, const char *name, const uint8_t *labels, uint32_t n)
{
    char path[512];
    size_t len;
    uint8_t *bytes = test_idx_bytes(0x08, 1, &n, labels, n, &len);
    snprintf(path, sizeof path, "%s/%s.gz", dir, name);
    size_t gz_len;
    uint8_t *packed = test_gzip(bytes, len, &gz_len);
    test_write_file(path, packed, gz_len);
    free(bytes);
    free(packed);
}

static void label_out_of_range(const char *dir)
{
    uint8_t labels[30] = {0};
    labels[17] = 10;
    write_labels(dir, "train-labels-idx1-ubyte", labels, 30);
}

static void count_mismatch(const char *dir)
{
    uint8_t labels[29] = {0};
    write_labels(dir, "train-labels-idx1-ubyte", labels, 29);
}

static void wrong_image_size(const char *dir)
{
    char path[512];
    uint8_t payload[10 * 27 * 28] = {0};
    uint32_t dims[3] = {10, 27, 28};
    size_t len;
    uint8_t *bytes = test_idx_bytes(0x08, 3, dims, payload, sizeof payload, &len);
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir);
    test_write_file(path, bytes, len);
    free(bytes);
}

static void missing_file(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", dir);
    remove(path);
}

static void truncated_gzip(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    assert_int_equal(truncate(path, 200), 0);
}

static void test_label_out_of_range(void **state)
{
    (void)state;
    expect_failure_named(label_out_of_range, "a,b,c,d,e,f,g,h,i,j",
                         "label 10 at index 17, but 10 class names were given (labels 0..9)");
}

static void one_class(const char *dir)
{
    uint8_t labels[30] = {0};
    write_labels(dir, "train-labels-idx1-ubyte", labels, 30);
    uint8_t test_labels[10] = {0};
    write_labels(dir, "t10k-labels-idx1-ubyte", test_labels, 10);
}

static void nothing(const char *dir)
{
    (void)dir;
}

static void test_one_class(void **state)
{
    (void)state;
    expect_failure(one_class, "a classifier needs at least 2 classes");
}

static void test_bad_class_names(void **state)
{
    (void)state;
    expect_failure_named(nothing, "a,,c", "name 2 is empty");
    expect_failure_named(nothing, "a,b", "label 3 at index 1, but 2 class names were given");
}

static void test_count_mismatch(void **state)
{
    (void)state;
    expect_failure(count_mismatch, "29 labels, but");
}

static void test_wrong_image_size(void **state)
{
    (void)state;
    expect_failure(wrong_image_size, "test images are 27x28x1, but the training images");
}

static void test_missing_file(void **state)
{
    (void)state;
    expect_failure(missing_file, "t10k-labels-idx1-ubyte: not found");
}

static void test_truncated_gzip(void **state)
{
    (void)state;
    expect_failure(truncated_gzip, "train-images-idx3-ubyte.gz: truncated gzip stream");
}

/* A colour set with 4-dimensional IDX images [N][H][W][C], named file by file: the arrays come out
 * byte for byte, with K = the largest label + 1 classes named "0".."K-1", and no mirroring. */
static void test_colour_named_files(void **state)
{
    (void)state;
    char *dir = test_make_dir("colour");
    char paths[4][512], out[512], err[DP_ERR_LEN] = "";
    const char *names[4] = {"a-img", "a-lab", "b-img", "b-lab"};
    uint32_t n[2] = {12, 5}, h = 5, w = 7, c = 3;
    for (int s = 0; s < 2; s++) {
        size_t values = (size_t)n[s] * h * w * c, len;
        uint8_t *pixels = malloc(values), labels[12];
        for (size_t i = 0; i < values; i++)
            pixels[i] = (uint8_t)(i * 7 + (size_t)s);
        for (uint32_t i = 0; i < n[s]; i++)
            labels[i] = (uint8_t)(i % 4);
        uint32_t image_dims[4] = {n[s], h, w, c};
        uint8_t *bytes = test_idx_bytes(0x08, 4, image_dims, pixels, values, &len);
        snprintf(paths[2 * s], sizeof paths[0], "%s/%s", dir, names[2 * s]);
        test_write_file(paths[2 * s], bytes, len);
        free(bytes);
        bytes = test_idx_bytes(0x08, 1, &n[s], labels, n[s], &len);
        snprintf(paths[2 * s + 1], sizeof paths[0], "%s/%s", dir, names[2 * s + 1]);
        test_write_file(paths[2 * s + 1], bytes, len);
        free(bytes);
        free(pixels);
    }
    snprintf(out, sizeof out, "%s/data.h5", dir);
    struct convert_request request = {NULL, {paths[0], paths[1], paths[2], paths[3]}, NULL, -1, out};
    assert_int_equal(convert_idx_set(&request, err), 0);
    hid_t file = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hsize_t dims[4];
    int rank;
    uint8_t *images = read_dataset(file, "/test/images", dims, &rank);
    assert_int_equal(rank, 4);
    assert_int_equal(dims[3], 3);
    for (size_t i = 0; i < (size_t)n[1] * h * w * c; i++)
        assert_int_equal(images[i], (uint8_t)(i * 7 + 1));
    free(images);
    hid_t attr = H5Aopen(file, "class_names", H5P_DEFAULT), space = H5Aget_space(attr);
    assert_int_equal(H5Sget_simple_extent_npoints(space), 4);
    H5Sclose(space);
    H5Aclose(attr);
    H5Fclose(file);
    request.files[3] = paths[1]; /* the training labels named twice: a 12-label test set for 5 images */
    assert_int_equal(convert_idx_set(&request, err), -1);
    assert_non_null(strstr(err, "12 labels, but"));
    test_remove_dir(dir);
    free(dir);
}

int main(void)
{
    check_quiet_hdf5();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_gzip),
        cmocka_unit_test(test_round_trip_plain_odd_sizes),
        cmocka_unit_test(test_label_out_of_range),
        cmocka_unit_test(test_one_class),
        cmocka_unit_test(test_bad_class_names),
        cmocka_unit_test(test_colour_named_files),
        cmocka_unit_test(test_count_mismatch),
        cmocka_unit_test(test_wrong_image_size),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_truncated_gzip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
