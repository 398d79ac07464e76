#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "dptrain/train.h"

#include "dptrain/check.h"
#include "dptrain/checkpoint.h"
#include "dptrain/fault.h"
#include "dptrain/stop.h"
#include "dptrain/features.h"
#include "dptrain/files.h"
#include "dptrain/h5io.h"
#include "dptrain/layers.h"
#include "dptrain/metrics.h"
#include "dptrain/optim.h"
#include "dptrain/pca.h"
#include "dptrain/profile.h"
#include "dptrain/reducer.h"
#include "dptrain/results.h"
#include "dptrain/tensor.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Evaluation batch: large for the MLP; small for the CNN, whose im2col workspace grows with it. */
static int eval_batch(const char *model)
{
    return strncmp(model, "cnn", 3) == 0 ? 200 : 1000;
}

/* Everything loaded once and shared by all runs of a command. */
struct data {
    struct split train;        /* this rank's training samples (validation rows removed) */
    struct split test;         /* rank 0 only: the whole test set (its labels go to the results) */
    struct split validation;   /* rank 0 only */
    /* This rank's block of each: evaluation is shared by all ranks (rank 0 alone evaluating the
     * CNN with --tta took 18% of the wall time while the other ranks waited). */
    struct split test_part, validation_part;
    size_t train_total;        /* over all ranks, after the validation hold-out */
    size_t *rank_counts;       /* training samples per rank */
    struct normaliser norm;
    struct data_identity identity; /* of the file's arrays, for checkpoints */
};

/* ---- data ---------------------------------------------------------------------------- */

static void data_free(struct data *d)
{
    split_free(&d->train);
    split_free(&d->test);
    split_free(&d->validation);
    split_free(&d->test_part);
    split_free(&d->validation_part);
    free(d->rank_counts);
    memset(d, 0, sizeof *d);
}

/* Choose `held` of `total` training indices (from the seed alone, so the same on every rank and
 * for every rank count), move this rank's chosen rows out of its shard, and gather them, in
 * ascending index order, on rank 0. */
static int hold_out_validation(const struct comm *comm, struct data *d, size_t total, int held,
                               uint64_t seed, char *err)
{
    uint32_t *order = NULL;
    uint8_t *chosen = NULL, *local_images = NULL, *local_labels = NULL;
    int *counts = NULL, *displs = NULL;
    int ok = 1;
    CHECK_PTR(order = malloc(total * sizeof *order), "cannot allocate validation split");
    CHECK_PTR(chosen = calloc(total, 1), "cannot allocate validation split");
    for (size_t i = 0; i < total; i++)
        order[i] = (uint32_t)i;
    struct rng rng;
    rng_seed(&rng, seed, RNG_VALIDATION, 0, 0);
    rng_shuffle(&rng, order, total);
    for (int i = 0; i < held; i++)
        chosen[order[i]] = 1;
    struct split *t = &d->train;
    size_t mine = 0;
    for (size_t i = 0; i < t->count; i++)
        mine += chosen[t->first + i];
    CHECK_PTR(local_images = malloc(mine * DATASET_PIXELS + 1), "cannot allocate validation rows");
    CHECK_PTR(local_labels = malloc(mine + 1), "cannot allocate validation rows");
    size_t kept = 0, moved = 0;
    for (size_t i = 0; i < t->count; i++) {
        uint8_t *image = t->images + i * DATASET_PIXELS;
        if (chosen[t->first + i]) {
            memcpy(local_images + moved * DATASET_PIXELS, image, DATASET_PIXELS);
            local_labels[moved++] = t->labels[i];
        } else {
            memmove(t->images + kept * DATASET_PIXELS, image, DATASET_PIXELS);
            t->labels[kept++] = t->labels[i];
        }
    }
    t->count = kept;
    if (comm->rank == 0) {
        CHECK_PTR(counts = malloc(sizeof(int) * comm->size), "cannot allocate");
        CHECK_PTR(displs = malloc(sizeof(int) * comm->size), "cannot allocate");
        CHECK_PTR(d->validation.images = malloc((size_t)held * DATASET_PIXELS + 1), "cannot allocate validation set");
        CHECK_PTR(d->validation.labels = malloc((size_t)held + 1), "cannot allocate validation set");
        d->validation.count = (size_t)held;
    }
    int mine_int = (int)mine;
    CHECK_MPI(MPI_Gather(&mine_int, 1, MPI_INT, counts, 1, MPI_INT, 0, comm->world), "validation gather failed");
    if (comm->rank == 0)
        for (int r = 0, at = 0; r < comm->size; r++) {
            displs[r] = at;
            at += counts[r];
        }
    CHECK_MPI(MPI_Gatherv(local_labels, mine_int, MPI_UINT8_T, d->validation.labels, counts, displs,
                          MPI_UINT8_T, 0, comm->world), "validation gather failed");
    if (comm->rank == 0)
        for (int r = 0; r < comm->size; r++) {
            counts[r] *= DATASET_PIXELS;
            displs[r] *= DATASET_PIXELS;
        }
    CHECK_MPI(MPI_Gatherv(local_images, mine_int * DATASET_PIXELS, MPI_UINT8_T, d->validation.images,
                          counts, displs, MPI_UINT8_T, 0, comm->world), "validation gather failed");
    goto done;
fail:
    ok = 0;
done:
    free(order);
    free(chosen);
    free(local_images);
    free(local_labels);
    free(counts);
    free(displs);
    return comm_agree(comm->world, ok, err);
}

/* MPI counts and displacements of every rank's dataset_block of total items, times `scale`
 * elements per item (the callers checked that they fit an int). */
static void block_counts(size_t total, int ranks, int scale, int *counts, int *displs)
{
    for (int r = 0; r < ranks; r++) {
        size_t first, count;
        dataset_block(total, ranks, r, &first, &count);
        counts[r] = (int)count * scale;
        displs[r] = (int)first * scale;
    }
}

/* Collective: every rank receives its block (dataset_block) of a set that rank 0 holds. */
static int share_eval_set(const struct comm *comm, const struct split *whole, const char *what, struct split *part,
                          char *err)
{
    unsigned long long total = comm->rank == 0 ? whole->count : 0;
    int *counts = NULL, *displs = NULL, ok = 1;
    memset(part, 0, sizeof *part);
    CHECK_MPI(MPI_Bcast(&total, 1, MPI_UNSIGNED_LONG_LONG, 0, comm->world), "cannot share the %s set size", what);
    if (total * DATASET_PIXELS > (unsigned long long)INT_MAX) {
        err_set(err, "the %s set (%llu images) is too large to share among the ranks", what, total);
        return -1; /* the same on every rank */
    }
    dataset_block((size_t)total, comm->size, comm->rank, &part->first, &part->count);
    part->images = malloc(part->count * DATASET_PIXELS + 1);
    part->labels = malloc(part->count + 1);
    counts = malloc(sizeof(int) * (size_t)comm->size);
    displs = malloc(sizeof(int) * (size_t)comm->size);
    if (!part->images || !part->labels || !counts || !displs)
        ok = 0, err_set(err, "cannot allocate this rank's share of the %s set", what);
    CHECK_DP(comm_agree(comm->world, ok, err));
    block_counts((size_t)total, comm->size, 1, counts, displs);
    CHECK_MPI(MPI_Scatterv(whole->labels, counts, displs, MPI_UINT8_T, part->labels, counts[comm->rank],
                           MPI_UINT8_T, 0, comm->world), "cannot share the %s set", what);
    block_counts((size_t)total, comm->size, DATASET_PIXELS, counts, displs);
    CHECK_MPI(MPI_Scatterv(whole->images, counts, displs, MPI_UINT8_T, part->images, counts[comm->rank],
                           MPI_UINT8_T, 0, comm->world), "cannot share the %s set", what);
    free(counts);
    free(displs);
    return 0;
fail:
    free(counts);
    free(displs);
    split_free(part);
    return -1;
}

