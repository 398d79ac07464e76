#include "dptrain/watchdog.h"

#include "dptrain/check.h"
#include "dptrain/timer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TEXT = 64, LISTED = 6 };
#define POLL_SECONDS 0.1

/* Where a rank is, as its watchdog answers a query (sent as bytes: a cluster of one kind). */
struct status {
    int waiting, may_be_slow, epoch;
    long step;
    double seconds; /* in this collective (waiting) or this phase (not waiting) */
    char phase[TEXT], what[TEXT];
};

/* The main thread's side, guarded by lock. */
struct position {
    const char *phase, *what;
    int waiting, may_be_slow, epoch;
    long step;
    double phase_since, wait_since;
};

/* One round of questions to every other rank. */
struct inquiry {
    struct status *replies;
    int *answered;
};

struct watchdog {
    struct watchdog_transport link; /* to the other ranks' watchdogs: rank, size, hosts */
    double limit, grace;
    char limit_flag[TEXT];
    pthread_t thread;
    pthread_mutex_t lock;
    int stop;
    struct position at;
    struct inquiry ask;
};

size_t watchdog_answer_bytes(void)
{
    return sizeof(struct status);
}

/* ---- the main thread's side ------------------------------------------------------------ */

void watchdog_phase(struct watchdog *w, const char *phase, int epoch, long step, int may_be_slow)
{
    if (!w)
        return;
    double now = timer_now();
    pthread_mutex_lock(&w->lock);
    w->at.phase = phase;
    w->at.epoch = epoch;
    w->at.step = step;
    w->at.may_be_slow = may_be_slow;
    w->at.phase_since = now;
    pthread_mutex_unlock(&w->lock);
}

void watchdog_wait(struct watchdog *w, const char *what)
{
    if (!w)
        return;
    double now = timer_now();
    pthread_mutex_lock(&w->lock);
    w->at.what = what;
    w->at.waiting = 1;
    w->at.wait_since = now;
    pthread_mutex_unlock(&w->lock);
}

void watchdog_done(struct watchdog *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->at.waiting = 0;
    pthread_mutex_unlock(&w->lock);
}

/* ---- the watchdog thread ----------------------------------------------------------------- */

static struct position position_now(struct watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    struct position p = w->at;
    pthread_mutex_unlock(&w->lock);
    return p;
}

static void describe(const struct position *p, double now, struct status *s)
{
    memset(s, 0, sizeof *s);
    s->waiting = p->waiting;
    s->may_be_slow = p->may_be_slow;
    s->epoch = p->epoch;
    s->step = p->step;
    s->seconds = now - (p->waiting ? p->wait_since : p->phase_since);
    snprintf(s->phase, sizeof s->phase, "%s", p->phase); /* set from watchdog_start on */
    snprintf(s->what, sizeof s->what, "%s", p->waiting && p->what ? p->what : "");
}

/* The watchdog cannot do its job: say so and end the job rather than leave it unguarded. */
_Noreturn static void give_up(struct watchdog *w, const char *err)
{
    fprintf(stderr, "dptrain: error: rank %d on %s: the stall watchdog failed: %s\n", w->link.rank,
            w->link.hosts[w->link.rank], err);
    fflush(stderr);
    w->link.abort(w->link.channel);
    exit(DP_EXIT_ERROR);
}

/* Answer the questions that have arrived: where this rank is. */
static void answer_queries(struct watchdog *w)
{
    char err[DP_ERR_LEN];
    for (;;) {
        int asker = -1;
        CHECK_DP(w->link.next_question(w->link.channel, &asker, err));
        if (asker < 0)
            return;
        struct position p = position_now(w);
        struct status answer;
        describe(&p, timer_now(), &answer);
        CHECK_DP(w->link.answer(w->link.channel, asker, &answer, err));
    }
fail:
    give_up(w, err);
}

