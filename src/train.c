#include "dptrain/train.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/console.h"
#include "dptrain/exactsum.h"
#include "dptrain/layers.h"
#include "dptrain/snapshot.h"
#include "dptrain/stop.h"
#include "dptrain/timer.h"
#include "dptrain/watchdog.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum epoch_outcome { EPOCH_DONE = 0, EPOCH_FAILED = -1, EPOCH_STOPPED = 1 };

/* One unit's share of the batch: forward, loss, backward into model->grads (zeros without
 * samples). The hook, if any, hears of every layer's finished gradients. */
static void unit_gradient(struct model *model, const struct batch *batch, struct batch_sums *sums,
                          const struct backward_hook *hook)
{
    struct profile *p = model->profile;
    double clock = profile_now(p);
    if (batch->n == 0) {
        memset(model->grads, 0, model->param_count * sizeof(float));
        return;
    }
    const float *logits = model_forward(model, batch->n, 1, batch->dropout);
    sums->loss += softmax_cross_entropy(&(struct loss_input){logits, batch->labels, batch->n, model->classes, batch->smoothing}, &(struct loss_output){model_grad_logits(model), 1.0f / (float)batch->global, &sums->correct, NULL, NULL});
    clock = profile_end(p, PHASE_FORWARD, CATEGORY_STEP, clock);
    model_backward(model, batch->n, hook);
    profile_end(p, PHASE_BACKWARD, CATEGORY_STEP, clock);
}

int train_batch_gradient(struct model *model, struct reducer *reducer, const struct batch *batch,
                         struct batch_sums *sums, char *err)
{
    struct profile *p = model->profile;
    reducer_begin(reducer);
    unit_gradient(model, batch, sums, &(struct backward_hook){reducer_ready, reducer});
    /* A rank with no samples in this step still contributes (zeros) to the sum, and starts the
     * same buckets as the other ranks: all but the first. */
    if (batch->n == 0)
        reducer_ready(reducer, 1);
    double clock = profile_now(p);
    int status = reducer_finish(reducer, err);
    profile_end(p, PHASE_ALLREDUCE_WAIT, CATEGORY_STEP, clock);
    return status;
}

static int all_finite(const float *x, size_t n)
{
    int finite = 1;
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(x[i]);
    return finite;
}

/* Batch-norm running statistics are per unit (each sees its own batches); at the end of every
 * epoch they are averaged over the units, so that evaluation and checkpoints use one set. By
 * default a sum over the ranks; with --deterministic the units' rows are added in unit order,
 * the same on any rank count. */
static int average_buffers(struct run *run, char *err)
{
    struct model *m = run->model;
    const struct shards *d = run->d;
    size_t nb = m->buffer_count, local = (size_t)d->local_units * nb;
    if (nb == 0 || (run->comm->size == 1 && !run->unit_buffers))
        return 0;
    if (!run->unit_buffers) {
        CHECK_DP(comm_allreduce_floats(run->comm, m->buffers, nb, err));
        for (size_t i = 0; i < nb; i++)
            m->buffers[i] /= (float)run->comm->size;
        return 0;
    }
    double *mine = malloc(local * sizeof(double)), *sums = malloc(nb * sizeof(double));
    for (size_t i = 0; mine && i < local; i++)
        mine[i] = run->unit_buffers[i];
    struct comm_rows rows = {sums ? mine : NULL, (size_t)d->first_unit, (size_t)d->local_units, (size_t)d->units, nb};
    int status = comm_sum_rows_in_order(run->comm, &rows, sums, err);
    for (size_t i = 0; status == 0 && i < nb; i++)
        m->buffers[i] = (float)(sums[i] / d->units);
    free(mine);
    free(sums);
    if (status == 0)
        run_share_buffers(run);
    return status;
fail:
    return -1;
}

/* Which rank's own loss went bad? Only asked on the failure path. */
static void name_bad_rank(const struct run *run, int locally_bad, int epoch, long step, char *err)
{
    int first = locally_bad ? run->comm->rank : run->comm->size;
    if (comm_min_int(run->comm, &first, err) != 0)
        return;
    if (first < run->comm->size)
        err_set(err, "rank %d: the loss became NaN or Inf at epoch %d, step %ld (try a lower %s)", first, epoch,
                step + 1, cli_setting_flag(SETTING_LR));
    else
        err_set(err, "the summed gradient became NaN or Inf at epoch %d, step %ld (try a lower %s)", epoch,
                step + 1, cli_setting_flag(SETTING_LR));
}

