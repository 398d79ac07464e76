#include "dptrain/reducer.h"

#include "dptrain/check.h"
#include "dptrain/watchdog.h"

#include <limits.h>
#include <string.h>

int reducer_init(struct reducer *r, const struct comm *comm, struct model *model, size_t bucket_bytes, char *err)
{
    size_t boundaries[MODEL_MAX_LAYERS], cuts[MODEL_MAX_LAYERS + 1];
    memset(r, 0, sizeof *r);
    r->world = comm->world;
    r->watchdog = comm->watchdog;
    r->rank = comm->rank;
    r->ranks = comm->size;
    r->grads = model->grads;
    r->count = model->param_count;
    r->fused = bucket_bytes == 0;
    if (r->count > (size_t)INT_MAX)
        FAIL("MPI message of %zu gradients is too large", r->count);
    /* Layer boundaries in descending order, then greedy buckets from the end of the buffer. */
    int boundary_count = model_param_boundaries(model, boundaries, MODEL_MAX_LAYERS), cut_count = 0;
    size_t end = r->count;
    for (int i = 0; i < boundary_count && !r->fused; i++)
        if ((end - boundaries[i]) * sizeof(float) >= bucket_bytes) {
            cuts[cut_count++] = boundaries[i];
            end = boundaries[i];
        }
    /* starts ascending: 0, then the cuts from the lowest */
    r->starts[0] = 0;
    for (int i = 0; i < cut_count; i++)
        r->starts[i + 1] = cuts[cut_count - 1 - i];
    r->bucket_count = cut_count + 1;
    r->starts[r->bucket_count] = r->count;
    r->next = r->bucket_count;
    return 0;
fail:
    return -1;
}

void reducer_begin(struct reducer *r)
{
    r->next = r->bucket_count;
    r->mpi_error = 0;
}

static void start_bucket(struct reducer *r, int b)
{
    size_t first = r->starts[b], count = r->starts[b + 1] - first;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, r->grads + first, (int)count, MPI_FLOAT, MPI_SUM, r->world,
                            &r->requests[b]);
    if (rc != MPI_SUCCESS && !r->mpi_error)
        r->mpi_error = rc;
}

void reducer_ready(void *context, size_t first_ready)
{
    struct reducer *r = context;
    /* first_ready 0 is the end of backward: the first bucket is left to reducer_finish. */
    if (r->fused || r->ranks == 1 || first_ready == 0)
        return;
    while (r->next > 0 && r->starts[r->next - 1] >= first_ready)
        start_bucket(r, --r->next);
    if (r->next < r->bucket_count) {
        int done = 0;
        int rc = MPI_Testall(r->bucket_count - r->next, r->requests + r->next, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS && !r->mpi_error)
            r->mpi_error = rc;
    }
}

static int reduce_rest(struct reducer *r, char *err)
{
    int rank = r->rank; /* for the messages */
    if (r->fused) {
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->grads, (int)r->count, MPI_FLOAT, MPI_SUM, r->world),
                  "rank %d: allreduce of %zu gradients failed", rank, r->count);
        return 0;
    }
    CHECK_MPI(r->mpi_error, "rank %d: bucketed allreduce of the gradients failed", rank);
    int first_started = r->next;
    if (r->next > 0) {
        /* What backward finished last has nothing left to overlap with: one blocking allreduce
         * over it, which Open MPI's tuned algorithms run about twice as fast as the nonblocking
         * one (measured, bench_kernels allreduce vs iallreduce). It also drives the buckets in
         * flight. */
        size_t rest = r->starts[r->next];
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->grads, (int)rest, MPI_FLOAT, MPI_SUM, r->world),
                  "rank %d: allreduce of %zu gradients failed", rank, rest);
        r->next = 0;
    }
    CHECK_MPI(MPI_Waitall(r->bucket_count - first_started, r->requests + first_started, MPI_STATUSES_IGNORE),
              "rank %d: waiting for the gradient allreduce failed", rank);
    return 0;
fail:
    return -1;
}

int reducer_finish(struct reducer *r, char *err)
{
    if (r->ranks == 1)
        return 0;
    watchdog_wait(r->watchdog, "the gradient allreduce");
    int status = reduce_rest(r, err);
    watchdog_done(r->watchdog);
    return status;
}
