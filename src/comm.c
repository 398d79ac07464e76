#include "dptrain/comm.h"
#include "dptrain/comm_mpi.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/watchdog.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each rank names its node by the node's lowest world rank; gathered, the names give the hosts
 * (the ranks that name themselves) and the runs of consecutive ranks on one host: the hosts when
 * ranks are numbered host by host. A flat allreduce (a ring) passes each block to the next rank,
 * so ranks numbered in turn over the hosts send every step's blocks between hosts. */
static int place_hosts(struct comm *comm, MPI_Comm node, char *err)
{
    int leader = comm->rank, *leaders = NULL;
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, node), "rank %d: cannot name this node",
              comm->rank);
    CHECK_PTR(leaders = malloc(sizeof *leaders * (size_t)comm->size), "cannot allocate %d node names", comm->size);
    CHECK_MPI(MPI_Allgather(&leader, 1, MPI_INT, leaders, 1, MPI_INT, comm_mpi_world(comm)),
              "rank %d: cannot gather the node names", comm->rank);
    comm->hosts = 0;
    comm->host_runs = 0;
    for (int r = 0; r < comm->size; r++) {
        comm->hosts += leaders[r] == r;
        comm->host_runs += r == 0 || leaders[r] != leaders[r - 1];
    }
    free(leaders);
    return 0;
fail:
    free(leaders);
    return -1;
}

/* The ranks that share memory with this one form its node. */
static int find_hosts(struct comm *comm, char *err)
{
    MPI_Comm node = MPI_COMM_NULL;
    CHECK_MPI(MPI_Comm_split_type(comm_mpi_world(comm), MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &node),
              "rank %d: cannot find the ranks that share this node", comm->rank);
    CHECK_MPI(MPI_Comm_size(node, &comm->node_ranks), "rank %d: MPI_Comm_size failed", comm->rank);
    CHECK_DP(place_hosts(comm, node, err));
    CHECK_MPI(MPI_Comm_free(&node), "rank %d: MPI_Comm_free failed", comm->rank);
    return 0;
fail:
    if (node != MPI_COMM_NULL)
        MPI_Comm_free(&node);
    return -1;
}

/* An MPI collective under the stall watchdog (if any): it knows this rank is waiting in it. */
#define WATCHED(comm, what, bytes, call)                                                                   \
    (watchdog_wait((comm)->watchdog, what, (double)(bytes)), watched_end((comm)->watchdog, (call)))

static int watched_end(struct watchdog *watchdog, int rc)
{
    watchdog_done(watchdog);
    return rc;
}

int comm_init(int *argc, char ***argv, struct comm *comm, char *err)
{
    int provided = 0;
    /* MPI_THREAD_MULTIPLE: the stall watchdog's thread calls MPI while the main thread waits in
     * a collective. */
    CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "cannot start MPI");
    comm->world = (int)MPI_Comm_c2f(MPI_COMM_WORLD);
    comm->watchdog = NULL;
    comm->watch_channel = NULL;
    CHECK_MPI(MPI_Comm_set_errhandler(comm_mpi_world(comm), MPI_ERRORS_RETURN), "cannot set MPI error handler");
    CHECK_MPI(MPI_Comm_rank(comm_mpi_world(comm), &comm->rank), "MPI_Comm_rank failed");
    CHECK_MPI(MPI_Comm_size(comm_mpi_world(comm), &comm->size), "MPI_Comm_size failed");
    CHECK_DP(find_hosts(comm, err));
    return 0;
fail:
    return -1;
}

void comm_host_name(char *name, size_t size)
{
    char host[MPI_MAX_PROCESSOR_NAME] = "?";
    int length = 0;
    if (MPI_Get_processor_name(host, &length) != MPI_SUCCESS)
        snprintf(host, sizeof host, "?");
    snprintf(name, size, "%s", host);
}

int comm_finalize(char *err)
{
    CHECK_MPI(MPI_Finalize(), "MPI_Finalize failed");
    return 0;
fail:
    return -1;
}

