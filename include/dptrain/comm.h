/* The MPI world: start-up, hosts, agreement on errors, the typed collectives the rest of dptrain
 * uses, each under the stall watchdog, and the watchdog's own channel (its questions and answers
 * on a duplicate of the world). With reducer (the gradient allreduce) and dataset (MPI-IO through
 * HDF5) the only place that calls MPI. */
#ifndef DPTRAIN_COMM_H
#define DPTRAIN_COMM_H

#include <stddef.h>
#include <stdint.h>

struct watchdog;
struct watchdog_limits;
struct watch_channel;

struct comm {
    int world;      /* the communicator as MPI's integer handle (MPI_Comm_c2f), so that this header
                       needs no mpi.h: comm_mpi.h gives it back to the modules that call MPI */
    int rank;
    int size;
    int hosts;      /* nodes the ranks run on (as MPI sees them: ranks that share memory) */
    int node_ranks; /* ranks on this rank's node */
    int host_runs;  /* runs of consecutive ranks on one node: hosts when the ranks are numbered host
                       by host, up to size when numbered in turn over the hosts (mpirun --map-by
                       node), which sends every step of a ring allreduce between hosts */
    struct watchdog *watchdog; /* the stall watchdog, NULL when off (watchdog.h) */
    struct watch_channel *watch_channel; /* its messages' communicator and requests (comm.c) */
};

/* MPI_Init, then MPI_ERRORS_RETURN so that every failure comes back as a code we check; then
 * the hosts and the ranks per host. Collective. */
int comm_init(int *argc, char ***argv, struct comm *comm, char *err);
int comm_finalize(char *err);

/* Collective: returns 0 if ok is true on every rank; otherwise -1 on every rank, with the
 * message of the lowest failing rank in err everywhere (so it can be printed once), prefixed
 * with that rank and its host when there are several ranks. */
int comm_agree(const struct comm *comm, int ok, char *err);

int comm_bcast_floats(const struct comm *comm, float *data, size_t count, int root, char *err);
int comm_bcast_doubles(const struct comm *comm, double *data, size_t count, int root, char *err);
/* In-place sums over all ranks. */
int comm_allreduce_floats(const struct comm *comm, float *data, size_t count, char *err);
int comm_allreduce_doubles(const struct comm *comm, double *data, size_t count, char *err);
/* Sums that come out the same on any rank count: of `count` rows of `width` doubles, this rank
 * holds rows [first, first + local) in `mine` (NULL: it could not allocate them, and every rank
 * fails); every row travels alone (the other ranks send zeros, and adding zeros is exact), and
 * sums[j] adds column j over all the rows in row order, on every rank. */
struct comm_rows {
    const double *mine;
    size_t first, local, count, width;
};
int comm_sum_rows_in_order(const struct comm *comm, const struct comm_rows *rows, double *sums, char *err);

/* Block [first, first + count) of n items for rank r of `ranks`: contiguous, in rank order,
 * sizes differing by at most one. The layout of the training shards and of the evaluation blocks. */
void comm_block(size_t n, int ranks, int r, size_t *first, size_t *count);
/* With `shards` > 0 (at least `ranks`): n items cut into that many comm_block shards and rank r
 * holding the whole shards comm_block(shards, ranks, r), contiguous; 0: comm_block. The layout of
 * the training set under --deterministic. */
void comm_shard_block(size_t n, int shards, int ranks, int r, size_t *first, size_t *count);
/* The same over whole chunks of `chunk` items (the last may be short): rank r's block starts at
 * a multiple of chunk, so work done chunk by chunk has the same shapes on any rank count. The
 * layout of the evaluation sets. */
void comm_chunk_block(size_t n, size_t chunk, int ranks, int r, size_t *first, size_t *count);

int comm_barrier(const struct comm *comm, char *err);
/* In place, over all ranks. */
int comm_max_int(const struct comm *comm, int *value, char *err);
int comm_min_int(const struct comm *comm, int *value, char *err);
int comm_max_long(const struct comm *comm, long *value, char *err);
int comm_max_double(const struct comm *comm, double *value, char *err);
int comm_bcast_size(const struct comm *comm, size_t *value, int root, char *err);
/* root's text (size bytes, the same size on every rank) into every rank's `text`. */
int comm_bcast_text(const struct comm *comm, char *text, size_t size, int root, char *err);
/* all[r] = rank r's 64-bit `mine`, on every rank. */
int comm_allgather_u64(const struct comm *comm, uint64_t mine, uint64_t *all, char *err);
/* all[r] = rank r's `mine`, on every rank. */
int comm_allgather_size(const struct comm *comm, size_t mine, size_t *all, char *err);
/* Rank 0 receives every rank's `items` items of item_bytes each, in rank order, into `all`
 * (room for the sum over the ranks; unused elsewhere). */
int comm_gather_items(const struct comm *comm, const void *mine, size_t items, size_t item_bytes, void *all,
                      char *err);
/* A set of `total` items of item_bytes cut into comm_chunk_block blocks. */
struct comm_blocks {
    size_t total, chunk, item_bytes;
};
/* Rank 0's `whole` cut into blocks: each rank receives its block in `part`; comm_gather_blocks is
 * the inverse. */
int comm_scatter_blocks(const struct comm *comm, const struct comm_blocks *layout, const void *whole, void *part,
                        char *err);
int comm_gather_blocks(const struct comm *comm, const struct comm_blocks *layout, const void *part, void *whole,
                       char *err);
/* Rank 0 receives every rank's `length` bytes concatenated in rank order in *all (malloc'd),
 * rank r's at [(*offsets)[r], (*offsets)[r + 1]) (malloc'd, ranks + 1); NULL elsewhere. */
int comm_gather_text(const struct comm *comm, const char *mine, size_t length, char **all, size_t **offsets,
                     char *err);
/* This process's host name (MPI_Get_processor_name), for messages; "?" if MPI cannot say. */
void comm_host_name(char *name, size_t size);

/* The stall watchdog (watchdog.h), carried by MPI on a duplicate of the world. Collective; needs
 * MPI_THREAD_MULTIPLE (else an error naming limits->flag, which turns the watchdog off). */
int comm_start_watchdog(struct comm *comm, const struct watchdog_limits *limits, char *err);
/* Stops the watchdog and closes its channel; nothing without one. */
int comm_stop_watchdog(struct comm *comm, char *err);

/* Abort every rank: for failures after which ranks can no longer meet in a collective. */
_Noreturn void comm_abort(const struct comm *comm, const char *message);

#endif