/* One path a command reads or writes. */
struct named_path {
    const char *flag, *path;
    int output;
};

/* No output may name an input or another output, however the paths are spelt. */
static int check_aliases(const struct named_path *paths, int count, char *err)
{
    for (int i = 0; i < count; i++)
        for (int j = 0; j < count; j++) {
            if (i == j || !paths[i].path || !paths[j].path || !paths[i].output || (paths[j].output && j < i))
                continue;
            if (files_same(paths[i].path, paths[j].path))
                FAIL("%s %s: names the same file as %s %s (%s)", paths[i].flag, paths[i].path, paths[j].flag,
                     paths[j].path, paths[j].output ? "every output needs a file of its own"
                                                    : "writing it would destroy that input");
        }
    return 0;
fail:
    return -1;
}

/* Rank 0, before any data is read: every output can be written (its folder exists and takes
 * files, the path is absent or a regular file) and names no input or other output. The
 * default results/ folder is made here, and removed again if a check fails. */
static int check_paths_here(const struct options *o, char *err)
{
    int train = o->command != CMD_EVAL, made_folder = 0;
    struct named_path paths[] = {
        {"--data", o->data, 0},
        {"--out", o->out, 1},
        {"--checkpoint", o->checkpoint, train},
        {"--trace", o->trace, 1},
    };
    int count = (int)(sizeof paths / sizeof paths[0]);
    if (o->out_is_default)
        made_folder = mkdir("results", 0777) == 0;
    if (o->checkpoint && (o->resume || !train))
        CHECK_DP(files_check_input(o->checkpoint, "--checkpoint", err));
    for (int i = 0; i < count; i++)
        if (paths[i].output && paths[i].path)
            CHECK_DP(files_check_output(paths[i].path, paths[i].flag, err));
    CHECK_DP(check_aliases(paths, count, err));
    return 0;
fail:
    if (made_folder)
        rmdir("results");
    return -1;
}

static int check_paths(const struct comm *comm, const struct options *o, char *err)
{
    int ok = comm->rank != 0 || check_paths_here(o, err) == 0;
    return comm_agree(comm->world, ok, err);
}

static int load_data(const struct comm *comm, const struct options *o, struct data *d, char *err)
{
    memset(d, 0, sizeof *d);
    size_t total = 0;
    CHECK_DP(dataset_read(comm->world, o->data, 0, &d->train, &d->test, &total, err));
    CHECK_DP(dataset_identify(comm->world, &d->train, &d->test, 0, &d->identity, err));
    if (o->validation > 0) {
        if ((size_t)o->validation + (size_t)comm->size > total) {
            err_set(err, "--validation %d leaves fewer training samples than ranks (%zu samples)",
                    o->validation, total);
            goto fail;
        }
        CHECK_DP(hold_out_validation(comm, d, total, o->validation, o->seed, err));
    }
    CHECK_DP(share_eval_set(comm, &d->test, "test", &d->test_part, err));
    CHECK_DP(share_eval_set(comm, &d->validation, "validation", &d->validation_part, err));
    int ok = 1;
    if (!(d->rank_counts = calloc((size_t)comm->size, sizeof(size_t))))
        ok = 0, err_set(err, "cannot allocate rank counts");
    CHECK_DP(comm_agree(comm->world, ok, err));
    unsigned long long mine = d->train.count;
    unsigned long long *all = (unsigned long long *)d->rank_counts;
    CHECK_MPI(MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, comm->world),
              "cannot share shard sizes");
    d->train_total = 0;
    for (int r = 0; r < comm->size; r++)
        d->train_total += d->rank_counts[r];
    CHECK_DP(normaliser_fit(comm, d->train.images, d->train.count, &d->norm, err));
    return 0;
fail:
    data_free(d);
    return -1;
}

/* ---- one global batch ---------------------------------------------------------------- */

void train_local_share(size_t count, long steps, long step, size_t *first, int *n)
{
    size_t lo = (size_t)((unsigned long long)count * (unsigned long long)step / (unsigned long long)steps);
    size_t hi = (size_t)((unsigned long long)count * (unsigned long long)(step + 1) / (unsigned long long)steps);
    *first = lo;
    *n = (int)(hi - lo);
}

static int all_finite(const float *x, size_t n)
{
    int finite = 1;
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(x[i]);
    return finite;
}

int train_batch_gradient(const struct comm *comm, struct model *model, const uint8_t *labels,
                         int n, long global_batch, float smoothing, struct rng *dropout_rng,
                         struct reducer *reducer, double *loss_sum, long *correct, char *err)
{
    struct profile *p = model->profile;
    double clock = profile_now(p);
    if (reducer)
        reducer_begin(reducer);
    if (n > 0) {
        const float *logits = model_forward(model, n, 1, dropout_rng);
        *loss_sum += softmax_cross_entropy(logits, labels, n, model->classes, smoothing,
                                           1.0f / (float)global_batch, model_grad_logits(model),
                                           correct, NULL, NULL);
        clock = profile_end(p, PHASE_FORWARD, CATEGORY_STEP, clock);
        struct backward_hook hook = {reducer_ready, reducer};
        model_backward(model, n, reducer ? &hook : NULL);
    } else {
        /* A rank with no samples in this step still contributes (zeros) to the sum. */
        memset(model->grads, 0, model->param_count * sizeof(float));
        if (reducer) /* the same buckets as the other ranks start: all but the first */
            reducer_ready(reducer, 1);
    }
    clock = profile_end(p, PHASE_BACKWARD, CATEGORY_STEP, clock);
    int status = reducer ? reducer_finish(reducer, err)
                         : comm_allreduce_floats(comm, model->grads, model->param_count, err);
    profile_end(p, PHASE_ALLREDUCE_WAIT, CATEGORY_STEP, clock);
    return status;
}

/* ---- evaluation ---------------------------------------------------------------------- */

struct evaluation {
    double loss, accuracy;
};

/* Loss and accuracy of the model on a whole set whose blocks the ranks hold in f (collective:
 * each rank evaluates its block, one allreduce adds them up); this rank's predictions and
 * confidences are stored if asked. With mirror_logits (--tta) each image is also seen mirrored
 * and the two logits are averaged: the network was trained on mirrored images, so both views
 * are fair evidence, and the average smooths its mistakes on the borderline ones. */
