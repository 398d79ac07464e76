/* The stall watchdog alone, without MPI: two ranks' watchdogs in one process talk through a fake
 * transport (questions and answers in memory). Each case runs in a child process, since a stall
 * ends the process as it ends a job: the child's exit status and its one stderr line are checked. */
#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/watchdog.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define RANKS 2
#define LIMIT 1.0 /* seconds: the grace period is half of it */

static const char hosts[RANKS][WATCHDOG_HOST] = {"nodeA", "nodeB"};

/* One rank's end of the fake transport; `peer` is the other rank's, `lock` shared. */
struct fake {
    int rank;
    struct fake *peer;
    pthread_mutex_t *lock;
    int question_from;        /* a question waiting for this rank: the asker, or -1 */
    char *replies;            /* where this rank's round of answers lands */
    int answered[RANKS];
    int aborted;
    const char *record_prefix; /* where this rank's watchdog writes a stall's record */
};

static int next_question(void *channel, int *asker, char *err)
{
    struct fake *f = channel;
    (void)err;
    pthread_mutex_lock(f->lock);
    *asker = f->question_from;
    f->question_from = -1;
    pthread_mutex_unlock(f->lock);
    return 0;
}

static int answer(void *channel, int asker, const void *bytes, char *err)
{
    struct fake *f = channel;
    (void)err;
    pthread_mutex_lock(f->lock);
    struct fake *to = f->peer;
    if (to->rank == asker && to->replies) {
        memcpy(to->replies + (size_t)f->rank * watchdog_answer_bytes(), bytes, watchdog_answer_bytes());
        to->answered[f->rank] = 1;
    }
    pthread_mutex_unlock(f->lock);
    return 0;
}

static int ask(void *channel, void *replies, char *err)
{
    struct fake *f = channel;
    (void)err;
    pthread_mutex_lock(f->lock);
    f->replies = replies;
    memset(f->answered, 0, sizeof f->answered);
    f->peer->question_from = f->rank;
    pthread_mutex_unlock(f->lock);
    return 0;
}

static int collect(void *channel, int *answered, char *err)
{
    struct fake *f = channel;
    (void)err;
    pthread_mutex_lock(f->lock);
    for (int r = 0; r < RANKS; r++)
        answered[r] |= f->answered[r];
    pthread_mutex_unlock(f->lock);
    return 0;
}

static int end_round(void *channel, const int *answered, char *err)
{
    (void)channel, (void)answered, (void)err;
    return 0;
}

static void abort_job(void *channel)
{
    ((struct fake *)channel)->aborted = 1;
}

static struct watchdog *start(struct fake *f)
{
    struct watchdog_transport link = {f, f->rank, RANKS, hosts, next_question, answer, ask, collect, end_round,
                                      abort_job, files_write};
    struct watchdog *w = NULL;
    char err[DP_ERR_LEN];
    const struct watchdog_limits limits = {LIMIT, "--stall-timeout", f->record_prefix};
    if (watchdog_start(&link, &limits, &w, err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(99);
    }
    return w;
}

/* Where rank 1 is while rank 0 waits in the gradient allreduce. */
enum peer { PEER_SILENT, PEER_WAITING, PEER_SLOW_PHASE, PEER_STUCK_IN_STEP };

/* The child: rank 0 waits (and stops waiting after `wait` seconds); rank 1's watchdog runs unless
 * it is silent (a stopped process answers nothing). Exits 0 when no stall ended it. */
static void child(enum peer peer, double wait, const char *record_prefix)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct fake f[RANKS] = {{0, &f[1], &lock, -1, NULL, {0}, 0, record_prefix}, {1, &f[0], &lock, -1, NULL, {0}, 0, NULL}};
    struct watchdog *w0 = start(&f[0]), *w1 = peer == PEER_SILENT ? NULL : start(&f[1]);
    watchdog_phase(w0, "a training step", 2, 329, 0);
    watchdog_phase(w1, "a training step", 2, 329, 0);
    for (int i = 0; i < 70; i++) { /* earlier collectives: more than the record keeps */
        watchdog_wait(w0, "the gradient allreduce", 7.45e6);
        watchdog_done(w0);
        watchdog_wait(w1, "the gradient allreduce", 7.45e6);
        watchdog_done(w1);
    }
    watchdog_phase(w0, "a training step", 2, 330, 0);
    watchdog_phase(w1, peer == PEER_SLOW_PHASE ? "evaluation" : "a training step", 2, 330, peer == PEER_SLOW_PHASE);
    if (peer == PEER_WAITING)
        watchdog_wait(w1, "the gradient allreduce", 7.45e6);
    watchdog_wait(w0, "the gradient allreduce", 7.45e6);
    struct timespec pause = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
    while (nanosleep(&pause, &pause) != 0)
        ;
    watchdog_done(w0);
    char err[DP_ERR_LEN];
    if (watchdog_stop(w0, err) != 0 || watchdog_stop(w1, err) != 0)
        exit(98);
    exit(0);
}

/* Where rank 0 writes the record of a stall: a fresh prefix for each case, and the record's path. */
static char record_prefix[64], record_path[96];

/* The record as text ("" if none was written). */
static char *read_record(void)
{
    static char text[1 << 16];
    FILE *f = fopen(record_path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f)
        fclose(f);
    return text;
}

