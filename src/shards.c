#include "dptrain/shards.h"

#include "dptrain/check.h"
#include "dptrain/rng.h"

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

/* Move the `chosen` training images out of every rank's block and gather them, in ascending
 * index order, on rank 0 (`held` of them). Collective. */
static int hold_out_validation(const struct comm *comm, struct shards *d, const uint8_t *chosen, int held,
                               char *err)
{
    struct split mine = {0};
    size_t count = 0, bytes = d->train.image_bytes;
    for (size_t i = 0; i < d->train.count; i++)
        count += chosen[d->train.first + i];
    mine.image_bytes = d->validation.image_bytes = bytes;
    int ok = (mine.images = malloc(count * bytes + 1)) && (mine.labels = malloc(count + 1));
    if (ok && comm->rank == 0) {
        d->validation.count = (size_t)held;
        ok = (d->validation.images = malloc((size_t)held * bytes + 1)) &&
             (d->validation.labels = malloc((size_t)held + 1));
    }
    if (!ok)
        err_set(err, "cannot allocate the validation split");
    CHECK_DP(comm_agree(comm, ok, err));
    move_held(&d->train, chosen, &mine);
    CHECK_DP(comm_gather_items(comm, mine.labels, mine.count, 1, d->validation.labels, err));
    CHECK_DP(comm_gather_items(comm, mine.images, mine.count, bytes, d->validation.images, err));
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

int shards_load(const struct comm *comm, const struct shard_plan *plan, struct shards *d, char *err)
{
    struct dataset_part part;
    uint8_t *chosen = NULL;
    memset(d, 0, sizeof *d);
    CHECK_DP(dataset_read(comm, plan->path, plan->virtual_shards, &part, err));
    d->train = part.train; /* d owns the blocks and the description from here on */
    d->test = part.test;
    d->about = part.about;
    size_t bytes = image_values(&d->about.image);
    size_t total = part.train_total;
    CHECK_DP(dataset_identify(comm, &part, &d->identity, err));
    if (plan->validation > 0) {
        if ((size_t)plan->validation + (size_t)comm->size > total)
            FAIL("holding out %d validation images leaves fewer training samples than ranks (%zu samples)",
                 plan->validation, total);
        int ok = (chosen = choose_held(total, plan->validation, plan->seed)) != NULL;
        if (!ok)
            err_set(err, "cannot allocate the validation split");
        CHECK_DP(comm_agree(comm, ok, err));
        CHECK_DP(hold_out_validation(comm, d, chosen, plan->validation, err));
    }
    CHECK_DP(share_eval_set(comm, &d->test, bytes, &d->test_part, err));
    CHECK_DP(share_eval_set(comm, &d->validation, bytes, &d->validation_part, err));
    CHECK_DP(plan_units(comm, plan, total, chosen, d, err));
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
