#include "dptrain/run_checkpoint.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/files.h"
#include "dptrain/writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every unit's streams, sums and statistics, gathered on rank 0 in unit order (which is rank
 * order: each rank holds consecutive units). */
struct gathered {
    struct rng *dropout, *augment;
    double *losses;
    int64_t *corrects;
    float *buffers;
    float *residuals; /* with --compress bf16 or powersgd */
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

static int allocate_gathered(struct gathered *g, size_t rows, size_t nb, size_t residuals)
{
    return (g->dropout = malloc(sizeof *g->dropout * rows)) && (g->augment = malloc(sizeof *g->augment * rows)) &&
           (g->losses = malloc(sizeof(double) * rows)) && (g->corrects = malloc(sizeof(int64_t) * rows)) &&
           (g->buffers = malloc(sizeof(float) * (nb * rows + 1))) &&
           (residuals == 0 || (g->residuals = malloc(sizeof(float) * residuals)) != NULL);
}

/* This rank's rows: out (allocated for `local` units) and then rank 0's in `all`. */
static int gather_rows(const struct run *run, struct gathered *mine, struct gathered *all, char *err)
{
    const struct comm *comm = run->comm;
    size_t local = (size_t)run->shards->local_units, nb = run->model->buffer_count;
    const struct reducer *red = &run->reducer;
    int ok = allocate_gathered(mine, local, 0, 0);
    if (comm->rank == 0)
        ok = ok && allocate_gathered(all, (size_t)run->shards->units, nb, red->residual ? red->count * (size_t)comm->size : 0);
    if (!ok)
        err_set(err, "cannot allocate checkpoint buffers");
    CHECK_DP(comm_agree(comm, ok, err));
    for (size_t i = 0; i < local; i++) {
        const struct unit *u = &run->units[i];
        mine->dropout[i] = u->dropout;
        mine->augment[i] = u->augment;
        mine->losses[i] = u->partial_loss;
        mine->corrects[i] = u->partial_correct;
    }
    CHECK_DP(comm_gather_items(comm, mine->dropout, local, sizeof *mine->dropout, all->dropout, err));
    CHECK_DP(comm_gather_items(comm, mine->augment, local, sizeof *mine->augment, all->augment, err));
    CHECK_DP(comm_gather_items(comm, mine->losses, local, sizeof(double), all->losses, err));
    CHECK_DP(comm_gather_items(comm, mine->corrects, local, sizeof(int64_t), all->corrects, err));
    CHECK_DP(comm_gather_items(comm, run->units[0].buffers, local * nb, sizeof(float), all->buffers, err));
    if (red->residual)
        CHECK_DP(comm_gather_items(comm, red->residual, red->count, sizeof(float), all->residuals, err));
    return 0;
fail:
    return -1;
}

static void describe(const struct run *run, const struct gathered *g, int epochs_done, long step,
                     double epoch_seconds, struct checkpoint *c)
{
    const struct config *o = run->config;
    const struct run_result *r = run->result;
    *c = (struct checkpoint){
        .pca_components = r->pca_components, .global_batch = o->batch, .ranks = run->comm->size,
        .units = run->shards->units, .deterministic = o->deterministic, .memory_budget = o->memory_budget,
        .epochs = o->epochs, .validation = o->validation, .augment = o->augment,
        .augment_shift = o->augment_shift, .tta = o->tta, .flip = o->flip,
        .tta_shift = o->tta_shift, .seed = o->seed,
        .lr = o->lr, .momentum = o->momentum, .weight_decay = o->weight_decay,
        .warmup = o->warmup, .dropout = o->dropout, .label_smoothing = o->label_smoothing, .erase = o->erase,
        .epoch = epochs_done, .step = step, .train_seconds = r->train_seconds,
        .epoch_seconds = epoch_seconds, .param_count = run->model->param_count,
        .params = run->model->params, .opt_step = optim_steps(run->optimizer),
        .best_params = run->best_params, .best_buffers = run->best_buffers, .best_val = run->best_val, .best_epoch = r->best_epoch,
        .data = run->shards->identity, .pca = r->pca, .history_length = epochs_done,
        .history = r->history, .dropout_rng = g->dropout, .augment_rng = g->augment, .partial_loss = g->losses,
        .partial_correct = g->corrects, .buffer_count = run->model->buffer_count, .buffers = g->buffers,
        .residual = g->residuals,
        .powersgd_q_count = run->reducer.powersgd ? run->reducer.psgd.q_count : 0,
        .powersgd_q = run->reducer.powersgd ? run->reducer.psgd.q : NULL,
    };
    memcpy(c->norm_mean, run->shards->norm.mean, sizeof c->norm_mean);
    memcpy(c->norm_std, run->shards->norm.std, sizeof c->norm_std);
    const float *state[2];
    int arrays = optim_state(run->optimizer, state);
    c->opt_first = (float *)state[0];   /* written, never changed, by checkpoint_write */
    c->opt_second = arrays > 1 ? (float *)state[1] : NULL;
    snprintf(c->model, sizeof c->model, "%s", o->model);
    snprintf(c->optimizer, sizeof c->optimizer, "%s", config_optimizer_name(o->optimizer));
    snprintf(c->schedule, sizeof c->schedule, "%s", config_schedule_name(o->schedule));
    snprintf(c->name, sizeof c->name, "%s", r->name);
    config_compress_text(&o->compress, c->compress, sizeof c->compress);
}

/* A sharded optimizer: every rank's slice of its state to every rank, so that rank 0 saves it
 * whole (and a resume on any rank count takes its own slice of it). */
static int gather_optimizer(struct run *run, char *err)
{
    float *state[2];
    int arrays = optim_state_arrays(run->optimizer, state);
    for (int i = 0; i < arrays; i++)
        CHECK_DP(reducer_share(&run->reducer, state[i], err));
    return 0;
fail:
    return -1;
}

/* Rank 0: the checkpoint's file built in memory, then written here or handed to the background
 * writer (which first reports a failure of the write before). */
static int publish(struct run *run, const struct checkpoint *c, int epochs_done, char *err)
{
    const char *path = run->config->checkpoint;
    size_t size = 0;
    void *image = NULL;
    if (fault_strikes(&run->fault, FAULT_IO, 0, epochs_done, 0))
        FAIL("%s: cannot write the checkpoint (injected I/O failure)", path);
    CHECK_DP((image = checkpoint_image(path, c, &size, err)) == NULL);
    if (run->checkpoint_writer) {
        double hold = fault_strikes(&run->fault, FAULT_HOLD, 0, epochs_done, 0) ? FAULT_HOLD_SECONDS : 0;
        return writer_submit(run->checkpoint_writer, path, image, size, hold, err);
    }
    int status = files_write(path, image, size, err);
    free(image);
    return status;
fail:
    return -1;
}

int run_checkpoint_save(struct run *run, int epochs_done, long step, double epoch_seconds, char *err)
{
    struct gathered mine = {0}, g = {0};
    if (gather_optimizer(run, err) != 0)
        comm_abort(run->comm, err); /* a collective failed: the ranks cannot meet again */
    int ok = gather_rows(run, &mine, &g, err) == 0;
    gathered_free(&mine);
    if (ok && run->comm->rank == 0) {
        struct checkpoint c;
        describe(run, &g, epochs_done, step, epoch_seconds, &c);
        ok = publish(run, &c, epochs_done, err) == 0;
    }
    gathered_free(&g);
    return comm_agree(run->comm, ok, err);
}

int run_checkpoint_start_writer(struct run *run, char *err)
{
    int ok = 1;
    if (run->comm->rank == 0 && run->config->checkpoint && !run->config->checkpoint_sync)
        ok = writer_start(&run->checkpoint_writer, err) == 0;
    return comm_agree(run->comm, ok, err);
}

int run_checkpoint_settle(struct run *run, char *err)
{
    int ok = !run->checkpoint_writer || writer_wait(run->checkpoint_writer, err) == 0;
    return comm_agree(run->comm, ok, err);
}

/* The per-unit state of a resume with the checkpoint's units (the same rank count, or any with
 * --deterministic): this rank's units' rows, exactly. */
static void restore_own_rows(struct run *run, const struct checkpoint *c)
{
    size_t nb = c->buffer_count;
    for (int i = 0; i < run->shards->local_units; i++) {
        struct unit *u = &run->units[i];
        size_t row = (size_t)u->id;
        u->dropout = c->dropout_rng[row];
        u->augment = c->augment_rng[row];
        u->partial_loss = c->partial_loss[row];
        u->partial_correct = (long)c->partial_correct[row];
        memcpy(u->buffers, c->buffers + row * nb, nb * sizeof(float));
    }
    if (run->unit_buffers) /* the units' average at an epoch's end, for an evaluation before any step */
        memcpy(run->model->buffers, c->buffers, nb * sizeof(float));
    if (c->residual && run->reducer.residual) /* units are ranks here */
        memcpy(run->reducer.residual, c->residual + (size_t)run->comm->rank * c->param_count,
               c->param_count * sizeof(float));
}

/* On another rank count (an elastic resume, default mode: one unit per rank) the rows cannot map
 * to ranks: the epoch's partial sums go to rank 0 whole (they are only ever summed), the
 * batch-norm statistics are the rows' average (as at the end of every epoch), and the rest of the
 * epoch draws fresh streams, keyed by the step so that they differ from the epoch's first ones.
 * An epoch boundary loses nothing: the next epoch seeds its streams and order from (seed, epoch,
 * rank) as always. */
static void restore_elastic(struct run *run, const struct checkpoint *c)
{
    int rank = run->comm->rank;
    struct unit *u = &run->units[0];
    uint64_t key = ((uint64_t)c->step << 32) | (uint64_t)rank;
    rng_seed(&u->dropout, run->config->seed, RNG_DROPOUT, (uint64_t)c->epoch + 1, key);
    rng_seed(&u->augment, run->config->seed, RNG_AUGMENT, (uint64_t)c->epoch + 1, key);
    u->partial_loss = 0;
    u->partial_correct = 0;
    for (int r = 0; rank == 0 && r < c->units; r++) {
        u->partial_loss += c->partial_loss[r];
        u->partial_correct += (long)c->partial_correct[r];
    }
    for (size_t i = 0; i < c->buffer_count; i++) {
        double sum = 0;
        for (int r = 0; r < c->units; r++)
            sum += c->buffers[(size_t)r * c->buffer_count + i];
        run->model->buffers[i] = (float)(sum / c->units);
    }
    /* What rounding has not yet delivered is owed by the ranks together: rank 0 carries it all. */
    for (size_t i = 0; c->residual && run->reducer.residual && i < c->param_count; i++) {
        double owed = 0;
        for (int r = 0; rank == 0 && r < c->units; r++)
            owed += c->residual[(size_t)r * c->param_count + i];
        run->reducer.residual[i] = (float)owed;
    }
}

int run_checkpoint_restore(struct run *run, const struct checkpoint *c, char *err)
{
    struct model *m = run->model;
    size_t bytes = m->param_count * sizeof(float);
    /* the same checkpoint and data on every rank: the same verdict */
    CHECK_DP(checkpoint_check_position(c, run->steps, m->param_count, m->buffer_count, run->config->checkpoint, err));
    memcpy(m->params, c->params, bytes);
    const float *const saved[2] = {c->opt_first, c->opt_second};
    optim_restore(run->optimizer, saved, c->opt_step);
    if (run->best_params && c->best_params)
        memcpy(run->best_params, c->best_params, bytes);
    if (run->best_buffers && c->best_buffers)
        memcpy(run->best_buffers, c->best_buffers, m->buffer_count * sizeof(float));
    run->best_val = c->best_val;
    run->result->best_epoch = c->best_epoch;
    memcpy(run->result->history, c->history, (size_t)c->history_length * sizeof *run->result->history);
    run->result->history_length = c->history_length;
    run->result->train_seconds = c->train_seconds;
    run->start_epoch = c->epoch;
    run->start_step = c->step;
    run->resumed_epoch_seconds = c->epoch_seconds;
    run->resumed_ranks = c->ranks;
    run->resumed_budget = c->memory_budget;
    if (run->reducer.powersgd) { /* the settings matched: the same compression, the same model */
        if (c->powersgd_q_count != run->reducer.psgd.q_count)
            FAIL("%s: corrupt checkpoint: %zu values of PowerSGD's Q, this model has %zu", run->config->checkpoint,
                 c->powersgd_q_count, run->reducer.psgd.q_count);
        memcpy(run->reducer.psgd.q, c->powersgd_q, c->powersgd_q_count * sizeof(float));
    }
    if (c->units == run->shards->units)
        restore_own_rows(run, c);
    else
        restore_elastic(run, c);
    return 0;
fail:
    return -1;
}

int run_checkpoint_settings(const struct checkpoint *c, const struct config *given, struct config *saved)
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
    saved->augment_shift = c->augment_shift;
    saved->erase = c->erase;
    saved->tta = c->tta;
    saved->tta_shift = c->tta_shift;
    saved->flip = c->flip;
    saved->validation = c->validation;
    saved->deterministic = c->deterministic;
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
    if (run_checkpoint_settings(c, o, &saved) != 0)
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

int run_checkpoint_load(const struct comm *comm, const struct config *o, struct checkpoint *c, char *err)
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
