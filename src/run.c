#include "dptrain/run.h"

#include "dptrain/check.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Evaluation batch: large for the MLP; small for the CNN, whose im2col workspace grows with it. */
static int eval_batch(enum model_kind kind)
{
    return kind == MODEL_CNN ? 200 : 1000;
}

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
    const struct config *o = run->o;
    if (fault_strikes(&run->fault, FAULT_ALLOC, run->comm->rank, 0, 0))
        FAIL("cannot allocate the model (injected allocation failure)");
    CHECK_DP((run->model = model_create(o->model, input, DATASET_CLASSES, capacity, (float)o->dropout, err)) == NULL);
    run->model->profile = run->profile;
    CHECK_DP(reducer_init(&run->reducer, run->comm, run->model, (size_t)(o->bucket_mb * 1048576.0),
                          o->compress == COMPRESS_BF16, err));
    CHECK_DP(evaluator_init(&run->eval, run->model, o->tta, err));
    CHECK_DP((run->optimizer = optim_create(o->optimizer, run->model->param_count, o->momentum, o->weight_decay, err)) ==
             NULL);
    return 0;
fail:
    return -1;
}

static int allocate_here(struct run *run, const struct pca *pca, char *err)
{
    const struct shards *d = run->d;
    int capacity = shards_largest_share(d, run->comm->size, run->steps);
    if (capacity < eval_batch(run->o->model_kind)) /* every rank evaluates its share */
        capacity = eval_batch(run->o->model_kind);
    CHECK_DP(allocate_model(run, pca ? pca->components : DATASET_PIXELS, capacity, err));
    CHECK_DP(features_create(&run->train, &d->train, &d->norm, pca, err));
    CHECK_DP(features_create(&run->test, &d->test_part, &d->norm, pca, err));
    CHECK_DP(features_create(&run->validation, &d->validation_part, &d->norm, pca, err));
    CHECK_PTR(run->order = malloc((d->train.count + 1) * sizeof(uint32_t)), "cannot allocate the shuffle order");
    CHECK_PTR(run->batch_labels = malloc((size_t)capacity + 1), "cannot allocate batch labels");
    if (run->comm->rank == 0 && run->o->validation > 0)
        CHECK_PTR(run->best_params = tensor_alloc(run->model->param_count), "cannot allocate the best parameters");
    return 0;
fail:
    return -1;
}

int run_allocate(struct run *run, const struct pca *pca, char *err)
{
    run->steps = shards_steps_per_epoch(run->d, run->o->batch);
    run->schedule = schedule_of(run->o, run->steps);
    run->best_val = -1;
    int ok = allocate_here(run, pca, err) == 0;
    return comm_agree(run->comm, ok, err);
}

int run_initialise(struct run *run, char *err)
{
    if (run->comm->rank == 0) {
        struct rng init;
        rng_seed(&init, run->o->seed, RNG_INIT, 0, 0);
        model_init_params(run->model, &init);
    }
    return comm_bcast_floats(run->comm, run->model->params, run->model->param_count, 0, err);
}

void run_free(struct run *run)
{
    features_free(&run->train);
    features_free(&run->test);
    features_free(&run->validation);
    evaluator_free(&run->eval);
    model_free(run->model);
    optim_free(run->optimizer);
    free(run->order);
    free(run->batch_labels);
    tensor_free(run->best_params);
    char err[DP_ERR_LEN];
    if (reducer_free(&run->reducer, err) != 0) /* cleanup: report, nothing else to undo */
        fprintf(stderr, "dptrain: warning: %s\n", err);
    run->model = NULL;
    run->optimizer = NULL;
    run->order = NULL;
    run->batch_labels = NULL;
    run->best_params = NULL;
}
