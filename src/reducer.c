#include "dptrain/reducer.h"
#include "dptrain/comm_mpi.h"

#include "dptrain/check.h"
#include "dptrain/watchdog.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* bfloat16 is the top half of a float32: round to nearest even by adding 0x7fff plus the lowest
 * kept bit. A NaN or infinity stays non-finite, which the step's NaN guard then reports. */
struct reducer_mpi {
    MPI_Comm world;
    MPI_Request requests[MODEL_MAX_LAYERS];
    MPI_Op sum_bf16;
};

static inline uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The allreduce's operation on bfloat16 vectors: add in float32, round back. */
static void sum_bf16(void *in, void *inout, int *length, MPI_Datatype *type)
{
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *length; i++)
        b[i] = to_bf16(from_bf16(a[i]) + from_bf16(b[i]));
}

/* [first, first + count) of gradient plus residual onto the wire; the rounding error stays. */
static void compress(struct reducer *r, size_t first, size_t count)
{
    for (size_t i = first; i < first + count; i++) {
        float value = r->grads[i] + r->residual[i];
        uint16_t h = to_bf16(value);
        r->residual[i] = value - from_bf16(h);
        r->wire[i] = h;
    }
}

static int init_bf16(struct reducer *r, char *err)
{
    r->bf16 = 1;
    CHECK_PTR(r->wire = malloc(r->count * sizeof *r->wire), "cannot allocate the bf16 wire buffer");
    CHECK_MPI(MPI_Op_create(sum_bf16, 1, &r->mpi->sum_bf16), "cannot create the bf16 sum operation");
    return 0;
fail:
    return -1;
}

/* One segment of bucket b (whose segments so far are [segment_starts[b], segment_starts[b + 1])):
 * a matrix's P, or plain gradients (joined to the bucket's previous segment when both are plain
 * and touch). */
static void add_segment(struct reducer *r, const struct model *model, int b, const struct param_range *range,
                        size_t *wire)
{
    int rows, cols, k = r->segment_starts[b + 1];
    struct wire_segment *last = k > r->segment_starts[b] ? &r->segments[k - 1] : NULL;
    if (model_weight_shape(model, range->offset, &rows, &cols) && powersgd_worth(rows, cols, r->psgd.rank) &&
        r->psgd.count < POWERSGD_MAX_MATRICES) {
        powersgd_add(&r->psgd, range->offset, rows, cols, *wire);
        r->segments[r->segment_starts[b + 1]++] = (struct wire_segment){range->offset, range->count, *wire,
                                                                         r->psgd.count - 1};
        *wire += (size_t)rows * (size_t)r->psgd.rank;
        return;
    }
    if (last && last->matrix < 0 && last->grad + last->count == range->offset)
        last->count += range->count;
    else
        r->segments[r->segment_starts[b + 1]++] = (struct wire_segment){range->offset, range->count, *wire, -1};
    *wire += range->count;
}

/* The wire's layout: each bucket's segments, from the model's parameter ranges (weights, biases,
 * batch norm), which never straddle a bucket's edge (buckets are cut where a layer starts). */
static int init_powersgd(struct reducer *r, const struct model *model, int rank, char *err)
{
    size_t wire = 0;
    powersgd_init(&r->psgd, rank, r->grads, r->residual, NULL);
    for (int b = 0; b < r->bucket_count; b++) {
        r->wire_starts[b] = wire;
        r->segment_starts[b + 1] = r->segment_starts[b];
        for (int k = 0; k < model->range_count; k++) {
            const struct param_range *range = &model->ranges[k];
            if (range->offset >= r->starts[b] && range->offset < r->starts[b + 1])
                add_segment(r, model, b, range, &wire);
        }
    }
    r->wire_starts[r->bucket_count] = wire;
    CHECK_PTR(r->factors = malloc(sizeof(float) * (wire + 1)), "cannot allocate PowerSGD's wire buffer");
    r->psgd.wire = r->factors;
    CHECK_DP(powersgd_alloc(&r->psgd, err));
    if (wire > (size_t)INT_MAX || r->psgd.q_count > (size_t)INT_MAX)
        FAIL("MPI message of %zu PowerSGD floats is too large", wire + r->psgd.q_count);
    r->powersgd = 1;
    return 0;
fail:
    return -1;
}