int comm_agree(const struct comm *comm, int ok, char *err)
{
    int rank = comm->rank, size = comm->size, lowest = INT_MAX;
    int mine = ok ? INT_MAX : rank;
    CHECK_MPI(WATCHED(comm, "an agreement", sizeof(int), MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm_mpi_world(comm))),
              "rank %d: MPI failed while agreeing on an error", rank);
    if (lowest == INT_MAX)
        return 0;
    if (rank == lowest && size > 1) {
        /* Name the rank and its host, so that a failure of one shard or one machine is traceable. */
        char named[MPI_MAX_PROCESSOR_NAME + 32], host[MPI_MAX_PROCESSOR_NAME];
        comm_host_name(host, sizeof host);
        snprintf(named, sizeof named, "rank %d on %s", rank, host);
        err_prefix(err, named); /* keeps the message's end, its reason, whatever its length */
    }
    CHECK_MPI(WATCHED(comm, "an agreement", DP_ERR_LEN, MPI_Bcast(err, DP_ERR_LEN, MPI_CHAR, lowest, comm_mpi_world(comm))),
              "rank %d: MPI failed while sharing an error", rank);
    err[DP_ERR_LEN - 1] = '\0';
    return -1;
fail:
    return -1;
}

/* MPI counts are int; our buffers never come near 2^31 elements, but say so if one does. */
static int count_fits(size_t count, char *err)
{
    if (count > (size_t)INT_MAX) {
        err_set(err, "MPI message of %zu elements is too large", count);
        return 0;
    }
    return 1;
}

int comm_bcast_floats(const struct comm *comm, float *data, size_t count, int root, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(WATCHED(comm, "a broadcast", count * sizeof(float), MPI_Bcast(data, (int)count, MPI_FLOAT, root, comm_mpi_world(comm))),
              "rank %d: broadcast of %zu floats failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_bcast_doubles(const struct comm *comm, double *data, size_t count, int root, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(WATCHED(comm, "a broadcast", count * sizeof(double), MPI_Bcast(data, (int)count, MPI_DOUBLE, root, comm_mpi_world(comm))),
              "rank %d: broadcast of %zu doubles failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_allreduce_floats(const struct comm *comm, float *data, size_t count, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(WATCHED(comm, "an allreduce", count * sizeof(float),
                      MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, comm_mpi_world(comm))),
              "rank %d: allreduce of %zu floats failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_allreduce_doubles(const struct comm *comm, double *data, size_t count, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(WATCHED(comm, "an allreduce", count * sizeof(double),
                      MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_DOUBLE, MPI_SUM, comm_mpi_world(comm))),
              "rank %d: allreduce of %zu doubles failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_sum_rows_in_order(const struct comm *comm, const struct comm_rows *rows, double *sums, char *err)
{
    size_t width = rows->width;
    double *all = calloc(rows->count * width + 1, sizeof(double));
    int ok = all != NULL && (rows->mine != NULL || rows->local == 0);
    if (!ok)
        err_set(err, "cannot allocate %zu rows of sums", rows->count);
    CHECK_DP(comm_agree(comm, ok, err));
    for (size_t i = 0; i < rows->local * width; i++)
        all[rows->first * width + i] = rows->mine[i] + 0.0; /* -0 as +0, as a sum with zeros makes it */
    CHECK_DP(comm_allreduce_doubles(comm, all, rows->count * width, err));
    for (size_t j = 0; j < width; j++) {
        sums[j] = 0;
        for (size_t r = 0; r < rows->count; r++)
            sums[j] += all[r * width + j];
    }
    free(all);
    return 0;
fail:
    free(all);
    return -1;
}

