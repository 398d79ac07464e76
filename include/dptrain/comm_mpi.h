/* The MPI communicator behind struct comm, for the few modules that call MPI themselves (comm,
 * reducer, and dataset for MPI-IO through HDF5): only they include mpi.h. */
#ifndef DPTRAIN_COMM_MPI_H
#define DPTRAIN_COMM_MPI_H

#include "dptrain/comm.h"

#include <mpi.h>

static inline MPI_Comm comm_mpi_world(const struct comm *comm)
{
    return MPI_Comm_f2c((MPI_Fint)comm->world);
}

/* A struct comm of one rank over MPI_COMM_SELF (for the tests of one-rank sums). */
static inline struct comm comm_mpi_self(void)
{
    return (struct comm){.world = (int)MPI_Comm_c2f(MPI_COMM_SELF), .rank = 0, .size = 1, .hosts = 1, .node_ranks = 1};
}

#endif
