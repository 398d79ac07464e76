/* Small helpers for writing and reading HDF5 files, and for publishing a file atomically. */
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

/* "FINAL.tmp.PID": a temporary name in the same folder, so that rename() is atomic. */
int h5io_temp_name(const char *final_path, char *tmp_path, size_t size, char *err);
/* fsync tmp_path, rename it to final_path, fsync the folder. */
int h5io_commit(const char *tmp_path, const char *final_path, char *err);
/* Refuse early an output whose folder cannot be written (before hours of training). */
int h5io_check_writable(const char *final_path, const char *flag, char *err);

#endif
