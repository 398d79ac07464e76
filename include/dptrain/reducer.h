/* The gradient allreduce, in buckets that start while the backward pass is still running.
 *
 * Backward produces gradients from the last layer to the first, i.e. from the end of the flat
 * gradient buffer towards its start. The buffer is cut at layer boundaries into buckets of at
 * least `bucket_bytes`, counted from the end; as soon as backward has finished every layer of a
 * bucket, MPI_Iallreduce starts on it, and each later layer calls MPI_Testall to drive the
 * reductions forward (Open MPI has no progress thread: without these calls the transfers would
 * only move in the final wait). The buckets not yet started when backward ends are reduced by
 * one blocking MPI_Allreduce, faster than a nonblocking one with nothing left to overlap.
 * bucket_bytes 0 keeps the single blocking MPI_Allreduce over the
 * whole buffer after backward, for comparison. The sums are the same either way: each element
 * is reduced once, by the same collective over the same ranks.
 *
 * bf16 on the wire (--compress bf16) halves the bytes: before a bucket (or the whole buffer)
 * goes out, each rank adds its error-feedback residual to its gradient, rounds the result to
 * bfloat16 (nearest even) and keeps what the rounding lost as the next step's residual, so that
 * no part of a gradient is lost over the steps (only delayed). The allreduce sums bfloat16
 * vectors with a user-defined operation that adds in float32 and rounds each partial sum back to
 * bfloat16; the sum is widened to float32 at the end.
 *
 * PowerSGD on the wire (--compress powersgd:R, powersgd.h): each bucket's section of the wire
 * holds, in buffer order, the P factor of each of its large weight matrices and the bucket's
 * other gradients (biases, batch norm, small layers) whole; the sections are reduced as the
 * float32 buckets are (started during backward, or fused after it). Once every section is summed
 * the P's are orthonormalised, each rank forms its Q's, and one more allreduce sums all the Q's.
 * On one rank nothing goes on the wire and nothing is rounded or compressed. */
#ifndef DPTRAIN_REDUCER_H
#define DPTRAIN_REDUCER_H

#include "dptrain/comm.h"
#include "dptrain/model.h"
#include "dptrain/powersgd.h"

#include <stddef.h>
#include <stdint.h>

/* A run of the flat gradient buffer and where it travels in the PowerSGD wire buffer: whole
 * (matrix -1), or as the P factor of matrix `matrix`. */
struct wire_segment {
    size_t grad, count, wire;
    int matrix;
};

struct reducer_mpi; /* reducer.c: the communicator, the buckets' requests, the bf16 sum operation */

struct reducer {
    struct reducer_mpi *mpi;
    struct watchdog *watchdog;                   /* told when the step waits for the sum */
    int rank, ranks;
    float *grads;
    size_t count;
    int fused;                                   /* bucket_bytes was 0 */
    int bucket_count;
    size_t starts[MODEL_MAX_LAYERS + 1];         /* bucket b is [starts[b], starts[b + 1]) */
    int next;                                    /* buckets next.. have been started */
    int mpi_error;                               /* first failure of the step, reported at the end */
    /* bf16 on the wire */
    int bf16;
    uint16_t *wire;                              /* [count] what goes on the wire */
    float *residual;                             /* [count] error feedback (bf16 and PowerSGD): what has not
                                                    been delivered yet */
    /* PowerSGD on the wire */
    int powersgd;
    struct powersgd psgd;
    float *factors;                              /* the wire: bucket b's section is
                                                    [wire_starts[b], wire_starts[b + 1]) */
    size_t wire_starts[MODEL_MAX_LAYERS + 1];
    struct wire_segment segments[MODEL_MAX_LAYERS]; /* in buffer order; bucket b's are
                                                    [segment_starts[b], segment_starts[b + 1]) */
    int segment_starts[MODEL_MAX_LAYERS + 1];
    /* sharded: rank i owns [displs[i], displs[i] + counts[i]) of the parameters */
    int sharded;
    int *counts, *displs;
};

/* How the gradient is summed: buckets of at least bucket_bytes (0: one fused allreduce), bf16 or
 * PowerSGD on the wire, or sharded (fused, float32): a reduce-scatter leaves each rank the sum of its own
 * slice of the parameters only, its optimizer updates that slice, and reducer_share gathers the
 * updated slices (ZeRO stage 1's communication: the same bytes as the ring allreduce's two
 * halves; each rank does 1/N of the update). */
struct reducer_options {
    size_t bucket_bytes;
    int bf16;
    int powersgd_rank;                           /* 0: no PowerSGD */
    int sharded;
};

int reducer_init(struct reducer *r, const struct comm *comm, struct model *model,
                 const struct reducer_options *options, char *err);
int reducer_free(struct reducer *r, char *err);
/* Bytes of gradient this rank sends into the allreduce per step (0 on one rank). */
size_t reducer_wire_bytes(const struct reducer *r);

/* Start of a step: no bucket started. */
void reducer_begin(struct reducer *r);
/* Backward has written every gradient at offsets >= first_ready: start the buckets that are now
 * complete and drive the ones in flight. Matches the model's backward hook. The first bucket
 * (offset 0) is never started here but in reducer_finish; a rank without samples calls this
 * once with first_ready 1, so that it starts the same buckets in the same order as the others. */
void reducer_ready(void *reducer, size_t first_ready);
/* Reduce what is left (blocking) and wait for every bucket: the sum over the ranks is then in
 * grads (sharded: in this rank's slice of grads only). */
int reducer_finish(struct reducer *r, char *err);
/* Sharded: this rank's slice of the parameters [first, first + count). The whole buffer
 * otherwise. */
void reducer_slice(const struct reducer *r, size_t *first, size_t *count);
/* Sharded: every rank's slice of data (param_count floats, updated by its owner) to every rank,
 * in place. Nothing otherwise. */
int reducer_share(struct reducer *r, float *data, char *err);

#endif