void comm_abort(const struct comm *comm, const char *message)
{
    char host[MPI_MAX_PROCESSOR_NAME];
    comm_host_name(host, sizeof host);
    fprintf(stderr, "dptrain: error: rank %d on %s: %s\n", comm->rank, host, message);
    fflush(stderr);
    /* MPI_Abort does not return when it works; if it fails, this rank still must not go on. */
    if (MPI_Abort(comm_mpi_world(comm), DP_EXIT_ERROR) != MPI_SUCCESS)
        fprintf(stderr, "dptrain: error: rank %d: MPI_Abort failed\n", comm->rank);
    exit(DP_EXIT_ERROR);
}

void comm_block(size_t n, int ranks, int r, size_t *first, size_t *count)
{
    size_t base = n / (size_t)ranks, extra = n % (size_t)ranks, rr = (size_t)r;
    *first = rr * base + (rr < extra ? rr : extra);
    *count = base + (rr < extra ? 1 : 0);
}

void comm_shard_block(size_t n, int shards, int ranks, int r, size_t *first, size_t *count)
{
    if (shards == 0) {
        comm_block(n, ranks, r, first, count);
        return;
    }
    size_t first_shard, held, end, unused;
    comm_block((size_t)shards, ranks, r, &first_shard, &held);
    comm_block(n, shards, (int)first_shard, first, &unused);
    comm_block(n, shards, (int)(first_shard + held), &end, &unused); /* shard `shards` starts at n */
    *count = end - *first;
}

void comm_chunk_block(size_t n, size_t chunk, int ranks, int r, size_t *first, size_t *count)
{
    size_t first_chunk, chunks;
    comm_block((n + chunk - 1) / chunk, ranks, r, &first_chunk, &chunks);
    size_t end = (first_chunk + chunks) * chunk;
    *first = first_chunk * chunk < n ? first_chunk * chunk : n;
    *count = (end < n ? end : n) - *first;
}

int comm_barrier(const struct comm *comm, char *err)
{
    CHECK_MPI(WATCHED(comm, "a barrier", 0, MPI_Barrier(comm_mpi_world(comm))), "rank %d: barrier failed", comm->rank);
    return 0;
fail:
    return -1;
}

static int reduce_in_place(const struct comm *comm, void *value, MPI_Datatype type, MPI_Op op, size_t bytes,
                           char *err)
{
    CHECK_MPI(WATCHED(comm, "an allreduce", bytes,
                      MPI_Allreduce(MPI_IN_PLACE, value, 1, type, op, comm_mpi_world(comm))), "rank %d: allreduce failed",
              comm->rank);
    return 0;
fail:
    return -1;
}

int comm_max_int(const struct comm *comm, int *value, char *err)
{
    return reduce_in_place(comm, value, MPI_INT, MPI_MAX, sizeof(int), err);
}

int comm_min_int(const struct comm *comm, int *value, char *err)
{
    return reduce_in_place(comm, value, MPI_INT, MPI_MIN, sizeof(int), err);
}

int comm_max_long(const struct comm *comm, long *value, char *err)
{
    return reduce_in_place(comm, value, MPI_LONG, MPI_MAX, sizeof(long), err);
}

int comm_max_double(const struct comm *comm, double *value, char *err)
{
    return reduce_in_place(comm, value, MPI_DOUBLE, MPI_MAX, sizeof(double), err);
}

int comm_bcast_size(const struct comm *comm, size_t *value, int root, char *err)
{
    unsigned long long wide = *value;
    CHECK_MPI(WATCHED(comm, "a broadcast", sizeof wide,
                      MPI_Bcast(&wide, 1, MPI_UNSIGNED_LONG_LONG, root, comm_mpi_world(comm))), "rank %d: broadcast failed",
              comm->rank);
    *value = (size_t)wide;
    return 0;
fail:
    return -1;
}

int comm_bcast_text(const struct comm *comm, char *text, size_t size, int root, char *err)
{
    if (size > INT_MAX)
        FAIL("rank %d: a text of %zu bytes is too long to broadcast", comm->rank, size);
    CHECK_MPI(WATCHED(comm, "a broadcast", size, MPI_Bcast(text, (int)size, MPI_CHAR, root, comm_mpi_world(comm))),
              "rank %d: broadcast failed", comm->rank);
    text[size - 1] = '\0';
    return 0;
fail:
    return -1;
}

