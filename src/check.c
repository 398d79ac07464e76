#include "dptrain/check.h"

#include <errno.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

/* Messages are one line: control characters (HDF5's reasons carry newlines) become spaces. */
static void one_line(char *text)
{
    for (; *text; text++)
        if ((unsigned char)*text < 0x20)
            *text = ' ';
}

void err_set(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DP_ERR_LEN, fmt, ap);
    va_end(ap);
    one_line(err);
}

/* Append sep + tail. When both do not fit, the middle of the message so far gives way (marked
 * "..."), so that the reason at the end always survives: it is the part users need. */
static void append(char *err, const char *sep, const char *tail)
{
    char reason[DP_ERR_LEN / 2];
    snprintf(reason, sizeof reason, "%s%s", sep, tail);
    one_line(reason);
    size_t used = strnlen(err, DP_ERR_LEN - 1), need = strlen(reason);
    if (used + need >= DP_ERR_LEN) {
        size_t keep = DP_ERR_LEN - 1 - need - 3, head = keep / 2, tail_keep = keep - head;
        memmove(err + head + 3, err + used - tail_keep, tail_keep);
        memcpy(err + head, "...", 3);
        used = keep + 3;
        err[used] = '\0';
    }
    memcpy(err + used, reason, need + 1);
}

void err_prefix(char *err, const char *prefix)
{
    char joined[DP_ERR_LEN];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err);
    memcpy(err, joined, DP_ERR_LEN);
}

void err_append(char *err, const char *reason)
{
    append(err, ": ", reason);
}

void err_append_hint(char *err, const char *fmt, ...)
{
    char hint[DP_ERR_LEN / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hint, sizeof hint, fmt, ap);
    va_end(ap);
    append(err, "; ", hint);
}

void err_append_errno(char *err)
{
    err_append(err, strerror(errno));
}

void err_append_mpi(char *err, int mpi_code)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", mpi_code);
    err_append(err, text);
}

void err_append_lapack(char *err, int info)
{
    char text[96];
    if (info < 0)
        snprintf(text, sizeof text, "LAPACK argument %d had an illegal value", -info);
    else
        snprintf(text, sizeof text, "LAPACK failed to converge (info %d)", info);
    err_append(err, text);
}

void err_append_zlib(char *err, int z_code)
{
    err_append(err, zError(z_code));
}

/* The innermost entry of the HDF5 error stack is the most specific reason,
 * e.g. "file signature not found" or "unable to open file". */
static herr_t keep_last_message(unsigned n, const H5E_error2_t *entry, void *out)
{
    (void)n;
    char *reason = out;
    if (reason[0] == '\0' && entry->desc && entry->desc[0])
        snprintf(reason, 1024, "%s", entry->desc);
    return 0;
}

void err_append_hdf5(char *err)
{
    char reason[1024] = "";
    /* A failure to walk or clear the stack leaves the message without HDF5's reason: the one
     * thing that may be lost here, never a reason to fail twice. */
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_last_message, reason) < 0)
        reason[0] = '\0';
    /* The POSIX driver's reasons hold a time stamp, a buffer address and the system's text as
     * "error message = '...'": keep that text alone. */
    char *quoted = strstr(reason, "error message = '");
    if (quoted) {
        quoted += strlen("error message = '");
        char *end = strchr(quoted, '\'');
        if (end)
            *end = '\0';
        memmove(reason, quoted, strlen(quoted) + 1);
    }
    /* Walking upward visits the most specific entry first; the callback keeps it. */
    if (reason[0])
        err_append(err, reason);
    (void)H5Eclear2(H5E_DEFAULT);
}

int check_quiet_hdf5(void)
{
    return H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0 ? -1 : 0;
}