static int evaluate(const struct comm *comm, struct model *model, const struct features *f, uint32_t *indices,
                    uint8_t *label_buffer, uint8_t *predictions, float *confidence, float *mirror_logits,
                    struct evaluation *result, char *err)
{
    double loss = 0;
    long correct = 0;
    size_t chunk = (size_t)model->max_batch;
    for (size_t start = 0; start < f->count; start += chunk) {
        int n = (int)(f->count - start < chunk ? f->count - start : chunk);
        for (int i = 0; i < n; i++)
            indices[i] = (uint32_t)(start + (size_t)i);
        features_gather(f, indices, n, model_input(model), label_buffer, 0, NULL);
        const float *logits = model_forward(model, n, 0, NULL);
        if (mirror_logits) {
            size_t values = (size_t)n * (size_t)model->classes;
            memcpy(mirror_logits, logits, values * sizeof(float));
            features_mirror(model_input(model), n);
            logits = model_forward(model, n, 0, NULL);
            for (size_t i = 0; i < values; i++)
                mirror_logits[i] = 0.5f * (mirror_logits[i] + logits[i]);
            logits = mirror_logits;
        }
        loss += softmax_cross_entropy(logits, label_buffer, n, model->classes, 0.0f, 0.0f, NULL,
                                      &correct, predictions ? predictions + start : NULL,
                                      confidence ? confidence + start : NULL);
    }
    double sums[3] = {loss, (double)correct, (double)f->count};
    CHECK_DP(comm_allreduce_doubles(comm, sums, 3, err));
    result->loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
    result->accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
    return 0;
fail:
    return -1;
}

/* ---- one run ------------------------------------------------------------------------- */

struct run_state {
    struct features train, test, validation;
    struct model *model;
    struct optimizer *optimizer;
    uint32_t *order;          /* shuffled local indices */
    uint32_t *eval_indices;
    uint8_t *batch_labels;
    float *mirror_logits;     /* --tta: [capacity][classes] */
    float *best_params;       /* rank 0, with --validation */
    double best_val;
    /* where the run stands: `epoch` epochs done and `step` steps of the next */
    int start_epoch;
    long start_step;
    double resumed_epoch_seconds;
    /* this rank's streams and sums of the epoch in progress */
    struct rng dropout, augment;
    double partial_loss;
    long partial_correct;
    struct fault fault;
    int stop_signal;          /* the signal the ranks agreed to stop for */
    struct reducer reducer;
    struct profile *profile;  /* the command's; NULL for eval */
};

static void run_state_free(struct run_state *s)
{
    features_free(&s->train);
    features_free(&s->test);
    features_free(&s->validation);
    model_free(s->model);
    optim_free(s->optimizer);
    free(s->order);
    free(s->eval_indices);
    free(s->batch_labels);
    tensor_free(s->best_params);
    tensor_free(s->mirror_logits);
    memset(s, 0, sizeof *s);
}

static long steps_per_epoch(const struct data *d, int batch)
{
    return (long)((d->train_total + (size_t)batch - 1) / (size_t)batch);
}

/* Largest share any rank takes in any step: the model's batch capacity. */
static int largest_share(const struct data *d, int ranks, long steps)
{
    size_t biggest = 0;
    for (int r = 0; r < ranks; r++) {
        size_t per_step = (d->rank_counts[r] + (size_t)steps - 1) / (size_t)steps;
        if (per_step > biggest)
            biggest = per_step;
    }
    return (int)biggest;
}

static int allocate_run(const struct comm *comm, const struct options *o, const struct data *d,
                        const struct pca *pca, struct run_state *s, char *err)
{
    long steps = steps_per_epoch(d, o->batch);
    int capacity = largest_share(d, comm->size, steps);
    if (capacity < eval_batch(o->model)) /* every rank evaluates its share */
        capacity = eval_batch(o->model);
    int input = pca ? pca->components : DATASET_PIXELS;
    int ok = 1;
    if (fault_strikes(&s->fault, FAULT_ALLOC, comm->rank, 0, 0)) {
        err_set(err, "cannot allocate the model (injected allocation failure)");
        ok = 0;
    }
    ok = ok && (s->model = model_create(o->model, input, DATASET_CLASSES, capacity, (float)o->dropout, err)) != NULL;
    if (ok) {
        s->model->profile = s->profile;
        reducer_init(&s->reducer, comm->world, s->model, (size_t)(o->bucket_mb * 1048576.0));
    }
    ok = ok && features_create(&s->train, d->train.images, d->train.labels, d->train.count, &d->norm, pca, err) == 0;
    ok = ok && features_create(&s->test, d->test_part.images, d->test_part.labels, d->test_part.count, &d->norm,
                               pca, err) == 0;
    ok = ok && features_create(&s->validation, d->validation_part.images, d->validation_part.labels,
                               d->validation_part.count, &d->norm, pca, err) == 0;
    enum optimizer_kind kind = strcmp(o->optimizer, "sgd") == 0 ? OPT_SGD : OPT_ADAM;
    ok = ok && (s->optimizer = optim_create(kind, s->model->param_count, o->momentum, o->weight_decay, err));
    if (ok && !(s->order = malloc((d->train.count + 1) * sizeof(uint32_t))))
        ok = 0, err_set(err, "cannot allocate the shuffle order");
    if (ok && !(s->eval_indices = malloc((size_t)capacity * sizeof(uint32_t))))
        ok = 0, err_set(err, "cannot allocate evaluation indices");
    if (ok && !(s->batch_labels = malloc((size_t)capacity + 1)))
        ok = 0, err_set(err, "cannot allocate batch labels");
    if (ok && o->tta && !(s->mirror_logits = tensor_alloc((size_t)capacity * DATASET_CLASSES)))
        ok = 0, err_set(err, "cannot allocate the --tta logits");
    if (ok && comm->rank == 0 && o->validation > 0 && !(s->best_params = tensor_alloc(s->model->param_count)))
        ok = 0, err_set(err, "cannot allocate the best parameters");
    return comm_agree(comm->world, ok, err);
}

/* Continue from a checkpoint: everything the uninterrupted run would hold at this point. The
 * checkpoint's position and sizes were checked against this run (check_resume_position). */
static void restore_state(const struct comm *comm, struct checkpoint *c, struct run_state *s,
                          struct run_result *r)
{
    size_t bytes = s->model->param_count * sizeof(float);
    memcpy(s->model->params, c->params, bytes);
    memcpy(s->optimizer->first, c->opt_first, bytes);
    if (s->optimizer->second)
        memcpy(s->optimizer->second, c->opt_second, bytes);
    s->optimizer->step = c->opt_step;
    if (s->best_params && c->best_params)
        memcpy(s->best_params, c->best_params, bytes);
    s->best_val = c->best_val;
    r->best_epoch = c->best_epoch;
    memcpy(r->history, c->history, (size_t)c->history_length * sizeof *r->history);
    r->history_length = c->history_length;
    r->train_seconds = c->train_seconds;
    s->start_epoch = c->epoch;
    s->start_step = c->step;
    s->resumed_epoch_seconds = c->epoch_seconds;
    memcpy(s->dropout.s, c->dropout_rng[comm->rank].s, sizeof s->dropout.s);
    memcpy(s->augment.s, c->augment_rng[comm->rank].s, sizeof s->augment.s);
    s->partial_loss = c->partial_loss[comm->rank];
    if (s->model->buffer_count)
        memcpy(s->model->buffers, c->buffers + (size_t)comm->rank * c->buffer_count,
               c->buffer_count * sizeof(float));
    s->partial_correct = (long)c->partial_correct[comm->rank];
}

