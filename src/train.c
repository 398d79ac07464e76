#include "dptrain/train.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/console.h"
#include "dptrain/deterministic.h"
#include "dptrain/guards.h"
#include "dptrain/step.h"
#include "dptrain/run_checkpoint.h"
#include "dptrain/stop.h"
#include "dptrain/timer.h"
#include "dptrain/watchdog.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum epoch_outcome { EPOCH_DONE = 0, EPOCH_FAILED = -1, EPOCH_STOPPED = 1 };

/* Each unit's shuffled order of the epoch; fresh streams and sums unless resuming inside it. */
static void begin_epoch(struct run *run, int epoch, long first_step)
{
    const struct config *o = run->config;
    for (int i = 0; i < run->shards->local_units; i++) {
        struct unit *u = &run->units[i];
        uint64_t id = (uint64_t)u->id;
        if (!run->stream) { /* a stream keeps its own order (stream.h) */
            for (size_t k = 0; k < u->samples.count; k++)
                u->order[k] = (uint32_t)k;
            struct rng shuffle;
            rng_seed(&shuffle, o->seed, RNG_SHUFFLE, (uint64_t)epoch, id);
            rng_shuffle(&shuffle, u->order, u->samples.count);
        }
        if (first_step == 0) {
            rng_seed(&u->dropout, o->seed, RNG_DROPOUT, (uint64_t)epoch, id);
            rng_seed(&u->augment, o->seed, RNG_AUGMENT, (uint64_t)epoch, id);
            u->partial_loss = 0;
            u->partial_correct = 0;
        }
    }
}

/* One step: gradient, the NaN check, the optimizer. The ranks already agreed not to stop. */
static int train_step(struct run *run, int epoch, long step, char *err)
{
    struct profile *p = run->profile;
    struct model *m = run->model;
    if (fault_strikes(&run->fault, FAULT_EXIT, run->comm->rank, epoch, step + 1))
        _exit(DP_EXIT_ERROR); /* a rank that dies without a word */
    int locally_bad = 0;
    if (!run->config->deterministic)
        locally_bad = step_unit(run, &run->units[0], epoch, step, &run->reducer, err);
    else if (deterministic_gradient(run, epoch, step, &locally_bad, err) != 0)
        comm_abort(run->comm, err);
    double clock = profile_now(p);
    if (!run->reducer.sharded && !guards_finite(m->grads, m->param_count)) {
        /* The reduced gradient is identical on every rank, so every rank sees a NaN together. */
        guards_name_bad_rank(run->comm, locally_bad, epoch, step, err);
        return -1;
    }
    double lr = schedule_lr(&run->schedule, (long)(epoch - 1) * run->steps + step);
    struct optim_part part = {m->params, m->grads, m->ranges, m->range_count, 0, 0};
    reducer_slice(&run->reducer, &part.first, &part.count);
    optim_step_part(run->optimizer, &part, lr);
    if (run->reducer.sharded) {
        /* Each rank saw only its slice of the sum; a NaN there reaches every rank's parameters. */
        if (reducer_share(&run->reducer, m->params, err) != 0)
            comm_abort(run->comm, err);
        if (!guards_finite(m->params, m->param_count)) {
            guards_name_bad_rank(run->comm, locally_bad, epoch, step, err);
            return -1;
        }
    }
    if (fault_strikes(&run->fault, FAULT_FLIP, run->comm->rank, epoch, step + 1)) {
        uint32_t bits; /* one flipped bit in one parameter of one rank: the drift guard's test */
        memcpy(&bits, &m->params[m->param_count / 2], sizeof bits);
        bits ^= 1u;
        memcpy(&m->params[m->param_count / 2], &bits, sizeof bits);
    }
    profile_end(p, PHASE_OPTIMIZER, CATEGORY_STEP, clock);
    return 0;
}

/* The largest signal number any rank received (0: none): every rank learns which signal it
 * was, also when it reached only one rank. */
