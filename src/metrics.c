#include "dptrain/metrics.h"

#include <stdlib.h>
#include <string.h>

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

void metrics_free(struct metrics *m)
{
    free(m->confusion);
    free(m->precision);
    memset(m, 0, sizeof *m);
}

int32_t metrics_confusion(const struct metrics *m, int true_class, int predicted)
{
    return m->confusion[(size_t)true_class * m->classes + predicted];
}

int metrics_compute(const uint8_t *labels, const uint8_t *predicted, size_t n, int classes, struct metrics *m)
{
    size_t k = (size_t)classes;
    memset(m, 0, sizeof *m);
    m->confusion = calloc(k * k + k, sizeof *m->confusion);
    m->precision = calloc(3 * k, sizeof *m->precision);
    if (!m->confusion || !m->precision) {
        metrics_free(m);
        return -1;
    }
    m->support = m->confusion + k * k;
    m->recall = m->precision + k;
    m->f1 = m->recall + k;
    m->classes = classes;
    m->total = n;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        m->confusion[labels[i] * k + predicted[i]]++;
        correct += labels[i] == predicted[i];
    }
    m->accuracy = ratio((double)correct, (double)n);
    for (int c = 0; c < classes; c++) {
        double true_positive = metrics_confusion(m, c, c), predicted_c = 0, actual_c = 0;
        for (int j = 0; j < classes; j++) {
            predicted_c += metrics_confusion(m, j, c);
            actual_c += metrics_confusion(m, c, j);
        }
        m->support[c] = (int32_t)actual_c;
        m->precision[c] = ratio(true_positive, predicted_c);
        m->recall[c] = ratio(true_positive, actual_c);
        m->f1[c] = ratio(2 * m->precision[c] * m->recall[c], m->precision[c] + m->recall[c]);
        m->macro_precision += m->precision[c] / classes;
        m->macro_recall += m->recall[c] / classes;
        m->macro_f1 += m->f1[c] / classes;
        double weight = ratio(actual_c, (double)n);
        m->weighted_precision += m->precision[c] * weight;
        m->weighted_recall += m->recall[c] * weight;
        m->weighted_f1 += m->f1[c] * weight;
    }
    return 0;
}

void metrics_print_report(FILE *out, const struct metrics *m, const char *const *names)
{
    fprintf(out, "%14s %10s %9s %9s %9s\n\n", "", "precision", "recall", "f1-score", "support");
    for (int c = 0; c < m->classes; c++)
        fprintf(out, "%14s %10.2f %9.2f %9.2f %9d\n", names[c], m->precision[c], m->recall[c],
                m->f1[c], m->support[c]);
    fprintf(out, "\n%14s %10s %9s %9.2f %9zu\n", "accuracy", "", "", m->accuracy, m->total);
    fprintf(out, "%14s %10.2f %9.2f %9.2f %9zu\n", "macro avg", m->macro_precision,
            m->macro_recall, m->macro_f1, m->total);
    fprintf(out, "%14s %10.2f %9.2f %9.2f %9zu\n", "weighted avg", m->weighted_precision,
            m->weighted_recall, m->weighted_f1, m->total);
}

/* The pairs (true, predicted) of different classes with the most images, largest first. */
static void print_confused_pairs(FILE *out, const struct metrics *m, const char *const *names)
{
    int shown[METRICS_PRINT_PAIRS][2], count = 0;
    fprintf(out, "most confused pairs of the %d classes (true -> predicted: images)\n", m->classes);
    for (; count < METRICS_PRINT_PAIRS; count++) {
        int best_t = -1, best_p = -1;
        int32_t best = 0;
        for (int t = 0; t < m->classes; t++)
            for (int p = 0; p < m->classes; p++) {
                int32_t v = metrics_confusion(m, t, p), taken = 0;
                for (int s = 0; s < count; s++)
                    taken |= shown[s][0] == t && shown[s][1] == p;
                if (t != p && !taken && v > best) {
                    best = v;
                    best_t = t;
                    best_p = p;
                }
            }
        if (best_t < 0)
            break;
        shown[count][0] = best_t;
        shown[count][1] = best_p;
        fprintf(out, "%24s -> %-24s %6d\n", names[best_t], names[best_p], best);
    }
    if (count == 0)
        fprintf(out, "  none: every image was classified correctly\n");
}

void metrics_print_confusion(FILE *out, const struct metrics *m, const char *const *names)
{
    if (m->classes > METRICS_PRINT_MATRIX_MAX) {
        print_confused_pairs(out, m, names);
        return;
    }
    fprintf(out, "confusion matrix (rows: true class, columns: predicted)\n%14s", "");
    for (int c = 0; c < m->classes; c++)
        fprintf(out, " %5d", c);
    fprintf(out, "\n");
    for (int r = 0; r < m->classes; r++) {
        fprintf(out, "%11.11s %2d", names[r], r);
        for (int c = 0; c < m->classes; c++)
            fprintf(out, " %5d", metrics_confusion(m, r, c));
        fprintf(out, "\n");
    }
}