static int prepare_run(const struct comm *comm, const struct options *o, const struct data *d,
                       int pca_k, struct checkpoint *resume, struct run_state *s,
                       struct run_result *r, char *err)
{
    const struct pca *pca = NULL;
    s->best_val = -1;
    if (resume && pca_k > 0) {
        /* The saved basis, not a new fit: the resumed run sees exactly the same inputs. */
        r->pca = resume->pca;
        memset(&resume->pca, 0, sizeof resume->pca);
        pca = &r->pca;
    } else if (pca_k > 0) {
        CHECK_DP(pca_fit(comm, d->train.images, d->train.count, DATASET_PIXELS, pca_k, &r->pca, err));
        pca = &r->pca;
    }
    CHECK_DP(allocate_run(comm, o, d, pca, s, err));
    if (resume) {
        /* the same checkpoint and data on every rank: the same verdict */
        CHECK_DP(checkpoint_check_position(resume, steps_per_epoch(d, o->batch), s->model->param_count,
                                           s->model->buffer_count, o->checkpoint, err));
        restore_state(comm, resume, s, r);
        return 0;
    }
    /* Rank 0 initialises; everyone starts from its parameters. */
    if (comm->rank == 0) {
        struct rng init;
        rng_seed(&init, o->seed, RNG_INIT, 0, 0);
        model_init_params(s->model, &init);
    }
    CHECK_DP(comm_bcast_floats(comm, s->model->params, s->model->param_count, 0, err));
    return 0;
fail:
    return -1;
}

/* Collective: rank 0 writes the state at (epochs_done, step) with every rank's streams. */
static int save_checkpoint(const struct comm *comm, const struct options *o, const struct data *d,
                           struct run_state *s, struct run_result *r, int epochs_done, long step,
                           double epoch_seconds, char *err)
{
    uint64_t mine[8];
    double my_loss = s->partial_loss;
    int64_t my_correct = s->partial_correct;
    struct rng *dropout = NULL, *augment = NULL;
    uint64_t *all = NULL;
    double *losses = NULL;
    int64_t *corrects = NULL;
    float *buffers = NULL;
    size_t nb = s->model->buffer_count;
    int ok = 1;
    memcpy(mine, s->dropout.s, 4 * sizeof(uint64_t));
    memcpy(mine + 4, s->augment.s, 4 * sizeof(uint64_t));
    if (comm->rank == 0) {
        all = malloc(sizeof(uint64_t) * 8 * comm->size);
        dropout = malloc(sizeof *dropout * comm->size);
        augment = malloc(sizeof *augment * comm->size);
        losses = malloc(sizeof(double) * comm->size);
        corrects = malloc(sizeof(int64_t) * comm->size);
        buffers = malloc(sizeof(float) * (nb * comm->size + 1));
        ok = all && dropout && augment && losses && corrects && buffers;
        if (!ok)
            err_set(err, "cannot allocate checkpoint buffers");
    }
    CHECK_DP(comm_agree(comm->world, ok, err));
    CHECK_MPI(MPI_Gather(mine, 8, MPI_UINT64_T, all, 8, MPI_UINT64_T, 0, comm->world), "checkpoint gather failed");
    CHECK_MPI(MPI_Gather(&my_loss, 1, MPI_DOUBLE, losses, 1, MPI_DOUBLE, 0, comm->world), "checkpoint gather failed");
    CHECK_MPI(MPI_Gather(&my_correct, 1, MPI_INT64_T, corrects, 1, MPI_INT64_T, 0, comm->world), "checkpoint gather failed");
    if (nb > 0)
        CHECK_MPI(MPI_Gather(s->model->buffers, (int)nb, MPI_FLOAT, buffers, (int)nb, MPI_FLOAT, 0, comm->world),
                  "checkpoint gather failed");
    if (comm->rank == 0) {
        for (int i = 0; i < comm->size; i++) {
            memcpy(dropout[i].s, all + 8 * i, 4 * sizeof(uint64_t));
            memcpy(augment[i].s, all + 8 * i + 4, 4 * sizeof(uint64_t));
        }
        struct checkpoint c = {
            .pca_components = r->pca_components, .global_batch = o->batch, .ranks = comm->size,
            .epochs = o->epochs, .validation = o->validation, .augment = o->augment, .tta = o->tta, .seed = o->seed,
            .lr = o->lr, .momentum = o->momentum, .weight_decay = o->weight_decay,
            .warmup = o->warmup, .dropout = o->dropout, .label_smoothing = o->label_smoothing,
            .epoch = epochs_done, .step = step, .train_seconds = r->train_seconds,
            .epoch_seconds = epoch_seconds, .param_count = s->model->param_count,
            .params = s->model->params, .opt_first = s->optimizer->first,
            .opt_second = s->optimizer->second, .opt_step = s->optimizer->step,
            .best_params = s->best_params, .best_val = s->best_val, .best_epoch = r->best_epoch,
            .norm = d->norm, .data = d->identity, .pca = r->pca, .history_length = epochs_done, .history = r->history,
            .dropout_rng = dropout, .augment_rng = augment, .partial_loss = losses,
            .partial_correct = corrects, .buffer_count = nb, .buffers = buffers,
        };
        snprintf(c.model, sizeof c.model, "%s", o->model);
        snprintf(c.optimizer, sizeof c.optimizer, "%s", o->optimizer);
        snprintf(c.schedule, sizeof c.schedule, "%s", o->schedule);
        snprintf(c.name, sizeof c.name, "%s", r->name);
        if (fault_strikes(&s->fault, FAULT_IO, 0, epochs_done, 0)) {
            err_set(err, "%s: cannot write the checkpoint (injected I/O failure)", o->checkpoint);
            ok = 0;
        } else {
            ok = checkpoint_write(o->checkpoint, &c, err) == 0;
        }
    }
    goto done;
fail:
    ok = 0;
done:
    free(all);
    free(dropout);
    free(augment);
    free(losses);
    free(corrects);
    free(buffers);
    return comm_agree(comm->world, ok, err);
}

/* Batch-norm running statistics are per rank (each sees its own batches); at the end of every
 * epoch they are averaged over the ranks, so that evaluation and checkpoints use one set. */
static int average_buffers(const struct comm *comm, struct model *m, char *err)
{
    if (m->buffer_count == 0 || comm->size == 1)
        return 0;
    CHECK_DP(comm_allreduce_floats(comm, m->buffers, m->buffer_count, err));
    for (size_t i = 0; i < m->buffer_count; i++)
        m->buffers[i] /= (float)comm->size;
    return 0;
fail:
    return -1;
}

/* Which rank's own loss went bad? Only asked on the failure path. */
static void name_bad_rank(const struct comm *comm, int locally_bad, int epoch, long step, char *err)
{
    int mine = locally_bad ? comm->rank : comm->size, first = comm->size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm->world);
    if (first < comm->size)
        err_set(err, "rank %d: the loss became NaN or Inf at epoch %d, step %ld (try a lower --lr)",
                first, epoch, step + 1);
    else
        err_set(err, "the summed gradient became NaN or Inf at epoch %d, step %ld (try a lower --lr)",
                epoch, step + 1);
}

enum epoch_outcome { EPOCH_DONE = 0, EPOCH_FAILED = -1, EPOCH_STOPPED = 1 };

/* Steps first_step.. of one epoch. Returns EPOCH_STOPPED, with *stopped_at set, when any rank
 * was asked to stop: the ranks agree on it at a step boundary, before the step's work. */
