#include "dptrain/step.h"

#include "dptrain/check.h"
#include "dptrain/layers.h"
#include "dptrain/timer.h"

#include <math.h>
#include <string.h>

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

int step_batch_gradient(struct model *model, struct reducer *reducer, const struct batch *batch,
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

/* --memory-budget: the share's samples from the stream into the staging rows, which the unit's
 * samples are; a failed read ends every rank (the others wait in the step's allreduce). */
static void stream_in(struct run *run, int epoch, size_t first, int n)
{
    char err[DP_ERR_LEN];
    struct stream_take t = {epoch, first, (size_t)n, run->staging.images, run->staging.labels};
    if (stream_take(run->stream, &t, err) != 0)
        comm_abort(run->comm, err);
}

/* A unit's share of the step, into the model's input (with the injected NaN, if any, in the
 * rank's first unit). */
static struct batch load_batch(struct run *run, struct unit *u, int epoch, long step)
{
    size_t first;
    struct batch b = {run->batch_labels, 0, shards_step_total(run->shards, run->steps, step),
                      (float)run->config->label_smoothing, &u->dropout};
    shards_step_share(run->shards->unit_counts[u->id], run->steps, step, &first, &b.n);
    if (run->stream) {
        stream_in(run, epoch, first, b.n);
        first = 0; /* the share now fills the staging rows from their first */
    }
    struct augmentation augment = {&u->augment, run->config->erase, run->config->augment_shift, run->config->flip};
    features_gather(&u->samples, u->order + first, b.n, model_input(run->model), run->batch_labels,
                    run->config->augment ? &augment : NULL);
    if (u == run->units && fault_strikes(&run->fault, FAULT_NAN, run->comm->rank, epoch, step + 1))
        model_input(run->model)[0] = NAN;
    if (u == run->units && fault_strikes(&run->fault, FAULT_LAG, run->comm->rank, epoch, step + 1))
        timer_sleep(FAULT_LAG_SECONDS);
    return b;
}

int step_unit(struct run *run, struct unit *u, int epoch, long step, struct reducer *reducer, char *err)
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
    else if (step_batch_gradient(m, reducer, &b, &sums, err) != 0)
        comm_abort(run->comm, err); /* a collective failed: the ranks cannot meet again */
    if (u->buffers != m->buffers)
        memcpy(u->buffers, m->buffers, nb * sizeof(float));
    int bad = !isfinite(sums.loss - u->partial_loss);
    u->partial_loss = sums.loss;
    u->partial_correct = sums.correct;
    return bad;
}