static int agree_on_stop(struct run *run, char *err)
{
    double clock = profile_now(run->profile);
    int signal = stop_requested();
    if (comm_max_int(run->comm, &signal, err) != 0)
        comm_abort(run->comm, err);
    profile_end(run->profile, PHASE_STOP_CHECK, CATEGORY_STEP, clock);
    return signal;
}

/* Steps first_step.. of one epoch. Returns EPOCH_STOPPED, with *stopped_at set, when any rank
 * was asked to stop: the ranks agree on it at a step boundary, before the step's work. */
static enum epoch_outcome train_epoch(struct run *run, int epoch, long first_step, double *seconds,
                                      long *stopped_at, char *err)
{
    const struct config *o = run->config;
    double start = timer_now() - *seconds;
    begin_epoch(run, epoch, first_step);
    run->profile->epoch = epoch;
    for (long step = first_step; step < run->steps; step++) {
        run->profile->step = step;
        /* Every rank does the same work in a step: a long wait inside one is a lost rank. */
        watchdog_phase(run->comm->watchdog, "a training step", epoch, step + 1, 0);
        if ((run->stop_signal = agree_on_stop(run, err)) != 0) {
            watchdog_phase(run->comm->watchdog, "the stop checkpoint", epoch, step + 1, 1);
            *stopped_at = step;
            *seconds = timer_now() - start;
            return EPOCH_STOPPED;
        }
        if (train_step(run, epoch, step, err) != 0)
            return EPOCH_FAILED;
        long done = (long)(epoch - 1) * run->steps + step + 1; /* steps taken by the run */
        if (o->drift_check > 0 && done % o->drift_check == 0 && guards_check_drift(run->comm, model_param_hash(run->model), epoch, step, err) != 0)
            return EPOCH_FAILED;
        if (o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < run->steps) {
            watchdog_phase(run->comm->watchdog, "a checkpoint", epoch, step + 1, 1);
            double clock = profile_now(run->profile);
            if (run_checkpoint_save(run, epoch - 1, step + 1, timer_now() - start, err) != 0)
                return EPOCH_FAILED;
            profile_end(run->profile, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
        }
    }
    *seconds = timer_now() - start;
    /* Evaluation and the checkpoint: rank 0 writes while the others wait, and may be slow. */
    watchdog_phase(run->comm->watchdog, "evaluation and checkpoint", epoch, run->steps, 1);
    return EPOCH_DONE;
}

/* On every rank: the epoch's test and validation accuracy (each rank its share) and best-epoch
 * bookkeeping (the parameters kept on rank 0). */
static int evaluate_epoch(struct run *run, struct epoch_record *e, int epoch, char *err)
{
    struct evaluation test, val;
    struct run_result *r = run->result;
    CHECK_DP(evaluate(run->comm, &run->eval, &run->test, &test, err));
    e->test_loss = test.loss;
    e->test_accuracy = test.accuracy;
    if (r->has_validation) {
        CHECK_DP(evaluate(run->comm, &run->eval, &run->validation, &val, err));
        e->val_loss = val.loss;
        e->val_accuracy = val.accuracy;
        /* Model selection looks at validation only, never at the test set. */
        if (val.accuracy > run->best_val) {
            run->best_val = val.accuracy;
            r->best_epoch = epoch;
            if (run->best_params)
                memcpy(run->best_params, run->model->params, run->model->param_count * sizeof(float));
            if (run->best_buffers) /* the statistics it was evaluated with belong to it */
                memcpy(run->best_buffers, run->model->buffers, run->model->buffer_count * sizeof(float));
        }
    }
    return 0;
fail:
    return -1;
}

/* After each epoch: the evaluation where --eval-every asks (always after the last epoch; NaN in
 * the history otherwise), and rank 0 prints the line. */
static int close_epoch(struct run *run, struct epoch_record *e, int epoch, int last, char *err)
{
    e->test_loss = e->test_accuracy = NAN;
    if (run->result->has_validation)
        e->val_loss = e->val_accuracy = NAN;
    if ((last || epoch % run->config->eval_every == 0) && evaluate_epoch(run, e, epoch, err) != 0)
        return -1;
    if (!run->config->quiet && run->comm->rank == 0)
        console_epoch(e, run->config->epochs, run->result->has_validation);
    return 0;
}

/* The epoch's training loss and correct count, added in unit order: the same on any rank count. */
static int epoch_sums(const struct run *run, double *loss, double *correct, char *err)
{
    const struct shards *d = run->shards;
    double *mine = malloc(2 * (size_t)d->local_units * sizeof(double)), sums[2];
    for (int i = 0; mine && i < d->local_units; i++) {
        mine[2 * i] = run->units[i].partial_loss;
        mine[2 * i + 1] = (double)run->units[i].partial_correct;
    }
    struct comm_rows rows = {mine, (size_t)d->first_unit, (size_t)d->local_units, (size_t)d->units, 2};
    int status = comm_sum_rows_in_order(run->comm, &rows, sums, err);
    free(mine);
    if (status == 0) {
        *loss = sums[0];
        *correct = sums[1];
    }
    return status;
}

/* This rank's seconds in its steps so far: its own work, and its waits for the others. */
static struct rank_seconds step_seconds(const struct profile *p)
{
    return (struct rank_seconds){profile_seconds(p, PHASE_DATA) + profile_seconds(p, PHASE_FORWARD) +
                                     profile_seconds(p, PHASE_BACKWARD) + profile_seconds(p, PHASE_OPTIMIZER),
                                 profile_seconds(p, PHASE_ALLREDUCE_WAIT) + profile_seconds(p, PHASE_STOP_CHECK)};
}

/* Collective, on 2 ranks or more: rank 0 gathers every rank's seconds in this epoch's steps into
 * the table, and names a rank that stays well slower than the others (stragglers.h). */
static int time_ranks(struct run *run, int epoch, char *err)
{
    struct run_result *r = run->result;
    if (run->comm->size < 2)
        return 0;
    struct rank_seconds now = step_seconds(run->profile);
    struct rank_seconds mine = {now.compute - run->counted.compute, now.wait - run->counted.wait};
    run->counted = now;
    struct rank_seconds *row = r->rank_seconds ? r->rank_seconds + (size_t)(epoch - 1) * (size_t)r->timing_ranks : NULL;
    CHECK_DP(comm_gather_items(run->comm, &mine, 1, sizeof mine, row, err));
    struct straggler slow;
    if (run->comm->rank != 0)
        return 0;
    int found = straggler_find(row, r->timing_ranks, &slow);
    if (straggler_observe(&run->stragglers, found ? &slow : NULL) && !run->config->quiet)
        console_straggler(&slow, r->rank_hosts[slow.rank], epoch);
    return 0;
fail:
    return -1;
}

/* Collective, on 2 ranks or more: the table's room on rank 0 (NaN: epochs not trained here) and
 * every rank's host name. */
static int prepare_timing(struct run *run, char *err)
{
    struct run_result *r = run->result;
    int ranks = run->comm->size, ok = 1;
    char host[RESULTS_HOST] = "";
    if (ranks < 2)
        return 0;
    straggler_watch_init(&run->stragglers);
    if (run->comm->rank == 0) {
        size_t cells = (size_t)run->config->epochs * (size_t)ranks;
        r->rank_seconds = malloc(cells * sizeof *r->rank_seconds);
        r->rank_hosts = calloc((size_t)ranks, sizeof *r->rank_hosts);
        ok = r->rank_seconds && r->rank_hosts;
        for (size_t i = 0; ok && i < cells; i++)
            r->rank_seconds[i] = (struct rank_seconds){NAN, NAN};
        r->timing_ranks = ok ? ranks : 0;
    }
    if (!ok)
        err_set(err, "cannot allocate the per-rank timing table");
    CHECK_DP(comm_agree(run->comm, ok, err));
    comm_host_name(host, sizeof host);
    CHECK_DP(comm_gather_items(run->comm, host, 1, sizeof host, r->rank_hosts, err));
    return 0;
fail:
    return -1;
}

/* The epoch's record from every unit's sums, evaluation, and the checkpoint. `last`: no epoch
 * follows (the run's last, or --max-time ran out). */
static int finish_epoch(struct run *run, int epoch, double seconds, int last, char *err)
{
    double clock = profile_now(run->profile), loss, correct;
    CHECK_DP(epoch_sums(run, &loss, &correct, err));
    CHECK_DP(run_average_buffers(run, err));
    struct epoch_record *e = &run->result->history[epoch - 1];
    double samples = (double)run->shards->train_total;
    e->epoch = epoch;
    e->train_loss = loss / samples;
    e->train_accuracy = correct / samples;
    e->seconds = seconds;
    e->samples_per_second = samples / seconds;
    run->result->history_length = epoch;
    CHECK_DP(close_epoch(run, e, epoch, last, err));
    CHECK_DP(time_ranks(run, epoch, err));
    if (fault_strikes(&run->fault, FAULT_SLOW, run->comm->rank, epoch, 0))
        sleep(FAULT_SLOW_SECONDS);
    clock = profile_end(run->profile, PHASE_EVALUATION, CATEGORY_EPOCH, clock);
    if (run->config->checkpoint) {
        CHECK_DP(run_checkpoint_save(run, epoch, 0, 0, err));
        profile_end(run->profile, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
    }
    return 0;
fail:
    return -1;
}

/* A stop at a step boundary: save where the run stands and say so. */
static int stop_run(struct run *run, int epoch, long stopped_at, double seconds, char *err)
{
    const struct config *o = run->config;
    if (o->checkpoint) {
        CHECK_DP(run_checkpoint_save(run, epoch - 1, stopped_at, seconds, err));
        CHECK_DP(run_checkpoint_settle(run, err));
    }
    if (run->comm->rank == 0 && o->checkpoint)
        fprintf(stderr, "dptrain: stopped by signal %d at epoch %d, step %ld; checkpoint written to %s\n",
                run->stop_signal, epoch, stopped_at + 1, o->checkpoint);
    else if (run->comm->rank == 0 && o->command == CMD_TRAIN)
        fprintf(stderr, "dptrain: stopped by signal %d at epoch %d, step %ld; nothing saved (no %s given)\n",
                run->stop_signal, epoch, stopped_at + 1, cli_flag(OPTION_CHECKPOINT));
    else if (run->comm->rank == 0) /* compare has no checkpoint flag to name */
        fprintf(stderr, "dptrain: stopped by signal %d at epoch %d, step %ld; nothing saved\n", run->stop_signal,
                epoch, stopped_at + 1);
    return DP_EXIT_STOPPED;
fail:
    return DP_EXIT_ERROR;
}

/* Collective: has --max-time run out? Every rank asks its own clock and the most-spent answer
 * holds, so that all ranks end after the same epoch. */
static int budget_spent(struct run *run, int *spent, char *err)
{
    double budget = run->config->max_time * 60;
    *spent = budget > 0 && timer_now() - run->started >= budget;
    return budget > 0 ? comm_max_int(run->comm, spent, err) : 0;
}

/* The epochs from where the run stands to the last, or to the one that spends --max-time. */
static int train_epochs(struct run *run, char *err)
{
    for (int epoch = run->start_epoch + 1; epoch <= run->config->epochs; epoch++) {
        int first = epoch == run->start_epoch + 1;
        long first_step = first ? run->start_step : 0, stopped_at = 0;
        double seconds = first ? run->resumed_epoch_seconds : 0, before = seconds;
        enum epoch_outcome outcome = train_epoch(run, epoch, first_step, &seconds, &stopped_at, err);
        if (outcome == EPOCH_FAILED)
            return DP_EXIT_ERROR;
        run->result->train_seconds += seconds - before;
        if (outcome == EPOCH_STOPPED)
            return stop_run(run, epoch, stopped_at, seconds, err);
        int spent = 0;
        if (budget_spent(run, &spent, err) != 0)
            return DP_EXIT_ERROR;
        if (finish_epoch(run, epoch, seconds, spent || epoch == run->config->epochs, err) != 0)
            return DP_EXIT_ERROR;
        if (spent && epoch < run->config->epochs) {
            run->result->ended_by_budget = 1;
            if (run->comm->rank == 0 && !run->config->quiet)
                console_budget_spent(run->config, epoch);
            break;
        }
    }
    return DP_EXIT_OK;
}

/* The inputs' PCA basis: the checkpoint's on a resume (the resumed run sees exactly the same
 * inputs), else a new fit. NULL for raw pixels. */
static const struct pca *inputs_basis(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    const struct image_shape *shape = &run->shards->about.image;
    int values = (int)image_values(shape);
    if (pca_k == 0)
        return NULL;
    if (resume) {
        run->result->pca = resume->pca;
        memset(&resume->pca, 0, sizeof resume->pca);
    } else if (pca_fit(run->comm, &(struct pca_data){run->shards->train.images, run->shards->train.count, values}, pca_k,
                       &run->result->pca, err) != 0) {
        return NULL;
    }
    return &run->result->pca;
}

/* Collective: the fault plan, the history, the inputs, the state (restored or initialised). */
static int prepare(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    int ok = fault_from_environment(&run->fault, err) == 0;
    if (ok && !(run->result->history = calloc((size_t)run->config->epochs, sizeof *run->result->history))) {
        err_set(err, "cannot allocate the history");
        ok = 0;
    }
    CHECK_DP(comm_agree(run->comm, ok, err));
    const struct pca *pca = inputs_basis(run, pca_k, resume, err);
    CHECK_DP(pca_k > 0 && pca == NULL);
    CHECK_DP(run_allocate(run, pca, err));
    CHECK_DP(prepare_timing(run, err));
    CHECK_DP(run_checkpoint_start_writer(run, err));
    run->result->parameters = run->model->param_count;
    if (resume)
        return run_checkpoint_restore(run, resume, err);
    return run_initialise(run, err);
fail:
    return -1;
}

/* The final predictions: of the best validation epoch's network (parameters and batch-norm
 * statistics, kept on rank 0) when the run has a validation set. */
static int final_predictions(struct run *run, char *err)
{
    struct run_result *r = run->result;
    struct model *m = run->model;
    if (r->has_validation && r->best_epoch > 0) {
        if (run->best_params)
            memcpy(m->params, run->best_params, m->param_count * sizeof(float));
        if (run->best_buffers)
            memcpy(m->buffers, run->best_buffers, m->buffer_count * sizeof(float));
        CHECK_DP(comm_bcast_floats(run->comm, m->params, m->param_count, 0, err));
        CHECK_DP(comm_bcast_floats(run->comm, m->buffers, m->buffer_count, 0, err));
    }
    CHECK_DP(evaluate_predictions(run->comm, &run->eval, &run->test, &run->shards->test, r, err));
    r->parameter_hash = model_param_hash(run->model); /* of the parameters the results describe */
    return 0;
fail:
    return -1;
}

int train_run(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    int status = DP_EXIT_ERROR;
    run->started = timer_now();
    profile_reset_totals(run->profile);
    watchdog_phase(run->comm->watchdog, "setting up the run (PCA fit, model, checkpoint)", 0, 0, 1);
    CHECK_DP(prepare(run, pca_k, resume, err));
    console_announce(run);
    status = train_epochs(run, err);
    if (status != DP_EXIT_OK)
        goto fail;
    status = DP_EXIT_ERROR;
    watchdog_phase(run->comm->watchdog, "the final evaluation and results", 0, 0, 1);
    CHECK_DP(final_predictions(run, err));
    CHECK_DP(run_checkpoint_settle(run, err)); /* the last checkpoint, written while the test set was evaluated */
    if (!run->config->quiet)
        CHECK_DP(console_profile(run, err));
    status = DP_EXIT_OK;
fail:
    run_free(run);
    return status;
}
