#include "dptrain/h5io.h"

#include "dptrain/check.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int h5io_write_array(hid_t parent, const char *name, hid_t mem_type, hid_t file_type, int rank,
                     const hsize_t *dims, const void *data, const char *path, char *err)
{
    hid_t space = -1, set = -1;
    hsize_t elements = 1;
    for (int d = 0; d < rank; d++)
        elements *= dims[d];
    CHECK_H5(space = H5Screate_simple(rank, dims, NULL), "%s: cannot create dataspace for %s",
             path, name);
    CHECK_H5(set = H5Dcreate2(parent, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT), "%s: cannot create dataset %s", path, name);
    if (elements > 0)
        CHECK_H5(H5Dwrite(set, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
                 "%s: cannot write dataset %s", path, name);
    H5Dclose(set);
    H5Sclose(space);
    return 0;
fail:
    if (set >= 0)
        H5Dclose(set);
    if (space >= 0)
        H5Sclose(space);
    return -1;
}

/* Variable-length UTF-8 strings: h5py reads them as str, h5dump prints them plainly. */
int h5io_write_strings_attr(hid_t object, const char *name, const char *const *values,
                            size_t count, const char *path, char *err)
{
    hid_t type = -1, space = -1, attr = -1;
    hsize_t dims[1] = {count};
    CHECK_H5(type = H5Tcopy(H5T_C_S1), "%s: cannot create string type", path);
    CHECK_H5(H5Tset_size(type, H5T_VARIABLE), "%s: cannot size string type", path);
    CHECK_H5(H5Tset_cset(type, H5T_CSET_UTF8), "%s: cannot set string encoding", path);
    if (count == 1)
        CHECK_H5(space = H5Screate(H5S_SCALAR), "%s: cannot create dataspace", path);
    else
        CHECK_H5(space = H5Screate_simple(1, dims, NULL), "%s: cannot create dataspace", path);
    CHECK_H5(attr = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create attribute %s", path, name);
    CHECK_H5(H5Awrite(attr, type, values), "%s: cannot write attribute %s", path, name);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return 0;
fail:
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    return -1;
}

int h5io_write_attr_string(hid_t object, const char *name, const char *value, const char *path,
                           char *err)
{
    const char *values[1] = {value};
    return h5io_write_strings_attr(object, name, values, 1, path, err);
}

static int write_scalar_attr(hid_t object, const char *name, hid_t mem_type, hid_t file_type,
                             const void *value, const char *path, char *err)
{
    hid_t space = -1, attr = -1;
    CHECK_H5(space = H5Screate(H5S_SCALAR), "%s: cannot create dataspace", path);
    CHECK_H5(attr = H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create attribute %s", path, name);
    CHECK_H5(H5Awrite(attr, mem_type, value), "%s: cannot write attribute %s", path, name);
    H5Aclose(attr);
    H5Sclose(space);
    return 0;
fail:
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    return -1;
}

int h5io_write_attr_double(hid_t object, const char *name, double value, const char *path,
                           char *err)
{
    return write_scalar_attr(object, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, &value, path, err);
}

int h5io_write_attr_long(hid_t object, const char *name, long long value, const char *path,
                         char *err)
{
    return write_scalar_attr(object, name, H5T_NATIVE_LLONG, H5T_STD_I64LE, &value, path, err);
}

int h5io_temp_name(const char *final_path, char *tmp_path, size_t size, char *err)
{
    int n = snprintf(tmp_path, size, "%s.tmp.%ld", final_path, (long)getpid());
    if (n < 0 || (size_t)n >= size) {
        err_set(err, "%s: path too long", final_path);
        tmp_path[0] = '\0';
        return -1;
    }
    return 0;
}

static int fsync_path(const char *path, int flags, char *err)
{
    int fd = -1;
    CHECK_SYS(fd = open(path, flags), "%s: cannot open to sync", path);
    CHECK_SYS(fsync(fd), "%s: cannot sync to disk", path);
    close(fd);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

static void folder_of(const char *path, char *folder, size_t size)
{
    snprintf(folder, size, "%s", path);
    char *slash = strrchr(folder, '/');
    if (!slash)
        snprintf(folder, size, ".");
    else if (slash == folder)
        folder[1] = '\0';
    else
        *slash = '\0';
}

int h5io_commit(const char *tmp_path, const char *final_path, char *err)
{
    char folder[4096];
    CHECK_DP(fsync_path(tmp_path, O_RDONLY, err));
    CHECK_SYS(rename(tmp_path, final_path), "%s: cannot move %s into place", final_path, tmp_path);
    folder_of(final_path, folder, sizeof folder);
    /* Make the rename itself durable. */
    CHECK_DP(fsync_path(folder, O_RDONLY | O_DIRECTORY, err));
    return 0;
fail:
    return -1;
}

int h5io_check_writable(const char *final_path, const char *flag, char *err)
{
    char folder[4096];
    struct stat info;
    folder_of(final_path, folder, sizeof folder);
    if (final_path[0] == '\0')
        FAIL("%s: empty path", flag);
    if (stat(folder, &info) != 0 || !S_ISDIR(info.st_mode))
        FAIL("%s %s: folder %s does not exist", flag, final_path, folder);
    if (access(folder, W_OK) != 0)
        FAIL("%s %s: folder %s is not writable: %s", flag, final_path, folder, strerror(errno));
    if (stat(final_path, &info) == 0 && S_ISDIR(info.st_mode))
        FAIL("%s %s: is a folder", flag, final_path);
    return 0;
fail:
    return -1;
}