/* Each unit's shuffled order of the epoch; fresh streams and sums unless resuming inside it. */
static void begin_epoch(struct run *run, int epoch, long first_step)
{
    const struct config *o = run->o;
    for (int i = 0; i < run->d->local_units; i++) {
        struct unit *u = &run->units[i];
        uint64_t id = (uint64_t)u->id;
        for (size_t k = 0; k < u->samples.count; k++)
            u->order[k] = (uint32_t)k;
        struct rng shuffle;
        rng_seed(&shuffle, o->seed, RNG_SHUFFLE, (uint64_t)epoch, id);
        rng_shuffle(&shuffle, u->order, u->samples.count);
        if (first_step == 0) {
            rng_seed(&u->dropout, o->seed, RNG_DROPOUT, (uint64_t)epoch, id);
            rng_seed(&u->augment, o->seed, RNG_AUGMENT, (uint64_t)epoch, id);
            u->partial_loss = 0;
            u->partial_correct = 0;
        }
    }
}

/* A unit's share of the step, into the model's input (with the injected NaN, if any, in the
 * rank's first unit). */
static struct batch load_batch(struct run *run, struct unit *u, int epoch, long step)
{
    size_t first;
    struct batch b = {run->batch_labels, 0, shards_step_total(run->d, run->steps, step),
                      (float)run->o->label_smoothing, &u->dropout};
    shards_step_share(u->samples.count, run->steps, step, &first, &b.n);
    struct augmentation augment = {&u->augment, run->o->erase, run->o->augment_shift, run->o->flip};
    features_gather(&u->samples, u->order + first, b.n, model_input(run->model), run->batch_labels,
                    run->o->augment ? &augment : NULL);
    if (u == run->units && fault_strikes(&run->fault, FAULT_NAN, run->comm->rank, epoch, step + 1))
        model_input(run->model)[0] = NAN;
    return b;
}

/* The unit's batch gradient, its sums kept; 1 when its loss went bad. */
static int unit_step(struct run *run, struct unit *u, int epoch, long step, struct reducer *reducer, char *err)
{
    struct model *m = run->model;
    size_t nb = m->buffer_count;
    double clock = profile_now(run->profile);
    struct batch b = load_batch(run, u, epoch, step);
    struct batch_sums sums = {u->partial_loss, u->partial_correct};
    profile_end(run->profile, PHASE_DATA, CATEGORY_STEP, clock);
    if (u->buffers != m->buffers)
        memcpy(m->buffers, u->buffers, nb * sizeof(float));
    if (!reducer)
        unit_gradient(m, &b, &sums, NULL);
    else if (train_batch_gradient(m, reducer, &b, &sums, err) != 0)
        comm_abort(run->comm, err); /* a collective failed: the ranks cannot meet again */
    if (u->buffers != m->buffers)
        memcpy(u->buffers, m->buffers, nb * sizeof(float));
    int bad = !isfinite(sums.loss - u->partial_loss);
    u->partial_loss = sums.loss;
    u->partial_correct = sums.correct;
    return bad;
}

/* --deterministic: every local unit's gradient on its own (the same shapes wherever the unit
 * runs), then their exact sum over every unit of every rank (exactsum.h) into model->grads. A
 * gradient that is not finite anywhere leaves NaN there for the caller's check. */
static int exact_gradient(struct run *run, int epoch, long step, int *locally_bad, char *err)
{
    struct model *m = run->model;
    size_t params = m->param_count;
    const float *terms[SHARDS_VIRTUAL];
    double biggest = 0;
    float *own = m->grads;
    for (int i = 0; i < run->d->local_units; i++) {
        float *term = run->exact.terms + (size_t)i * params;
        model_use_grads(m, term);
        *locally_bad |= unit_step(run, &run->units[i], epoch, step, NULL, err);
        double largest = exactsum_max_abs(term, params);
        biggest = largest > biggest || isinf(largest) ? largest : biggest;
        terms[i] = term;
    }
    model_use_grads(m, own);
    double clock = profile_now(run->profile);
    CHECK_DP(comm_max_double(run->comm, &biggest, err));
    if (isinf(biggest)) {
        for (size_t i = 0; i < params; i++)
            m->grads[i] = NAN;
        return 0;
    }
    int exponent = exactsum_exponent(biggest, run->d->units);
    memset(run->exact.sum, 0, params * sizeof(double));
    exactsum_add(run->exact.sum, terms, run->d->local_units, params, exponent);
    CHECK_DP(comm_allreduce_doubles(run->comm, run->exact.sum, params, err));
    exactsum_result(run->exact.sum, m->grads, params, exponent);
    profile_end(run->profile, PHASE_ALLREDUCE_WAIT, CATEGORY_STEP, clock);
    return 0;
fail:
    return -1;
}