int reducer_free(struct reducer *r, char *err)
{
    free(r->wire);
    free(r->residual);
    free(r->factors);
    powersgd_free(&r->psgd);
    r->factors = NULL;
    free(r->counts);
    free(r->displs);
    r->wire = NULL;
    r->residual = NULL;
    r->counts = r->displs = NULL;
    if (r->mpi && r->bf16 && r->mpi->sum_bf16 != MPI_OP_NULL)
        CHECK_MPI(MPI_Op_free(&r->mpi->sum_bf16), "cannot free the bf16 sum operation");
    r->bf16 = 0;
    r->powersgd = 0;
    free(r->mpi);
    r->mpi = NULL;
    return 0;
fail:
    free(r->mpi);
    r->mpi = NULL;
    return -1;
}

size_t reducer_wire_bytes(const struct reducer *r)
{
    if (r->ranks == 1)
        return 0;
    if (r->powersgd)
        return (r->wire_starts[r->bucket_count] + r->psgd.q_count) * sizeof(float);
    return r->count * (r->bf16 ? sizeof(uint16_t) : sizeof(float));
}

/* Sharded: every rank's slice, cut at multiples of 16 floats (whole cache lines and vectors). */
static int init_slices(struct reducer *r, char *err)
{
    CHECK_PTR(r->counts = malloc(sizeof(int) * (size_t)r->ranks), "cannot allocate the optimizer's slices");
    CHECK_PTR(r->displs = malloc(sizeof(int) * (size_t)r->ranks), "cannot allocate the optimizer's slices");
    for (int i = 0; i < r->ranks; i++) {
        size_t first, count;
        comm_chunk_block(r->count, 16, r->ranks, i, &first, &count);
        r->displs[i] = (int)first;
        r->counts[i] = (int)count;
    }
    return 0;
fail:
    return -1;
}

int reducer_init(struct reducer *r, const struct comm *comm, struct model *model,
                 const struct reducer_options *options, char *err)
{
    size_t bucket_bytes = options->sharded ? 0 : options->bucket_bytes;
    int bf16 = options->bf16;
    size_t boundaries[MODEL_MAX_LAYERS], cuts[MODEL_MAX_LAYERS + 1];
    memset(r, 0, sizeof *r);
    CHECK_PTR(r->mpi = calloc(1, sizeof *r->mpi), "cannot allocate the gradient reducer");
    r->mpi->world = comm_mpi_world(comm);
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
    r->mpi->sum_bf16 = MPI_OP_NULL;
    if (bf16 || options->powersgd_rank > 0) /* error feedback: what has not been delivered yet */
        CHECK_PTR(r->residual = calloc(r->count, sizeof *r->residual), "cannot allocate the error-feedback residual");
    if (bf16)
        CHECK_DP(init_bf16(r, err));
    if (options->powersgd_rank > 0)
        CHECK_DP(init_powersgd(r, model, options->powersgd_rank, err));
    r->sharded = options->sharded && r->ranks > 1;
    if (r->sharded)
        CHECK_DP(init_slices(r, err));
    return 0;
fail:
    return -1;
}

void reducer_begin(struct reducer *r)
{
    r->next = r->bucket_count;
    r->mpi_error = 0;
}

/* PowerSGD: bucket b's section of the wire, its P's computed and its other gradients copied. */
static void pack(struct reducer *r, int b)
{
    for (int k = r->segment_starts[b]; k < r->segment_starts[b + 1]; k++) {
        const struct wire_segment *g = &r->segments[k];
        if (g->matrix >= 0)
            powersgd_project(&r->psgd, g->matrix);
        else
            memcpy(r->factors + g->wire, r->grads + g->grad, g->count * sizeof(float));
    }
}

static void start_bucket(struct reducer *r, int b)
{
    size_t first = r->starts[b], count = r->starts[b + 1] - first;
    int rc;
    if (r->powersgd) {
        pack(r, b);
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->factors + r->wire_starts[b], (int)(r->wire_starts[b + 1] - r->wire_starts[b]),
                            MPI_FLOAT, MPI_SUM, r->mpi->world, &r->mpi->requests[b]);
    } else if (r->bf16) {
        compress(r, first, count);
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->wire + first, (int)count, MPI_UINT16_T, r->mpi->sum_bf16, r->mpi->world,
                            &r->mpi->requests[b]);
    } else {
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->grads + first, (int)count, MPI_FLOAT, MPI_SUM, r->mpi->world,
                            &r->mpi->requests[b]);
    }
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
        int rc = MPI_Testall(r->bucket_count - r->next, r->mpi->requests + r->next, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS && !r->mpi_error)
            r->mpi_error = rc;
    }
}