int comm_allgather_u64(const struct comm *comm, uint64_t mine, uint64_t *all, char *err)
{
    CHECK_MPI(WATCHED(comm, "an allgather", sizeof mine,
                      MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, comm_mpi_world(comm))),
              "rank %d: allgather failed",
              comm->rank);
    return 0;
fail:
    return -1;
}

int comm_allgather_size(const struct comm *comm, size_t mine, size_t *all, char *err)
{
    unsigned long long wide = mine, *gathered = NULL;
    CHECK_PTR(gathered = malloc(sizeof *gathered * (size_t)comm->size), "cannot allocate");
    CHECK_MPI(WATCHED(comm, "an allgather", sizeof wide,
                      MPI_Allgather(&wide, 1, MPI_UNSIGNED_LONG_LONG, gathered, 1, MPI_UNSIGNED_LONG_LONG,
                                    comm_mpi_world(comm))),
              "rank %d: allgather failed", comm->rank);
    for (int r = 0; r < comm->size; r++)
        all[r] = (size_t)gathered[r];
    free(gathered);
    return 0;
fail:
    free(gathered);
    return -1;
}

/* MPI counts and displacements in bytes for per-rank item counts (rank 0 only needs them). */
static int byte_layout(const struct comm *comm, const size_t *items, size_t item_bytes, int *counts, int *displs,
                       char *err)
{
    size_t at = 0;
    for (int r = 0; r < comm->size; r++) {
        size_t bytes = items[r] * item_bytes;
        if (bytes > (size_t)INT_MAX || at > (size_t)INT_MAX - bytes)
            FAIL("rank %d: %zu bytes are too many for one MPI message", comm->rank, at + bytes);
        counts[r] = (int)bytes;
        displs[r] = (int)at;
        at += bytes;
    }
    return 0;
fail:
    return -1;
}

/* Rank 0's whole set <-> every rank's block of it (comm_chunk_block), one direction or the other. */
struct block_move {
    const void *from;
    void *to;
    size_t total, chunk, item_bytes;
    int gather;                  /* 0: scatter whole -> parts; 1: gather parts -> whole */
};

/* counts and displs for every rank's block of the move's items (the same on every rank). */
static int block_layout(const struct comm *comm, const struct block_move *m, int **counts, int **displs, char *err)
{
    size_t *items = NULL;
    CHECK_PTR(*counts = malloc(sizeof(int) * (size_t)comm->size), "cannot allocate");
    CHECK_PTR(*displs = malloc(sizeof(int) * (size_t)comm->size), "cannot allocate");
    CHECK_PTR(items = malloc(sizeof *items * (size_t)comm->size), "cannot allocate");
    for (int r = 0; r < comm->size; r++) {
        size_t first;
        comm_chunk_block(m->total, m->chunk, comm->size, r, &first, &items[r]);
    }
    CHECK_DP(byte_layout(comm, items, m->item_bytes, *counts, *displs, err));
    free(items);
    return 0;
fail:
    free(items);
    return -1;
}

int comm_gather_items(const struct comm *comm, const void *mine, size_t items, size_t item_bytes, void *all,
                      char *err)
{
    size_t *sizes = NULL;
    int *counts = NULL, *displs = NULL;
    CHECK_PTR(sizes = malloc(sizeof *sizes * (size_t)comm->size), "cannot allocate");
    CHECK_PTR(counts = malloc(sizeof(int) * (size_t)comm->size), "cannot allocate");
    CHECK_PTR(displs = malloc(sizeof(int) * (size_t)comm->size), "cannot allocate");
    CHECK_DP(comm_allgather_size(comm, items, sizes, err));
    /* every rank computes the same layout from the same sizes: the same verdict everywhere */
    CHECK_DP(byte_layout(comm, sizes, item_bytes, counts, displs, err));
    CHECK_MPI(WATCHED(comm, "a gather", counts[comm->rank],
                      MPI_Gatherv(mine, counts[comm->rank], MPI_BYTE, all, counts, displs, MPI_BYTE, 0, comm_mpi_world(comm))),
              "rank %d: gather failed", comm->rank);
    free(sizes);
    free(counts);
    free(displs);
    return 0;
fail:
    free(sizes);
    free(counts);
    free(displs);
    return -1;
}