/* One step: gradient, the NaN check, the optimizer. The ranks already agreed not to stop. */
static int train_step(struct run *run, int epoch, long step, char *err)
{
    struct profile *p = run->profile;
    struct model *m = run->model;
    if (fault_strikes(&run->fault, FAULT_EXIT, run->comm->rank, epoch, step + 1))
        _exit(DP_EXIT_ERROR); /* a rank that dies without a word */
    int locally_bad = 0;
    if (!run->o->deterministic)
        locally_bad = unit_step(run, &run->units[0], epoch, step, &run->reducer, err);
    else if (exact_gradient(run, epoch, step, &locally_bad, err) != 0)
        comm_abort(run->comm, err);
    double clock = profile_now(p);
    if (!run->reducer.sharded && !all_finite(m->grads, m->param_count)) {
        /* The reduced gradient is identical on every rank, so every rank sees a NaN together. */
        name_bad_rank(run, locally_bad, epoch, step, err);
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
        if (!all_finite(m->params, m->param_count)) {
            name_bad_rank(run, locally_bad, epoch, step, err);
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

/* The value most ranks hold (ties: rank 0's). */
static uint64_t majority(const uint64_t *values, int count)
{
    uint64_t best = values[0];
    int best_votes = 0;
    for (int i = 0; i < count; i++) {
        int votes = 0;
        for (int j = 0; j < count; j++)
            votes += values[j] == values[i];
        if (votes > best_votes) {
            best = values[i];
            best_votes = votes;
        }
    }
    return best;
}

/* The drift guard: every rank must hold bitwise the same parameters (they apply the same update
 * to the same sums). One allgather of a 64-bit hash; a rank that differs from most ranks (with
 * two ranks: from rank 0) is named, with the same message on every rank. */
static int check_drift(struct run *run, int epoch, long step, char *err)
{
    const struct comm *comm = run->comm;
    uint64_t *all = NULL;
    int ok = (all = malloc(sizeof *all * (size_t)comm->size)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the drift check");
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_allgather_u64(comm, model_param_hash(run->model), all, err));
    uint64_t most = majority(all, comm->size);
    for (int r = 0; r < comm->size; r++)
        if (all[r] != most)
            FAIL("rank %d: its parameters diverged from the other ranks' by epoch %d, step %ld (parameter hash "
                 "%016llx, the others' %016llx; a fault on that host, or non-deterministic arithmetic)",
                 r, epoch, step + 1, (unsigned long long)all[r], (unsigned long long)most);
    free(all);
    return 0;
fail:
    free(all);
    return -1;
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
    const struct config *o = run->o;
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
        if (o->drift_check > 0 && done % o->drift_check == 0 && check_drift(run, epoch, step, err) != 0)
            return EPOCH_FAILED;
        if (o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < run->steps) {
            watchdog_phase(run->comm->watchdog, "a checkpoint", epoch, step + 1, 1);
            double clock = profile_now(run->profile);
            if (snapshot_save(run, epoch - 1, step + 1, timer_now() - start, err) != 0)
                return EPOCH_FAILED;
            profile_end(run->profile, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
        }
    }
    *seconds = timer_now() - start;
    /* Evaluation and the checkpoint: rank 0 writes while the others wait, and may be slow. */
    watchdog_phase(run->comm->watchdog, "evaluation and checkpoint", epoch, run->steps, 1);
    return EPOCH_DONE;
}

/* After each epoch, on every rank: test and validation accuracy (each rank its share),
 * best-epoch bookkeeping (the parameters kept on rank 0), and rank 0 prints the line. */
static int close_epoch(struct run *run, struct epoch_record *e, int epoch, char *err)
{
    struct evaluation test, val;
    struct run_result *r = run->r;
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
    if (!run->o->quiet && run->comm->rank == 0)
        console_epoch(e, run->o->epochs, r->has_validation);
    return 0;
fail:
    return -1;
}

/* The epoch's training loss and correct count, added in unit order: the same on any rank count. */
static int epoch_sums(const struct run *run, double *loss, double *correct, char *err)
{
    const struct shards *d = run->d;
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

/* The epoch's record from every unit's sums, evaluation, and the checkpoint. */
static int finish_epoch(struct run *run, int epoch, double seconds, char *err)
{
    double clock = profile_now(run->profile), loss, correct;
    CHECK_DP(epoch_sums(run, &loss, &correct, err));
    CHECK_DP(average_buffers(run, err));
    struct epoch_record *e = &run->r->history[epoch - 1];
    double samples = (double)run->d->train_total;
    e->epoch = epoch;
    e->train_loss = loss / samples;
    e->train_accuracy = correct / samples;
    e->seconds = seconds;
    e->samples_per_second = samples / seconds;
    run->r->history_length = epoch;
    CHECK_DP(close_epoch(run, e, epoch, err));
    if (fault_strikes(&run->fault, FAULT_SLOW, run->comm->rank, epoch, 0))
        sleep(FAULT_SLOW_SECONDS);
    clock = profile_end(run->profile, PHASE_EVALUATION, CATEGORY_EPOCH, clock);
    if (run->o->checkpoint) {
        CHECK_DP(snapshot_save(run, epoch, 0, 0, err));
        profile_end(run->profile, PHASE_CHECKPOINT, CATEGORY_EPOCH, clock);
    }
    return 0;
fail:
    return -1;
}

/* A stop at a step boundary: save where the run stands and say so. */
static int stop_run(struct run *run, int epoch, long stopped_at, double seconds, char *err)
{
    const struct config *o = run->o;
    if (o->checkpoint)
        CHECK_DP(snapshot_save(run, epoch - 1, stopped_at, seconds, err));
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

/* The epochs from where the run stands to the last. */
static int train_epochs(struct run *run, char *err)
{
    for (int epoch = run->start_epoch + 1; epoch <= run->o->epochs; epoch++) {
        int first = epoch == run->start_epoch + 1;
        long first_step = first ? run->start_step : 0, stopped_at = 0;
        double seconds = first ? run->resumed_epoch_seconds : 0, before = seconds;
        enum epoch_outcome outcome = train_epoch(run, epoch, first_step, &seconds, &stopped_at, err);
        if (outcome == EPOCH_FAILED)
            return DP_EXIT_ERROR;
        run->r->train_seconds += seconds - before;
        if (outcome == EPOCH_STOPPED)
            return stop_run(run, epoch, stopped_at, seconds, err);
        if (finish_epoch(run, epoch, seconds, err) != 0)
            return DP_EXIT_ERROR;
    }
    return DP_EXIT_OK;
}

/* The inputs' PCA basis: the checkpoint's on a resume (the resumed run sees exactly the same
 * inputs), else a new fit. NULL for raw pixels. */
static const struct pca *inputs_basis(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    const struct image_shape *shape = &run->d->about.image;
    int values = (int)image_values(shape);
    if (pca_k == 0)
        return NULL;
    if (resume) {
        run->r->pca = resume->pca;
        memset(&resume->pca, 0, sizeof resume->pca);
    } else if (pca_fit(run->comm, &(struct pca_data){run->d->train.images, run->d->train.count, values}, pca_k,
                       &run->r->pca, err) != 0) {
        return NULL;
    }
    return &run->r->pca;
}

/* Collective: the fault plan, the history, the inputs, the state (restored or initialised). */
static int prepare(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    int ok = fault_from_environment(&run->fault, err) == 0;
    if (ok && !(run->r->history = calloc((size_t)run->o->epochs, sizeof *run->r->history))) {
        err_set(err, "cannot allocate the history");
        ok = 0;
    }
    CHECK_DP(comm_agree(run->comm, ok, err));
    const struct pca *pca = inputs_basis(run, pca_k, resume, err);
    CHECK_DP(pca_k > 0 && pca == NULL);
    CHECK_DP(run_allocate(run, pca, err));
    run->r->parameters = run->model->param_count;
    if (resume)
        return snapshot_restore(run, resume, err);
    return run_initialise(run, err);
fail:
    return -1;
}

/* The final predictions: of the best validation epoch's network (parameters and batch-norm
 * statistics, kept on rank 0) when the run has a validation set. */
static int final_predictions(struct run *run, char *err)
{
    struct run_result *r = run->r;
    struct model *m = run->model;
    if (r->has_validation && r->best_epoch > 0) {
        if (run->best_params)
            memcpy(m->params, run->best_params, m->param_count * sizeof(float));
        if (run->best_buffers)
            memcpy(m->buffers, run->best_buffers, m->buffer_count * sizeof(float));
        CHECK_DP(comm_bcast_floats(run->comm, m->params, m->param_count, 0, err));
        CHECK_DP(comm_bcast_floats(run->comm, m->buffers, m->buffer_count, 0, err));
    }
    CHECK_DP(evaluate_predictions(run->comm, &run->eval, &run->test, &run->d->test, r, err));
    r->parameter_hash = model_param_hash(run->model); /* of the parameters the results describe */
    return 0;
fail:
    return -1;
}

int train_run(struct run *run, int pca_k, struct checkpoint *resume, char *err)
{
    int status = DP_EXIT_ERROR;
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
    if (!run->o->quiet)
        CHECK_DP(console_profile(run, err));
    status = DP_EXIT_OK;
fail:
    run_free(run);
    return status;
}
