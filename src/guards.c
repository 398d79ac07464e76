#include "dptrain/guards.h"

#include "dptrain/check.h"
#include "dptrain/cli.h"

#include <math.h>
#include <stdlib.h>

int guards_finite(const float *x, size_t n)
{
    int finite = 1;
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(x[i]);
    return finite;
}

void guards_name_bad_rank(const struct comm *comm, int locally_bad, int epoch, long step, char *err)
{
    int first = locally_bad ? comm->rank : comm->size;
    if (comm_min_int(comm, &first, err) != 0)
        return;
    if (first < comm->size)
        err_set(err, "rank %d: the loss became NaN or Inf at epoch %d, step %ld (try a lower %s)", first, epoch,
                step + 1, cli_setting_flag(SETTING_LR));
    else
        err_set(err, "the summed gradient became NaN or Inf at epoch %d, step %ld (try a lower %s)", epoch,
                step + 1, cli_setting_flag(SETTING_LR));
}

/* The value most ranks hold (ties: rank 0's). */
static uint64_t majority(const uint64_t *values, int count)
{
    uint64_t best = values[0];
    int best_votes = 0;
    for (int i = 0; i < count; i++) {
        int votes = 0;
        for (int j = 0; j < count; j++)
            votes += values[j] == values[i];
        if (votes > best_votes) {
            best = values[i];
            best_votes = votes;
        }
    }
    return best;
}

int guards_check_drift(const struct comm *comm, uint64_t hash, int epoch, long step, char *err)
{
    uint64_t *all = NULL;
    int ok = (all = malloc(sizeof *all * (size_t)comm->size)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate the drift check");
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_allgather_u64(comm, hash, all, err));
    uint64_t most = majority(all, comm->size);
    for (int r = 0; r < comm->size; r++)
        if (all[r] != most)
            FAIL("rank %d: its parameters diverged from the other ranks' by epoch %d, step %ld (parameter hash "
                 "%016llx, the others' %016llx; a fault on that host, or non-deterministic arithmetic)",
                 r, epoch, step + 1, (unsigned long long)all[r], (unsigned long long)most);
    free(all);
    return 0;
fail:
    free(all);
    return -1;
}
