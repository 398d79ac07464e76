/* Under mpiexec -n 1, 2, 3: shards partition the training set exactly, only rank 0 reads the
 * test set, and broken data files fail on every rank with one message and no hang. */
#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/convert.h"
#include "dptrain/dataset.h"
#include "test_mpi.h"
#include "test_util.h"

#include <hdf5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static struct comm world;
static char dir[256];

/* Rank 0 makes the files; everyone learns the folder. */
static int setup(void **state)
{
    (void)state;
    check_quiet_hdf5();
    if (world.rank == 0) {
        char *made = test_make_dir("shards");
        snprintf(dir, sizeof dir, "%s", made);
        free(made);
        char err[DP_ERR_LEN], out[512];
        test_write_dataset(dir, 1001, 77, 1);
        snprintf(out, sizeof out, "%s/data.h5", dir);
        struct convert_request request = {dir, {NULL, NULL, NULL, NULL}, NULL, -1, out};
        if (convert_idx_set(&request, err) != 0) {
            fprintf(stderr, "%s\n", err);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (world.rank == 0)
        test_remove_dir(dir);
    return 0;
}

static void test_partition(void **state)
{
    (void)state;
    char path[512], err[DP_ERR_LEN] = "";
    struct dataset_part part;
    snprintf(path, sizeof path, "%s/data.h5", dir);
    assert_int_equal(dataset_read(&world, path, 0, &part, err), 0);
    struct split train = part.train, test = part.test;
    size_t total = part.train_total;
    assert_int_equal(total, 1001);
    /* Contiguous blocks in rank order, sizes differing by at most one. */
    unsigned long long mine[2] = {train.first, train.count}, all[3 * 2];
    MPI_Allgather(mine, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
    unsigned long long next = 0, smallest = total, largest = 0;
    for (int r = 0; r < world.size; r++) {
        assert_int_equal(all[2 * r], next);
        next += all[2 * r + 1];
        smallest = all[2 * r + 1] < smallest ? all[2 * r + 1] : smallest;
        largest = all[2 * r + 1] > largest ? all[2 * r + 1] : largest;
    }
    assert_int_equal(next, total);
    assert_true(largest - smallest <= 1);
    /* Every byte is the right one, and the checksums add up to the whole set's. */
    unsigned long long checksum = 0, expected = 0, summed = 0;
    for (size_t i = 0; i < train.count; i++) {
        for (size_t p = 0; p < 784; p++) {
            uint8_t v = train.images[i * 784 + p];
            assert_int_equal(v, test_pixel(train.first + i, p));
            checksum += v * (p + 1);
        }
        assert_int_equal(train.labels[i], test_label(train.first + i));
        checksum += train.labels[i];
    }
    for (size_t i = 0; i < total; i++) {
        for (size_t p = 0; p < 784; p++)
            expected += test_pixel(i, p) * (p + 1);
        expected += test_label(i);
    }
    MPI_Allreduce(&checksum, &summed, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    assert_int_equal(summed, expected);
    /* Only rank 0 holds the test set. */
    assert_int_equal(test.count, world.rank == 0 ? 77 : 0);
    if (world.rank == 0)
        assert_int_equal(test.labels[5], test_label(1000005));
    split_free(&train);
    split_free(&test);
    data_description_free(&part.about);
}

/* The attributes a data file describes itself with: ten class names and mirror_invariant. */
static void describe(hid_t file)
{
    const char *names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    hsize_t ten[1] = {10};
    hid_t space = H5Screate_simple(1, ten, NULL);
    hid_t attr = H5Acreate2(file, "class_names", type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, type, names);
    H5Aclose(attr);
    H5Sclose(space);
    const char *no[1] = {"no"};
    space = H5Screate(H5S_SCALAR);
    attr = H5Acreate2(file, "mirror_invariant", type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, type, no);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
}

/* Rank 0 writes an HDF5 file with the given train labels; others wait. */
static void write_custom(const char *path, size_t n, int label_rank, const uint8_t *bad_value,
                         int drop_test_labels)
{
    if (world.rank == 0) {
        hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        uint8_t *images = calloc(n * 784 + 1, 1), *labels = calloc(n + 1, 1);
        if (bad_value)
            labels[n - 1] = *bad_value;
        const char *groups[2] = {"train", "test"};
        for (int g = 0; g < 2; g++) {
            hid_t group = H5Gcreate2(file, groups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            hsize_t dims[3] = {n, 28, 28};
            hid_t space = H5Screate_simple(3, dims, NULL);
            hid_t set = H5Dcreate2(group, "images", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5Dwrite(set, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, images);
            H5Dclose(set);
            H5Sclose(space);
            if (!(g == 1 && drop_test_labels)) {
                hid_t type = label_rank == 2 ? H5T_IEEE_F32LE : H5T_STD_U8LE;
                space = H5Screate_simple(1, dims, NULL);
                set = H5Dcreate2(group, "labels", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                if (label_rank != 2)
                    H5Dwrite(set, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels);
                labels[n - 1] = 0; /* the bad label only in /train */
                H5Dclose(set);
                H5Sclose(space);
            }
            H5Gclose(group);
        }
        describe(file);
        H5Fclose(file);
        free(images);
        free(labels);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void expect_read_error(const char *path, const char *fragment)
{
    char err[DP_ERR_LEN] = "";
    struct dataset_part part;
    assert_int_equal(dataset_read(&world, path, 0, &part, err), -1);
    if (!strstr(err, fragment))
        fail_msg("rank %d: message '%s' lacks '%s'", world.rank, err, fragment);
    /* Every rank holds the same message, so it can be printed once. */
    char first[DP_ERR_LEN];
    memcpy(first, err, DP_ERR_LEN);
    MPI_Bcast(first, DP_ERR_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
    assert_string_equal(first, err);
}

static void test_label_out_of_range(void **state)
{
    (void)state;
    char path[512];
    uint8_t twelve = 12;
    snprintf(path, sizeof path, "%s/badlabel.h5", dir);
    write_custom(path, 10, 1, &twelve, 0);
    /* The bad label sits in the last rank's block: only that rank can see it. */
    expect_read_error(path, "/train/labels[9] = 12, but class_names names 10 classes (labels 0..9)");
}

static void test_more_ranks_than_samples(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.h5", dir);
    write_custom(path, 1, 1, NULL, 0);
    if (world.size > 1) {
        expect_read_error(path, "1 training samples cannot be shared among");
    } else { /* one rank can hold the one sample */
        char err[DP_ERR_LEN] = "";
        struct dataset_part part;
        assert_int_equal(dataset_read(&world, path, 0, &part, err), 0);
        assert_int_equal(part.train_total, 1);
        assert_int_equal(part.train.count, 1);
        dataset_part_free(&part);
    }
}

static void test_missing_and_wrong_type(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/nolabels.h5", dir);
    write_custom(path, 10, 1, NULL, 1);
    expect_read_error(path, "missing dataset /test/labels");
    snprintf(path, sizeof path, "%s/floatlabels.h5", dir);
    write_custom(path, 10, 2, NULL, 0);
    expect_read_error(path, "/train/labels has the wrong type (expected uint8)");
    snprintf(path, sizeof path, "%s/absent.h5", dir);
    expect_read_error(path, "absent.h5: No such file or directory; make the data file with 'dptrain convert'");
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", dir);
    expect_read_error(path, "not an HDF5 file");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_label_out_of_range),
        cmocka_unit_test(test_more_ranks_than_samples),
        cmocka_unit_test(test_missing_and_wrong_type),
    };
    return test_mpi_main(&argc, &argv, &world, TEST_GROUP("shards", tests, setup, teardown));
}
