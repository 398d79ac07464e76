#include "dptrain/idx.h"

#include "dptrain/check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_TYPE_UBYTE 0x08

static int is_gzip(const uint8_t *bytes, size_t len)
{
    return len >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

static int read_whole_file(const char *path, uint8_t **out, size_t *out_len, char *err)
{
    uint8_t *buffer = NULL;
    FILE *file = NULL;
    struct stat info;
    CHECK_PTR(file = fopen(path, "rb"), "%s: cannot open", path);
    CHECK_SYS(fstat(fileno(file), &info), "%s: cannot stat", path);
    if (!S_ISREG(info.st_mode))
        FAIL("%s: not a regular file", path);
    size_t len = (size_t)info.st_size;
    CHECK_PTR(buffer = malloc(len ? len : 1), "%s: cannot allocate %zu bytes", path, len);
    if (fread(buffer, 1, len, file) != len)
        FAIL("%s: read error: %s", path, ferror(file) ? strerror(errno) : "file shrank while reading");
    fclose(file);
    *out = buffer;
    *out_len = len;
    return 0;
fail:
    free(buffer);
    if (file)
        fclose(file);
    return -1;
}

/* Room for more output, at most `limit` bytes in all. */
static int grow(uint8_t **buffer, size_t *capacity, size_t limit, const char *name, char *err)
{
    size_t bigger = *capacity < ((size_t)1 << 20) ? ((size_t)1 << 20) : *capacity * 2;
    if (bigger > limit)
        bigger = limit;
    uint8_t *moved = realloc(*buffer, bigger ? bigger : 1);
    CHECK_PTR(moved, "%s: cannot allocate %zu bytes for decompression", name, bigger);
    *buffer = moved;
    *capacity = bigger;
    return 0;
fail:
    return -1;
}

/* One inflate() call over the next slice of input and output (zlib counts in uInt: at most
 * 1 GiB each way). */
struct inflation {
    z_stream stream;
    const uint8_t *bytes;
    size_t len, consumed, produced;
};

static int inflate_some(struct inflation *z, uint8_t *buffer, size_t capacity)
{
    size_t in_left = z->len - z->consumed, out_left = capacity - z->produced;
    z->stream.next_in = (Bytef *)z->bytes + z->consumed;
    z->stream.avail_in = (uInt)(in_left > (1u << 30) ? (1u << 30) : in_left);
    z->stream.next_out = buffer + z->produced;
    z->stream.avail_out = (uInt)(out_left > (1u << 30) ? (1u << 30) : out_left);
    uInt in_before = z->stream.avail_in, out_before = z->stream.avail_out;
    int rc = inflate(&z->stream, Z_NO_FLUSH);
    z->consumed += in_before - z->stream.avail_in;
    z->produced += out_before - z->stream.avail_out;
    return rc;
}

int idx_gunzip(const char *name, const uint8_t *bytes, size_t len, size_t limit, struct inflated *out, char *err)
{
    struct inflation z = {.bytes = bytes, .len = len};
    uint8_t *buffer = NULL;
    size_t capacity = 0;
    int stream_open = 0;
    out->more = 0;
    CHECK_Z(inflateInit2(&z.stream, 16 + MAX_WBITS), "%s: cannot start gzip decoder", name);
    stream_open = 1;
    for (;;) {
        if (z.produced == capacity) {
            if (capacity == limit) {
                out->more = 1; /* the caller asked for no more: the stream may hold further bytes */
                break;
            }
            CHECK_DP(grow(&buffer, &capacity, limit, name, err));
        }
        int rc = inflate_some(&z, buffer, capacity);
        if (rc == Z_STREAM_END) {
            if (z.consumed == len)
                break;
            if (!is_gzip(bytes + z.consumed, len - z.consumed))
                FAIL("%s: %zu bytes of trailing garbage after the gzip stream", name, len - z.consumed);
            CHECK_Z(inflateReset(&z.stream), "%s: cannot restart gzip decoder", name);
            continue;
        }
        if (rc == Z_DATA_ERROR)
            FAIL("%s: corrupt gzip stream: %s", name, z.stream.msg ? z.stream.msg : "data error");
        if (rc == Z_MEM_ERROR)
            FAIL("%s: out of memory while decompressing", name);
        if (rc == Z_BUF_ERROR && z.consumed == len && z.stream.avail_out > 0)
            FAIL("%s: truncated gzip stream (ends after %zu bytes without its end marker)", name, len);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            FAIL("%s: gzip decoder failed: %s", name, zError(rc));
    }
    inflateEnd(&z.stream);
    out->data = buffer;
    out->len = z.produced;
    return 0;
fail:
    if (stream_open)
        inflateEnd(&z.stream);
    free(buffer);
    return -1;
}

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int dims_accepted(enum idx_kind kind, int ndims)
{
    return kind == IDX_LABELS ? ndims == 1 : ndims == 3 || ndims == 4;
}

int idx_parse(const char *name, const uint8_t *bytes, size_t len, enum idx_kind kind, struct idx_array *out,
              char *err)
{
    memset(out, 0, sizeof *out);
    if (len < 4)
        FAIL("%s: too short for an IDX header (%zu bytes)", name, len);
    if (bytes[0] != 0 || bytes[1] != 0)
        FAIL("%s: not an IDX file (magic 0x%02x%02x%02x%02x does not start with 0x0000)", name,
             bytes[0], bytes[1], bytes[2], bytes[3]);
    if (bytes[2] != IDX_TYPE_UBYTE)
        FAIL("%s: IDX data type 0x%02x is not unsigned byte (0x08)", name, bytes[2]);
    int ndims = bytes[3];
    if (!dims_accepted(kind, ndims))
        FAIL("%s: IDX file has %d dimensions, expected %s", name, ndims,
             kind == IDX_LABELS ? "1 (labels)" : "3 (images [N][H][W]) or 4 ([N][H][W][C])");
    size_t header = 4 + 4 * (size_t)ndims;
    if (len < header)
        FAIL("%s: truncated IDX header (%zu of %zu bytes)", name, len, header);
    size_t count = 1;
    for (int d = 0; d < ndims; d++) {
        out->dims[d] = read_be32(bytes + 4 + 4 * d);
        if (out->dims[d] != 0 && count > SIZE_MAX / out->dims[d])
            FAIL("%s: IDX dimensions overflow", name);
        count *= out->dims[d];
    }
    size_t payload = len - header;
    if (payload < count)
        FAIL("%s: truncated: the header promises %zu data bytes but the file has %zu", name,
             count, payload);
    if (payload > count)
        FAIL("%s: %zu bytes of trailing data after the %zu the header promises", name,
             payload - count, count);
    CHECK_PTR(out->data = malloc(count ? count : 1), "%s: cannot allocate %zu bytes", name, count);
    memcpy(out->data, bytes + header, count);
    out->ndims = ndims;
    out->count = count;
    return 0;
fail:
    return -1;
}

/* The bytes an IDX file with this header promises (header and payload), from its first bytes
 * (up to IDX_MAX_HEADER); 0 when they are not such a header (idx_parse then says why). */
static size_t promised_bytes(const uint8_t *head, size_t len, enum idx_kind kind)
{
    if (len < 4 || head[0] != 0 || head[1] != 0 || !dims_accepted(kind, head[3]))
        return 0;
    int ndims = head[3];
    size_t header = 4 + 4 * (size_t)ndims, count = 1;
    if (len < header)
        return 0;
    for (int d = 0; d < ndims; d++) {
        size_t dim = read_be32(head + 4 + 4 * d);
        if (dim != 0 && count > (SIZE_MAX - header) / dim)
            return 0;
        count *= dim;
    }
    return header + count;
}

/* A gzipped IDX file is inflated no further than its header promises (and one byte more, to
 * tell trailing data): a small file that inflates to gigabytes costs no more memory than its
 * header claims. */
static int gunzip_idx(const char *path, const uint8_t *raw, size_t raw_len, enum idx_kind kind,
                      struct inflated *plain, char *err)
{
    struct inflated head = {0};
    CHECK_DP(idx_gunzip(path, raw, raw_len, IDX_MAX_HEADER, &head, err));
    size_t promised = promised_bytes(head.data, head.len, kind);
    size_t header = promised ? 4 + 4 * (size_t)head.data[3] : 0;
    if (promised == 0) { /* not the header expected: idx_parse names what is wrong with it */
        *plain = head;
        return 0;
    }
    free(head.data);
    head.data = NULL;
    CHECK_DP(idx_gunzip(path, raw, raw_len, promised + 1, plain, err));
    if (plain->len > promised)
        FAIL("%s: the gzip stream holds more than the %zu data bytes its IDX header promises", path,
             promised - header);
    return 0;
fail:
    free(head.data);
    free(plain->data);
    plain->data = NULL;
    return -1;
}

int idx_read(const char *path, enum idx_kind kind, struct idx_array *out, char *err)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    struct inflated plain = {0};
    memset(out, 0, sizeof *out);
    CHECK_DP(read_whole_file(path, &raw, &raw_len, err));
    if (is_gzip(raw, raw_len)) {
        CHECK_DP(gunzip_idx(path, raw, raw_len, kind, &plain, err));
        CHECK_DP(idx_parse(path, plain.data, plain.len, kind, out, err));
    } else {
        CHECK_DP(idx_parse(path, raw, raw_len, kind, out, err));
    }
    free(raw);
    free(plain.data);
    return 0;
fail:
    free(raw);
    free(plain.data);
    return -1;
}

void idx_free(struct idx_array *array)
{
    free(array->data);
    memset(array, 0, sizeof *array);
}