static int move_blocks(const struct comm *comm, const struct block_move *m, char *err)
{
    int *counts = NULL, *displs = NULL;
    CHECK_DP(block_layout(comm, m, &counts, &displs, err));
    int mine = counts[comm->rank];
    if (m->gather)
        CHECK_MPI(WATCHED(comm, "a gather", mine,
                          MPI_Gatherv(m->from, mine, MPI_BYTE, m->to, counts, displs, MPI_BYTE, 0, comm_mpi_world(comm))),
                  "rank %d: gather failed", comm->rank);
    else
        CHECK_MPI(WATCHED(comm, "a scatter", mine,
                          MPI_Scatterv(m->from, counts, displs, MPI_BYTE, m->to, mine, MPI_BYTE, 0, comm_mpi_world(comm))),
                  "rank %d: scatter failed", comm->rank);
    free(counts);
    free(displs);
    return 0;
fail:
    free(counts);
    free(displs);
    return -1;
}

int comm_scatter_blocks(const struct comm *comm, const struct comm_blocks *layout, const void *whole, void *part,
                        char *err)
{
    return move_blocks(comm, &(struct block_move){whole, part, layout->total, layout->chunk, layout->item_bytes, 0},
                       err);
}

int comm_gather_blocks(const struct comm *comm, const struct comm_blocks *layout, const void *part, void *whole,
                       char *err)
{
    return move_blocks(comm, &(struct block_move){part, whole, layout->total, layout->chunk, layout->item_bytes, 1},
                       err);
}

int comm_gather_text(const struct comm *comm, const char *mine, size_t length, char **all, size_t **offsets,
                     char *err)
{
    size_t *sizes = NULL, total = 0;
    int ok = 1;
    *all = NULL;
    *offsets = NULL;
    CHECK_PTR(sizes = malloc(sizeof *sizes * (size_t)comm->size), "cannot allocate");
    CHECK_DP(comm_allgather_size(comm, length, sizes, err));
    for (int r = 0; r < comm->size; r++)
        total += sizes[r];
    if (comm->rank == 0 && (!(*all = malloc(total + 1)) || !(*offsets = malloc(sizeof **offsets * ((size_t)comm->size + 1))))) {
        err_set(err, "cannot allocate %zu bytes to gather", total);
        ok = 0;
    }
    CHECK_DP(comm_agree(comm, ok, err));
    for (int r = 0; comm->rank == 0 && r <= comm->size; r++)
        (*offsets)[r] = r == 0 ? 0 : (*offsets)[r - 1] + sizes[r - 1];
    CHECK_DP(comm_gather_items(comm, mine, length, 1, *all, err));
    free(sizes);
    return 0;
fail:
    free(sizes);
    free(*all);
    free(*offsets);
    *all = NULL;
    *offsets = NULL;
    return -1;
}

/* ---- the stall watchdog's channel ------------------------------------------------------ */

enum { TAG_QUESTION = 7101, TAG_ANSWER = 7102 };

/* Where the watchdog's small messages go: a communicator of their own, so that they never match
 * the training's, and the requests in flight. */
struct watch_channel {
    MPI_Comm comm;
    int rank, size;
    size_t bytes;                     /* of an answer */
    int question, query;              /* what an asker sends (never read); where a question lands */
    MPI_Request query_request;        /* the posted receive of questions */
    unsigned char *answers;           /* [size][bytes]: one per asking rank, kept until its send completes */
    MPI_Request *answer_requests;
    MPI_Request *sends, *receives;    /* this rank's round of questions */
    char (*hosts)[WATCHDOG_HOST];
};