static enum epoch_outcome train_epoch(const struct comm *comm, const struct options *o,
                                      const struct data *d, struct run_state *s,
                                      struct run_result *r, const struct schedule *schedule,
                                      int epoch, long first_step, double *epoch_seconds,
                                      long *stopped_at, char *err)
{
    long steps = steps_per_epoch(d, o->batch);
    size_t count = s->train.count;
    double start = MPI_Wtime() - *epoch_seconds;
    for (size_t i = 0; i < count; i++)
        s->order[i] = (uint32_t)i;
    struct rng shuffle;
    rng_seed(&shuffle, o->seed, RNG_SHUFFLE, (uint64_t)epoch, (uint64_t)comm->rank);
    rng_shuffle(&shuffle, s->order, count);
    if (first_step == 0) {
        rng_seed(&s->dropout, o->seed, RNG_DROPOUT, (uint64_t)epoch, (uint64_t)comm->rank);
        rng_seed(&s->augment, o->seed, RNG_AUGMENT, (uint64_t)epoch, (uint64_t)comm->rank);
        s->partial_loss = 0;
        s->partial_correct = 0;
    }
    struct profile *p = s->profile;
    p->epoch = epoch;
    for (long step = first_step; step < steps; step++) {
        p->step = step;
        double clock = profile_now(p);
        /* The largest signal number any rank received: every rank learns which signal it was,
         * also when it reached only one rank. */
        int stop = stop_requested(), any_stop = 0;
        CHECK_MPI(MPI_Allreduce(&stop, &any_stop, 1, MPI_INT, MPI_MAX, comm->world),
                  "rank %d: MPI failed while agreeing on a stop", comm->rank);
        clock = profile_end(p, PHASE_STOP_CHECK, CATEGORY_STEP, clock);
        if (any_stop) {
            s->stop_signal = any_stop;
            *stopped_at = step;
            *epoch_seconds = MPI_Wtime() - start;
            return EPOCH_STOPPED;
        }
        if (fault_strikes(&s->fault, FAULT_EXIT, comm->rank, epoch, step + 1))
            _exit(DP_EXIT_ERROR); /* a rank that dies without a word */
        size_t first;
        int n;
        train_local_share(count, steps, step, &first, &n);
        long global = 0;
        for (int rr = 0; rr < comm->size; rr++) {
            size_t f_r;
            int n_r;
            train_local_share(d->rank_counts[rr], steps, step, &f_r, &n_r);
            global += n_r;
        }
        features_gather(&s->train, s->order + first, n, model_input(s->model), s->batch_labels,
                        o->augment, &s->augment);
        double loss_before = s->partial_loss;
        if (fault_strikes(&s->fault, FAULT_NAN, comm->rank, epoch, step + 1))
            model_input(s->model)[0] = NAN;
        profile_end(p, PHASE_DATA, CATEGORY_STEP, clock);
        if (train_batch_gradient(comm, s->model, s->batch_labels, n, global, (float)o->label_smoothing,
                                 &s->dropout, o->bucket_mb > 0 ? &s->reducer : NULL, &s->partial_loss,
                                 &s->partial_correct, err) != 0)
            comm_abort(comm, err); /* a collective failed: the ranks cannot meet again */
        clock = profile_now(p);
        /* The reduced gradient is identical on every rank, so every rank sees a NaN together. */
        if (!all_finite(s->model->grads, s->model->param_count)) {
            name_bad_rank(comm, !isfinite(s->partial_loss - loss_before), epoch, step, err);
            return EPOCH_FAILED;
        }
        double lr = schedule_lr(schedule, (long)(epoch - 1) * steps + step);
        optim_step(s->optimizer, s->model->params, s->model->grads, s->model->ranges,
                   s->model->range_count, lr);
        clock = profile_end(p, PHASE_OPTIMIZER, CATEGORY_STEP, clock);
        if (o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < steps) {
            CHECK_DP(save_checkpoint(comm, o, d, s, r, epoch - 1, step + 1, MPI_Wtime() - start, err));
            profile_end(p, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
        }
    }
    *epoch_seconds = MPI_Wtime() - start;
    return EPOCH_DONE;
fail:
    return EPOCH_FAILED;
}

static void print_epoch(const struct epoch_record *e, int epochs, int has_validation)
{
    printf("epoch %3d/%d  loss %.4f  train %.2f%%", (int)e->epoch, epochs, e->train_loss,
           100 * e->train_accuracy);
    if (has_validation)
        printf("  val %.2f%%", 100 * e->val_accuracy);
    printf("  test %.2f%%  %.1f s  %.0f samples/s\n", 100 * e->test_accuracy, e->seconds,
           e->samples_per_second);
    fflush(stdout);
}

/* Predictions of the final model (the best validation epoch's, with --validation): every rank
 * predicts its block of the test set and rank 0 gathers them. */
static int final_evaluation(const struct comm *comm, const struct data *d, struct run_state *s,
                            struct run_result *r, char *err)
{
    size_t mine = s->test.count, total = 0;
    uint8_t *predictions = malloc(mine + 1);
    float *confidence = malloc((mine + 1) * sizeof(float));
    int *counts = NULL, *displs = NULL, ok = predictions && confidence;
    if (comm->rank == 0) {
        total = d->test.count;
        r->test_count = total;
        r->labels = malloc(total + 1);
        r->predictions = malloc(total + 1);
        r->confidence = malloc((total + 1) * sizeof(float));
        counts = malloc(sizeof(int) * (size_t)comm->size);
        displs = malloc(sizeof(int) * (size_t)comm->size);
        ok = ok && r->labels && r->predictions && r->confidence && counts && displs;
    }
    if (!ok)
        err_set(err, "cannot allocate predictions");
    CHECK_DP(comm_agree(comm->world, ok, err));
    /* rank 0 kept the best parameters; everyone evaluates with them */
    if (r->has_validation && r->best_epoch > 0) {
        if (s->best_params)
            memcpy(s->model->params, s->best_params, s->model->param_count * sizeof(float));
        CHECK_DP(comm_bcast_floats(comm, s->model->params, s->model->param_count, 0, err));
    }
    struct evaluation e;
    CHECK_DP(evaluate(comm, s->model, &s->test, s->eval_indices, s->batch_labels, predictions, confidence,
                      s->mirror_logits, &e, err));
    if (comm->rank == 0)
        block_counts(total, comm->size, 1, counts, displs);
    CHECK_MPI(MPI_Gatherv(predictions, (int)mine, MPI_UINT8_T, r->predictions, counts, displs, MPI_UINT8_T, 0,
                          comm->world), "cannot gather the predictions");
    CHECK_MPI(MPI_Gatherv(confidence, (int)mine, MPI_FLOAT, r->confidence, counts, displs, MPI_FLOAT, 0,
                          comm->world), "cannot gather the predictions");
    r->test_accuracy = e.accuracy;
    r->test_loss = e.loss;
    if (comm->rank == 0) {
        memcpy(r->labels, d->test.labels, total);
        metrics_compute(r->labels, r->predictions, total, DATASET_CLASSES, &r->metrics);
    }
    free(predictions);
    free(confidence);
    free(counts);
    free(displs);
    return 0;
fail:
    free(predictions);
    free(confidence);
    free(counts);
    free(displs);
    return -1;
}

static void describe_result(struct run_result *r, const struct options *o, int ranks, const char *name, int pca_k)
{
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->model, sizeof r->model, "%s", o->model);
    snprintf(r->optimizer, sizeof r->optimizer, "%s", o->optimizer);
    r->pca_components = pca_k;
    r->epochs = o->epochs;
    r->global_batch = o->batch;
    r->ranks = ranks;
    r->lr = o->lr;
    r->seed = o->seed;
    r->has_validation = o->validation > 0;
}

