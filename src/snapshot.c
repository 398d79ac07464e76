#include "dptrain/snapshot.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every rank's streams, sums and statistics, gathered on rank 0. */
struct gathered {
    struct rng *dropout, *augment;
    double *losses;
    int64_t *corrects;
    float *buffers;
    float *residuals; /* with --compress bf16 */
};

static void gathered_free(struct gathered *g)
{
    free(g->dropout);
    free(g->augment);
    free(g->losses);
    free(g->corrects);
    free(g->buffers);
    free(g->residuals);
}

static int gather_ranks(const struct run *run, struct gathered *g, char *err)
{
    const struct comm *comm = run->comm;
    size_t ranks = (size_t)comm->size, nb = run->model->buffer_count;
    int64_t correct = run->partial_correct;
    int ok = 1;
    if (comm->rank == 0)
        ok = (g->dropout = malloc(sizeof *g->dropout * ranks)) && (g->augment = malloc(sizeof *g->augment * ranks)) &&
             (g->losses = malloc(sizeof(double) * ranks)) && (g->corrects = malloc(sizeof(int64_t) * ranks)) &&
             (g->buffers = malloc(sizeof(float) * (nb * ranks + 1)));
    const struct reducer *red = &run->reducer;
    if (comm->rank == 0 && ok && red->bf16)
        ok = (g->residuals = malloc(sizeof(float) * red->count * ranks)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate checkpoint buffers");
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_gather_items(comm, &run->dropout, 1, sizeof run->dropout, g->dropout, err));
    CHECK_DP(comm_gather_items(comm, &run->augment, 1, sizeof run->augment, g->augment, err));
    CHECK_DP(comm_gather_items(comm, &run->partial_loss, 1, sizeof(double), g->losses, err));
    CHECK_DP(comm_gather_items(comm, &correct, 1, sizeof correct, g->corrects, err));
    CHECK_DP(comm_gather_items(comm, run->model->buffers, nb, sizeof(float), g->buffers, err));
    if (red->bf16)
        CHECK_DP(comm_gather_items(comm, red->residual, red->count, sizeof(float), g->residuals, err));
    return 0;
fail:
    return -1;
}

static void describe(const struct run *run, const struct gathered *g, int epochs_done, long step,
                     double epoch_seconds, struct checkpoint *c)
{
    const struct config *o = run->o;
    const struct run_result *r = run->r;
    *c = (struct checkpoint){
        .pca_components = r->pca_components, .global_batch = o->batch, .ranks = run->comm->size,
        .epochs = o->epochs, .validation = o->validation, .augment = o->augment, .tta = o->tta, .seed = o->seed,
        .lr = o->lr, .momentum = o->momentum, .weight_decay = o->weight_decay,
        .warmup = o->warmup, .dropout = o->dropout, .label_smoothing = o->label_smoothing,
        .epoch = epochs_done, .step = step, .train_seconds = r->train_seconds,
        .epoch_seconds = epoch_seconds, .param_count = run->model->param_count,
        .params = run->model->params, .opt_step = optim_steps(run->optimizer),
        .best_params = run->best_params, .best_val = run->best_val, .best_epoch = r->best_epoch,
        .norm_mean = run->d->norm.mean, .norm_std = run->d->norm.std, .data = run->d->identity, .pca = r->pca, .history_length = epochs_done,
        .history = r->history, .dropout_rng = g->dropout, .augment_rng = g->augment, .partial_loss = g->losses,
        .partial_correct = g->corrects, .buffer_count = run->model->buffer_count, .buffers = g->buffers,
        .residual = g->residuals,
    };
    const float *state[2];
    int arrays = optim_state(run->optimizer, state);
    c->opt_first = (float *)state[0];   /* written, never changed, by checkpoint_write */
    c->opt_second = arrays > 1 ? (float *)state[1] : NULL;
    snprintf(c->model, sizeof c->model, "%s", o->model);
    snprintf(c->optimizer, sizeof c->optimizer, "%s", config_optimizer_name(o->optimizer));
    snprintf(c->schedule, sizeof c->schedule, "%s", config_schedule_name(o->schedule));
    snprintf(c->name, sizeof c->name, "%s", r->name);
    snprintf(c->compress, sizeof c->compress, "%s", config_compress_name(o->compress));
}

int snapshot_save(struct run *run, int epochs_done, long step, double epoch_seconds, char *err)
{
    struct gathered g = {0};
    int ok = gather_ranks(run, &g, err) == 0;
    if (ok && run->comm->rank == 0) {
        struct checkpoint c;
        describe(run, &g, epochs_done, step, epoch_seconds, &c);
        if (fault_strikes(&run->fault, FAULT_IO, 0, epochs_done, 0)) {
            err_set(err, "%s: cannot write the checkpoint (injected I/O failure)", run->o->checkpoint);
            ok = 0;
        } else {
            ok = checkpoint_write(run->o->checkpoint, &c, err) == 0;
        }
    }
    gathered_free(&g);
    return comm_agree(run->comm, ok, err);
}

/* The per-rank state of a resume on the checkpoint's rank count: this rank's row, exactly. */
static void restore_own_row(struct run *run, const struct checkpoint *c)
{
    int rank = run->comm->rank;
    run->dropout = c->dropout_rng[rank];
    run->augment = c->augment_rng[rank];
    run->partial_loss = c->partial_loss[rank];
    run->partial_correct = (long)c->partial_correct[rank];
    if (c->buffer_count)
        memcpy(run->model->buffers, c->buffers + (size_t)rank * c->buffer_count, c->buffer_count * sizeof(float));
    if (c->residual && run->reducer.bf16)
        memcpy(run->reducer.residual, c->residual + (size_t)rank * c->param_count, c->param_count * sizeof(float));
}