static int post_question_receive(struct watch_channel *c, char *err)
{
    CHECK_MPI(MPI_Irecv(&c->query, 1, MPI_INT, MPI_ANY_SOURCE, TAG_QUESTION, c->comm, &c->query_request),
              "cannot post the receive of questions");
    return 0;
fail:
    return -1;
}

static int next_question(void *channel, int *asker, char *err)
{
    struct watch_channel *c = channel;
    int arrived = 0;
    MPI_Status st;
    *asker = -1;
    CHECK_MPI(MPI_Test(&c->query_request, &arrived, &st), "cannot test for questions");
    if (!arrived)
        return 0;
    *asker = st.MPI_SOURCE;
    return post_question_receive(c, err);
fail:
    return -1;
}

static int send_answer(void *channel, int asker, const void *answer, char *err)
{
    struct watch_channel *c = channel;
    int idle = 1;
    CHECK_MPI(MPI_Test(&c->answer_requests[asker], &idle, MPI_STATUS_IGNORE), "cannot test an answer");
    if (!idle)
        return 0; /* the previous answer to that rank is still on its way: it will do */
    unsigned char *slot = c->answers + (size_t)asker * c->bytes;
    memcpy(slot, answer, c->bytes);
    CHECK_MPI(MPI_Isend(slot, (int)c->bytes, MPI_BYTE, asker, TAG_ANSWER, c->comm, &c->answer_requests[asker]),
              "cannot answer rank %d", asker);
    return 0;
fail:
    return -1;
}

static int ask_everyone(void *channel, void *replies, char *err)
{
    struct watch_channel *c = channel;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank)
            continue;
        CHECK_MPI(MPI_Irecv((unsigned char *)replies + (size_t)r * c->bytes, (int)c->bytes, MPI_BYTE, r, TAG_ANSWER,
                            c->comm, &c->receives[r]), "cannot post the receive of rank %d's answer", r);
        CHECK_MPI(MPI_Isend(&c->question, 1, MPI_INT, r, TAG_QUESTION, c->comm, &c->sends[r]), "cannot ask rank %d", r);
    }
    return 0;
fail:
    return -1;
}

static int collect_answers(void *channel, int *answered, char *err)
{
    struct watch_channel *c = channel;
    for (int r = 0; r < c->size; r++)
        if (!answered[r])
            CHECK_MPI(MPI_Test(&c->receives[r], &answered[r], MPI_STATUS_IGNORE), "cannot test rank %d's answer", r);
    return 0;
fail:
    return -1;
}

static int end_round(void *channel, const int *answered, char *err)
{
    struct watch_channel *c = channel;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank)
            continue;
        if (!answered[r]) { /* a silent rank: the job ends; only a re-armed wait continues */
            CHECK_MPI(MPI_Cancel(&c->receives[r]), "cannot cancel the receive of rank %d's answer", r);
            CHECK_MPI(MPI_Request_free(&c->receives[r]), "cannot free a receive");
        }
        CHECK_MPI(MPI_Request_free(&c->sends[r]), "cannot free a question");
    }
    return 0;
fail:
    return -1;
}

static void abort_job(void *channel)
{
    (void)channel;
    MPI_Abort(MPI_COMM_WORLD, DP_EXIT_ERROR);
}

static void free_channel(struct watch_channel *c)
{
    if (c->comm != MPI_COMM_NULL)
        MPI_Comm_free(&c->comm);
    free(c->answers);
    free(c->answer_requests);
    free(c->sends);
    free(c->receives);
    free(c->hosts);
    free(c);
}

/* Collective: the channel, everyone's host name (for the line that names who did not arrive),
 * and the receive of questions posted. */
