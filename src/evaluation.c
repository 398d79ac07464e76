#include "dptrain/evaluation.h"

#include "dptrain/check.h"
#include "dptrain/layers.h"
#include "dptrain/tensor.h"

#include <stdlib.h>
#include <string.h>

int evaluator_init(struct evaluator *ev, struct model *model, const struct views *views, char *err)
{
    size_t capacity = (size_t)model->max_batch;
    int tta = views->tta;
    memset(ev, 0, sizeof *ev);
    ev->model = model;
    ev->shift = tta ? views->shift : 0;
    ev->flip = views->flip;
    CHECK_PTR(ev->indices = malloc(capacity * sizeof(uint32_t)), "cannot allocate evaluation indices");
    CHECK_PTR(ev->labels = malloc(capacity + 1), "cannot allocate evaluation labels");
    if (tta)
        CHECK_PTR(ev->view_logits = tensor_alloc(capacity * (size_t)model->classes),
                  "cannot allocate the test-time views' logits");
    return 0;
fail:
    evaluator_free(ev);
    return -1;
}

void evaluator_free(struct evaluator *ev)
{
    free(ev->indices);
    free(ev->labels);
    tensor_free(ev->view_logits);
    memset(ev, 0, sizeof *ev);
}

/* How many views each image's logits average: with --tta the image (and its mirror image where
 * flips are allowed) at every shift of up to `shift` pixels each way; else the image alone. */
static int views_at(const struct evaluator *ev, int shift)
{
    int side = 2 * shift + 1;
    return ev->view_logits ? (ev->flip ? 2 : 1) * side * side : 1;
}

/* The logits of images [start, start + n) of the set; with --tta the mean of every view's: the
 * image and its mirror image, each at every shift of up to `shift` pixels each way, the image as
 * it is first (with shift 0: the image and its mirror image, as --tta has always averaged). */
static const float *batch_logits(const struct evaluator *ev, const struct features *set, size_t start, int n,
                                 int shift)
{
    struct model *m = ev->model;
    for (int i = 0; i < n; i++)
        ev->indices[i] = (uint32_t)(start + (size_t)i);
    features_gather(set, ev->indices, n, model_input(m), ev->labels, NULL);
    const float *logits = model_forward(m, n, 0, NULL);
    if (!ev->view_logits)
        return logits;
    size_t values = (size_t)n * (size_t)m->classes;
    memcpy(ev->view_logits, logits, values * sizeof(float));
    for (int flip = 0; flip <= ev->flip; flip++)
        for (int dy = -shift; dy <= shift; dy++)
            for (int dx = -shift; dx <= shift; dx++) {
                if (!flip && dy == 0 && dx == 0)
                    continue; /* the image as it is: done above */
                features_gather_placed(set, ev->indices, n, &(struct placement){flip, dy, dx}, model_input(m));
                logits = model_forward(m, n, 0, NULL);
                for (size_t i = 0; i < values; i++)
                    ev->view_logits[i] += logits[i];
            }
    float mean = 1.0f / (float)views_at(ev, shift);
    for (size_t i = 0; i < values; i++)
        ev->view_logits[i] *= mean;
    return ev->view_logits;
}

/* Where this rank's predictions go (both NULL: not kept), and the shift of the views (--tta). */
struct predictions {
    uint8_t *classes;
    float *confidence;
    int shift;
};

/* Loss and accuracy over the set, chunk by chunk (EVAL_CHUNK, the same shapes on any rank
 * count), the chunks' sums added in chunk order. */
static int evaluate_set(const struct comm *comm, const struct evaluator *ev, const struct features *set,
                        const struct predictions *out, struct evaluation *result, char *err)
{
    double total = (double)set->count, sums[2];
    CHECK_DP(comm_allreduce_doubles(comm, &total, 1, err));
    size_t local = (set->count + EVAL_CHUNK - 1) / EVAL_CHUNK;
    double *mine = malloc(2 * local * sizeof(double) + 1);
    for (size_t c = 0; mine && c < local; c++) {
        size_t start = c * EVAL_CHUNK;
        int n = (int)(set->count - start < EVAL_CHUNK ? set->count - start : EVAL_CHUNK);
        const float *logits = batch_logits(ev, set, start, n, out->shift);
        long correct = 0;
        mine[2 * c] = softmax_cross_entropy(&(struct loss_input){logits, ev->labels, n, ev->model->classes, 0.0f}, &(struct loss_output){NULL, 0.0f, &correct, out->classes ? out->classes + start : NULL, out->confidence ? out->confidence + start : NULL});
        mine[2 * c + 1] = (double)correct;
    }
    struct comm_rows rows = {mine, set->first / EVAL_CHUNK, local, ((size_t)total + EVAL_CHUNK - 1) / EVAL_CHUNK, 2};
    int status = comm_sum_rows_in_order(comm, &rows, sums, err);
    free(mine);
    CHECK_DP(status);
    result->loss = total > 0 ? sums[0] / total : 0.0;
    result->accuracy = total > 0 ? sums[1] / total : 0.0;
    return 0;
fail:
    return -1;
}

int evaluate(const struct comm *comm, const struct evaluator *ev, const struct features *set,
             struct evaluation *result, char *err)
{
    const struct predictions none = {NULL, NULL, 0}; /* the unshifted views only: see evaluation.h */
    return evaluate_set(comm, ev, set, &none, result, err);
}

int evaluate_predictions(const struct comm *comm, const struct evaluator *ev, const struct features *test,
                         const struct split *whole, struct run_result *r, char *err)
{
    size_t total = comm->rank == 0 ? whole->count : 0;
    struct predictions mine = {malloc(test->count + 1), malloc((test->count + 1) * sizeof(float)), ev->shift};
    int ok = mine.classes && mine.confidence;
    if (comm->rank == 0) {
        r->test_count = total;
        ok = ok && (r->labels = malloc(total + 1)) && (r->predictions = malloc(total + 1)) &&
             (r->confidence = malloc((total + 1) * sizeof(float)));
    }
    if (!ok)
        err_set(err, "cannot allocate predictions");
    CHECK_DP(comm_agree(comm, ok, err));
    struct evaluation e;
    CHECK_DP(evaluate_set(comm, ev, test, &mine, &e, err));
    CHECK_DP(comm_bcast_size(comm, &total, 0, err));
    CHECK_DP(comm_gather_blocks(comm, &(struct comm_blocks){total, EVAL_CHUNK, 1}, mine.classes, r->predictions, err));
    CHECK_DP(comm_gather_blocks(comm, &(struct comm_blocks){total, EVAL_CHUNK, sizeof(float)}, mine.confidence,
                                r->confidence, err));
    r->test_accuracy = e.accuracy;
    r->test_views = views_at(ev, ev->shift);
    r->test_loss = e.loss;
    if (comm->rank == 0) {
        memcpy(r->labels, whole->labels, total);
        ok = metrics_compute(r->labels, r->predictions, total, ev->model->classes, &r->metrics) == 0;
        if (!ok)
            err_set(err, "cannot allocate the metrics of %d classes", ev->model->classes);
    }
    free(mine.classes);
    free(mine.confidence);
    return comm_agree(comm, ok, err);
fail:
    free(mine.classes);
    free(mine.confidence);
    return -1;
}
