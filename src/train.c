#include "dptrain/train.h"

#include "dptrain/check.h"
#include "dptrain/features.h"
#include "dptrain/h5io.h"
#include "dptrain/layers.h"
#include "dptrain/metrics.h"
#include "dptrain/optim.h"
#include "dptrain/pca.h"
#include "dptrain/results.h"
#include "dptrain/tensor.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EVAL_BATCH 1000

/* Everything loaded once and shared by all runs of a command. */
struct data {
    struct split train;        /* this rank's training samples (validation rows removed) */
    struct split test;         /* rank 0 only */
    struct split validation;   /* rank 0 only */
    size_t train_total;        /* over all ranks, after the validation hold-out */
    size_t *rank_counts;       /* training samples per rank */
    struct normaliser norm;
};

/* ---- data ---------------------------------------------------------------------------- */

static void data_free(struct data *d)
{
    split_free(&d->train);
    split_free(&d->test);
    split_free(&d->validation);
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

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Checks that do not need the data: fail before loading anything. */
static int check_output(const struct comm *comm, const struct options *o, char *err)
{
    int ok = 1;
    if (comm->rank == 0) {
        if (strcmp(o->out, "results/train.h5") == 0 || strcmp(o->out, "results/compare.h5") == 0)
            mkdir("results", 0777); /* the default folder; an error shows in the check below */
        ok = h5io_check_writable(o->out, "--out", err) == 0;
        if (ok && same_file(o->out, o->data)) {
            err_set(err, "--out %s: is the data file --data %s", o->out, o->data);
            ok = 0;
        }
    }
    return comm_agree(comm->world, ok, err);
}

static int load_data(const struct comm *comm, const struct options *o, struct data *d, char *err)
{
    memset(d, 0, sizeof *d);
    size_t total = 0;
    CHECK_DP(dataset_read(comm->world, o->data, 0, &d->train, &d->test, &total, err));
    if (o->validation > 0) {
        if ((size_t)o->validation + (size_t)comm->size > total) {
            err_set(err, "--validation %d leaves fewer training samples than ranks (%zu samples)",
                    o->validation, total);
            goto fail;
        }
        CHECK_DP(hold_out_validation(comm, d, total, o->validation, o->seed, err));
    }
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
                         double *loss_sum, long *correct, char *err)
{
    if (n > 0) {
        const float *logits = model_forward(model, n, 1, dropout_rng);
        *loss_sum += softmax_cross_entropy(logits, labels, n, model->classes, smoothing,
                                           1.0f / (float)global_batch, model_grad_logits(model),
                                           correct, NULL, NULL);
        model_backward(model, n);
    } else {
        /* A rank with no samples in this step still contributes (zeros) to the sum. */
        memset(model->grads, 0, model->param_count * sizeof(float));
    }
    return comm_allreduce_floats(comm, model->grads, model->param_count, err);
}

/* ---- evaluation ---------------------------------------------------------------------- */

struct evaluation {
    double loss, accuracy;
};

/* Loss and accuracy of the model on all of f (rank 0's sets); predictions and confidences are
 * stored if asked. */
static struct evaluation evaluate(struct model *model, const struct features *f, uint32_t *indices,
                                  uint8_t *label_buffer, uint8_t *predictions, float *confidence)
{
    double loss = 0;
    long correct = 0;
    for (size_t start = 0; start < f->count; start += EVAL_BATCH) {
        int n = (int)(f->count - start < EVAL_BATCH ? f->count - start : EVAL_BATCH);
        for (int i = 0; i < n; i++)
            indices[i] = (uint32_t)(start + (size_t)i);
        features_gather(f, indices, n, model_input(model), label_buffer, 0, NULL);
        const float *logits = model_forward(model, n, 0, NULL);
        loss += softmax_cross_entropy(logits, label_buffer, n, model->classes, 0.0f, 0.0f, NULL,
                                      &correct, predictions ? predictions + start : NULL,
                                      confidence ? confidence + start : NULL);
    }
    struct evaluation e = {0, 0};
    if (f->count > 0) {
        e.loss = loss / (double)f->count;
        e.accuracy = (double)correct / (double)f->count;
    }
    return e;
}

/* ---- one run ------------------------------------------------------------------------- */

struct run_state {
    struct features train, test, validation;
    struct model *model;
    struct optimizer *optimizer;
    uint32_t *order;          /* shuffled local indices */
    uint32_t *eval_indices;
    uint8_t *batch_labels;
    float *best_params;       /* rank 0, with --validation */
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

static int prepare_run(const struct comm *comm, const struct options *o, const struct data *d,
                       int pca_k, struct run_state *s, struct run_result *result, char *err)
{
    int ok = 1;
    const struct pca *pca = NULL;
    if (pca_k > 0) {
        CHECK_DP(pca_fit(comm, d->train.images, d->train.count, DATASET_PIXELS, pca_k, &result->pca, err));
        pca = &result->pca;
    }
    long steps = steps_per_epoch(d, o->batch);
    int capacity = largest_share(d, comm->size, steps);
    if (comm->rank == 0 && capacity < EVAL_BATCH)
        capacity = EVAL_BATCH;
    int input = pca ? pca_k : DATASET_PIXELS;
    ok = (s->model = model_create(o->model, input, DATASET_CLASSES, capacity, (float)o->dropout, err)) != NULL;
    ok = ok && features_create(&s->train, d->train.images, d->train.labels, d->train.count, &d->norm, pca, err) == 0;
    ok = ok && features_create(&s->test, d->test.images, d->test.labels, d->test.count, &d->norm, pca, err) == 0;
    ok = ok && features_create(&s->validation, d->validation.images, d->validation.labels,
                               d->validation.count, &d->norm, pca, err) == 0;
    enum optimizer_kind kind = strcmp(o->optimizer, "sgd") == 0 ? OPT_SGD : OPT_ADAM;
    ok = ok && (s->optimizer = optim_create(kind, s->model->param_count, o->momentum, o->weight_decay, err));
    if (ok && !(s->order = malloc((d->train.count + 1) * sizeof(uint32_t))))
        ok = 0, err_set(err, "cannot allocate the shuffle order");
    if (ok && !(s->eval_indices = malloc(EVAL_BATCH * sizeof(uint32_t))))
        ok = 0, err_set(err, "cannot allocate evaluation indices");
    if (ok && !(s->batch_labels = malloc((size_t)capacity + EVAL_BATCH)))
        ok = 0, err_set(err, "cannot allocate batch labels");
    if (ok && comm->rank == 0 && o->validation > 0 && !(s->best_params = tensor_alloc(s->model->param_count)))
        ok = 0, err_set(err, "cannot allocate the best parameters");
    CHECK_DP(comm_agree(comm->world, ok, err));
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

struct epoch_totals {
    double loss_sum, correct, samples;
};

static int train_epoch(const struct comm *comm, const struct options *o, const struct data *d,
                       struct run_state *s, const struct schedule *schedule, int epoch,
                       struct epoch_totals *totals, char *err)
{
    long steps = steps_per_epoch(d, o->batch);
    size_t count = s->train.count;
    for (size_t i = 0; i < count; i++)
        s->order[i] = (uint32_t)i;
    struct rng shuffle, dropout, augment;
    rng_seed(&shuffle, o->seed, RNG_SHUFFLE, (uint64_t)epoch, (uint64_t)comm->rank);
    rng_seed(&dropout, o->seed, RNG_DROPOUT, (uint64_t)epoch, (uint64_t)comm->rank);
    rng_seed(&augment, o->seed, RNG_AUGMENT, (uint64_t)epoch, (uint64_t)comm->rank);
    rng_shuffle(&shuffle, s->order, count);
    double loss_sum = 0;
    long correct = 0;
    for (long step = 0; step < steps; step++) {
        size_t first;
        int n;
        train_local_share(count, steps, step, &first, &n);
        long global = 0;
        for (int r = 0; r < comm->size; r++) {
            size_t f_r;
            int n_r;
            train_local_share(d->rank_counts[r], steps, step, &f_r, &n_r);
            global += n_r;
        }
        features_gather(&s->train, s->order + first, n, model_input(s->model), s->batch_labels,
                        o->augment, &augment);
        CHECK_DP(train_batch_gradient(comm, s->model, s->batch_labels, n, global,
                                      (float)o->label_smoothing, &dropout, &loss_sum, &correct, err));
        /* The reduced gradient is identical on every rank, so every rank sees a NaN together. */
        if (!all_finite(s->model->grads, s->model->param_count))
            FAIL("the gradient became NaN or Inf at epoch %d, step %ld (try a lower --lr)", epoch, step + 1);
        double lr = schedule_lr(schedule, (long)(epoch - 1) * steps + step);
        optim_step(s->optimizer, s->model->params, s->model->grads, s->model->ranges,
                   s->model->range_count, lr);
    }
    double sums[3] = {loss_sum, (double)correct, (double)count};
    CHECK_DP(comm_allreduce_doubles(comm, sums, 3, err));
    totals->loss_sum = sums[0];
    totals->correct = sums[1];
    totals->samples = sums[2];
    return 0;
fail:
    return -1;
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

static int finish_run(const struct comm *comm, const struct options *o, struct run_state *s,
                      struct run_result *r, char *err)
{
    int ok = 1;
    if (comm->rank == 0) {
        size_t n = s->test.count;
        r->test_count = n;
        r->labels = malloc(n + 1);
        r->predictions = malloc(n + 1);
        r->confidence = malloc((n + 1) * sizeof(float));
        if (!r->labels || !r->predictions || !r->confidence) {
            err_set(err, "cannot allocate predictions");
            ok = 0;
        } else {
            if (s->best_params)
                memcpy(s->model->params, s->best_params, s->model->param_count * sizeof(float));
            memcpy(r->labels, s->test.labels, n);
            struct evaluation e = evaluate(s->model, &s->test, s->eval_indices, s->batch_labels,
                                           r->predictions, r->confidence);
            r->test_accuracy = e.accuracy;
            r->test_loss = e.loss;
            metrics_compute(r->labels, r->predictions, n, DATASET_CLASSES, &r->metrics);
        }
    }
    (void)o;
    return comm_agree(comm->world, ok, err);
}

static int run_training(const struct comm *comm, const struct options *o, const struct data *d,
                        int pca_k, const char *name, struct run_result *r, char *err)
{
    struct run_state s;
    memset(&s, 0, sizeof s);
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->model, sizeof r->model, "%s", o->model);
    snprintf(r->optimizer, sizeof r->optimizer, "%s", o->optimizer);
    r->pca_components = pca_k;
    r->epochs = o->epochs;
    r->global_batch = o->batch;
    r->ranks = comm->size;
    r->lr = o->lr;
    r->seed = o->seed;
    r->has_validation = o->validation > 0;
    int ok = (r->history = calloc((size_t)o->epochs, sizeof *r->history)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the history");
    CHECK_DP(comm_agree(comm->world, ok, err));
    CHECK_DP(prepare_run(comm, o, d, pca_k, &s, r, err));
    r->parameters = s.model->param_count;
    if (comm->rank == 0) {
        printf("run %s: model %s (%zu parameters), inputs %s", name, o->model, r->parameters,
               pca_k ? "PCA" : "raw pixels");
        if (pca_k)
            printf(" %d components keeping %.2f%% of the variance (fit %.2f s)", pca_k,
                   100 * pca_variance_kept(&r->pca), r->pca.fit_seconds);
        printf(", %d ranks, global batch %d, %zu training samples\n", comm->size, o->batch, d->train_total);
    }
    long steps = steps_per_epoch(d, o->batch);
    struct schedule schedule = {
        .kind = strcmp(o->schedule, "step") == 0       ? SCHEDULE_STEP
                : strcmp(o->schedule, "constant") == 0 ? SCHEDULE_CONSTANT
                                                       : SCHEDULE_COSINE,
        .peak_lr = o->lr,
        .warmup_steps = (long)llround(o->warmup * (double)steps),
        .total_steps = (long)o->epochs * steps,
    };
    double best_val = -1;
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        struct epoch_totals totals;
        double start = MPI_Wtime();
        CHECK_DP(train_epoch(comm, o, d, &s, &schedule, epoch, &totals, err));
        double seconds = MPI_Wtime() - start;
        struct epoch_record *e = &r->history[epoch - 1];
        e->epoch = epoch;
        e->train_loss = totals.loss_sum / totals.samples;
        e->train_accuracy = totals.correct / totals.samples;
        e->seconds = seconds;
        e->samples_per_second = totals.samples / seconds;
        r->train_seconds += seconds;
        r->history_length = epoch;
        if (comm->rank == 0) {
            struct evaluation test = evaluate(s.model, &s.test, s.eval_indices, s.batch_labels, NULL, NULL);
            e->test_loss = test.loss;
            e->test_accuracy = test.accuracy;
            if (r->has_validation) {
                struct evaluation val = evaluate(s.model, &s.validation, s.eval_indices, s.batch_labels, NULL, NULL);
                e->val_loss = val.loss;
                e->val_accuracy = val.accuracy;
                /* Model selection looks at validation only, never at the test set. */
                if (val.accuracy > best_val) {
                    best_val = val.accuracy;
                    r->best_epoch = epoch;
                    memcpy(s.best_params, s.model->params, s.model->param_count * sizeof(float));
                }
            }
            if (!o->quiet)
                print_epoch(e, o->epochs, r->has_validation);
        }
    }
    CHECK_DP(finish_run(comm, o, &s, r, err));
    run_state_free(&s);
    return 0;
fail:
    run_state_free(&s);
    return -1;
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

int train_command(const struct comm *comm, const struct options *o, char *err)
{
    struct data d;
    struct run_result *runs = NULL;
    int run_count = o->command == CMD_COMPARE ? o->pca_runs : 1, done = 0;
    memset(&d, 0, sizeof d);
    openblas_set_num_threads(o->threads);
    if ((size_t)o->batch < (size_t)comm->size) {
        err_set(err, "--batch %d: the global batch must be at least the number of ranks (%d)", o->batch, comm->size);
        return DP_EXIT_USAGE;
    }
    CHECK_DP(check_output(comm, o, err));
    CHECK_DP(load_data(comm, o, &d, err));
    int ok = (runs = calloc((size_t)run_count, sizeof *runs)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate results");
    CHECK_DP(comm_agree(comm->world, ok, err));
    for (int i = 0; i < run_count; i++) {
        int k = o->command == CMD_COMPARE ? o->pca_list[i] : o->pca;
        char name[64];
        if (o->name && o->command == CMD_TRAIN)
            snprintf(name, sizeof name, "%s", o->name);
        else if (k > 0)
            snprintf(name, sizeof name, "pca%d", k);
        else
            snprintf(name, sizeof name, "raw");
        CHECK_DP(run_training(comm, o, &d, k, name, &runs[i], err));
        done = i + 1;
        ok = 1;
        if (comm->rank == 0) {
            print_summary(&runs[i]);
            /* Rewritten after every run, so a long comparison keeps what it has finished. */
            ok = results_write(o->out, o->command_line, comm->size, runs, done, err) == 0;
        }
        CHECK_DP(comm_agree(comm->world, ok, err));
    }
    if (comm->rank == 0) {
        if (o->command == CMD_COMPARE)
            print_comparison(runs, done);
        printf("\nresults written to %s\n", o->out);
    }
    for (int i = 0; i < run_count; i++)
        run_result_free(&runs[i]);
    free(runs);
    data_free(&d);
    return DP_EXIT_OK;
fail:
    if (runs)
        for (int i = 0; i < run_count; i++)
            run_result_free(&runs[i]);
    free(runs);
    data_free(&d);
    return DP_EXIT_ERROR;
}