/* Run a case; returns the child's exit status, its stderr in `line`. */
static int run_case(enum peer peer, double wait, char *line, size_t size)
{
    snprintf(record_prefix, sizeof record_prefix, "/tmp/test_watchdog.%d", (int)getpid());
    snprintf(record_path, sizeof record_path, "%s.stall-rank0.json", record_prefix);
    unlink(record_path);
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipe_fds[1], 2);
        close(pipe_fds[0]);
        alarm(30); /* a hang fails the case */
        child(peer, wait, record_prefix);
    }
    close(pipe_fds[1]);
    size_t used = 0;
    ssize_t n;
    while (used + 1 < size && (n = read(pipe_fds[0], line + used, size - used - 1)) > 0)
        used += (size_t)n;
    line[used] = '\0';
    close(pipe_fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_a_silent_rank_is_named(void **state)
{
    (void)state;
    char line[4096];
    assert_int_equal(run_case(PEER_SILENT, 10, line, sizeof line), DP_EXIT_ERROR);
    assert_non_null(strstr(line, "dptrain: error: rank 0 on nodeA: stalled at epoch 2, step 330 (a training step): "
                                 "the gradient allreduce has waited"));
    assert_non_null(strstr(line, "did not arrive: rank 1 on nodeB (no answer in"));
    assert_non_null(strstr(line, "limit --stall-timeout 1"));
    /* the second line: where each rank was, and the record */
    char *second = strchr(line, '\n') + 1;
    assert_ptr_equal(strchr(second, '\n'), line + strlen(line) - 1);
    char expected[512];
    snprintf(expected, sizeof expected, "dptrain: at the stall: rank 0 on nodeA waits in collective #71 (the gradient "
             "allreduce, 7.45 MB); rank 1 on nodeB did not answer; the last 64 collectives of every rank that "
             "answered: %s\n", record_path);
    assert_string_equal(second, expected);
    char *record = read_record();
    assert_non_null(strstr(record, "{\"rank\": 1, \"host\": \"nodeB\", \"answered\": false}"));
    /* rank 0's last 64 collectives: #8 to #71, the last still waiting */
    assert_non_null(strstr(record, "{\"number\": 8, \"what\": \"the gradient allreduce\", \"bytes\": 7450000, "
                                   "\"phase\": \"a training step\", \"epoch\": 2, \"step\": 329"));
    assert_null(strstr(record, "\"number\": 7,"));
    char *last = strstr(record, "{\"number\": 71,");
    assert_non_null(last);
    assert_non_null(strstr(last, "\"step\": 330, \"started_seconds_ago\": "));
    assert_non_null(strstr(last, "\"seconds\": null}"));
    unlink(record_path);
}

static void test_every_rank_waiting_is_a_collective_that_does_not_complete(void **state)
{
    (void)state;
    char line[4096];
    assert_int_equal(run_case(PEER_WAITING, 10, line, sizeof line), DP_EXIT_ERROR);
    assert_non_null(strstr(line, "rank 0 on nodeA: stalled"));
    assert_non_null(strstr(line, "every rank arrived but it did not complete"));
    assert_non_null(strstr(line, "dptrain: at the stall: ranks 0-1 on nodeA, nodeB wait in collective #71 (the "
                                 "gradient allreduce, 7.45 MB); the last 64"));
    char *record = read_record();
    assert_non_null(strstr(record, "{\"rank\": 1, \"host\": \"nodeB\", \"answered\": true, \"waiting\": true, "
                                   "\"collective\": 71, \"phase\": \"a training step\", \"epoch\": 2, \"step\": 330"));
    unlink(record_path);
}

static void test_a_rank_busy_too_long_in_a_step_is_stuck(void **state)
{
    (void)state;
    char line[4096];
    assert_int_equal(run_case(PEER_STUCK_IN_STEP, 10, line, sizeof line), DP_EXIT_ERROR);
    assert_non_null(strstr(line, "did not arrive: rank 1 on nodeB (busy for longer than the limit)"));
    assert_non_null(strstr(line, "dptrain: at the stall: rank 0 on nodeA waits in collective #71 (the gradient "
                                 "allreduce, 7.45 MB); rank 1 on nodeB finished #70 and is in a training step; "));
    unlink(record_path);
}

static void test_a_phase_that_may_be_slow_rearms_the_wait(void **state)
{
    (void)state;
    char line[4096];
    assert_int_equal(run_case(PEER_SLOW_PHASE, 3.5 * LIMIT, line, sizeof line), 0);
    assert_string_equal(line, "");
    assert_string_equal(read_record(), ""); /* no stall, no record */
}

static void test_a_wait_within_the_limit_is_not_a_stall(void **state)
{
    (void)state;
    char line[4096];
    assert_int_equal(run_case(PEER_SILENT, 0.5 * LIMIT, line, sizeof line), 0);
    assert_string_equal(line, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_silent_rank_is_named),
        cmocka_unit_test(test_every_rank_waiting_is_a_collective_that_does_not_complete),
        cmocka_unit_test(test_a_rank_busy_too_long_in_a_step_is_stuck),
        cmocka_unit_test(test_a_phase_that_may_be_slow_rearms_the_wait),
        cmocka_unit_test(test_a_wait_within_the_limit_is_not_a_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
