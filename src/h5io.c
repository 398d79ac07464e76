#include "dptrain/h5io.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/seal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t element_count(const struct h5io_array *a)
{
    size_t count = 1;
    for (int d = 0; d < a->rank; d++)
        count *= (size_t)a->dims[d];
    return count;
}

size_t h5io_array_bytes(const struct h5io_array *a)
{
    return element_count(a) * H5Tget_size(a->mem_type);
}

int h5io_write_array(hid_t parent, const struct h5io_array *a, const void *data, const char *path, char *err)
{
    hid_t space = -1, set = -1;
    CHECK_H5(space = H5Screate_simple(a->rank, a->dims, NULL), "%s: cannot create dataspace for %s", path, a->name);
    CHECK_H5(set = H5Dcreate2(parent, a->name, a->file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create dataset %s", path, a->name);
    if (element_count(a) > 0)
        CHECK_H5(H5Dwrite(set, a->mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "%s: cannot write dataset %s", path,
                 a->name);
    CHECK_H5(H5Dclose(set), "%s: cannot close dataset %s", path, a->name);
    set = -1;
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
    return 0;
fail:
    if (set >= 0)
        H5Dclose(set);
    if (space >= 0)
        H5Sclose(space);
    return -1;
}

/* Variable-length UTF-8 strings: h5py reads them as str, h5dump prints them plainly. */
int h5io_write_attr_strings(hid_t object, const char *name, const char *const *values,
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
    CHECK_H5(H5Aclose(attr), "%s: cannot close attribute %s", path, name);
    attr = -1;
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
    space = -1;
    CHECK_H5(H5Tclose(type), "%s: cannot close a string type", path);
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
    return h5io_write_attr_strings(object, name, values, 1, path, err);
}

/* A scalar attribute: a's name and types (rank 0). */
static int write_scalar_attr(hid_t object, const struct h5io_array *a, const void *value, const char *path, char *err)
{
    hid_t space = -1, attr = -1;
    CHECK_H5(space = H5Screate(H5S_SCALAR), "%s: cannot create dataspace", path);
    CHECK_H5(attr = H5Acreate2(object, a->name, a->file_type, space, H5P_DEFAULT, H5P_DEFAULT),
             "%s: cannot create attribute %s", path, a->name);
    CHECK_H5(H5Awrite(attr, a->mem_type, value), "%s: cannot write attribute %s", path, a->name);
    CHECK_H5(H5Aclose(attr), "%s: cannot close attribute %s", path, a->name);
    attr = -1;
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
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
    return write_scalar_attr(object, &(struct h5io_array){name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 0, NULL}, &value,
                             path, err);
}

int h5io_write_attr_u64(hid_t object, const char *name, uint64_t value, const char *path, char *err)
{
    return write_scalar_attr(object, &(struct h5io_array){name, H5T_NATIVE_UINT64, H5T_STD_U64LE, 0, NULL}, &value,
                             path, err);
}

int h5io_write_attr_long(hid_t object, const char *name, long long value, const char *path,
                         char *err)
{
    return write_scalar_attr(object, &(struct h5io_array){name, H5T_NATIVE_LLONG, H5T_STD_I64LE, 0, NULL}, &value,
                             path, err);
}

/* ---- reading -------------------------------------------------------------------------- */

int h5io_read_attr(hid_t object, const char *name, hid_t type, void *out, const char *path, char *err)
{
    hid_t attr = -1, space = -1;
    if (H5Aexists(object, name) <= 0)
        FAIL("%s: no attribute %s", path, name);
    CHECK_H5(attr = H5Aopen(object, name, H5P_DEFAULT), "%s: cannot open attribute %s", path, name);
    CHECK_H5(space = H5Aget_space(attr), "%s: cannot read the shape of attribute %s", path, name);
    if (H5Sget_simple_extent_npoints(space) != 1)
        FAIL("%s: attribute %s is not a single value", path, name);
    CHECK_H5(H5Aread(attr, type, out), "%s: cannot read attribute %s", path, name);
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
    space = -1;
    CHECK_H5(H5Aclose(attr), "%s: cannot close attribute %s", path, name);
    return 0;
fail:
    if (space >= 0)
        H5Sclose(space);
    if (attr >= 0)
        H5Aclose(attr);
    return -1;
}

int h5io_read_attr_string(hid_t object, const char *name, char *out, size_t size, const char *path, char *err)
{
    hid_t type = -1;
    char *value = NULL;
    CHECK_H5(type = H5Tcopy(H5T_C_S1), "cannot create string type");
    CHECK_H5(H5Tset_size(type, H5T_VARIABLE), "cannot size string type");
    CHECK_H5(H5Tset_cset(type, H5T_CSET_UTF8), "cannot set string encoding");
    CHECK_DP(h5io_read_attr(object, name, type, &value, path, err));
    if (!value || strlen(value) >= size)
        FAIL("%s: attribute %s is empty or longer than %zu characters", path, name, size - 1);
    snprintf(out, size, "%s", value);
    char *freeing = value;
    value = NULL;
    CHECK_H5(H5free_memory(freeing), "%s: cannot free attribute %s", path, name);
    CHECK_H5(H5Tclose(type), "cannot close a string type");
    return 0;
fail:
    H5free_memory(value);
    if (type >= 0)
        H5Tclose(type);
    return -1;
}

int h5io_attr_is_string(hid_t object, const char *name)
{
    hid_t attr = H5Aopen(object, name, H5P_DEFAULT), type = -1;
    int is_string = -1;
    if (attr >= 0 && (type = H5Aget_type(attr)) >= 0)
        is_string = H5Tget_class(type) == H5T_STRING;
    if (type >= 0 && H5Tclose(type) < 0)
        is_string = -1;
    if (attr >= 0 && H5Aclose(attr) < 0)
        is_string = -1;
    return is_string;
}

/* The strings of an open attribute of `count` elements and file type `stored`, as C strings
 * (variable-length ones as HDF5 allocated them; fixed-length ones cut at their size). */
static int read_string_values(hid_t attr, hid_t stored, int count, char **values, const char *where, char *err)
{
    hid_t type = -1;
    char *fixed = NULL;
    int variable = H5Tis_variable_str(stored);
    CHECK_H5(variable, "%s: cannot read the string type", where);
    CHECK_H5(type = H5Tcopy(H5T_C_S1), "cannot create string type");
    size_t size = variable ? 0 : H5Tget_size(stored);
    CHECK_H5(H5Tset_size(type, variable ? H5T_VARIABLE : size + 1), "cannot size string type");
    CHECK_H5(H5Tset_cset(type, H5Tget_cset(stored) == H5T_CSET_UTF8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII),
             "cannot set string encoding");
    if (variable) {
        CHECK_H5(H5Aread(attr, type, values), "%s: cannot read it", where);
    } else {
        CHECK_PTR(fixed = calloc((size_t)count, size + 1), "%s: cannot allocate it", where);
        CHECK_H5(H5Aread(attr, type, fixed), "%s: cannot read it", where);
        for (int i = 0; i < count; i++)
            CHECK_PTR(values[i] = strdup(fixed + (size_t)i * (size + 1)), "%s: cannot allocate it", where);
    }
    free(fixed);
    CHECK_H5(H5Tclose(type), "cannot close a string type");
    return 0;
fail:
    free(fixed);
    if (type >= 0)
        H5Tclose(type);
    return -1;
}

/* A copy of names[0..count) as one allocation, the pointers first and the strings after them, so
 * that one free() releases it; NULL if out of memory. */
static const char **copy_names(const char *const *names, int count)
{
    size_t bytes = (size_t)count * sizeof(char *);
    for (int i = 0; i < count; i++)
        bytes += strlen(names[i]) + 1;
    const char **copy = malloc(bytes + 1);
    if (!copy)
        return NULL;
    char *text = (char *)(copy + count);
    for (int i = 0; i < count; i++) {
        size_t length = strlen(names[i]) + 1;
        memcpy(text, names[i], length);
        copy[i] = text;
        text += length;
    }
    return copy;
}

/* Release what read_string_values returned. */
static void free_string_values(char **values, int count, int variable)
{
    for (int i = 0; values && i < count; i++) {
        if (variable)
            H5free_memory(values[i]);
        else
            free(values[i]);
    }
}

int h5io_read_attr_strings(hid_t object, const char *name, const struct h5io_strings *out, const char *path,
                           char *err)
{
    hid_t attr = -1, space = -1, stored = -1;
    char **values = NULL, where[600];
    int count = 0, variable = 0;
    snprintf(where, sizeof where, "%s: attribute %s", path, name);
    CHECK_H5(attr = H5Aopen(object, name, H5P_DEFAULT), "%s: cannot open it", where);
    CHECK_H5(stored = H5Aget_type(attr), "%s: cannot read its type", where);
    if (H5Tget_class(stored) != H5T_STRING)
        FAIL("%s: holds no strings (give a list of names)", where);
    variable = H5Tis_variable_str(stored) > 0;
    CHECK_H5(space = H5Aget_space(attr), "%s: cannot read its shape", where);
    hssize_t points = H5Sget_simple_extent_npoints(space);
    CHECK_H5(points, "%s: cannot read its shape", where);
    if (H5Sget_simple_extent_ndims(space) > 1 || points > out->max_count)
        FAIL("%s: holds %lld values, at most %d in one list are taken", where, (long long)points, out->max_count);
    count = (int)points;
    CHECK_PTR(values = calloc((size_t)count + 1, sizeof *values), "%s: cannot allocate it", where);
    CHECK_DP(read_string_values(attr, stored, count, values, where, err));
    for (int i = 0; i < count; i++)
        if (!values[i] || strlen(values[i]) >= out->max_length)
            FAIL("%s: name %d is %s (1 to %zu bytes)", where, i, values[i] ? "longer than dptrain takes" : "missing",
                 out->max_length - 1);
    CHECK_PTR(*out->names = copy_names((const char *const *)values, count), "%s: cannot allocate it",
              where);
    *out->count = count;
    free_string_values(values, count, variable);
    free(values);
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
    CHECK_H5(H5Tclose(stored), "%s: cannot close a type", path);
    CHECK_H5(H5Aclose(attr), "%s: cannot close it", where);
    return 0;
fail:
    free_string_values(values, count, variable);
    free(values);
    if (space >= 0)
        H5Sclose(space);
    if (stored >= 0)
        H5Tclose(stored);
    if (attr >= 0)
        H5Aclose(attr);
    return -1;
}

void *h5io_read_array(hid_t object, const struct h5io_array *a, const char *path, char *err)
{
    hid_t set = -1, space = -1;
    void *data = NULL;
    size_t count = element_count(a);
    if (H5Lexists(object, a->name, H5P_DEFAULT) <= 0)
        FAIL("%s: lacks the dataset %s", path, a->name);
    CHECK_H5(set = H5Dopen2(object, a->name, H5P_DEFAULT), "%s: cannot open %s", path, a->name);
    CHECK_H5(space = H5Dget_space(set), "%s: cannot read shape of %s", path, a->name);
    long long found = (long long)H5Sget_simple_extent_npoints(space);
    if (found < 0 || (size_t)found != count)
        FAIL("%s: %s has %lld elements, expected %zu", path, a->name, found, count);
    CHECK_PTR(data = malloc(h5io_array_bytes(a) + 64), "cannot allocate %s", a->name);
    if (count > 0)
        CHECK_H5(H5Dread(set, a->mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "%s: cannot read %s", path, a->name);
    CHECK_H5(H5Sclose(space), "%s: cannot close a dataspace", path);
    space = -1;
    CHECK_H5(H5Dclose(set), "%s: cannot close %s", path, a->name);
    return data;
fail:
    free(data);
    if (space >= 0)
        H5Sclose(space);
    if (set >= 0)
        H5Dclose(set);
    return NULL;
}

/* ---- writing an in-memory file and publishing it ----------------------------------------- */

hid_t h5io_create_in_memory(const char *final_path, char *err)
{
    hid_t access = -1, creation = -1, file = -1;
    CHECK_H5(creation = H5Pcreate(H5P_FILE_CREATE), "%s: cannot create a file creation list", final_path);
    /* Room for the seal (seal.h): HDF5 places its superblock after it. */
    CHECK_H5(H5Pset_userblock(creation, SEAL_BYTES), "%s: cannot reserve the seal's user block", final_path);
    CHECK_H5(access = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot create a file access list", final_path);
    /* 1 MiB growth steps; no backing store: nothing touches the disk until h5io_publish. */
    CHECK_H5(H5Pset_fapl_core(access, (size_t)1 << 20, 0), "%s: cannot select the in-memory driver",
             final_path);
    CHECK_H5(file = H5Fcreate(final_path, H5F_ACC_TRUNC, creation, access), "%s: cannot create in memory",
             final_path);
    CHECK_H5(H5Pclose(access), "%s: cannot close a file access list", final_path);
    access = -1;
    CHECK_H5(H5Pclose(creation), "%s: cannot close a file creation list", final_path);
    return file;
fail:
    if (access >= 0)
        H5Pclose(access);
    if (creation >= 0)
        H5Pclose(creation);
    if (file >= 0)
        H5Fclose(file);
    return -1;
}

/* The finished file's bytes, sealed. HDF5's image leaves the user block out (its addresses
 * count from the superblock), so the seal goes in front of it. */
static void *file_image(hid_t file, const char *final_path, size_t *size, char *err)
{
    unsigned char *image = NULL;
    ssize_t length;
    CHECK_H5(H5Fflush(file, H5F_SCOPE_GLOBAL), "%s: cannot finish the file", final_path);
    CHECK_H5(length = H5Fget_file_image(file, NULL, 0), "%s: cannot size the file image", final_path);
    CHECK_PTR(image = malloc(SEAL_BYTES + (size_t)length), "%s: cannot allocate %zd bytes for the file", final_path,
              length);
    CHECK_H5(H5Fget_file_image(file, image + SEAL_BYTES, (size_t)length), "%s: cannot copy the file image",
             final_path);
    *size = SEAL_BYTES + (size_t)length;
    seal_stamp(image, *size);
    return image;
fail:
    free(image);
    return NULL;
}

void *h5io_finish(hid_t file, const char *final_path, size_t *size, char *err)
{
    void *image = file_image(file, final_path, size, err);
    /* Closing an in-memory file does no I/O: it cannot fail for lack of space. */
    if (H5Fclose(file) < 0 && image) {
        err_set(err, "%s: cannot close the in-memory file", final_path);
        free(image);
        return NULL;
    }
    return image;
}

int h5io_publish(hid_t file, const char *final_path, char *err)
{
    size_t size = 0;
    void *image = h5io_finish(file, final_path, &size, err);
    int status = image ? files_write(final_path, image, size, err) : -1;
    free(image);
    return status;
}

hid_t h5io_open_sealed(const char *path, hid_t access, int require_seal, char *err)
{
    hid_t file = -1;
    int sealed = seal_check(path, err);
    CHECK_DP(sealed < 0);
    if (require_seal && sealed == 0)
        FAIL("%s: has no dptrain seal (written by another program, or by a dptrain older than the seal)", path);
    CHECK_H5(file = H5Fopen(path, H5F_ACC_RDONLY, access), "%s: not a readable HDF5 file", path);
    return file;
fail:
    return -1;
}
