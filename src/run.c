#include "dptrain/run.h"

#include "dptrain/check.h"
#include "dptrain/writer.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct schedule schedule_of(const struct config *o, long steps)
{
    struct schedule s = {
        .kind = o->schedule,
        .peak_lr = o->lr,
        .warmup_steps = (long)llround(o->warmup * (double)steps),
        .total_steps = (long)o->epochs * steps,
    };
    return s;
}

/* The model and what depends on its shape: reducer, evaluator, optimizer. */
static int allocate_model(struct run *run, int input, int capacity, char *err)
{
    const struct config *o = run->config;
    const struct data_description *about = &run->shards->about;
    struct model_io io = {about->image.height, about->image.width, about->image.channels, input, about->classes};
    if (fault_strikes(&run->fault, FAULT_ALLOC, run->comm->rank, 0, 0))
        FAIL("cannot allocate the model (injected allocation failure)");
    CHECK_DP((run->model = model_create(o->model, &io, capacity, (float)o->dropout, err)) == NULL);
    run->model->profile = run->profile;
    struct reducer_options reduce = {(size_t)(o->bucket_mb * 1048576.0), o->compress.kind == COMPRESS_BF16,
                                     o->compress.kind == COMPRESS_POWERSGD ? o->compress.rank : 0,
                                     o->shard_optimizer};
    CHECK_DP(reducer_init(&run->reducer, run->comm, run->model, &reduce, err));
    CHECK_DP(evaluator_init(&run->eval, run->model, &(struct views){o->tta, o->tta_shift, o->flip}, err));
    CHECK_DP((run->optimizer = optim_create(o->optimizer, run->model->param_count, o->momentum, o->weight_decay, err)) ==
             NULL);
    return 0;
fail:
    return -1;
}

/* The units: views of the rank's training rows, their share of the order, their buffers. */
static int allocate_units(struct run *run, const struct pca *pca, char *err)
{
    const struct shards *d = run->shards;
    struct model *m = run->model;
    int count = d->local_units;
    CHECK_PTR(run->units = calloc((size_t)count, sizeof *run->units), "cannot allocate the training units");
    if (run->config->deterministic)
        CHECK_PTR(run->unit_buffers = tensor_alloc((size_t)count * m->buffer_count + 1),
                  "cannot allocate the units' batch-norm statistics");
    for (int i = 0; i < count; i++) {
        struct unit *u = &run->units[i];
        size_t first = d->unit_offsets[i];
        size_t bytes = d->train.image_bytes;
        struct split rows = {d->unit_offsets[i + 1] - first, bytes, d->train.first + first,
                             d->train.images + first * bytes, d->train.labels + first};
        if (run->stream)
            rows = run->staging; /* one unit: a streamed run is never --deterministic */
        u->id = d->first_unit + i;
        u->order = run->order + first;
        u->buffers = run->unit_buffers ? run->unit_buffers + (size_t)i * m->buffer_count : m->buffers;
        CHECK_DP(features_create(&u->samples, &(struct feature_source){&rows, &d->about.image, &d->norm, pca, 0}, err));
    }
    return 0;
fail:
    return -1;
}

/* --deterministic: room for every local unit's gradient of a step and their sum. */
static int allocate_exact(struct run *run, char *err)
{
    size_t params = run->model->param_count;
    if (!run->config->deterministic)
        return 0;
    CHECK_PTR(run->exact.terms = tensor_alloc((size_t)run->shards->local_units * params), "cannot allocate the units' gradients");
    CHECK_PTR(run->exact.sum = malloc(params * sizeof(double)), "cannot allocate the exact gradient sum");
    return 0;
fail:
    return -1;
}

/* --memory-budget: room for a step's rows and the stream that fills it, its windows fitted in the
 * budget beside them. The order of the staging rows is the stream's, so the unit's is the identity. */
static int open_stream(struct run *run, char *err)
{
    const struct shards *d = run->shards;
    size_t share = (size_t)shards_largest_share(d, run->steps), bytes = d->train.image_bytes;
    struct stream_geometry g;
    run->staging = (struct split){share, bytes, 0, NULL, NULL};
    CHECK_PTR(run->staging.images = malloc(share * bytes + 1), "cannot allocate the stream's staging rows");
    CHECK_PTR(run->staging.labels = malloc(share + 1), "cannot allocate the stream's staging rows");
    CHECK_DP(shards_stream_plan((size_t)run->config->memory_budget << 20, bytes, share, &g, err));
    CHECK_DP(stream_open(&run->stream, &(struct stream_start){&d->stream, g, run->config->seed,
                                                              (uint64_t)run->comm->rank}, err));
    for (size_t k = 0; k < share; k++)
        run->order[k] = (uint32_t)k;
    return 0;
fail:
    return -1;
}

