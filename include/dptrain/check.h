/* Error handling: the one way dptrain detects, describes and reports failures.
 *
 * A function that can fail takes `char *err` (DP_ERR_LEN bytes), returns -1 (or NULL) and
 * leaves one human-readable line in it; on success it returns 0 and leaves err alone.
 * Inside such a function the CHECK_* macros test a library call, format the message with the
 * library's own reason appended, and `goto fail` — so every function has one cleanup path. */
#ifndef DPTRAIN_CHECK_H
#define DPTRAIN_CHECK_H

#include <stddef.h>

#define DP_ERR_LEN 768

/* Exit codes of the dptrain command. */
enum {
    DP_EXIT_OK = 0,
    DP_EXIT_ERROR = 1,      /* bad input, I/O failure, numerical failure */
    DP_EXIT_USAGE = 2,      /* bad command line */
    DP_EXIT_STOPPED = 3,    /* stopped by SIGTERM/SIGUSR1 after writing a checkpoint */
    DP_EXIT_DIVERGED = 4,   /* trained and wrote its results, but a run diverged (results.h) */
};

void err_set(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append ": reason" to the message already in err. */
void err_append(char *err, const char *reason);
/* Append the innermost message of the current HDF5 error stack. */
void err_append_hdf5(char *err);
/* Put "prefix: " before the message (the layer that knows the flag names it). */
void err_prefix(char *err, const char *prefix);
/* Append "; " and a formatted hint (what the user can do), keeping the message one line. */
void err_append_hint(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append MPI's description of an error code. */
void err_append_mpi(char *err, int mpi_code);

/* Turn off HDF5's own printing of error stacks: dptrain reports one line itself. -1 on failure. */
int check_quiet_hdf5(void);

#define FAIL(...)                                                                      \
    do {                                                                               \
        err_set(err, __VA_ARGS__);                                                     \
        goto fail;                                                                     \
    } while (0)

/* HDF5 calls return a negative value (hid_t or herr_t) on failure. */
#define CHECK_H5(call, ...)                                                            \
    do {                                                                               \
        if ((call) < 0) {                                                              \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_hdf5(err);                                                      \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)

#define CHECK_MPI(call, ...)                                                           \
    do {                                                                               \
        int check_mpi_rc_ = (call);                                                    \
        if (check_mpi_rc_ != 0 /* MPI_SUCCESS */) {                                    \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_mpi(err, check_mpi_rc_);                                        \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)

/* LAPACKE returns info: < 0 an illegal argument, > 0 a numerical failure. */
#define CHECK_LAPACK(call, ...)                                                        \
    do {                                                                               \
        int check_lapack_info_ = (int)(call);                                          \
        if (check_lapack_info_ != 0) {                                                 \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_lapack(err, check_lapack_info_);                                \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)
void err_append_lapack(char *err, int info);

/* zlib: anything but Z_OK (0). */
#define CHECK_Z(call, ...)                                                             \
    do {                                                                               \
        int check_z_rc_ = (call);                                                      \
        if (check_z_rc_ != 0) {                                                        \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_zlib(err, check_z_rc_);                                         \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)
void err_append_zlib(char *err, int z_code);

/* libc calls that return -1 (or a negative value) and set errno. */
#define CHECK_SYS(call, ...)                                                           \
    do {                                                                               \
        if ((call) < 0) {                                                              \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_errno(err);                                                     \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)
void err_append_errno(char *err);

/* Allocations and other calls that return NULL on failure. */
#define CHECK_PTR(ptr, ...)                                                            \
    do {                                                                               \
        if ((ptr) == NULL) {                                                           \
            err_set(err, __VA_ARGS__);                                                 \
            err_append_errno(err);                                                     \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)

/* A call into another dptrain function that already filled err. */
#define CHECK_DP(call)                                                                 \
    do {                                                                               \
        if ((call) != 0)                                                               \
            goto fail;                                                                 \
    } while (0)

#endif