/* After each epoch, on every rank: test and validation accuracy (each rank its share),
 * best-epoch bookkeeping (the parameters kept on rank 0), and rank 0 prints the line. */
static int close_epoch(const struct comm *comm, const struct options *o, struct run_state *s,
                       struct run_result *r, struct epoch_record *e, int epoch, char *err)
{
    struct evaluation test, val;
    CHECK_DP(evaluate(comm, s->model, &s->test, s->eval_indices, s->batch_labels, NULL, NULL, s->mirror_logits,
                      &test, err));
    e->test_loss = test.loss;
    e->test_accuracy = test.accuracy;
    if (r->has_validation) {
        CHECK_DP(evaluate(comm, s->model, &s->validation, s->eval_indices, s->batch_labels, NULL, NULL,
                          s->mirror_logits, &val, err));
        e->val_loss = val.loss;
        e->val_accuracy = val.accuracy;
        /* Model selection looks at validation only, never at the test set. */
        if (val.accuracy > s->best_val) {
            s->best_val = val.accuracy;
            r->best_epoch = epoch;
            if (s->best_params)
                memcpy(s->best_params, s->model->params, s->model->param_count * sizeof(float));
        }
    }
    if (!o->quiet && comm->rank == 0)
        print_epoch(e, o->epochs, r->has_validation);
    return 0;
fail:
    return -1;
}

static void announce_run(const struct comm *comm, const struct options *o, const struct data *d,
                         const struct run_result *r, const struct run_state *s)
{
    if (comm->rank != 0)
        return;
    printf("run %s: model %s (%zu parameters), inputs %s", r->name, o->model, r->parameters,
           r->pca_components ? "PCA" : "raw pixels");
    if (r->pca_components)
        printf(" %d components keeping %.2f%% of the variance (fit %.2f s)", r->pca_components,
               100 * pca_variance_kept(&r->pca), r->pca.fit_seconds);
    int threads = openblas_get_num_threads();
    printf(", %d ranks (%d BLAS thread%s each), global batch %d, %zu training samples\n", comm->size, threads,
           threads == 1 ? "" : "s", o->batch, d->train_total);
    if (s->start_epoch == o->epochs)
        printf("%s holds the finished run (%d of %d epochs): nothing to train; evaluating it and writing its "
               "results\n", o->checkpoint, s->start_epoch, o->epochs);
    else if (s->start_epoch > 0 || s->start_step > 0)
        printf("resumed from %s at epoch %d, step %ld\n", o->checkpoint, s->start_epoch + 1, s->start_step + 1);
}

/* Where the run's time went, from the profile; collective (peak memory is the largest rank's). */
static int print_profile(const struct comm *comm, const struct run_state *s, const struct run_result *r,
                         char *err)
{
    static const char *const step_phases[] = {PHASE_STOP_CHECK, PHASE_DATA, PHASE_FORWARD, PHASE_BACKWARD,
                                              PHASE_ALLREDUCE_WAIT, PHASE_OPTIMIZER};
    static const char *const products[] = {"dense forward", "dense backward", "conv forward", "conv backward"};
    const struct profile *p = s->profile;
    struct rusage usage;
    CHECK_SYS(getrusage(RUSAGE_SELF, &usage), "getrusage failed");
    long peak_kb = usage.ru_maxrss, largest_kb = 0;
    CHECK_MPI(MPI_Reduce(&peak_kb, &largest_kb, 1, MPI_LONG, MPI_MAX, 0, comm->world), "profile reduce failed");
    if (comm->rank != 0)
        return 0;
    double step_seconds = 0, product_seconds = 0, samples = 0;
    for (size_t i = 0; i < sizeof step_phases / sizeof *step_phases; i++)
        step_seconds += profile_seconds(p, step_phases[i]);
    for (size_t i = 0; i < sizeof products / sizeof *products; i++)
        product_seconds += profile_seconds(p, products[i]);
    long steps = profile_count(p, PHASE_OPTIMIZER);
    for (int e = 0; e < r->history_length; e++)
        samples += r->history[e].samples_per_second * r->history[e].seconds;
    if (steps == 0 || step_seconds <= 0)
        return 0;
    printf("profile (rank 0): %.3f ms per step:", 1e3 * step_seconds / (double)steps);
    for (size_t i = 0; i < sizeof step_phases / sizeof *step_phases; i++)
        printf("%s %s %.1f%%", i ? "," : "", step_phases[i],
               100 * profile_seconds(p, step_phases[i]) / step_seconds);
    printf("; matrix-product layers (dense, conv) %.1f%% of the step\n", 100 * product_seconds / step_seconds);
    double flops = model_training_flops(s->model);
    printf("profile: %.2f MFLOP per training sample, %.1f GFLOP/s over all ranks; evaluation %.1f s, "
           "checkpoints %.1f s; peak memory %.0f MB per rank (largest)\n",
           1e-6 * flops, r->train_seconds > 0 ? 1e-9 * flops * samples / r->train_seconds : 0.0,
           profile_seconds(p, PHASE_EVALUATION), profile_seconds(p, PHASE_CHECKPOINT), (double)largest_kb / 1024.0);
    fflush(stdout);
    return 0;
fail:
    return -1;
}

