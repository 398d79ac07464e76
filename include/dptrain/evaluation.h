/* Collective evaluation: every rank evaluates its block of a set (test or validation) in chunks of
 * EVAL_CHUNK images and one allreduce gathers every chunk's sums, added in chunk order (the same
 * bits on any rank count); for the final results each rank predicts its block and rank 0
 * gathers the predictions and computes the metrics. With --tta each image is also seen
 * mirrored and the logits are averaged: a network trained on mirrored images takes both views as
 * fair evidence, and the average smooths its mistakes on the borderline ones. The final
 * predictions also see both views shifted by up to --tta-shift pixels each way (18 views at 1
 * pixel, as the network was trained on shifted images); the evaluations after every epoch, which
 * choose the best epoch on validation, use the two unshifted views only (18 views would cost as
 * much as the epoch's training). */
#ifndef DPTRAIN_EVALUATION_H
#define DPTRAIN_EVALUATION_H

#include "dptrain/comm.h"
#include "dptrain/dataset.h"
#include "dptrain/features.h"
#include "dptrain/model.h"
#include "dptrain/results.h"

#include <stddef.h>
#include <stdint.h>

/* Which views of an image its logits average: with tta, the image shifted by up to `shift`
 * pixels each way, and mirrored too where `flip` (the data's mirror invariance, or --flip) says
 * a mirror image keeps its class. */
struct views {
    int tta, shift, flip;
};

/* A model (borrowed) and the buffers evaluating it needs, sized for its batch capacity. */
struct evaluator {
    struct model *model;
    uint32_t *indices;
    uint8_t *labels;
    float *view_logits;          /* --tta: [capacity][classes], the views' mean; else NULL */
    int shift;                   /* --tta-shift: the final predictions' views, shifted up to this */
    int flip;                    /* mirrored views too */
};

struct evaluation {
    double loss, accuracy;
};

int evaluator_init(struct evaluator *ev, struct model *model, const struct views *views, char *err);
void evaluator_free(struct evaluator *ev);

/* Loss and accuracy over a whole set whose blocks the ranks hold in `set`. */
int evaluate(const struct comm *comm, const struct evaluator *ev, const struct features *set,
             struct evaluation *result, char *err);

/* The final predictions on the test set: `test` is this rank's block, `whole` rank 0's full
 * test set (its labels); rank 0 fills r's labels, predictions, confidence and metrics, and every
 * rank r's test accuracy and loss. */
int evaluate_predictions(const struct comm *comm, const struct evaluator *ev, const struct features *test,
                         const struct split *whole, struct run_result *r, char *err);

#endif
