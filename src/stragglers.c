#include "dptrain/stragglers.h"

#include <math.h>
#include <stdlib.h>

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of values[0..count) (sorted in place); count >= 1. */
static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static int usable(const struct rank_seconds *t)
{
    return isfinite(t->compute) && isfinite(t->wait) && t->compute >= 0 && t->wait >= 0;
}

int straggler_find(const struct rank_seconds *ranks, int count, struct straggler *out)
{
    if (count < 2)
        return 0;
    int slowest = 0;
    for (int r = 0; r < count; r++) {
        if (!usable(&ranks[r]))
            return 0;
        if (ranks[r].compute > ranks[slowest].compute)
            slowest = r;
    }
    double *others = malloc(2 * (size_t)count * sizeof *others), *waited = others + count - 1;
    if (!others)
        return 0; /* a diagnostic: without memory for it, say nothing */
    for (int r = 0, n = 0; r < count; r++) {
        if (r == slowest)
            continue;
        double step = ranks[r].compute + ranks[r].wait;
        others[n] = ranks[r].compute;
        waited[n++] = step > 0 ? ranks[r].wait / step : 0;
    }
    double typical = median(others, count - 1);
    int found = typical > 0 && ranks[slowest].compute >= STRAGGLER_RATIO * typical;
    if (found)
        *out = (struct straggler){slowest, ranks[slowest].compute / typical, median(waited, count - 1)};
    free(others);
    return found;
}

void straggler_watch_init(struct straggler_watch *w)
{
    *w = (struct straggler_watch){-1, 0, -1};
}

int straggler_observe(struct straggler_watch *w, const struct straggler *found)
{
    if (!found) {
        *w = (struct straggler_watch){-1, 0, -1};
        return 0;
    }
    w->streak = found->rank == w->candidate ? w->streak + 1 : 1;
    w->candidate = found->rank;
    if (w->streak < 2 || w->named == found->rank)
        return 0;
    w->named = found->rank;
    return 1;
}