static int run_training(const struct comm *comm, const struct options *o, const struct data *d,
                        int pca_k, const char *name, struct checkpoint *resume, struct profile *profile,
                        struct run_result *r, char *err)
{
    struct run_state s;
    memset(&s, 0, sizeof s);
    memset(r, 0, sizeof *r);
    s.profile = profile;
    profile_reset_totals(profile);
    describe_result(r, o, comm->size, name, pca_k);
    int ok = fault_from_environment(&s.fault, err) == 0;
    if (ok && !(r->history = calloc((size_t)o->epochs, sizeof *r->history)))
        ok = 0, err_set(err, "cannot allocate the history");
    CHECK_DP(comm_agree(comm->world, ok, err));
    CHECK_DP(prepare_run(comm, o, d, pca_k, resume, &s, r, err));
    r->parameters = s.model->param_count;
    announce_run(comm, o, d, r, &s);
    long steps = steps_per_epoch(d, o->batch);
    struct schedule schedule = {
        .kind = strcmp(o->schedule, "step") == 0       ? SCHEDULE_STEP
                : strcmp(o->schedule, "constant") == 0 ? SCHEDULE_CONSTANT
                                                       : SCHEDULE_COSINE,
        .peak_lr = o->lr,
        .warmup_steps = (long)llround(o->warmup * (double)steps),
        .total_steps = (long)o->epochs * steps,
    };
    for (int epoch = s.start_epoch + 1; epoch <= o->epochs; epoch++) {
        long first_step = epoch == s.start_epoch + 1 ? s.start_step : 0, stopped_at = 0;
        double seconds = epoch == s.start_epoch + 1 ? s.resumed_epoch_seconds : 0;
        double before = seconds;
        enum epoch_outcome outcome = train_epoch(comm, o, d, &s, r, &schedule, epoch, first_step,
                                                 &seconds, &stopped_at, err);
        if (outcome == EPOCH_FAILED)
            goto fail;
        r->train_seconds += seconds - before;
        if (outcome == EPOCH_STOPPED) {
            if (o->checkpoint)
                CHECK_DP(save_checkpoint(comm, o, d, &s, r, epoch - 1, stopped_at, seconds, err));
            if (comm->rank == 0)
                fprintf(stderr, "dptrain: stopped by signal %d at epoch %d, step %ld; %s%s\n",
                        s.stop_signal, epoch, stopped_at + 1,
                        o->checkpoint ? "checkpoint written to " : "no --checkpoint given, nothing saved",
                        o->checkpoint ? o->checkpoint : "");
            run_state_free(&s);
            return DP_EXIT_STOPPED;
        }
        double clock = profile_now(profile);
        double sums[3] = {s.partial_loss, (double)s.partial_correct, (double)s.train.count};
        CHECK_DP(comm_allreduce_doubles(comm, sums, 3, err));
        CHECK_DP(average_buffers(comm, s.model, err));
        struct epoch_record *e = &r->history[epoch - 1];
        e->epoch = epoch;
        e->train_loss = sums[0] / sums[2];
        e->train_accuracy = sums[1] / sums[2];
        e->seconds = seconds;
        e->samples_per_second = sums[2] / seconds;
        r->history_length = epoch;
        CHECK_DP(close_epoch(comm, o, &s, r, e, epoch, err));
        clock = profile_end(profile, PHASE_EVALUATION, CATEGORY_EPOCH, clock);
        if (o->checkpoint) {
            CHECK_DP(save_checkpoint(comm, o, d, &s, r, epoch, 0, 0, err));
            profile_end(profile, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
        }
    }
    CHECK_DP(final_evaluation(comm, d, &s, r, err));
    if (!o->quiet)
        CHECK_DP(print_profile(comm, &s, r, err));
    run_state_free(&s);
    return DP_EXIT_OK;
fail:
    run_state_free(&s);
    return DP_EXIT_ERROR;
}

/* ---- commands ------------------------------------------------------------------------ */

static void print_summary(const struct run_result *r)
{
    printf("\nrun %s: test accuracy %.2f%%, test loss %.4f, %.1f s of training", r->name,
           100 * r->test_accuracy, r->test_loss, r->train_seconds);
    if (r->has_validation)
        printf(", parameters of epoch %d (best validation accuracy)", r->best_epoch);
    printf("\n\n");
    metrics_print_report(stdout, &r->metrics, dataset_class_names);
    printf("\n");
    metrics_print_confusion(stdout, &r->metrics, dataset_class_names);
    fflush(stdout);
}

static void print_comparison(const struct run_result *runs, int count)
{
    printf("\n%-8s %10s %9s %11s %9s %9s %10s %10s\n", "input", "components", "variance",
           "parameters", "test acc", "macro F1", "train s", "samples/s");
    for (int i = 0; i < count; i++) {
        const struct run_result *r = &runs[i];
        double kept = r->pca_components ? pca_variance_kept(&r->pca) : 1.0;
        double total_samples = 0;
        for (int e = 0; e < r->history_length; e++)
            total_samples += r->history[e].samples_per_second * r->history[e].seconds;
        printf("%-8s %10d %8.2f%% %11zu %8.2f%% %9.4f %10.1f %10.0f\n",
               r->pca_components ? "pca" : "raw", r->pca_components ? r->pca_components : 784,
               100 * kept, r->parameters, 100 * r->test_accuracy, r->metrics.macro_f1,
               r->train_seconds, total_samples / r->train_seconds);
    }
    fflush(stdout);
}

/* Every rank reads the checkpoint (a few MB) and checks it against the command line. */
static int load_resume(const struct comm *comm, const struct options *o, struct checkpoint *c, char *err)
{
    int ok = checkpoint_read(o->checkpoint, c, err) == 0;
    ok = ok && checkpoint_check_config(c, o, comm->size, o->checkpoint, err) == 0;
    if (ok && o->name && strcmp(o->name, c->name) != 0) {
        err_set(err, "--resume: %s holds run %s, this run is named %s", o->checkpoint, c->name, o->name);
        ok = 0;
    }
    if (comm_agree(comm->world, ok, err) != 0) {
        checkpoint_free(c);
        return -1;
    }
    return 0;
}

static void run_name(const struct options *o, int k, char *name, size_t size)
{
    if (o->name && o->command == CMD_TRAIN)
        snprintf(name, size, "%s", o->name);
    else if (k > 0)
        snprintf(name, size, "pca%d", k);
    else
        snprintf(name, size, "raw");
}

static int train_runs(const struct comm *comm, const struct options *o, struct data *d,
                      struct run_result *runs, int run_count, struct checkpoint *resume,
                      struct profile *profile, char *err)
{
    for (int i = 0; i < run_count; i++) {
        int k = o->command == CMD_COMPARE ? o->pca_list[i] : o->pca;
        char name[64];
        run_name(o, k, name, sizeof name);
        int status = run_training(comm, o, d, k, name, resume, profile, &runs[i], err);
        if (status != DP_EXIT_OK)
            return status;
        int ok = 1;
        if (comm->rank == 0) {
            print_summary(&runs[i]);
            /* Rewritten after every run, so a long comparison keeps what it has finished. */
            ok = results_write(o->out, o->command_line, comm->size, runs, i + 1, err) == 0;
            if (!ok && o->checkpoint) /* its last save holds the finished run */
                err_append_hint(err, "the trained state is kept in --checkpoint %s: write the results from it "
                                "with 'dptrain eval --checkpoint %s --out FILE'", o->checkpoint, o->checkpoint);
        }
        if (comm_agree(comm->world, ok, err) != 0)
            return DP_EXIT_ERROR;
    }
    if (comm->rank == 0) {
        if (o->command == CMD_COMPARE)
            print_comparison(runs, run_count);
        printf("\nresults written to %s\n", o->out);
    }
    return DP_EXIT_OK;
}

/* --threads, or by default: OPENBLAS_NUM_THREADS if the user set it, else this node's cores
 * shared among the ranks on it, and never more than the cores this rank is bound to (mpirun
 * binds each of a few ranks to one core). Collective. */
static int blas_threads(const struct comm *comm, int requested, char *err)
{
    MPI_Comm node = MPI_COMM_NULL;
    int node_ranks = 1;
    CHECK_MPI(MPI_Comm_split_type(comm->world, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &node),
              "rank %d: cannot find the ranks that share this node", comm->rank);
    CHECK_MPI(MPI_Comm_size(node, &node_ranks), "MPI_Comm_size failed");
    CHECK_MPI(MPI_Comm_free(&node), "MPI_Comm_free failed");
    if (requested > 0)
        return requested;
    const char *from_environment = getenv("OPENBLAS_NUM_THREADS");
    if (from_environment && atoi(from_environment) > 0)
        return atoi(from_environment);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores > node_ranks ? (int)(cores / node_ranks) : 1;
    cpu_set_t bound;
    if (sched_getaffinity(0, sizeof bound, &bound) == 0 && CPU_COUNT(&bound) < threads)
        threads = CPU_COUNT(&bound);
    return threads > 0 ? threads : 1;
fail:
    return -1;
}

/* Room for every event of the command: per step its phases and two per layer. Beyond the cap
 * (160 MB of events) the rest are counted as dropped rather than allocated per step. */
static size_t trace_capacity(const struct options *o, const struct data *d, int run_count)
{
    size_t steps = (size_t)steps_per_epoch(d, o->batch), per_step = 6 + 2 * MODEL_MAX_LAYERS;
    size_t events = (size_t)run_count * (size_t)o->epochs * (steps * per_step + 4) + 64;
    return events < (size_t)4 << 20 ? events : (size_t)4 << 20;
}

int train_command(const struct comm *comm, const struct options *o, char *err)
{
    struct data d;
    struct checkpoint resume;
    struct run_result *runs = NULL;
    int run_count = o->command == CMD_COMPARE ? o->pca_runs : 1, status = DP_EXIT_ERROR;
    struct profile profile;
    memset(&d, 0, sizeof d);
    memset(&resume, 0, sizeof resume);
    memset(&profile, 0, sizeof profile);
    int threads = blas_threads(comm, o->threads, err);
    if (threads < 0)
        return DP_EXIT_ERROR;
    openblas_set_num_threads(threads);
    if ((size_t)o->batch < (size_t)comm->size) {
        err_set(err, "--batch %d: the global batch must be at least the number of ranks (%d)", o->batch, comm->size);
        return DP_EXIT_USAGE;
    }
    if (stop_install() != 0) {
        err_set(err, "cannot install the SIGTERM/SIGUSR1 handlers");
        return DP_EXIT_ERROR;
    }
    CHECK_DP(check_paths(comm, o, err));
    if (o->resume)
        CHECK_DP(load_resume(comm, o, &resume, err));
    CHECK_DP(load_data(comm, o, &d, err));
    if (o->resume) /* every rank holds the same checkpoint and identity */
        CHECK_DP(checkpoint_check_data(&resume, &d.identity, o->data, o->checkpoint, err));
    int ok = (runs = calloc((size_t)run_count, sizeof *runs)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate results");
    CHECK_DP(comm_agree(comm->world, ok, err));
    CHECK_DP(profile_init(&profile, comm->world, o->trace ? trace_capacity(o, &d, run_count) : 0, err));
    status = train_runs(comm, o, &d, runs, run_count, o->resume ? &resume : NULL, &profile, err);
    if (o->trace && (status == DP_EXIT_OK || status == DP_EXIT_STOPPED)) {
        if (profile_write_trace(&profile, comm->world, o->trace, err) != 0)
            status = DP_EXIT_ERROR;
        else if (comm->rank == 0)
            printf("trace of %zu events per rank (rank 0) written to %s%s\n", profile.event_count, o->trace,
                   profile.dropped ? "; later events dropped (the trace holds 4 M per rank)" : "");
    }
fail:
    profile_free(&profile);
    if (runs)
        for (int i = 0; i < run_count; i++)
            run_result_free(&runs[i]);
    free(runs);
    checkpoint_free(&resume);
    data_free(&d);
    return status;
}

/* ---- eval ---------------------------------------------------------------------------- */

/* The checkpoint's settings as options, so the model and inputs are built as in training. */
static void options_from_checkpoint(const struct checkpoint *c, const struct options *given, struct options *o)
{
    *o = *given;
    o->model = c->model;
    o->pca = c->pca_components;
    o->optimizer = c->optimizer;
    o->batch = c->global_batch;
    o->epochs = c->epochs;
    o->lr = c->lr;
    o->seed = c->seed;
    o->validation = 0; /* eval uses the whole training set only for the input normalisation */
    if (given->tta < 0) /* neither --tta nor --no-tta: evaluate as the training run did */
        o->tta = c->tta;
}

int eval_command(const struct comm *comm, const struct options *given, char *err)
{
    struct checkpoint c;
    struct options o;
    struct data d;
    struct run_state s;
    struct run_result r;
    int status = DP_EXIT_ERROR;
    memset(&c, 0, sizeof c);
    memset(&d, 0, sizeof d);
    memset(&s, 0, sizeof s);
    memset(&r, 0, sizeof r);
    int threads = blas_threads(comm, given->threads, err);
    if (threads < 0)
        return DP_EXIT_ERROR;
    openblas_set_num_threads(threads);
    CHECK_DP(check_paths(comm, given, err));
    int ok = checkpoint_read(given->checkpoint, &c, err) == 0;
    CHECK_DP(comm_agree(comm->world, ok, err));
    options_from_checkpoint(&c, given, &o);
    if (o.tta && c.pca_components > 0) { /* every rank read the same checkpoint */
        err_set(err, "--tta needs raw pixel inputs: %s was trained on %d principal components",
                given->checkpoint, c.pca_components);
        goto fail;
    }
    CHECK_DP(load_data(comm, &o, &d, err));
    describe_result(&r, &o, comm->size, c.name, c.pca_components);
    r.has_validation = 0;
    ok = (r.history = calloc((size_t)c.history_length + 1, sizeof *r.history)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the history");
    CHECK_DP(comm_agree(comm->world, ok, err));
    if (c.pca_components > 0) {
        r.pca = c.pca;
        memset(&c.pca, 0, sizeof c.pca);
    }
    /* The saved normalisation, not this data file's: the model saw those inputs. */
    d.norm = c.norm;
    CHECK_DP(allocate_run(comm, &o, &d, c.pca_components > 0 ? &r.pca : NULL, &s, err));
    CHECK_DP(checkpoint_check_position(&c, 0, s.model->param_count, s.model->buffer_count, given->checkpoint, err));
    r.parameters = s.model->param_count;
    memcpy(s.model->params, c.best_params ? c.best_params : c.params, r.parameters * sizeof(float));
    if (s.model->buffer_count) /* averaged over the ranks at every epoch end: row 0 is theirs */
        memcpy(s.model->buffers, c.buffers, s.model->buffer_count * sizeof(float));
    memcpy(r.history, c.history, (size_t)c.history_length * sizeof *r.history);
    r.history_length = c.history_length;
    r.train_seconds = c.train_seconds;
    CHECK_DP(final_evaluation(comm, &d, &s, &r, err));
    ok = 1;
    if (comm->rank == 0) {
        /* Say exactly which parameters were evaluated: a checkpoint may be mid-epoch, and with
         * --validation it holds the best epoch's parameters beside the latest. */
        printf("evaluated %s: run %s saved after %d of %d epochs", given->checkpoint, c.name, c.epoch, c.epochs);
        if (c.step > 0)
            printf(" and %ld steps of epoch %d", c.step, c.epoch + 1);
        if (c.best_params)
            printf("; parameters of epoch %d, the best on validation\n", c.best_epoch);
        else
            printf("; its latest parameters\n");
        print_summary(&r);
        ok = results_write(o.out, o.command_line, comm->size, &r, 1, err) == 0;
        if (ok)
            printf("\nresults written to %s\n", o.out);
    }
    CHECK_DP(comm_agree(comm->world, ok, err));
    status = DP_EXIT_OK;
fail:
    run_state_free(&s);
    run_result_free(&r);
    checkpoint_free(&c);
    data_free(&d);
    return status;
}