static int allocate_here(struct run *run, const struct pca *pca, char *err)
{
    const struct shards *d = run->shards;
    int capacity = shards_largest_share(d, run->steps);
    if (capacity < EVAL_CHUNK) /* every rank evaluates its chunks */
        capacity = EVAL_CHUNK;
    CHECK_DP(allocate_model(run, pca ? pca->components : (int)image_values(&d->about.image), capacity, err));
    size_t rows = d->streamed ? (size_t)shards_largest_share(d, run->steps) : d->train.count;
    CHECK_PTR(run->order = malloc((rows + 1) * sizeof(uint32_t)), "cannot allocate the shuffle order");
    if (d->streamed)
        CHECK_DP(open_stream(run, err));
    CHECK_DP(allocate_units(run, pca, err));
    CHECK_DP(allocate_exact(run, err));
    const struct image_shape *shape = &d->about.image;
    CHECK_DP(features_create(&run->test, &(struct feature_source){&d->test_part, shape, &d->norm, pca, EVAL_CHUNK}, err));
    CHECK_DP(features_create(&run->validation,
                             &(struct feature_source){&d->validation_part, shape, &d->norm, pca, EVAL_CHUNK}, err));
    CHECK_PTR(run->batch_labels = malloc((size_t)capacity + 1), "cannot allocate batch labels");
    if (run->comm->rank == 0 && run->config->validation > 0)
        CHECK_PTR(run->best_params = tensor_alloc(run->model->param_count), "cannot allocate the best parameters");
    if (run->best_params && run->model->buffer_count)
        CHECK_PTR(run->best_buffers = tensor_alloc(run->model->buffer_count), "cannot allocate the best statistics");
    return 0;
fail:
    return -1;
}

int run_allocate(struct run *run, const struct pca *pca, char *err)
{
    run->steps = shards_steps_per_epoch(run->shards, run->config->batch);
    run->schedule = schedule_of(run->config, run->steps);
    run->best_val = -1;
    int ok = allocate_here(run, pca, err) == 0;
    return comm_agree(run->comm, ok, err);
}

int run_initialise(struct run *run, char *err)
{
    if (run->comm->rank == 0) {
        struct rng init;
        rng_seed(&init, run->config->seed, RNG_INIT, 0, 0);
        model_init_params(run->model, &init);
    }
    struct model *m = run->model;
    CHECK_DP(comm_bcast_floats(run->comm, m->params, m->param_count, 0, err));
    CHECK_DP(comm_bcast_floats(run->comm, m->buffers, m->buffer_count, 0, err));
    run_share_buffers(run);
    return 0;
fail:
    return -1;
}

void run_share_buffers(struct run *run)
{
    const struct model *m = run->model;
    for (int i = 0; run->unit_buffers && i < run->shards->local_units; i++)
        memcpy(run->units[i].buffers, m->buffers, m->buffer_count * sizeof(float));
}

void run_free(struct run *run)
{
    for (int i = 0; run->units && i < run->shards->local_units; i++)
        features_free(&run->units[i].samples);
    free(run->units);
    tensor_free(run->unit_buffers);
    tensor_free(run->exact.terms);
    free(run->exact.sum);
    features_free(&run->test);
    features_free(&run->validation);
    evaluator_free(&run->eval);
    model_free(run->model);
    optim_free(run->optimizer);
    free(run->order);
    free(run->batch_labels);
    tensor_free(run->best_params);
    tensor_free(run->best_buffers);
    stream_close(run->stream);
    split_free(&run->staging);
    run->stream = NULL;
    char err[DP_ERR_LEN];
    if (reducer_free(&run->reducer, err) != 0) /* cleanup: report, nothing else to undo */
        fprintf(stderr, "dptrain: warning: %s\n", err);
    if (writer_stop(run->checkpoint_writer, err) != 0)
        fprintf(stderr, "dptrain: warning: %s\n", err);
    run->checkpoint_writer = NULL;
    run->units = NULL;
    run->unit_buffers = NULL;
    memset(&run->exact, 0, sizeof run->exact);
    run->model = NULL;
    run->optimizer = NULL;
    run->order = NULL;
    run->batch_labels = NULL;
    run->best_params = NULL;
    run->best_buffers = NULL;
}

int run_average_buffers(struct run *run, char *err)
{
    struct model *m = run->model;
    const struct shards *d = run->shards;
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
