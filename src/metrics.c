#include "dptrain/metrics.h"

#include <string.h>

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

void metrics_compute(const uint8_t *labels, const uint8_t *predicted, size_t n, int classes,
                     struct metrics *m)
{
    memset(m, 0, sizeof *m);
    m->classes = classes;
    m->total = n;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        m->confusion[labels[i]][predicted[i]]++;
        correct += labels[i] == predicted[i];
    }
    m->accuracy = ratio((double)correct, (double)n);
    for (int c = 0; c < classes; c++) {
        double true_positive = m->confusion[c][c], predicted_c = 0, actual_c = 0;
        for (int k = 0; k < classes; k++) {
            predicted_c += m->confusion[k][c];
            actual_c += m->confusion[c][k];
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

void metrics_print_confusion(FILE *out, const struct metrics *m, const char *const *names)
{
    fprintf(out, "confusion matrix (rows: true class, columns: predicted)\n%14s", "");
    for (int c = 0; c < m->classes; c++)
        fprintf(out, " %5d", c);
    fprintf(out, "\n");
    for (int r = 0; r < m->classes; r++) {
        fprintf(out, "%11s %2d", names[r], r);
        for (int c = 0; c < m->classes; c++)
            fprintf(out, " %5d", m->confusion[r][c]);
        fprintf(out, "\n");
    }
}
