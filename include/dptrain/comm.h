/* The MPI world: start-up, agreement on errors, and the few collectives training needs.
 * This is the one place besides dataset.c (MPI-IO through HDF5) that calls MPI. */
#ifndef DPTRAIN_COMM_H
#define DPTRAIN_COMM_H

#include <mpi.h>
#include <stddef.h>

struct comm {
    MPI_Comm world;
    int rank;
    int size;
};

/* MPI_Init, then MPI_ERRORS_RETURN so that every failure comes back as a code we check. */
int comm_init(int *argc, char ***argv, struct comm *comm, char *err);
void comm_finalize(void);

/* Collective: returns 0 if ok is true on every rank; otherwise -1 on every rank, with the
 * message of the lowest failing rank in err everywhere (so it can be printed once). */
int comm_agree(MPI_Comm comm, int ok, char *err);

int comm_bcast_floats(const struct comm *comm, float *data, size_t count, int root, char *err);
int comm_bcast_doubles(const struct comm *comm, double *data, size_t count, int root, char *err);
/* In-place sums over all ranks. */
int comm_allreduce_floats(const struct comm *comm, float *data, size_t count, char *err);
int comm_allreduce_doubles(const struct comm *comm, double *data, size_t count, char *err);

/* Abort every rank: for failures after which ranks can no longer meet in a collective. */
_Noreturn void comm_abort(const struct comm *comm, const char *message);

#endif
