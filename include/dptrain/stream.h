/* Training data larger than memory (--memory-budget): one rank's rows of the data file's
 * training arrays streamed in windows read by a prefetch thread, instead of its whole shard held.
 *
 * What the shuffle is (and is not): the rank's rows are cut into chunks of consecutive rows
 * (about STREAM_CHUNK_BYTES each, so that every read is large). Each epoch takes the chunks in an
 * order drawn from the seed and the epoch, and groups them into windows of `window_chunks`
 * chunks; the rows of a window are shuffled together. A sample therefore meets only the samples
 * of its window in a batch, not the whole shard as in memory: a larger budget gives larger
 * windows. The order depends on the seed, the epoch, the rank's rows and the budget alone, so a
 * run resumed with the same ranks and budget continues the stream exactly.
 *
 * Memory: two windows (the one being taken and the one being read) and the step's staging rows;
 * stream_plan fits them in the budget. The thread makes no HDF5 or MPI call: it reads the arrays
 * at their byte offsets (HDF5's contiguous layout, dataset.h) with plain reads. */
#ifndef DPTRAIN_STREAM_H
#define DPTRAIN_STREAM_H

#include <stddef.h>
#include <stdint.h>

/* A chunk is this many bytes of images or fewer (at least one image). */
#define STREAM_CHUNK_BYTES (1u << 20)

/* Where one rank's rows are: the file, the byte offsets of its images [N][image_bytes] and
 * labels [N] arrays, the rows [first, first + count), and which of them are held out for
 * validation (held[i] for row first + i; NULL: none). */
struct stream_source {
    const char *path;
    long long images_at, labels_at;
    size_t first, count;
    size_t image_bytes;
    const uint8_t *held;
    int classes;                  /* every label read must be below it */
};

/* How a budget is spent: rows per chunk and chunks per window. */
struct stream_geometry {
    size_t chunk_rows;
    size_t window_chunks;
};

/* The largest windows that two of, and `staging_rows` rows for a step, fit in budget_bytes;
 * -1 with "needs at least N MB" in err when not even a window of staging_rows rows fits. */
int stream_plan(size_t budget_bytes, size_t image_bytes, size_t staging_rows, struct stream_geometry *g, char *err);

/* One pass over the source's rows in file order, a window's worth at a time, before training
 * (the identity's checksums, the normalisation, the hold-out): visit() sees every row, held or
 * not, with `index` the first row's place in the source (0 for row `first`). */
struct stream_visit {
    int (*visit)(void *context, const uint8_t *images, const uint8_t *labels, size_t rows, size_t index,
                 char *err);
    void *context;
};
int stream_scan(const struct stream_source *src, const struct stream_geometry *g, const struct stream_visit *v,
                char *err);

struct stream;

/* Open the file and start the prefetch thread. `unit` and `seed` pick the orders. */
struct stream_start {
    const struct stream_source *source;
    struct stream_geometry geometry;
    uint64_t seed, unit;
};
int stream_open(struct stream **out, const struct stream_start *start, char *err);
/* The rows of a window: how far the shuffle reaches. */
size_t stream_window_images(const struct stream *s);
/* The kept (not held) rows: the samples of every epoch. */
size_t stream_samples(const struct stream *s);
/* Samples [first, first + n) of epoch `epoch`'s order into images [n][image_bytes] and labels
 * [n]. Consecutive calls in order read ahead; any other position (a resume) is sought. -1 with
 * the read's message when the file could not be read or no longer holds what the scan saw. */
struct stream_take {
    int epoch;
    size_t first;
    size_t n;
    uint8_t *images, *labels;
};
int stream_take(struct stream *s, const struct stream_take *t, char *err);
/* Stop the thread (after the read in flight) and free everything; NULL is ignored. */
void stream_close(struct stream *s);

#endif
