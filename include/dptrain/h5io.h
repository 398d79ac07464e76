/* Small helpers for HDF5 files: reading and writing arrays and attributes, and publishing a
 * finished file. Names follow one pattern: h5io_VERB_OBJECT[_TYPE] (h5io_write_array,
 * h5io_read_attr_string, h5io_write_attr_strings, ...). */
#ifndef DPTRAIN_H5IO_H
#define DPTRAIN_H5IO_H

#include <hdf5.h>
#include <stddef.h>

/* A dataset as written or read: its name, the types in memory and in the file (reading uses
 * mem_type alone), and its shape. */
struct h5io_array {
    const char *name;
    hid_t mem_type, file_type;
    int rank;
    const hsize_t *dims;
};
/* Bytes of the array in memory: the product of the dims times the size of mem_type. */
size_t h5io_array_bytes(const struct h5io_array *a);

int h5io_write_array(hid_t parent, const struct h5io_array *a, const void *data, const char *path, char *err);
int h5io_write_attr_strings(hid_t object, const char *name, const char *const *values,
                            size_t count, const char *path, char *err);
int h5io_write_attr_string(hid_t object, const char *name, const char *value, const char *path,
                           char *err);
int h5io_write_attr_double(hid_t object, const char *name, double value, const char *path,
                           char *err);
int h5io_write_attr_u64(hid_t object, const char *name, uint64_t value, const char *path, char *err);
int h5io_write_attr_long(hid_t object, const char *name, long long value, const char *path,
                         char *err);

/* Readers: a scalar attribute (present, a single value, converted to `type`), a variable-length
 * string attribute (at most size - 1 characters), a whole dataset holding exactly as many
 * elements as a's shape, as a's mem_type (malloc'd). Each message names the file and what is
 * wrong. */
int h5io_read_attr(hid_t object, const char *name, hid_t type, void *out, const char *path, char *err);
int h5io_read_attr_string(hid_t object, const char *name, char *out, size_t size, const char *path, char *err);
void *h5io_read_array(hid_t object, const struct h5io_array *a, const char *path, char *err);

/* A list of strings read from an attribute (variable- or fixed-length, as h5py writes either):
 * at most max_count of them, each shorter than max_length bytes; *names is one allocation
 * (free() releases it) and *count their number. */
struct h5io_strings {
    int max_count;
    size_t max_length;
    const char ***names;
    int *count;
};
int h5io_read_attr_strings(hid_t object, const char *name, const struct h5io_strings *out, const char *path,
                           char *err);
/* 1 when the attribute holds strings, 0 when not, -1 when it cannot be read. */
int h5io_attr_is_string(hid_t object, const char *name);

/* Output files are built in memory (HDF5's core driver) and published whole by h5io_publish.
 * A full disk is then a failed write() that is reported in one line, never an HDF5 file that
 * cannot be closed (HDF5 crashed in MPI_Finalize closing such a file again). */
hid_t h5io_create_in_memory(const char *final_path, char *err);
/* Open a file for reading after its seal (seal.h) is checked: a damaged file dptrain wrote is
 * refused in one line before HDF5 parses it. require_seal: refuse an unsealed HDF5 file too
 * (checkpoints, which only dptrain writes); otherwise such a file (from h5py) is opened as it
 * is. access: a file access list, or H5P_DEFAULT. */
hid_t h5io_open_sealed(const char *path, hid_t access, int require_seal, char *err);
/* Write the in-memory file to final_path atomically (files_write) and close it, also on failure. */
int h5io_publish(hid_t file, const char *final_path, char *err);
/* Close the in-memory file (also on failure) and return its sealed bytes (malloc'd, *size of them)
 * for the caller to publish later (files_write), or NULL. */
void *h5io_finish(hid_t file, const char *final_path, size_t *size, char *err);

#endif
