/* Classification metrics: confusion matrix, per-class precision/recall/F1, and the report text
 * in the layout of scikit-learn's classification_report. */
#ifndef DPTRAIN_METRICS_H
#define DPTRAIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_MAX_CLASSES 10

struct metrics {
    int classes;
    size_t total;
    int32_t confusion[METRICS_MAX_CLASSES][METRICS_MAX_CLASSES]; /* [true][predicted] */
    int32_t support[METRICS_MAX_CLASSES];
    double precision[METRICS_MAX_CLASSES], recall[METRICS_MAX_CLASSES], f1[METRICS_MAX_CLASSES];
    double accuracy;
    double macro_precision, macro_recall, macro_f1;
    double weighted_precision, weighted_recall, weighted_f1;
};

/* Undefined ratios (no predictions of a class, or no samples of it) count as 0, as
 * scikit-learn does with zero_division=0. */
void metrics_compute(const uint8_t *labels, const uint8_t *predicted, size_t n, int classes,
                     struct metrics *m);
void metrics_print_report(FILE *out, const struct metrics *m, const char *const *names);
void metrics_print_confusion(FILE *out, const struct metrics *m, const char *const *names);

#endif
