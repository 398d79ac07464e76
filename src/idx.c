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

static int grow(uint8_t **buffer, size_t *capacity, const char *name, char *err)
{
    size_t bigger = *capacity < ((size_t)1 << 20) ? ((size_t)1 << 20) : *capacity * 2;
    uint8_t *moved = realloc(*buffer, bigger);
    CHECK_PTR(moved, "%s: cannot allocate %zu bytes for decompression", name, bigger);
    *buffer = moved;
    *capacity = bigger;
    return 0;
fail:
    return -1;
}

int idx_gunzip(const char *name, const uint8_t *bytes, size_t len, uint8_t **out,
               size_t *out_len, char *err)
{
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    uint8_t *buffer = NULL;
    size_t capacity = 0, produced = 0;
    int stream_open = 0;
    /* The trailer's ISIZE (size mod 2^32) is a good first guess for the output size. */
    if (len >= 18) {
        const uint8_t *t = bytes + len - 4;
        capacity = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
        capacity = capacity ? capacity + 1 : 1;
        CHECK_PTR(buffer = malloc(capacity), "%s: cannot allocate %zu bytes", name, capacity);
    }
    CHECK_Z(inflateInit2(&stream, 16 + MAX_WBITS), "%s: cannot start gzip decoder", name);
    stream_open = 1;
    stream.next_in = (Bytef *)bytes;
    stream.avail_in = 0;
    size_t consumed = 0;
    for (;;) {
        if (produced == capacity && grow(&buffer, &capacity, name, err) != 0)
            goto fail;
        /* zlib counts in uInt; feed at most 1 GiB at a time. */
        size_t in_left = len - consumed;
        stream.next_in = (Bytef *)bytes + consumed;
        stream.avail_in = (uInt)(in_left > (1u << 30) ? (1u << 30) : in_left);
        size_t out_left = capacity - produced;
        stream.next_out = buffer + produced;
        stream.avail_out = (uInt)(out_left > (1u << 30) ? (1u << 30) : out_left);
        uInt in_before = stream.avail_in, out_before = stream.avail_out;
        int rc = inflate(&stream, Z_NO_FLUSH);
        consumed += in_before - stream.avail_in;
        produced += out_before - stream.avail_out;
        if (rc == Z_STREAM_END) {
            if (consumed == len)
                break;
            if (!is_gzip(bytes + consumed, len - consumed))
                FAIL("%s: %zu bytes of trailing garbage after the gzip stream", name,
                     len - consumed);
            CHECK_Z(inflateReset(&stream), "%s: cannot restart gzip decoder", name);
            continue;
        }
        if (rc == Z_DATA_ERROR)
            FAIL("%s: corrupt gzip stream: %s", name, stream.msg ? stream.msg : "data error");
        if (rc == Z_MEM_ERROR)
            FAIL("%s: out of memory while decompressing", name);
        if (rc == Z_BUF_ERROR && consumed == len && stream.avail_out > 0)
            FAIL("%s: truncated gzip stream (ends after %zu bytes without its end marker)",
                 name, len);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            FAIL("%s: gzip decoder failed: %s", name, zError(rc));
    }
    inflateEnd(&stream);
    *out = buffer;
    *out_len = produced;
    return 0;
fail:
    if (stream_open)
        inflateEnd(&stream);
    free(buffer);
    return -1;
}

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int idx_parse(const char *name, const uint8_t *bytes, size_t len, int expect_ndims,
              struct idx_array *out, char *err)
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
    if (ndims != expect_ndims)
        FAIL("%s: IDX file has %d dimensions, expected %d (%s)", name, ndims, expect_ndims,
             expect_ndims == 1 ? "labels" : "images");
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

int idx_read(const char *path, int expect_ndims, struct idx_array *out, char *err)
{
    uint8_t *raw = NULL, *plain = NULL;
    size_t raw_len = 0, plain_len = 0;
    memset(out, 0, sizeof *out);
    CHECK_DP(read_whole_file(path, &raw, &raw_len, err));
    if (is_gzip(raw, raw_len)) {
        CHECK_DP(idx_gunzip(path, raw, raw_len, &plain, &plain_len, err));
        CHECK_DP(idx_parse(path, plain, plain_len, expect_ndims, out, err));
    } else {
        CHECK_DP(idx_parse(path, raw, raw_len, expect_ndims, out, err));
    }
    free(raw);
    free(plain);
    return 0;
fail:
    free(raw);
    free(plain);
    return -1;
}

void idx_free(struct idx_array *array)
{
    free(array->data);
    memset(array, 0, sizeof *array);
}
