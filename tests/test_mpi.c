#include "test_mpi.h"

#include "dptrain/check.h"
#include "dptrain/comm.h"

#include <stdio.h>

int test_mpi_main(int *argc, char ***argv, struct comm *world, const struct test_group *group)
{
    char err[DP_ERR_LEN];
    if (comm_init(argc, argv, world, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int failed = _cmocka_run_group_tests(group->name, group->tests, group->count, group->setup, group->teardown);
    if (comm_finalize(err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return failed;
}
