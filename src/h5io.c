#include "dptrain/h5io.h"

#include "dptrain/check.h"
#include "dptrain/files.h"

#include <stdlib.h>

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

hid_t h5io_create_in_memory(const char *final_path, char *err)
{
    hid_t access = -1, file = -1;
    CHECK_H5(access = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot create a file access list", final_path);
    /* 1 MiB growth steps; no backing store: nothing touches the disk until h5io_publish. */
    CHECK_H5(H5Pset_fapl_core(access, (size_t)1 << 20, 0), "%s: cannot select the in-memory driver",
             final_path);
    CHECK_H5(file = H5Fcreate(final_path, H5F_ACC_TRUNC, H5P_DEFAULT, access), "%s: cannot create in memory",
             final_path);
    H5Pclose(access);
    return file;
fail:
    if (access >= 0)
        H5Pclose(access);
    return -1;
}

/* The finished file's bytes. */
static void *file_image(hid_t file, const char *final_path, size_t *size, char *err)
{
    void *image = NULL;
    ssize_t length;
    CHECK_H5(H5Fflush(file, H5F_SCOPE_GLOBAL), "%s: cannot finish the file", final_path);
    CHECK_H5(length = H5Fget_file_image(file, NULL, 0), "%s: cannot size the file image", final_path);
    CHECK_PTR(image = malloc((size_t)length + 1), "%s: cannot allocate %zd bytes for the file", final_path,
              length);
    CHECK_H5(H5Fget_file_image(file, image, (size_t)length), "%s: cannot copy the file image", final_path);
    *size = (size_t)length;
    return image;
fail:
    free(image);
    return NULL;
}

int h5io_publish(hid_t file, const char *final_path, char *err)
{
    size_t size = 0;
    void *image = file_image(file, final_path, &size, err);
    /* Closing an in-memory file does no I/O: it cannot fail for lack of space. */
    int closed = H5Fclose(file) >= 0;
    if (image && !closed)
        err_set(err, "%s: cannot close the in-memory file", final_path);
    int status = image && closed ? files_write(final_path, image, size, err) : -1;
    free(image);
    return status;
}
