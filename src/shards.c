#include "dptrain/shards.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/rng.h"

#include <zlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void shards_free(struct shards *d)
{
    split_free(&d->train);
    split_free(&d->test);
    split_free(&d->validation);
    split_free(&d->test_part);
    split_free(&d->validation_part);
    free(d->unit_counts);
    free(d->unit_offsets);
    free(d->held);
    data_description_free(&d->about);
    memset(d, 0, sizeof *d);
}

/* Which of `total` training indices are held out: from the seed alone, so the same on every
 * rank and for every rank count. */
static uint8_t *choose_held(size_t total, int held, uint64_t seed)
{
    uint32_t *order = malloc(total * sizeof *order);
    uint8_t *chosen = calloc(total, 1);
    if (!order || !chosen) {
        free(order);
        free(chosen);
        return NULL;
    }
    for (size_t i = 0; i < total; i++)
        order[i] = (uint32_t)i;
    struct rng rng;
    rng_seed(&rng, seed, RNG_VALIDATION, 0, 0);
    rng_shuffle(&rng, order, total);
    for (int i = 0; i < held; i++)
        chosen[order[i]] = 1;
    free(order);
    return chosen;
}

/* Move this rank's chosen rows out of its shard into `moved`, keeping both in index order. */
static void move_held(struct split *t, const uint8_t *chosen, struct split *moved)
{
    size_t kept = 0, bytes = t->image_bytes;
    moved->count = 0;
    for (size_t i = 0; i < t->count; i++) {
        uint8_t *image = t->images + i * bytes;
        if (chosen[t->first + i]) {
            memcpy(moved->images + moved->count * bytes, image, bytes);
            moved->labels[moved->count++] = t->labels[i];
        } else {
            memmove(t->images + kept * bytes, image, bytes);
            t->labels[kept++] = t->labels[i];
        }
    }
    t->count = kept;
}

/* Room for this rank's `count` held-out rows in `mine` and, on rank 0, for all `held` of them.
 * Collective. */
static int allocate_held(const struct comm *comm, struct shards *d, size_t count, int held, struct split *mine,
                         char *err)
{
    size_t bytes = image_values(&d->about.image);
    mine->image_bytes = d->validation.image_bytes = bytes;
    int ok = (mine->images = malloc(count * bytes + 1)) && (mine->labels = malloc(count + 1));
    if (ok && comm->rank == 0) {
        d->validation.count = (size_t)held;
        ok = (d->validation.images = malloc((size_t)held * bytes + 1)) &&
             (d->validation.labels = malloc((size_t)held + 1));
    }
    if (!ok)
        err_set(err, "cannot allocate the validation split");
    return comm_agree(comm, ok, err);
}

/* Every rank's held-out rows, in ascending index order, on rank 0. Collective. */
static int gather_held(const struct comm *comm, struct shards *d, const struct split *mine, char *err)
{
    CHECK_DP(comm_gather_items(comm, mine->labels, mine->count, 1, d->validation.labels, err));
    CHECK_DP(comm_gather_items(comm, mine->images, mine->count, mine->image_bytes, d->validation.images, err));
    return 0;
fail:
    return -1;
}

/* Move the `chosen` training images out of every rank's block and gather them, in ascending
 * index order, on rank 0 (`held` of them). Collective. */
static int hold_out_validation(const struct comm *comm, struct shards *d, const uint8_t *chosen, int held,
                               char *err)
{
    struct split mine = {0};
    size_t count = 0;
    for (size_t i = 0; i < d->train.count; i++)
        count += chosen[d->train.first + i];
    CHECK_DP(allocate_held(comm, d, count, held, &mine, err));
    move_held(&d->train, chosen, &mine);
    CHECK_DP(gather_held(comm, d, &mine, err));
    split_free(&mine);
    return 0;
fail:
    split_free(&mine);
    return -1;
}

/* Collective: every rank receives its block (comm_block) of a set that rank 0 holds. */
static int share_eval_set(const struct comm *comm, const struct split *whole, size_t image_bytes, struct split *part,
                          char *err)
{
    size_t total = comm->rank == 0 ? whole->count : 0, bytes = image_bytes;
    memset(part, 0, sizeof *part);
    CHECK_DP(comm_bcast_size(comm, &total, 0, err));
    comm_chunk_block(total, EVAL_CHUNK, comm->size, comm->rank, &part->first, &part->count);
    part->image_bytes = bytes;
    int ok = (part->images = malloc(part->count * bytes + 1)) && (part->labels = malloc(part->count + 1));
    if (!ok)
        err_set(err, "cannot allocate this rank's share of the evaluation sets");
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_scatter_blocks(comm, &(struct comm_blocks){total, EVAL_CHUNK, 1}, whole->labels, part->labels, err));
    CHECK_DP(comm_scatter_blocks(comm, &(struct comm_blocks){total, EVAL_CHUNK, bytes}, whole->images,
                                 part->images, err));
    return 0;
