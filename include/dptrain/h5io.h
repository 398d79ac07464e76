/* Small helpers for writing HDF5 files: arrays, attributes, and publishing a finished file. */
#ifndef DPTRAIN_H5IO_H
#define DPTRAIN_H5IO_H

#include <hdf5.h>
#include <stddef.h>

int h5io_write_array(hid_t parent, const char *name, hid_t mem_type, hid_t file_type, int rank,
                     const hsize_t *dims, const void *data, const char *path, char *err);
int h5io_write_strings_attr(hid_t object, const char *name, const char *const *values,
                            size_t count, const char *path, char *err);
int h5io_write_attr_string(hid_t object, const char *name, const char *value, const char *path,
                           char *err);
int h5io_write_attr_double(hid_t object, const char *name, double value, const char *path,
                           char *err);
int h5io_write_attr_long(hid_t object, const char *name, long long value, const char *path,
                         char *err);

/* Output files are built in memory (HDF5's core driver) and published whole by h5io_publish.
 * A full disk is then a failed write() that is reported in one line, never an HDF5 file that
 * cannot be closed (HDF5 crashed in MPI_Finalize closing such a file again). */
hid_t h5io_create_in_memory(const char *final_path, char *err);
/* Write the in-memory file to final_path atomically (files_write) and close it, also on failure. */
int h5io_publish(hid_t file, const char *final_path, char *err);

#endif