static int open_channel(const struct comm *comm, struct watch_channel **out, char *err)
{
    struct watch_channel *c = NULL;
    size_t n = (size_t)comm->size;
    CHECK_PTR(c = calloc(1, sizeof *c), "cannot allocate the watchdog's channel");
    c->comm = MPI_COMM_NULL;
    c->rank = comm->rank;
    c->size = comm->size;
    c->bytes = watchdog_answer_bytes();
    CHECK_PTR(c->answers = calloc(n, c->bytes), "cannot allocate the watchdog's channel");
    CHECK_PTR(c->answer_requests = calloc(n, sizeof *c->answer_requests), "cannot allocate the watchdog's channel");
    CHECK_PTR(c->sends = calloc(n, sizeof *c->sends), "cannot allocate the watchdog's channel");
    CHECK_PTR(c->receives = calloc(n, sizeof *c->receives), "cannot allocate the watchdog's channel");
    CHECK_PTR(c->hosts = calloc(n, sizeof *c->hosts), "cannot allocate the watchdog's channel");
    for (size_t r = 0; r < n; r++)
        c->answer_requests[r] = MPI_REQUEST_NULL;
    CHECK_MPI(MPI_Comm_dup(comm_mpi_world(comm), &c->comm), "cannot create the watchdog's communicator");
    comm_host_name(c->hosts[c->rank], WATCHDOG_HOST); /* longer names are cut: they only label messages */
    CHECK_MPI(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, c->hosts, WATCHDOG_HOST, MPI_CHAR, c->comm),
              "rank %d: cannot gather the host names", c->rank);
    CHECK_DP(post_question_receive(c, err));
    *out = c;
    return 0;
fail:
    if (c)
        free_channel(c);
    return -1;
}

/* Leave no request behind for MPI_Finalize: the posted question and any answer in flight. */
static int close_channel(struct watch_channel *c, char *err)
{
    int status = 0;
    CHECK_MPI(MPI_Cancel(&c->query_request), "cannot cancel the watchdog's receive");
    CHECK_MPI(MPI_Wait(&c->query_request, MPI_STATUS_IGNORE), "cannot complete the watchdog's receive");
    for (int r = 0; r < c->size; r++)
        if (c->answer_requests[r] != MPI_REQUEST_NULL)
            CHECK_MPI(MPI_Request_free(&c->answer_requests[r]), "cannot free a watchdog answer");
    goto done;
fail:
    status = -1;
done:
    free_channel(c);
    return status;
}

int comm_start_watchdog(struct comm *comm, const struct watchdog_limits *limits, char *err)
{
    int provided = 0;
    CHECK_MPI(MPI_Query_thread(&provided), "cannot ask MPI for its thread level");
    if (provided < MPI_THREAD_MULTIPLE)
        FAIL("this MPI library does not support MPI_THREAD_MULTIPLE, which the stall watchdog needs: turn it "
             "off with %s 0", limits->flag);
    CHECK_DP(open_channel(comm, &comm->watch_channel, err));
    struct watch_channel *c = comm->watch_channel;
    const struct watchdog_transport link = {c, c->rank, c->size, (const char(*)[WATCHDOG_HOST])c->hosts,
                                            next_question, send_answer, ask_everyone, collect_answers, end_round,
                                            abort_job, files_write};
    if (watchdog_start(&link, limits, &comm->watchdog, err) != 0) {
        char ignored[DP_ERR_LEN]; /* the first error is the one to report */
        (void)close_channel(c, ignored);
        comm->watch_channel = NULL;
        return -1;
    }
    return 0;
fail:
    return -1;
}

int comm_stop_watchdog(struct comm *comm, char *err)
{
    if (watchdog_stop(comm->watchdog, err) != 0)
        return -1; /* its thread may still hold the channel: MPI_Finalize comes next anyway */
    comm->watchdog = NULL;
    int status = comm->watch_channel ? close_channel(comm->watch_channel, err) : 0;
    comm->watch_channel = NULL;
    return status;
}
