/* dptrain: the command line. Reads like a script: parse, start MPI where needed, run. */
#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/commands.h"
#include "dptrain/comm.h"
#include "dptrain/convert.h"
#include "dptrain/files.h"
#include "dptrain/kernels.h"
#include "dptrain/model.h"
#include "dptrain/results.h"
#include "dptrain/timer.h"
#include "dptrain/watchdog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>

/* Before MPI starts, the launcher's environment says which rank this process will be: errors
 * in the command line (the same on every rank) and --help are printed by the first rank only. */
static int first_rank_of_job(void)
{
    static const char *const names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *value = getenv(names[i]);
        if (value && *value)
            return strcmp(value, "0") == 0;
    }
    return 1;
}

/* A command-line error is printed by the first rank alone. The others wait a moment before they
 * exit: mpirun ends the job when any rank exits non-zero, and with a short
 * odls_base_sigkill_timeout it could kill the first rank before its message is out (seen in the
 * suite, which sets it to 0). */
static void give_way(void)
{
    timer_sleep(0.3);
}

/* The model spec of every run, checked before MPI starts: a bad one is a command-line error. */
static int check_model(const struct config *o, char *err)
{
    if (o->command != CMD_TRAIN && o->command != CMD_COMPARE)
        return 0;
    int runs = o->command == CMD_COMPARE ? o->pca_runs : 1;
    for (int i = 0; i < runs; i++) {
        int k = o->command == CMD_COMPARE ? o->pca_list[i] : o->pca;
        if (model_check_spec(o->model, k, err) != 0) {
            err_prefix(err, cli_flag(OPTION_MODEL));
            return -1;
        }
    }
    return 0;
}

static int run_convert(const struct config *options)
{
    char err[DP_ERR_LEN] = "";
    if (check_quiet_hdf5() != 0) {
        fprintf(stderr, "dptrain: error: cannot configure HDF5's error reporting\n");
        return DP_EXIT_ERROR;
    }
    struct convert_request request = {options->source, {NULL, NULL, NULL, NULL}, options->class_names,
                                      options->mirror_invariant, options->out};
    for (int i = 0; i < CONVERT_FILES; i++)
        request.files[i] = options->idx_files[i];
    if (files_check_output(options->out, cli_flag(OPTION_OUT), err) != 0 || convert_idx_set(&request, err) != 0) {
        fprintf(stderr, "dptrain: error: %s\n", err);
        return DP_EXIT_ERROR;
    }
    printf("wrote %s\n", options->out);
    return DP_EXIT_OK;
}

/* The stall watchdog, unless --stall-timeout 0 or one rank (nothing to wait for). Its record of a
 * stall goes beside the output: OUT.stall-rankR.json. Collective. */
static int start_watchdog(struct comm *comm, const struct config *options, char *err)
{
    const struct watchdog_limits limits = {options->stall_timeout, cli_flag(OPTION_STALL_TIMEOUT), options->out};
    int ok = options->stall_timeout <= 0 || comm->size == 1 || comm_start_watchdog(comm, &limits, err) == 0;
    return comm_agree(comm, ok, err) == 0 ? DP_EXIT_OK : DP_EXIT_ERROR;
}

/* The flag at which two command lines first differ ("--lr 0.01"), from the " --" that starts it
 * to the next one, into out. */
static void flag_at(const char *line, size_t position, char *out, size_t size)
{
    size_t start = position;
    while (start > 0 && strncmp(line + start, " --", 3) != 0)
        start--;
    start += line[start] == ' ';
    const char *end = strstr(line + start + 1, " --");
    size_t length = end ? (size_t)(end - (line + start)) : strlen(line + start);
    snprintf(out, size, "%.*s", (int)(length < 200 ? length : 200), line + start);
    if (out[0] == '\0')
        snprintf(out, size, "nothing more");
}

/* Collective: every rank was started with the same command line. An MPMD launch, or a wrapper
 * that passes other flags to one rank, had trained silently with mixed --lr, --seed or --data,
 * and mixed --batch or --epochs ended in a message without a reason. */
