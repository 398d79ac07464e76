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
    free(d->rank_counts);
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
    size_t kept = 0;
    moved->count = 0;
    for (size_t i = 0; i < t->count; i++) {
        uint8_t *image = t->images + i * DATASET_PIXELS;
        if (chosen[t->first + i]) {
            memcpy(moved->images + moved->count * DATASET_PIXELS, image, DATASET_PIXELS);
            moved->labels[moved->count++] = t->labels[i];
        } else {
            memmove(t->images + kept * DATASET_PIXELS, image, DATASET_PIXELS);
            t->labels[kept++] = t->labels[i];
        }
    }
    t->count = kept;
}

/* Hold out `held` of `total` training images and gather them, in ascending index order, on
 * rank 0. Collective. */
static int hold_out_validation(const struct comm *comm, struct shards *d, size_t total, int held, uint64_t seed,
                               char *err)
{
    struct split mine = {0};
    uint8_t *chosen = NULL;
    int ok = (chosen = choose_held(total, held, seed)) != NULL;
    size_t count = 0;
    for (size_t i = 0; ok && i < d->train.count; i++)
        count += chosen[d->train.first + i];
    ok = ok && (mine.images = malloc(count * DATASET_PIXELS + 1)) && (mine.labels = malloc(count + 1));
    if (ok && comm->rank == 0) {
        d->validation.count = (size_t)held;
        ok = (d->validation.images = malloc((size_t)held * DATASET_PIXELS + 1)) &&
             (d->validation.labels = malloc((size_t)held + 1));
    }
    if (!ok)
        err_set(err, "cannot allocate the validation split");
    CHECK_DP(comm_agree(comm, ok, err));
    move_held(&d->train, chosen, &mine);
    CHECK_DP(comm_gather_items(comm, mine.labels, mine.count, 1, d->validation.labels, err));
    CHECK_DP(comm_gather_items(comm, mine.images, mine.count, DATASET_PIXELS, d->validation.images, err));
    free(chosen);
    split_free(&mine);
    return 0;
fail:
    free(chosen);
    split_free(&mine);
    return -1;
}

/* Collective: every rank receives its block (comm_block) of a set that rank 0 holds. */
static int share_eval_set(const struct comm *comm, const struct split *whole, const char *what, struct split *part,
                          char *err)
{
    size_t total = comm->rank == 0 ? whole->count : 0;
    memset(part, 0, sizeof *part);
    CHECK_DP(comm_bcast_size(comm, &total, 0, err));
    comm_block(total, comm->size, comm->rank, &part->first, &part->count);
    int ok = (part->images = malloc(part->count * DATASET_PIXELS + 1)) && (part->labels = malloc(part->count + 1));
    if (!ok)
        err_set(err, "cannot allocate this rank's share of the %s set", what);
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_scatter_blocks(comm, whole->labels, total, 1, part->labels, err));
    CHECK_DP(comm_scatter_blocks(comm, whole->images, total, DATASET_PIXELS, part->images, err));
    return 0;
fail:
    split_free(part);
    return -1;
}

int shards_load(const struct comm *comm, const char *path, int validation, uint64_t seed, struct shards *d,
                char *err)
{
    struct dataset_part part;
    memset(d, 0, sizeof *d);
    CHECK_DP(dataset_read(comm, path, &part, err));
    d->train = part.train; /* d owns the blocks from here on */
    d->test = part.test;
    size_t total = part.train_total;
    CHECK_DP(dataset_identify(comm, &part, &d->identity, err));
    if (validation > 0) {
        if ((size_t)validation + (size_t)comm->size > total)
            FAIL("holding out %d validation images leaves fewer training samples than ranks (%zu samples)", validation,
                 total);
        CHECK_DP(hold_out_validation(comm, d, total, validation, seed, err));
    }
    CHECK_DP(share_eval_set(comm, &d->test, "test", &d->test_part, err));
    CHECK_DP(share_eval_set(comm, &d->validation, "validation", &d->validation_part, err));
    int ok = (d->rank_counts = calloc((size_t)comm->size, sizeof(size_t))) != NULL;
    if (!ok)
        err_set(err, "cannot allocate rank counts");
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_allgather_size(comm, d->train.count, d->rank_counts, err));
    for (int r = 0; r < comm->size; r++)
        d->train_total += d->rank_counts[r];
    CHECK_DP(normaliser_fit(comm, d->train.images, d->train.count, &d->norm, err));
    return 0;
fail:
    shards_free(d);
    return -1;
}

long shards_steps_per_epoch(const struct shards *d, int batch)
{
    return (long)((d->train_total + (size_t)batch - 1) / (size_t)batch);
}

int shards_largest_share(const struct shards *d, int ranks, long steps)
{
    size_t biggest = 0;
    for (int r = 0; r < ranks; r++) {
        size_t per_step = (d->rank_counts[r] + (size_t)steps - 1) / (size_t)steps;
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

long shards_step_total(const struct shards *d, int ranks, long steps, long step)
{
    long total = 0;
    for (int r = 0; r < ranks; r++) {
        size_t first;
        int n;
        shards_step_share(d->rank_counts[r], steps, step, &first, &n);
        total += n;
    }
    return total;
}