/* On another rank count (an elastic resume) the rows cannot map to ranks: the epoch's partial
 * sums go to rank 0 whole (they are only ever summed), the batch-norm statistics are the rows'
 * average (as at the end of every epoch), and the rest of the epoch draws fresh streams, keyed by
 * the step so that they differ from the epoch's first ones. An epoch boundary loses nothing: the
 * next epoch seeds its streams and order from (seed, epoch, rank) as always. */
static void restore_elastic(struct run *run, const struct checkpoint *c)
{
    int rank = run->comm->rank;
    uint64_t key = ((uint64_t)c->step << 32) | (uint64_t)rank;
    rng_seed(&run->dropout, run->o->seed, RNG_DROPOUT, (uint64_t)c->epoch + 1, key);
    rng_seed(&run->augment, run->o->seed, RNG_AUGMENT, (uint64_t)c->epoch + 1, key);
    run->partial_loss = 0;
    run->partial_correct = 0;
    for (int r = 0; rank == 0 && r < c->ranks; r++) {
        run->partial_loss += c->partial_loss[r];
        run->partial_correct += (long)c->partial_correct[r];
    }
    for (size_t i = 0; i < c->buffer_count; i++) {
        double sum = 0;
        for (int r = 0; r < c->ranks; r++)
            sum += c->buffers[(size_t)r * c->buffer_count + i];
        run->model->buffers[i] = (float)(sum / c->ranks);
    }
    /* What rounding has not yet delivered is owed by the ranks together: rank 0 carries it all. */
    for (size_t i = 0; c->residual && run->reducer.bf16 && i < c->param_count; i++) {
        double owed = 0;
        for (int r = 0; rank == 0 && r < c->ranks; r++)
            owed += c->residual[(size_t)r * c->param_count + i];
        run->reducer.residual[i] = (float)owed;
    }
}

int snapshot_restore(struct run *run, const struct checkpoint *c, char *err)
{
    struct model *m = run->model;
    size_t bytes = m->param_count * sizeof(float);
    /* the same checkpoint and data on every rank: the same verdict */
    CHECK_DP(checkpoint_check_position(c, run->steps, m->param_count, m->buffer_count, run->o->checkpoint, err));
    memcpy(m->params, c->params, bytes);
    const float *const saved[2] = {c->opt_first, c->opt_second};
    optim_restore(run->optimizer, saved, c->opt_step);
    if (run->best_params && c->best_params)
        memcpy(run->best_params, c->best_params, bytes);
    run->best_val = c->best_val;
    run->r->best_epoch = c->best_epoch;
    memcpy(run->r->history, c->history, (size_t)c->history_length * sizeof *run->r->history);
    run->r->history_length = c->history_length;
    run->r->train_seconds = c->train_seconds;
    run->start_epoch = c->epoch;
    run->start_step = c->step;
    run->resumed_epoch_seconds = c->epoch_seconds;
    run->resumed_ranks = c->ranks;
    if (c->ranks == run->comm->size)
        restore_own_row(run, c);
    else
        restore_elastic(run, c);
    return 0;
fail:
    return -1;
}

int snapshot_settings(const struct checkpoint *c, const struct config *given, struct config *saved)
{
    *saved = *given;
    snprintf(saved->model, sizeof saved->model, "%s", c->model);
    saved->model_kind = config_model_kind(c->model);
    saved->pca = c->pca_components;
    saved->batch = c->global_batch;
    saved->epochs = c->epochs;
    saved->seed = c->seed;
    saved->lr = c->lr;
    saved->momentum = c->momentum;
    saved->weight_decay = c->weight_decay;
    saved->warmup = c->warmup;
    saved->dropout = c->dropout;
    saved->label_smoothing = c->label_smoothing;
    saved->augment = c->augment;
    saved->tta = c->tta;
    saved->validation = c->validation;
    if (config_optimizer_parse(c->optimizer, &saved->optimizer) != 0 ||
        config_schedule_parse(c->schedule, &saved->schedule) != 0 ||
        config_compress_parse(c->compress, &saved->compress) != 0)
        return -1;
    return 0;
}

/* Refuse a checkpoint whose settings differ from this run's, naming the first difference by the
 * flag users typed. */
static int check_settings(const struct checkpoint *c, const struct config *o, char *err)
{
    struct config saved;
    char was[96], now[96];
    if (snapshot_settings(c, o, &saved) != 0)
        FAIL("%s: corrupt checkpoint: unknown optimizer '%s' or schedule '%s'", o->checkpoint, c->optimizer,
             c->schedule);
    enum setting s = config_first_difference(&saved, o);
    if (s == SETTING_NONE)
        return 0;
    config_setting_value(&saved, s, was, sizeof was);
    config_setting_value(o, s, now, sizeof now);
    FAIL("%s: %s was saved with %s %s, this run has %s %s (resume with the same settings)", cli_flag(OPTION_RESUME),
         o->checkpoint,
         cli_setting_flag(s), was, cli_setting_flag(s), now);
fail:
    return -1;
}

int snapshot_load(const struct comm *comm, const struct config *o, struct checkpoint *c, char *err)
{
    int ok = checkpoint_read(o->checkpoint, c, err) == 0;
    ok = ok && check_settings(c, o, err) == 0;
    if (ok && o->name && strcmp(o->name, c->name) != 0) {
        err_set(err, "%s: %s holds run %s, this run is named %s", cli_flag(OPTION_RESUME), o->checkpoint, c->name,
                o->name);
        ok = 0;
    }
    if (comm_agree(comm, ok, err) != 0) {
        checkpoint_free(c);
        return -1;
    }
    return 0;
}