fail:
    split_free(part);
    return -1;
}

/* The training samples of every virtual shard after the hold-out (chosen may be NULL): the same
 * on every rank, from the file's size and the seed alone. */
static void count_virtual(struct shards *d, size_t total, const uint8_t *chosen)
{
    for (int s = 0; s < d->units; s++) {
        size_t first, count;
        comm_block(total, d->units, s, &first, &count);
        d->unit_counts[s] = count;
        for (size_t i = first; chosen && i < first + count; i++)
            d->unit_counts[s] -= chosen[i];
    }
}

/* Collective: the units, their sizes and this rank's share of them. */
static int plan_units(const struct comm *comm, const struct shard_plan *plan, size_t total, const uint8_t *chosen,
                      struct shards *d, char *err)
{
    d->units = plan->virtual_shards > 0 ? plan->virtual_shards : comm->size;
    size_t first_unit = (size_t)comm->rank, local = 1;
    if (plan->virtual_shards > 0)
        comm_block((size_t)d->units, comm->size, comm->rank, &first_unit, &local);
    d->first_unit = (int)first_unit;
    d->local_units = (int)local;
    int ok = (d->unit_counts = calloc((size_t)d->units, sizeof(size_t))) != NULL &&
             (d->unit_offsets = calloc(local + 1, sizeof(size_t))) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the training units");
    CHECK_DP(comm_agree(comm, ok, err));
    if (plan->virtual_shards > 0)
        count_virtual(d, total, chosen);
    else
        CHECK_DP(comm_allgather_size(comm, d->train.count, d->unit_counts, err));
    for (int u = 0; u < d->units; u++)
        d->train_total += d->unit_counts[u];
    for (size_t i = 0; i < local; i++)
        d->unit_offsets[i + 1] = d->unit_offsets[i] + d->unit_counts[first_unit + i];
    return 0;
fail:
    return -1;
}

