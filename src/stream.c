#include "dptrain/stream.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/rng.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Each row of a window costs its image, its label and its place in the window's order. */
#define ORDER_BYTES sizeof(uint32_t)

int stream_plan(size_t budget_bytes, size_t image_bytes, size_t staging_rows, struct stream_geometry *g, char *err)
{
    size_t row = image_bytes + 1, staging = staging_rows * row, per_row = 2 * (row + ORDER_BYTES);
    size_t window_rows = budget_bytes > staging ? (budget_bytes - staging) / per_row : 0;
    if (window_rows < staging_rows || staging_rows == 0) {
        double least = (double)(staging + staging_rows * per_row) / (1 << 20);
        FAIL("too small for this data: two windows of at least a step's %zu images of %zu bytes, and the step's "
             "own, need %.1f MB", staging_rows, image_bytes, least);
    }
    g->chunk_rows = STREAM_CHUNK_BYTES / image_bytes;
    if (g->chunk_rows == 0)
        g->chunk_rows = 1;
    if (g->chunk_rows > window_rows)
        g->chunk_rows = window_rows;
    g->window_chunks = window_rows / g->chunk_rows;
    return 0;
fail:
    return -1;
}

static size_t window_rows(const struct stream_geometry *g)
{
    return g->chunk_rows * g->window_chunks;
}

/* Rows [first, first + rows) of the source (indices within it), to be read into images and labels. */
struct rows {
    size_t first, rows;
    uint8_t *images, *labels;
};

static int read_rows(int fd, const struct stream_source *src, const struct rows *r, char *err)
{
    long long row = (long long)(src->first + r->first);
    CHECK_DP(files_read_at(fd, r->images, r->rows * src->image_bytes,
                           src->images_at + row * (long long)src->image_bytes, src->path, err));
    CHECK_DP(files_read_at(fd, r->labels, r->rows, src->labels_at + row, src->path, err));
    return 0;
fail:
    return -1;
}

static int open_source(const struct stream_source *src, int *fd, char *err)
{
    CHECK_SYS(*fd = open(src->path, O_RDONLY | O_CLOEXEC), "%s: cannot open the data file to stream it", src->path);
    return 0;
fail:
    return -1;
}

int stream_scan(const struct stream_source *src, const struct stream_geometry *g, const struct stream_visit *v,
                char *err)
{
    size_t piece = window_rows(g), bytes = src->image_bytes;
    uint8_t *images = NULL, *labels = NULL;
    int fd = -1;
    CHECK_PTR(images = malloc(piece * bytes), "cannot allocate the stream's window (%zu images)", piece);
    CHECK_PTR(labels = malloc(piece), "cannot allocate the stream's window (%zu labels)", piece);
    CHECK_DP(open_source(src, &fd, err));
    for (size_t at = 0; at < src->count; at += piece) {
        size_t rows = src->count - at < piece ? src->count - at : piece;
        CHECK_DP(read_rows(fd, src, &(struct rows){at, rows, images, labels}, err));
        CHECK_DP(v->visit(v->context, images, labels, rows, at, err));
    }
    CHECK_SYS(close(fd), "%s: cannot close", src->path);
    free(images);
    free(labels);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(images);
    free(labels);
    return -1;
}

/* ---- the stream ------------------------------------------------------------------------- */

enum slot_state { SLOT_EMPTY, SLOT_WANTED, SLOT_READY, SLOT_FAILED };

/* One window's rows in memory, kept rows only, and their shuffled order. */
struct slot {
    uint8_t *images, *labels;
    uint32_t *order;
    size_t rows;
    int epoch;
    size_t index;
    enum slot_state state;        /* guarded by the stream's lock; the buffers belong to the thread while WANTED */
};

/* An epoch's chunk order; the thread and the taker each keep their own. */
struct epoch_order {
    int epoch;                    /* 0: none yet */
    uint32_t *chunks;             /* [chunks] */
};

struct stream {
    struct stream_source src;
    struct stream_geometry g;
    uint64_t seed, unit;
    int fd;
    size_t chunks, windows, samples;
    size_t *kept;                 /* [chunks] rows of each chunk not held out */
    struct epoch_order taker, loader;
    size_t *starts;               /* [windows + 1]: the taker's epoch's first sample of each window */
    struct slot slot[2];
    int front;                    /* the slot the taker reads; the other is read ahead */
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t changed;       /* a slot wanted, read or failed, or the stream stopping */
    int stop;
    char err[DP_ERR_LEN];         /* the failed read's message */
};

static void order_chunks(const struct stream *s, struct epoch_order *o, int epoch)
{
    if (o->epoch == epoch)
        return;
    struct rng rng;
    for (size_t c = 0; c < s->chunks; c++)
        o->chunks[c] = (uint32_t)c;
    rng_seed(&rng, s->seed, RNG_CHUNKS, (uint64_t)epoch, s->unit);
    rng_shuffle(&rng, o->chunks, s->chunks);
    o->epoch = epoch;
}

