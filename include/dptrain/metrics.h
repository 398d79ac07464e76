/* Classification metrics: confusion matrix, per-class precision/recall/F1, and the report text
 * in the layout of scikit-learn's classification_report. */
#ifndef DPTRAIN_METRICS_H
#define DPTRAIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The confusion matrix is printed whole up to this many classes; beyond, its most confused pairs. */
#define METRICS_PRINT_MATRIX_MAX 20
#define METRICS_PRINT_PAIRS 10

struct metrics {
    int classes;
    size_t total;
    int32_t *confusion;          /* [classes][classes]: [true][predicted]; one allocation with support */
    int32_t *support;            /* [classes] */
    double *precision, *recall, *f1; /* [classes] each, one allocation */
    double accuracy;
    double macro_precision, macro_recall, macro_f1;
    double weighted_precision, weighted_recall, weighted_f1;
};

/* Undefined ratios (no predictions of a class, or no samples of it) count as 0, as
 * scikit-learn does with zero_division=0. Every label and prediction must be below `classes`.
 * 0, or -1 when out of memory (m is then empty). */
int metrics_compute(const uint8_t *labels, const uint8_t *predicted, size_t n, int classes, struct metrics *m);
void metrics_free(struct metrics *m);
int32_t metrics_confusion(const struct metrics *m, int true_class, int predicted);
void metrics_print_report(FILE *out, const struct metrics *m, const char *const *names);
/* The whole matrix for up to METRICS_PRINT_MATRIX_MAX classes; else the METRICS_PRINT_PAIRS
 * pairs of classes most often confused. */
void metrics_print_confusion(FILE *out, const struct metrics *m, const char *const *names);

#endif