static void pause_briefly(double seconds)
{
    struct timespec t = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

static int count_answered(const struct watchdog *w)
{
    int count = 0;
    for (int r = 0; r < w->link.size; r++)
        count += w->ask.answered[r] != 0;
    return count;
}

/* Ask every other rank where it is; wait up to the grace period for the answers. */
static void inquire(struct watchdog *w)
{
    char err[DP_ERR_LEN];
    struct inquiry *q = &w->ask;
    for (int r = 0; r < w->link.size; r++)
        q->answered[r] = r == w->link.rank;
    CHECK_DP(w->link.ask(w->link.channel, q->replies, err));
    double deadline = timer_now() + w->grace;
    while (count_answered(w) < w->link.size && timer_now() < deadline) {
        answer_queries(w); /* other ranks may be asking too */
        CHECK_DP(w->link.collect(w->link.channel, q->answered, err));
        if (count_answered(w) < w->link.size)
            pause_briefly(0.01);
    }
    CHECK_DP(w->link.end_round(w->link.channel, q->answered, err)); /* a silent rank: the job ends */
    return;
fail:
    give_up(w, err);
}

typedef int (*rank_pick)(const struct watchdog *, int);

static int count_ranks(const struct watchdog *w, rank_pick pick)
{
    int count = 0;
    for (int r = 0; r < w->link.size; r++)
        count += pick(w, r) != 0;
    return count;
}

/* "1 on node2, 3 on node2": the ranks r for which pick(w, r) holds, up to LISTED of them. */
static int list_ranks(const struct watchdog *w, rank_pick pick, char *out, size_t size)
{
    int count = 0;
    size_t used = 0;
    out[0] = '\0';
    for (int r = 0; r < w->link.size && used < size; r++) {
        if (!pick(w, r))
            continue;
        if (count < LISTED)
            used += (size_t)snprintf(out + used, size - used, "%s%d on %s", count ? ", " : "", r, w->link.hosts[r]);
        else if (count == LISTED)
            used += (size_t)snprintf(out + used, size - used, " and more");
        count++;
    }
    return count;
}

static int silent(const struct watchdog *w, int r)
{
    return !w->ask.answered[r];
}

/* Answered, but busy past the limit in a phase that must not take long. */
static int stuck(const struct watchdog *w, int r)
{
    const struct status *s = &w->ask.replies[r];
    return r != w->link.rank && w->ask.answered[r] && !s->waiting && !s->may_be_slow && s->seconds > w->limit;
}

/* Answered, busy, and not stuck: in a phase that may be slow, or not yet past the limit. */
static int legitimately_busy(const struct watchdog *w, int r)
{
    return r != w->link.rank && w->ask.answered[r] && !w->ask.replies[r].waiting && !stuck(w, r);
}

/* The line that ends the job. */
static void report_stall(const struct watchdog *w, const struct status *mine, char *line, size_t size)
{
    char where[2 * TEXT + 64] = "", ranks[512];
    if (mine->epoch > 0)
        snprintf(where, sizeof where, " at epoch %d, step %ld", mine->epoch, mine->step);
    int n = snprintf(line, size, "stalled%s (%s): %s has waited %.0f s", where, mine->phase, mine->what,
                     mine->seconds);
    size_t used = n > 0 ? (size_t)n : 0;
    if (list_ranks(w, silent, ranks, sizeof ranks) > 0)
        used += (size_t)snprintf(line + used, size - used, "; did not arrive: rank %s (no answer in %.0f s: "
                                 "stopped, dead, or its link down or too slow)", ranks, w->grace);
    else if (list_ranks(w, stuck, ranks, sizeof ranks) > 0)
        used += (size_t)snprintf(line + used, size - used, "; did not arrive: rank %s (busy for longer than "
                                 "the limit)", ranks);
    else
        used += (size_t)snprintf(line + used, size - used, "; every rank arrived but it did not complete (a link "
                                 "too slow or broken?)");
    if (used < size)
        snprintf(line + used, size - used, "; limit %s %g", w->limit_flag, w->limit);
}

/* The lowest rank that is waiting with this one reports; the others follow it shortly. */
static int reporter(const struct watchdog *w)
{
    for (int r = 0; r < w->link.rank; r++)
        if (w->ask.answered[r] && w->ask.replies[r].waiting)
            return 0;
    return 1;
}

/* A wait past the limit: ask the others, then re-arm or end the job. */
static void investigate(struct watchdog *w, const struct position *p)
{
    inquire(w);
    int lost = count_ranks(w, silent) + count_ranks(w, stuck);
    for (int r = 0; r < w->link.size && !lost; r++)
        if (legitimately_busy(w, r)) { /* merely slow elsewhere: wait again from now */
            pthread_mutex_lock(&w->lock);
            if (w->at.waiting && w->at.wait_since == p->wait_since)
                w->at.wait_since = timer_now();
            pthread_mutex_unlock(&w->lock);
            return;
        }
    struct position again = position_now(w);
    if (!again.waiting || again.wait_since != p->wait_since)
        return; /* the collective completed meanwhile */
    struct status mine;
    describe(&again, timer_now(), &mine);
    if (!reporter(w))
        pause_briefly(2 * w->grace + 1); /* the reporter's abort normally ends this process first */
    char line[DP_ERR_LEN];
    report_stall(w, &mine, line, sizeof line);
    fprintf(stderr, "dptrain: error: rank %d on %s: %s\n", w->link.rank, w->link.hosts[w->link.rank], line);
    fflush(stderr);
    w->link.abort(w->link.channel);
    exit(DP_EXIT_ERROR);
}

static void *watch(void *arg)
{
    struct watchdog *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        int stop = w->stop;
        struct position p = w->at;
        pthread_mutex_unlock(&w->lock);
        if (stop)
            break;
        answer_queries(w);
        if (p.waiting && timer_now() - p.wait_since > w->limit)
            investigate(w, &p);
        pause_briefly(POLL_SECONDS);
    }
    return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */

static void free_watchdog(struct watchdog *w)
{
    free(w->ask.replies);
    free(w->ask.answered);
    free(w);
}

int watchdog_start(const struct watchdog_transport *link, double limit_seconds, const char *limit_flag,
                   struct watchdog **out, char *err)
{
    int rc = 0;
    struct watchdog *w = NULL;
    *out = NULL;
    CHECK_PTR(w = calloc(1, sizeof *w), "cannot allocate the watchdog");
    w->link = *link;
    w->at.phase = "setting up (reading data, fitting PCA)";
    w->at.may_be_slow = 1; /* until the caller says where it is */
    w->limit = limit_seconds;
    w->grace = limit_seconds < 10 ? limit_seconds / 2 : 5;
    snprintf(w->limit_flag, sizeof w->limit_flag, "%s", limit_flag);
    CHECK_PTR(w->ask.replies = calloc((size_t)link->size, sizeof *w->ask.replies), "cannot allocate the watchdog");
    CHECK_PTR(w->ask.answered = calloc((size_t)link->size, sizeof *w->ask.answered), "cannot allocate the watchdog");
    if ((rc = pthread_mutex_init(&w->lock, NULL)) != 0)
        FAIL("cannot create the watchdog's lock: %s", strerror(rc));
    if ((rc = pthread_create(&w->thread, NULL, watch, w)) != 0) {
        pthread_mutex_destroy(&w->lock);
        FAIL("cannot start the watchdog thread: %s", strerror(rc));
    }
    *out = w;
    return 0;
fail:
    if (w)
        free_watchdog(w);
    return -1;
}

int watchdog_stop(struct watchdog *w, char *err)
{
    int rc = 0;
    if (!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_mutex_unlock(&w->lock);
    if ((rc = pthread_join(w->thread, NULL)) != 0) {
        free_watchdog(w); /* the thread is stopped or stuck: either way the job's end comes next */
        FAIL("cannot stop the watchdog thread: %s", strerror(rc));
    }
    pthread_mutex_destroy(&w->lock);
    free_watchdog(w);
    return 0;
fail:
    return -1;
}
