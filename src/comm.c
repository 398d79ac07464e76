#include "dptrain/comm.h"

#include "dptrain/check.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int comm_init(int *argc, char ***argv, struct comm *comm, char *err)
{
    CHECK_MPI(MPI_Init(argc, argv), "cannot start MPI");
    comm->world = MPI_COMM_WORLD;
    CHECK_MPI(MPI_Comm_set_errhandler(comm->world, MPI_ERRORS_RETURN), "cannot set MPI error handler");
    CHECK_MPI(MPI_Comm_rank(comm->world, &comm->rank), "MPI_Comm_rank failed");
    CHECK_MPI(MPI_Comm_size(comm->world, &comm->size), "MPI_Comm_size failed");
    return 0;
fail:
    return -1;
}

void comm_finalize(void)
{
    MPI_Finalize();
}

int comm_agree(MPI_Comm comm, int ok, char *err)
{
    int rank, lowest = INT_MAX;
    MPI_Comm_rank(comm, &rank);
    int mine = ok ? INT_MAX : rank;
    CHECK_MPI(MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm),
              "rank %d: MPI failed while agreeing on an error", rank);
    if (lowest == INT_MAX)
        return 0;
    int size;
    MPI_Comm_size(comm, &size);
    if (rank == lowest && size > 1) {
        /* Name the rank, so that a failure of one shard is traceable. */
        char named[DP_ERR_LEN];
        snprintf(named, sizeof named, "rank %d: %s", rank, err);
        memcpy(err, named, DP_ERR_LEN);
    }
    CHECK_MPI(MPI_Bcast(err, DP_ERR_LEN, MPI_CHAR, lowest, comm),
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
    CHECK_MPI(MPI_Bcast(data, (int)count, MPI_FLOAT, root, comm->world),
              "rank %d: broadcast of %zu floats failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_bcast_doubles(const struct comm *comm, double *data, size_t count, int root, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(MPI_Bcast(data, (int)count, MPI_DOUBLE, root, comm->world),
              "rank %d: broadcast of %zu doubles failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_allreduce_floats(const struct comm *comm, float *data, size_t count, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, comm->world),
              "rank %d: allreduce of %zu floats failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

int comm_allreduce_doubles(const struct comm *comm, double *data, size_t count, char *err)
{
    if (!count_fits(count, err))
        return -1;
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_DOUBLE, MPI_SUM, comm->world),
              "rank %d: allreduce of %zu doubles failed", comm->rank, count);
    return 0;
fail:
    return -1;
}

void comm_abort(const struct comm *comm, const char *message)
{
    fprintf(stderr, "dptrain: error: rank %d: %s\n", comm->rank, message);
    fflush(stderr);
    MPI_Abort(comm->world, DP_EXIT_ERROR);
    exit(DP_EXIT_ERROR);
}