/* One blocking allreduce of buckets [0, buckets): float32, bfloat16 or PowerSGD's sections. */
static int allreduce_front(struct reducer *r, int buckets, char *err)
{
    size_t count = r->starts[buckets];
    if (r->powersgd) {
        for (int b = 0; b < buckets; b++)
            pack(r, b);
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->factors, (int)r->wire_starts[buckets], MPI_FLOAT, MPI_SUM, r->mpi->world),
                  "rank %d: allreduce of %zu PowerSGD factors and gradients failed", r->rank, r->wire_starts[buckets]);
    } else if (r->bf16) {
        compress(r, 0, count);
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->wire, (int)count, MPI_UINT16_T, r->mpi->sum_bf16, r->mpi->world),
                  "rank %d: allreduce of %zu bf16 gradients failed", r->rank, count);
    } else {
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->grads, (int)count, MPI_FLOAT, MPI_SUM, r->mpi->world),
                  "rank %d: allreduce of %zu gradients failed", r->rank, count);
    }
    return 0;
fail:
    return -1;
}

/* Sharded: the sum of this rank's slice, moved from the front of grads (where an in-place
 * reduce-scatter leaves it) to its place. */
static int reduce_scatter(struct reducer *r, char *err)
{
    CHECK_MPI(MPI_Reduce_scatter(MPI_IN_PLACE, r->grads, r->counts, MPI_FLOAT, MPI_SUM, r->mpi->world),
              "rank %d: reduce-scatter of the gradients failed", r->rank);
    memmove(r->grads + r->displs[r->rank], r->grads, (size_t)r->counts[r->rank] * sizeof(float));
    return 0;
fail:
    return -1;
}

static int reduce_rest(struct reducer *r, char *err)
{
    int rank = r->rank; /* for the messages */
    if (r->sharded)
        return reduce_scatter(r, err);
    if (r->fused)
        return allreduce_front(r, r->bucket_count, err);
    CHECK_MPI(r->mpi_error, "rank %d: bucketed allreduce of the gradients failed", rank);
    int first_started = r->next;
    if (r->next > 0) {
        /* What backward finished last has nothing left to overlap with: one blocking allreduce
         * over it, which Open MPI's tuned algorithms run about twice as fast as the nonblocking
         * one (measured, bench_kernels allreduce vs iallreduce). It also drives the buckets in
         * flight. */
        CHECK_DP(allreduce_front(r, r->next, err));
        r->next = 0;
    }
    CHECK_MPI(MPI_Waitall(r->bucket_count - first_started, r->mpi->requests + first_started, MPI_STATUSES_IGNORE),
              "rank %d: waiting for the gradient allreduce failed", rank);
    return 0;
fail:
    return -1;
}

/* PowerSGD, every section summed: the plain gradients back in place, each matrix's P
 * orthonormalised and its Q formed, then all the Q's summed in one allreduce. */
static int reduce_q(struct reducer *r, char *err)
{
    for (int k = 0; k < r->segment_starts[r->bucket_count]; k++) {
        const struct wire_segment *g = &r->segments[k];
        if (g->matrix >= 0)
            powersgd_back(&r->psgd, g->matrix);
        else
            memcpy(r->grads + g->grad, r->factors + g->wire, g->count * sizeof(float));
    }
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, r->psgd.q, (int)r->psgd.q_count, MPI_FLOAT, MPI_SUM, r->mpi->world),
              "rank %d: allreduce of %zu PowerSGD factors failed", r->rank, r->psgd.q_count);
    return 0;
fail:
    return -1;
}

int reducer_finish(struct reducer *r, char *err)
{
    if (r->ranks == 1)
        return 0;
    watchdog_wait(r->watchdog, "the gradient allreduce", (double)reducer_wire_bytes(r));
    int status = reduce_rest(r, err);
    if (status == 0 && r->powersgd)
        status = reduce_q(r, err);
    watchdog_done(r->watchdog);
    for (size_t i = 0; status == 0 && r->bf16 && i < r->count; i++)
        r->grads[i] = from_bf16(r->wire[i]);
    for (int i = 0; status == 0 && r->powersgd && i < r->psgd.count; i++)
        powersgd_expand(&r->psgd, i, r->ranks);
    return status;
}

void reducer_slice(const struct reducer *r, size_t *first, size_t *count)
{
    *first = r->sharded ? (size_t)r->displs[r->rank] : 0;
    *count = r->sharded ? (size_t)r->counts[r->rank] : r->count;
}

int reducer_share(struct reducer *r, float *data, char *err)
{
    if (!r->sharded)
        return 0;
    watchdog_wait(r->watchdog, "the parameters' allgather", (double)(r->count * sizeof(float)));
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, r->counts, r->displs, MPI_FLOAT, r->mpi->world);
    watchdog_done(r->watchdog);
    CHECK_MPI(rc, "rank %d: allgather of the updated parameters failed", r->rank);
    return 0;
fail:
    return -1;
}
