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

/* Room to format a message before it is fitted: a few paths of FILES_PATH_MAX and their reasons. */
#define ERR_WORK_LEN (6 * 4096)

/* Put text into err as one line. When it is too long (a path of thousands of characters), its
 * middle gives way (marked "..."): the start names what failed and the end says why, and the
 * reason is the part users need. */
static void fit(char *err, const char *text)
{
    size_t length = strlen(text);
    if (length < DP_ERR_LEN) {
        memmove(err, text, length + 1);
    } else {
        size_t keep = DP_ERR_LEN - 1 - 3, head = keep / 3, tail = keep - head;
        memmove(err, text, head);
        memcpy(err + head, "...", 3);
        memmove(err + head + 3, text + length - tail, tail + 1);
    }
    one_line(err);
}

void err_set(char *err, const char *fmt, ...)
{
    char text[ERR_WORK_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fit(err, text);
}

static void append(char *err, const char *sep, const char *tail)
{
    char text[ERR_WORK_LEN];
    snprintf(text, sizeof text, "%s%s%s", err, sep, tail);
    fit(err, text);
}

void err_prefix(char *err, const char *prefix)
{
    char text[ERR_WORK_LEN];
    snprintf(text, sizeof text, "%s: %s", prefix, err);
    fit(err, text);
}

void err_append(char *err, const char *reason)
{
    append(err, ": ", reason);
}

void err_append_hint(char *err, const char *fmt, ...)
{
    char hint[DP_ERR_LEN];
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