/* Which training rows to hold out for validation: NULL without. Collective. */
static int choose_validation(const struct comm *comm, const struct shard_plan *plan, size_t total, uint8_t **chosen,
                             char *err)
{
    *chosen = NULL;
    if (plan->validation <= 0)
        return 0;
    if ((size_t)plan->validation + (size_t)comm->size > total)
        FAIL("holding out %d validation images leaves fewer training samples than ranks (%zu samples)",
             plan->validation, total);
    int ok = (*chosen = choose_held(total, plan->validation, plan->seed)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the validation split");
    return comm_agree(comm, ok, err);
fail:
    return -1;
}

/* What every load ends with: the evaluation sets shared and the units planned. Collective. */
static int share_and_plan(const struct comm *comm, const struct shard_plan *plan, size_t total, const uint8_t *chosen,
                          struct shards *d, char *err)
{
    size_t bytes = image_values(&d->about.image);
    CHECK_DP(share_eval_set(comm, &d->test, bytes, &d->test_part, err));
    CHECK_DP(share_eval_set(comm, &d->validation, bytes, &d->validation_part, err));
    CHECK_DP(plan_units(comm, plan, total, chosen, d, err));
    return 0;
fail:
    return -1;
}

/* ---- --memory-budget: the training rows read once, a window at a time, and left in the file ---- */

int shards_stream_plan(size_t budget_bytes, size_t image_bytes, size_t staging_rows, struct stream_geometry *g,
                       char *err)
{
    if (stream_plan(budget_bytes, image_bytes, staging_rows, g, err) == 0)
        return 0;
    char flag[64];
    snprintf(flag, sizeof flag, "%s %zu", cli_flag(OPTION_MEMORY_BUDGET), budget_bytes >> 20);
    err_prefix(err, flag);
    return -1;
}

/* What the pass over a rank's rows gathers. */
struct scan {
    struct shards *d;
    struct block_crcs crcs;
    struct normaliser_sums sums;
    struct split mine;            /* this rank's held-out rows */
};

static int scan_rows(void *context, const uint8_t *images, const uint8_t *labels, size_t rows, size_t index,
                     char *err)
{
    struct scan *s = context;
    const struct stream_source *src = &s->d->stream;
    size_t bytes = src->image_bytes;
    s->crcs.images = (uint32_t)crc32_z(s->crcs.images, images, rows * bytes);
    s->crcs.labels = (uint32_t)crc32_z(s->crcs.labels, labels, rows);
    struct split piece = {rows, bytes, src->first + index, (uint8_t *)images, (uint8_t *)labels};
    CHECK_DP(dataset_check_labels(&piece, src->classes, "train", src->path, err));
    for (size_t i = 0; i < rows; i++) {
        if (src->held && src->held[index + i]) {
            memcpy(s->mine.images + s->mine.count * bytes, images + i * bytes, bytes);
            s->mine.labels[s->mine.count++] = labels[i];
        } else {
            normaliser_add(&s->sums, images + i * bytes, bytes, s->d->about.image.channels);
        }
    }
    return 0;
fail:
    return -1;
}

/* The rank's rows in the file, which of them are held out, and the pass over them. Collective. */
static int scan_stream(const struct comm *comm, const struct shard_plan *plan, const struct data_location *at,
                       const uint8_t *chosen, struct scan *s, char *err)
{
    struct shards *d = s->d;
    struct stream_geometry g;
    size_t count = d->train.count, held = 0, bytes = image_values(&d->about.image);
    int ok = 1;
    if (chosen && (ok = (d->held = malloc(count + 1)) != NULL)) {
        memcpy(d->held, chosen + d->train.first, count);
        for (size_t i = 0; i < count; i++)
            held += d->held[i];
    }
    if (!ok)
        err_set(err, "cannot allocate the validation split");
    CHECK_DP(comm_agree(comm, ok, err));
    d->stream = (struct stream_source){plan->path, at->images_at, at->labels_at, d->train.first, count, bytes,
                                       d->held, d->about.classes};
    if (plan->validation > 0)
        CHECK_DP(allocate_held(comm, d, held, plan->validation, &s->mine, err));
    ok = shards_stream_plan(plan->memory_budget, bytes, 1, &g, err) == 0;
    ok = ok && stream_scan(&d->stream, &g, &(struct stream_visit){scan_rows, s}, err) == 0;
    CHECK_DP(comm_agree(comm, ok, err));
    d->train.count = count - held;
    s->crcs.rows = count;
    return 0;
fail:
    return -1;
}

static int load_streamed(const struct comm *comm, const struct shard_plan *plan, struct shards *d, char *err)
{
    struct dataset_part part;
    uint8_t *chosen = NULL;
    struct scan s = {d, {0, 0, 0}, {{0}, {0}, 0}, {0}};
    CHECK_DP(dataset_read_to_stream(comm, plan->path, &part, err));
    d->train = part.train; /* d owns the test set and the description from here on */
    d->test = part.test;
    d->about = part.about;
    d->streamed = 1;
    size_t total = part.train_total;
    CHECK_DP(choose_validation(comm, plan, total, &chosen, err));
    CHECK_DP(scan_stream(comm, plan, &part.train_at, chosen, &s, err));
    CHECK_DP(dataset_identify(comm, &part, &s.crcs, &d->identity, err));
    if (plan->validation > 0)
        CHECK_DP(gather_held(comm, d, &s.mine, err));
    CHECK_DP(share_and_plan(comm, plan, total, chosen, d, err));
    CHECK_DP(normaliser_agree(comm, &s.sums, d->about.image.channels, &d->norm, err));
    split_free(&s.mine);
    free(chosen);
    return 0;
fail:
    split_free(&s.mine);
    free(chosen);
    shards_free(d);
    return -1;
}

int shards_load(const struct comm *comm, const struct shard_plan *plan, struct shards *d, char *err)
{
    struct dataset_part part;
    uint8_t *chosen = NULL;
    memset(d, 0, sizeof *d);
    if (plan->memory_budget > 0)
        return load_streamed(comm, plan, d, err);
    CHECK_DP(dataset_read(comm, plan->path, plan->virtual_shards, &part, err));
    d->train = part.train; /* d owns the blocks and the description from here on */
    d->test = part.test;
    d->about = part.about;
    size_t total = part.train_total;
    CHECK_DP(dataset_identify(comm, &part, NULL, &d->identity, err));
    CHECK_DP(choose_validation(comm, plan, total, &chosen, err));
    if (chosen)
        CHECK_DP(hold_out_validation(comm, d, chosen, plan->validation, err));
    CHECK_DP(share_and_plan(comm, plan, total, chosen, d, err));
    CHECK_DP(normaliser_fit(comm, &d->train, &d->about.image, &d->norm, err));
    free(chosen);
    return 0;
fail:
    free(chosen);
    shards_free(d);
    return -1;
}

long shards_steps_per_epoch(const struct shards *d, int batch)
{
    return (long)((d->train_total + (size_t)batch - 1) / (size_t)batch);
}

int shards_largest_share(const struct shards *d, long steps)
{
    size_t biggest = 0;
    for (int u = 0; u < d->units; u++) {
        size_t per_step = (d->unit_counts[u] + (size_t)steps - 1) / (size_t)steps;
        if (per_step > biggest)
            biggest = per_step;
    }
    return (int)biggest;
}

void shards_step_share(size_t count, long steps, long step, size_t *first, int *n)
{
    unsigned long long c = count, s = (unsigned long long)steps;
    size_t lo = (size_t)(c * (unsigned long long)step / s), hi = (size_t)(c * (unsigned long long)(step + 1) / s);
    *first = lo;
    *n = (int)(hi - lo);
}

long shards_step_total(const struct shards *d, long steps, long step)
{
    long total = 0;
    for (int u = 0; u < d->units; u++) {
        size_t first;
        int n;
        shards_step_share(d->unit_counts[u], steps, step, &first, &n);
        total += n;
    }
    return total;
}