static int check_same_command(const struct comm *comm, const struct config *o, char *err)
{
    char *mine = malloc(RESULTS_SETTINGS_LENGTH), *first = malloc(RESULTS_SETTINGS_LENGTH);
    int ok = mine && first;
    if (!ok)
        err_set(err, "cannot allocate the command line");
    if (comm_agree(comm, ok, err) == 0) {
        cli_command_line(o, 1, mine, RESULTS_SETTINGS_LENGTH);
        memcpy(first, mine, RESULTS_SETTINGS_LENGTH);
        ok = comm_bcast_text(comm, first, RESULTS_SETTINGS_LENGTH, 0, err) == 0;
        if (ok && strcmp(mine, first) != 0) {
            char here[256], there[256];
            size_t at = 0;
            while (mine[at] == first[at])
                at++;
            flag_at(mine, at, here, sizeof here);
            flag_at(first, at, there, sizeof there);
            err_set(err, "started with other settings than rank 0: %s here, %s on rank 0 (every rank must be given "
                    "the same command line)", here, there);
            ok = 0;
        }
        ok = comm_agree(comm, ok, err) == 0;
    }
    free(mine);
    free(first);
    return ok ? 0 : -1;
}

/* train, compare and eval run under MPI; every rank parses the same command line. */
static int run_parallel(int argc, char **argv, const struct config *options)
{
    char err[DP_ERR_LEN] = "";
    struct comm comm;
    if (comm_init(&argc, &argv, &comm, err) != 0) {
        fprintf(stderr, "dptrain: error: %s\n", err);
        return DP_EXIT_ERROR;
    }
    if (check_quiet_hdf5() != 0) {
        if (comm.rank == 0)
            fprintf(stderr, "dptrain: error: cannot configure HDF5's error reporting\n");
        (void)comm_finalize(err); /* already failing: the first error is the one reported */
        return DP_EXIT_ERROR;
    }
    /* Flush denormals to zero: as training converges, tiny gradients and moments become
     * denormal and every float operation on them slows down many times (measured: CNN epochs
     * growing from 18 s to 30 s without it). No result here depends on values below 1e-38. */
    _mm_setcsr(_mm_getcsr() | 0x8040);
    int status = check_same_command(&comm, options, err) == 0 ? DP_EXIT_OK : DP_EXIT_USAGE;
    if (status == DP_EXIT_OK)
        status = start_watchdog(&comm, options, err);
    if (status == DP_EXIT_OK)
        status = options->command == CMD_EVAL ? eval_command(&comm, options, err)
                                               : train_command(&comm, options, err);
    char stop_err[DP_ERR_LEN];
    if (comm_stop_watchdog(&comm, stop_err) != 0 && status == DP_EXIT_OK) {
        memcpy(err, stop_err, sizeof stop_err);
        status = DP_EXIT_ERROR;
    }
    if ((status == DP_EXIT_ERROR || status == DP_EXIT_USAGE) && comm.rank == 0)
        fprintf(stderr, "dptrain: error: %s\n", err);
    fflush(stdout);
    if (comm_finalize(err) != 0) {
        fprintf(stderr, "dptrain: error: %s\n", err);
        return DP_EXIT_ERROR;
    }
    return status;
}

/* argv joined with spaces, for the results file's `command` attribute. */
static void join_arguments(int argc, char **argv, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < argc && used + 1 < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? " " : "", argv[i]);
}

int main(int argc, char **argv)
{
    char err[DP_ERR_LEN] = "", command_line[4096];
    struct config options;
    join_arguments(argc, argv, command_line, sizeof command_line);
    if (cli_parse(argc, argv, &options, err) != 0 || check_model(&options, err) != 0) {
        if (first_rank_of_job())
            fprintf(stderr, "dptrain: error: %s\n", err);
        else
            give_way();
        return DP_EXIT_USAGE;
    }
    options.command_line = command_line;
    if (options.want_version) {
        if (first_rank_of_job())
            printf("dptrain %s\n", DPTRAIN_VERSION);
        return DP_EXIT_OK;
    }
    if (options.want_help) {
        if (first_rank_of_job())
            cli_print_help(stdout, options.command);
        return DP_EXIT_OK;
    }
    if (options.command == CMD_CONVERT)
        return run_convert(&options);
    /* Before MPI starts: a new start under MPI_Init would be a second process to the launcher. */
    kernels_ensure_fast(argv, first_rank_of_job());
    return run_parallel(argc, argv, &options);
}