/* Chunk c's rows of the source: [c * chunk_rows, ...), the last chunk shorter. */
static size_t chunk_length(const struct stream *s, size_t c)
{
    size_t first = c * s->g.chunk_rows;
    return s->src.count - first < s->g.chunk_rows ? s->src.count - first : s->g.chunk_rows;
}

/* Drop the held rows of the `rows` read at `at` (source row `first` on), keeping order. */
static size_t drop_held(const struct stream *s, uint8_t *images, uint8_t *labels, size_t rows, size_t first)
{
    size_t kept = 0, bytes = s->src.image_bytes;
    for (size_t i = 0; i < rows; i++) {
        if (s->src.held && s->src.held[first + i])
            continue;
        if (kept != i) {
            memmove(images + kept * bytes, images + i * bytes, bytes);
            labels[kept] = labels[i];
        }
        kept++;
    }
    return kept;
}

/* The thread's work: read window `index` of `epoch` into the slot, check its labels, shuffle. */
static int load_window(struct stream *s, struct slot *w, char *err)
{
    size_t bytes = s->src.image_bytes, last = (w->index + 1) * s->g.window_chunks;
    order_chunks(s, &s->loader, w->epoch);
    w->rows = 0;
    for (size_t k = w->index * s->g.window_chunks; k < last && k < s->chunks; k++) {
        size_t c = s->loader.chunks[k], rows = chunk_length(s, c), first = c * s->g.chunk_rows;
        uint8_t *images = w->images + w->rows * bytes, *labels = w->labels + w->rows;
        CHECK_DP(read_rows(s->fd, &s->src, &(struct rows){first, rows, images, labels}, err));
        size_t kept = drop_held(s, images, labels, rows, first);
        if (kept != s->kept[c])
            FAIL("%s: the held-out rows of chunk %zu changed", s->src.path, c); /* cannot happen: held is fixed */
        for (size_t i = 0; i < kept; i++)
            if (labels[i] >= s->src.classes)
                FAIL("%s: /train/labels: a label of rows %zu..%zu is now %u, not below the %d classes it had when "
                     "the run began (the data file changed while it trained)", s->src.path, s->src.first + first,
                     s->src.first + first + rows - 1, labels[i], s->src.classes);
        w->rows += kept;
    }
    struct rng rng;
    for (size_t i = 0; i < w->rows; i++)
        w->order[i] = (uint32_t)i;
    rng_seed(&rng, s->seed, RNG_WINDOW, ((uint64_t)w->epoch << 32) | (uint64_t)w->index, s->unit);
    rng_shuffle(&rng, w->order, w->rows);
    return 0;
fail:
    return -1;
}

static void *read_ahead(void *arg)
{
    struct stream *s = arg;
    char err[DP_ERR_LEN];
    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct slot *w = NULL;
        while (!s->stop && !w)
            if (s->slot[0].state == SLOT_WANTED || s->slot[1].state == SLOT_WANTED)
                w = &s->slot[s->slot[0].state == SLOT_WANTED ? 0 : 1];
            else
                pthread_cond_wait(&s->changed, &s->lock);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->lock);
        int status = load_window(s, w, err);
        pthread_mutex_lock(&s->lock);
        w->state = status == 0 ? SLOT_READY : SLOT_FAILED;
        if (status != 0)
            memcpy(s->err, err, sizeof s->err);
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the taker's side -------------------------------------------------------------------- */

/* The first sample of each window of `epoch`'s order. */
static void lay_out(struct stream *s, int epoch)
{
    if (s->taker.epoch == epoch)
        return;
    order_chunks(s, &s->taker, epoch);
    s->starts[0] = 0;
    for (size_t w = 0; w < s->windows; w++) {
        size_t rows = 0, last = (w + 1) * s->g.window_chunks;
        for (size_t k = w * s->g.window_chunks; k < last && k < s->chunks; k++)
            rows += s->kept[s->taker.chunks[k]];
        s->starts[w + 1] = s->starts[w] + rows;
    }
}

