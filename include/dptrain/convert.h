/* dptrain convert: an MNIST-format IDX set (train and test images and labels, each plain or
 * gzipped; images [N][H][W] or [N][H][W][C] uint8) into the HDF5 data file of dataset.h, with
 * its class names and whether a mirror image keeps its class. */
#ifndef DPTRAIN_CONVERT_H
#define DPTRAIN_CONVERT_H

/* The four files in order: training images, training labels, test images, test labels. */
enum { CONVERT_FILES = 4 };

struct convert_request {
    const char *source_dir;              /* the four standard names in it (plain or .gz), or NULL */
    const char *files[CONVERT_FILES];    /* else the four files themselves */
    const char *class_names;             /* "a,b,..." or NULL: a known set's names, else "0".."K-1" */
    int mirror_invariant;                /* 1 yes, 0 no, -1: a known set's answer, else no */
    const char *out;
};

/* Convert atomically: the file appears complete under its name, or not at all. The arrays are
 * copied byte for byte; every refusal names the file and what is wrong. */
int convert_idx_set(const struct convert_request *request, char *err);

#endif
