/* The one main of the MPI tests (mpi_*_npN): comm_init, the cmocka group, comm_finalize. */
#ifndef DPTRAIN_TEST_MPI_H
#define DPTRAIN_TEST_MPI_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

struct comm;

struct test_group {
    const char *name;
    const struct CMUnitTest *tests;
    size_t count;
    CMFixtureFunction setup, teardown; /* may be NULL */
};

/* Start MPI into *world, run the group on every rank, finalize; the exit status of main. */
int test_mpi_main(int *argc, char ***argv, struct comm *world, const struct test_group *group);

#define TEST_GROUP(name, tests, setup, teardown) \
    (&(struct test_group){name, tests, sizeof(tests) / sizeof((tests)[0]), setup, teardown})

#endif