/* The window that holds sample p: the last whose start is at most p and that is not empty. */
static size_t window_of(const struct stream *s, size_t p)
{
    size_t lo = 0, hi = s->windows; /* starts[lo] <= p < starts[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->starts[mid] <= p)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Ask the thread for window `index` of `epoch` in the slot that is not the front. Locked. */
static void want(struct stream *s, int epoch, size_t index)
{
    struct slot *back = &s->slot[1 - s->front];
    back->epoch = epoch;
    back->index = index;
    back->state = SLOT_WANTED;
    pthread_cond_broadcast(&s->changed);
}

/* The slot holding window `index` of `epoch`, read ahead or read now (a seek), with the window
 * after it asked for; NULL with the read's message when a read failed. */
static struct slot *window(struct stream *s, int epoch, size_t index, char *err)
{
    struct slot *front = &s->slot[s->front], *back = &s->slot[1 - s->front];
    if (front->state == SLOT_READY && front->epoch == epoch && front->index == index)
        return front;
    pthread_mutex_lock(&s->lock);
    if (back->state == SLOT_EMPTY || back->epoch != epoch || back->index != index) {
        while (back->state == SLOT_WANTED) /* a read ahead that is not wanted after all */
            pthread_cond_wait(&s->changed, &s->lock);
        if (back->state != SLOT_FAILED)
            want(s, epoch, index);
    }
    while (back->state == SLOT_WANTED)
        pthread_cond_wait(&s->changed, &s->lock);
    struct slot *ready = back->state == SLOT_READY ? back : NULL;
    if (ready) {
        s->front = 1 - s->front;
        if (index + 1 < s->windows)
            want(s, epoch, index + 1);
        else
            want(s, epoch + 1, 0); /* the next epoch's first window, read during the evaluation */
    } else {
        snprintf(err, DP_ERR_LEN, "%s", s->err);
    }
    pthread_mutex_unlock(&s->lock);
    return ready;
}

int stream_take(struct stream *s, const struct stream_take *t, char *err)
{
    size_t bytes = s->src.image_bytes, done = 0;
    if (t->first + t->n > s->samples)
        FAIL("%s: samples %zu..%zu asked of a stream of %zu", s->src.path, t->first, t->first + t->n, s->samples);
    if (t->n > 0)
        lay_out(s, t->epoch);
    while (done < t->n) {
        size_t p = t->first + done, index = window_of(s, p);
        struct slot *w = window(s, t->epoch, index, err);
        if (!w)
            return -1;
        size_t at = p - s->starts[index], k = s->starts[index + 1] - p;
        if (k > t->n - done)
            k = t->n - done;
        for (size_t i = 0; i < k; i++, done++) {
            uint32_t row = w->order[at + i];
            memcpy(t->images + done * bytes, w->images + (size_t)row * bytes, bytes);
            t->labels[done] = w->labels[row];
        }
    }
    return 0;
fail:
    return -1;
}

size_t stream_window_images(const struct stream *s)
{
    return window_rows(&s->g);
}

size_t stream_samples(const struct stream *s)
{
    return s->samples;
}

/* The kept rows of every chunk and the orders' room. */
static int count_chunks(struct stream *s, char *err)
{
    s->chunks = (s->src.count + s->g.chunk_rows - 1) / s->g.chunk_rows;
    s->windows = (s->chunks + s->g.window_chunks - 1) / s->g.window_chunks;
    CHECK_PTR(s->kept = calloc(s->chunks + 1, sizeof *s->kept), "cannot allocate the stream's chunks");
    CHECK_PTR(s->taker.chunks = malloc((s->chunks + 1) * sizeof(uint32_t)), "cannot allocate the stream's chunks");
    CHECK_PTR(s->loader.chunks = malloc((s->chunks + 1) * sizeof(uint32_t)), "cannot allocate the stream's chunks");
    CHECK_PTR(s->starts = calloc(s->windows + 1, sizeof *s->starts), "cannot allocate the stream's windows");
    for (size_t c = 0; c < s->chunks; c++) {
        size_t first = c * s->g.chunk_rows, rows = chunk_length(s, c);
        s->kept[c] = rows;
        for (size_t i = 0; s->src.held && i < rows; i++)
            s->kept[c] -= s->src.held[first + i];
        s->samples += s->kept[c];
    }
    return 0;
fail:
    return -1;
}

static int allocate_slots(struct stream *s, char *err)
{
    size_t rows = window_rows(&s->g);
    for (int i = 0; i < 2; i++) {
        struct slot *w = &s->slot[i];
        CHECK_PTR(w->images = malloc(rows * s->src.image_bytes), "cannot allocate the stream's window (%zu images)",
                  rows);
        CHECK_PTR(w->labels = malloc(rows), "cannot allocate the stream's window (%zu labels)", rows);
        CHECK_PTR(w->order = malloc(rows * ORDER_BYTES), "cannot allocate the stream's window (%zu rows)", rows);
    }
    return 0;
fail:
    return -1;
}

int stream_open(struct stream **out, const struct stream_start *start, char *err)
{
    struct stream *s = NULL;
    int rc;
    *out = NULL;
    CHECK_PTR(s = calloc(1, sizeof *s), "cannot allocate the stream");
    s->src = *start->source;
    s->g = start->geometry;
    s->seed = start->seed;
    s->unit = start->unit;
    s->fd = -1;
    CHECK_DP(count_chunks(s, err));
    CHECK_DP(allocate_slots(s, err));
    CHECK_DP(open_source(&s->src, &s->fd, err));
    if ((rc = pthread_mutex_init(&s->lock, NULL)) != 0 || (rc = pthread_cond_init(&s->changed, NULL)) != 0 ||
        (rc = pthread_create(&s->thread, NULL, read_ahead, s)) != 0)
        FAIL("cannot start the stream's reader: %s", strerror(rc));
    s->started = 1;
    *out = s;
    return 0;
fail:
    stream_close(s);
    return -1;
}

void stream_close(struct stream *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        pthread_cond_destroy(&s->changed);
        pthread_mutex_destroy(&s->lock);
    }
    if (s->fd >= 0)
        close(s->fd);
    for (int i = 0; i < 2; i++) {
        free(s->slot[i].images);
        free(s->slot[i].labels);
        free(s->slot[i].order);
    }
    free(s->kept);
    free(s->taker.chunks);
    free(s->loader.chunks);
    free(s->starts);
    free(s);
}
