#include "dptrain/fault.h"

#include "dptrain/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fault_from_environment(struct fault *fault, char *err)
{
    memset(fault, 0, sizeof *fault);
    const char *text = getenv("DPTRAIN_FAULT");
    if (!text || !*text)
        return 0;
    char kind[16];
    int rank = -1, epoch = 0, consumed = 0;
    long step = 0;
    int fields = sscanf(text, "%15[a-z]@%d%n:%d%n:%ld%n", kind, &rank, &consumed, &epoch, &consumed,
                        &step, &consumed);
    if (fields < 2 || text[consumed] != '\0' || rank < 0 || epoch < 0 || step < 0)
        FAIL("DPTRAIN_FAULT=%s: expected KIND@RANK[:EPOCH[:STEP]]", text);
    if (strcmp(kind, "nan") == 0)
        fault->kind = FAULT_NAN;
    else if (strcmp(kind, "exit") == 0)
        fault->kind = FAULT_EXIT;
    else if (strcmp(kind, "alloc") == 0)
        fault->kind = FAULT_ALLOC;
    else if (strcmp(kind, "io") == 0)
        fault->kind = FAULT_IO;
    else if (strcmp(kind, "flip") == 0)
        fault->kind = FAULT_FLIP;
    else if (strcmp(kind, "slow") == 0)
        fault->kind = FAULT_SLOW;
    else if (strcmp(kind, "lag") == 0)
        fault->kind = FAULT_LAG;
    else if (strcmp(kind, "hold") == 0)
        fault->kind = FAULT_HOLD;
    else
        FAIL("DPTRAIN_FAULT=%s: unknown kind '%s' (nan, exit, alloc, io, flip, slow, lag or hold)", text, kind);
    fault->rank = rank;
    fault->epoch = epoch;
    fault->step = step;
    return 0;
fail:
    return -1;
}

int fault_strikes(const struct fault *fault, enum fault_kind kind, int rank, int epoch, long step)
{
    return fault->kind == kind && fault->rank == rank && (fault->epoch == 0 || fault->epoch == epoch) &&
           (fault->step == 0 || fault->step == step);
}
