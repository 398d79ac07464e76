/* A file's seal: the length and CRC-32 of everything dptrain wrote, in the file's first
 * SEAL_BYTES (HDF5's user block, which HDF5, h5py and h5dump skip).
 *
 * Why: HDF5 trusts its own metadata. One changed byte in a file's internal structures made
 * HDF5 1.10 read through a wild pointer (a segfault in H5Aread), and a truncated file can make
 * it allocate or loop on garbage. The seal is checked by plain reads before HDF5 parses a byte,
 * so a damaged file that dptrain wrote (checkpoint, results, data file) ends in one line.
 *
 * Layout: the text "dptrain-seal 1\nsize N\ncrc32 XXXXXXXX\n" (N the whole file's bytes, the
 * CRC over bytes SEAL_BYTES..N), then zeros up to SEAL_BYTES. */
#ifndef DPTRAIN_SEAL_H
#define DPTRAIN_SEAL_H

#include <stddef.h>

#define SEAL_BYTES 512

/* Fill image[0, SEAL_BYTES) with the seal of the whole image (size bytes, the HDF5 file from
 * offset SEAL_BYTES on). */
void seal_stamp(unsigned char *image, size_t size);

/* Check the file at path: 1 when it carries a seal that its contents match; 0 when it starts
 * with HDF5's own signature (an HDF5 file written by another program, e.g. h5py: nothing to
 * check); -1 with a line in err when it is damaged, truncated or no HDF5 file at all. */
int seal_check(const char *path, char *err);

#endif
