#include "dptrain/seal.h"

#include "dptrain/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SEAL_MAGIC "dptrain-seal 1\n"
/* What HDF5 writes at the start of a file without a user block. */
static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
/* The CRC is computed over reads of this size: a file larger than memory can still be checked. */
#define SEAL_CHUNK ((size_t)4 << 20)

static size_t header_text(char *text, size_t size, unsigned long long length, unsigned long crc)
{
    int n = snprintf(text, size, SEAL_MAGIC "size %llu\ncrc32 %08lx\n", length, crc);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

void seal_stamp(unsigned char *image, size_t size)
{
    char text[SEAL_BYTES];
    uLong crc = crc32_z(crc32_z(0, Z_NULL, 0), image + SEAL_BYTES, size - SEAL_BYTES);
    size_t used = header_text(text, sizeof text, (unsigned long long)size, crc);
    memset(image, 0, SEAL_BYTES);
    memcpy(image, text, used);
}

static int read_fully(int fd, unsigned char *buffer, size_t size, size_t *got)
{
    *got = 0;
    while (*got < size) {
        ssize_t n = read(fd, buffer + *got, size - *got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    return 0;
}

/* CRC-32 of the file from the current offset to its end; *length counts the bytes read. */
static int crc_of_rest(int fd, const char *path, uLong *crc, unsigned long long *length, char *err)
{
    unsigned char *buffer = NULL;
    size_t got = 0;
    CHECK_PTR(buffer = malloc(SEAL_CHUNK), "%s: cannot allocate a read buffer", path);
    *crc = crc32_z(0, Z_NULL, 0);
    do {
        CHECK_SYS(read_fully(fd, buffer, SEAL_CHUNK, &got), "%s: cannot read", path);
        *crc = crc32_z(*crc, buffer, got);
        *length += got;
    } while (got == SEAL_CHUNK);
    free(buffer);
    return 0;
fail:
    free(buffer);
    return -1;
}

/* The seal's header: its text must be exactly what seal_stamp writes for the values it names,
 * and the rest of the block zeros (so that no byte of the block goes unchecked). */
static int parse_header(const unsigned char *block, const char *path, unsigned long long *length, unsigned long *crc,
                        char *err)
{
    char expected[SEAL_BYTES];
    if (sscanf((const char *)block, SEAL_MAGIC "size %llu\ncrc32 %8lx\n", length, crc) != 2)
        FAIL("%s: damaged: its dptrain seal (the first %d bytes) cannot be read", path, SEAL_BYTES);
    size_t used = header_text(expected, sizeof expected, *length, *crc);
    if (used == 0 || memcmp(block, expected, used) != 0)
        FAIL("%s: damaged: its dptrain seal (the first %d bytes) was changed", path, SEAL_BYTES);
    for (size_t i = used; i < SEAL_BYTES; i++)
        if (block[i] != 0)
            FAIL("%s: damaged: byte %zu of its dptrain seal was changed", path, i);
    return 0;
fail:
    return -1;
}

static int check_sealed(int fd, const unsigned char *block, const char *path, char *err)
{
    unsigned long long length = 0, found = SEAL_BYTES;
    unsigned long crc = 0;
    uLong computed = 0;
    CHECK_DP(parse_header(block, path, &length, &crc, err));
    CHECK_DP(crc_of_rest(fd, path, &computed, &found, err));
    if (found != length)
        FAIL("%s: damaged: it has %llu bytes where dptrain wrote %llu (%s after it was written)", path, found, length,
             found < length ? "truncated" : "extended");
    if ((unsigned long)computed != crc)
        FAIL("%s: damaged: its contents fail the CRC-32 of its seal (changed after dptrain wrote it)", path);
    return 1;
fail:
    return -1;
}

int seal_check(const char *path, char *err)
{
    unsigned char block[SEAL_BYTES + 1];
    size_t got = 0;
    int fd = -1, status = -1;
    CHECK_SYS(fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), "%s: cannot open", path);
    CHECK_SYS(read_fully(fd, block, SEAL_BYTES, &got), "%s: cannot read", path);
    block[got] = '\0';
    if (got >= sizeof hdf5_signature && memcmp(block, hdf5_signature, sizeof hdf5_signature) == 0)
        status = 0;
    else if (got == SEAL_BYTES && memcmp(block, SEAL_MAGIC, strlen(SEAL_MAGIC)) == 0)
        status = check_sealed(fd, block, path, err);
    else if (got >= strlen(SEAL_MAGIC) && memcmp(block, SEAL_MAGIC, strlen(SEAL_MAGIC)) == 0)
        FAIL("%s: damaged: it has %zu bytes, fewer than its dptrain seal alone (truncated)", path, got);
    else
        FAIL("%s: not an HDF5 file (it starts neither with HDF5's signature nor with a dptrain seal: another kind of "
             "file, or its first bytes are damaged)", path);
fail:
    if (fd >= 0)
        close(fd);
    return status;
}
