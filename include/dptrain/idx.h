/* IDX files (the MNIST container): gzip-compressed or plain, fully validated.
 * Format: 0x00 0x00, a type byte (0x08 = unsigned byte, the only type dptrain reads),
 * a dimension count, one big-endian uint32 per dimension, then the data, nothing after. */
#ifndef DPTRAIN_IDX_H
#define DPTRAIN_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_MAX_DIMS 4
#define IDX_MAX_HEADER (4 + 4 * IDX_MAX_DIMS)

/* What a file must hold: labels [N], or images [N][H][W] or [N][H][W][C]. */
enum idx_kind { IDX_LABELS = 1, IDX_IMAGES = 3 };

struct idx_array {
    uint8_t *data;                 /* owned; count bytes */
    int ndims;
    uint32_t dims[IDX_MAX_DIMS];
    size_t count;                  /* product of dims */
};

/* Read the file at path; gzip is detected by its magic bytes. Every error names path. */
int idx_read(const char *path, enum idx_kind kind, struct idx_array *out, char *err);

/* Parse IDX bytes already in memory; name is used in messages. */
int idx_parse(const char *name, const uint8_t *bytes, size_t len, enum idx_kind kind, struct idx_array *out,
              char *err);

/* What idx_gunzip produced: `len` bytes at `data` (malloc'ed), and `more` 1 when it stopped at
 * its limit with input left (the stream may hold more). */
struct inflated {
    uint8_t *data;
    size_t len;
    int more;
};

/* Decompress a gzip file (one or more members) held in memory, producing at most `limit`
 * bytes. Rejects truncated or corrupt streams and trailing bytes that are not another gzip
 * member. Memory grows with the output actually produced, never past limit. */
int idx_gunzip(const char *name, const uint8_t *bytes, size_t len, size_t limit, struct inflated *out, char *err);

void idx_free(struct idx_array *array);

#endif
