/* Helpers the tests share: temporary folders and synthetic IDX files, plain or gzip. */
#ifndef DPTRAIN_TEST_UTIL_H
#define DPTRAIN_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* mkdtemp under /tmp; returns a static-lifetime copy owned by the caller (free it). */
char *test_make_dir(const char *tag);
void test_remove_dir(const char *dir);
/* cmocka fixtures: a fresh temporary folder for each test, its path in *state, removed after. */
int test_folder_setup(void **state);
int test_folder_teardown(void **state);

/* Bytes of an IDX file with the given header and payload. */
uint8_t *test_idx_bytes(uint8_t type, int ndims, const uint32_t *dims, const uint8_t *payload,
                        size_t payload_len, size_t *out_len);
/* gzip-compress bytes (one member). */
uint8_t *test_gzip(const uint8_t *bytes, size_t len, size_t *out_len);
void test_write_file(const char *path, const uint8_t *bytes, size_t len);
int test_file_exists(const char *path);
/* The process's peak resident memory so far, in KiB (getrusage). */
long test_peak_rss_kb(void);

/* Write the four Fashion-MNIST IDX files (gzip when gz) into dir with deterministic content:
 * pixel (i, p) = (i * 7 + p * 13) % 256, label i = (i * 3) % 10. */
void test_write_dataset(const char *dir, size_t n_train, size_t n_test, int gz);
uint8_t test_pixel(size_t i, size_t p);
uint8_t test_label(size_t i);

struct rng;

/* x[i] ~ N(0, 1) from rng. */
void test_fill_normal(float *x, size_t n, struct rng *rng);
double test_dot(const float *a, const float *b, size_t n);
/* Fail unless an analytic gradient matches its finite-difference estimate within `absolute`
 * plus 1% of the estimate. */
void test_assert_gradient(double analytic, double numeric, double absolute, const char *what, size_t i);

#endif
