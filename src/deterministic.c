#include "dptrain/deterministic.h"

#include "dptrain/check.h"
#include "dptrain/exactsum.h"
#include "dptrain/step.h"

#include <math.h>
#include <string.h>

int deterministic_gradient(struct run *run, int epoch, long step, int *locally_bad, char *err)
{
    struct model *m = run->model;
    size_t params = m->param_count;
    const float *terms[SHARDS_VIRTUAL];
    double biggest = 0;
    float *own = m->grads;
    for (int i = 0; i < run->shards->local_units; i++) {
        float *term = run->exact.terms + (size_t)i * params;
        model_use_grads(m, term);
        *locally_bad |= step_unit(run, &run->units[i], epoch, step, NULL, err);
        double largest = exactsum_max_abs(term, params);
        biggest = largest > biggest || isinf(largest) ? largest : biggest;
        terms[i] = term;
    }
    model_use_grads(m, own);
    double clock = profile_now(run->profile);
    CHECK_DP(comm_max_double(run->comm, &biggest, err));
    if (isinf(biggest)) {
        for (size_t i = 0; i < params; i++)
            m->grads[i] = NAN;
        return 0;
    }
    int exponent = exactsum_exponent(biggest, run->shards->units);
    memset(run->exact.sum, 0, params * sizeof(double));
    exactsum_add(run->exact.sum, terms, run->shards->local_units, params, exponent);
    CHECK_DP(comm_allreduce_doubles(run->comm, run->exact.sum, params, err));
    exactsum_result(run->exact.sum, m->grads, params, exponent);
    profile_end(run->profile, PHASE_ALLREDUCE_WAIT, CATEGORY_STEP, clock);
    return 0;
fail:
    return -1;
}
