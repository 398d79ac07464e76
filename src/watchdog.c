#include "dptrain/watchdog.h"

#include "dptrain/check.h"
#include "dptrain/timer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TEXT = 64, LISTED = 6, RECORD_PATH = 4096 + 16 };
#define POLL_SECONDS 0.1

/* A collective this rank entered, as the main thread records it (string literals: no copies in
 * the step). */
struct entered {
    long number;
    const char *what, *phase;
    double bytes, start, end; /* end < start: still waiting */
    int epoch;
    long step;
};

/* The main thread's side, guarded by lock. */
struct position {
    const char *phase, *what;
    int waiting, may_be_slow, epoch;
    long step;
    double phase_since, wait_since;
    long entered;                        /* collectives entered so far */
    struct entered recent[STALL_RECENT]; /* the last ones: number n at [(n - 1) % STALL_RECENT] */
};

/* One round of questions to every other rank. */
struct inquiry {
    struct stall_status *replies;
    int *answered;
};

struct watchdog {
    struct watchdog_transport link; /* to the other ranks' watchdogs: rank, size, hosts */
    double limit, grace;
    char limit_flag[TEXT], record_prefix[RECORD_PATH];
    pthread_t thread;
    pthread_mutex_t lock;
    int stop;
    struct position at;
    struct inquiry ask;
    struct stall_status answer; /* the watchdog thread's answer being sent (too big for its stack) */
};

size_t watchdog_answer_bytes(void)
{
    return sizeof(struct stall_status);
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

void watchdog_wait(struct watchdog *w, const char *what, double bytes)
{
    if (!w)
        return;
    double now = timer_now();
    pthread_mutex_lock(&w->lock);
    struct position *at = &w->at;
    at->what = what;
    at->waiting = 1;
    at->wait_since = now;
    at->entered++;
    at->recent[(at->entered - 1) % STALL_RECENT] =
        (struct entered){at->entered, what, at->phase, bytes, now, now - 1, at->epoch, at->step};
    pthread_mutex_unlock(&w->lock);
}

void watchdog_done(struct watchdog *w)
{
    if (!w)
        return;
    double now = timer_now();
    pthread_mutex_lock(&w->lock);
    w->at.waiting = 0;
    if (w->at.entered > 0)
        w->at.recent[(w->at.entered - 1) % STALL_RECENT].end = now;
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

/* The recent collectives, oldest first, with times relative to now. */
static void describe_recent(const struct position *p, double now, struct stall_status *s)
{
    long first = p->entered > STALL_RECENT ? p->entered - STALL_RECENT + 1 : 1;
    for (long n = first; n <= p->entered; n++) {
        const struct entered *e = &p->recent[(n - 1) % STALL_RECENT];
        struct stall_collective *c = &s->recent[s->recent_count++];
        *c = (struct stall_collective){e->number, e->bytes, e->epoch, e->step, now - e->start,
                                       e->end >= e->start ? e->end - e->start : -1, "", ""};
        snprintf(c->what, sizeof c->what, "%s", e->what);
        snprintf(c->phase, sizeof c->phase, "%s", e->phase ? e->phase : "");
    }
}

static void describe(const struct position *p, double now, struct stall_status *s)
{
    memset(s, 0, sizeof *s);
    s->waiting = p->waiting;
    s->may_be_slow = p->may_be_slow;
    s->epoch = p->epoch;
    s->step = p->step;
    s->seconds = now - (p->waiting ? p->wait_since : p->phase_since);
    snprintf(s->phase, sizeof s->phase, "%s", p->phase); /* set from watchdog_start on */
    snprintf(s->what, sizeof s->what, "%s", p->waiting && p->what ? p->what : "");
    s->number = p->entered;
    s->bytes = p->entered > 0 ? p->recent[(p->entered - 1) % STALL_RECENT].bytes : 0;
    describe_recent(p, now, s);
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
        describe(&p, timer_now(), &w->answer);
        CHECK_DP(w->link.answer(w->link.channel, asker, &w->answer, err));
    }
fail:
    give_up(w, err);
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
            timer_sleep(0.01);
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
    const struct stall_status *s = &w->ask.replies[r];
    return r != w->link.rank && w->ask.answered[r] && !s->waiting && !s->may_be_slow && s->seconds > w->limit;
}

/* Answered, busy, and not stuck: in a phase that may be slow, or not yet past the limit. */
static int legitimately_busy(const struct watchdog *w, int r)
{
    return r != w->link.rank && w->ask.answered[r] && !w->ask.replies[r].waiting && !stuck(w, r);
}

/* The line that ends the job. */
static void report_stall(const struct watchdog *w, const struct stall_status *mine, char *line, size_t size)
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

/* The record of every answering rank's recent collectives, published at path; 0 or -1 with err set. */
static int write_record(const struct watchdog *w, const struct stall_view *view, const char *line, const char *path,
                        char *err)
{
    size_t length = 0;
    char *json = stall_record_json(view, line, &length);
    if (!json) {
        err_set(err, "%s: cannot assemble the record: out of memory", path);
        return -1;
    }
    int status = w->link.publish(path, json, length, err);
    free(json);
    return status;
}

/* The stall line, the summary of where every rank was, the record of their recent collectives
 * (where a path was given), and the end of the job. */
_Noreturn static void end_job(struct watchdog *w, const struct stall_status *mine)
{
    char line[DP_ERR_LEN], summary[DP_ERR_LEN], err[DP_ERR_LEN], path[RECORD_PATH + 32];
    const struct stall_view view = {w->link.size, w->link.rank, w->ask.replies, w->ask.answered, w->link.hosts};
    report_stall(w, mine, line, sizeof line);
    stall_summary(&view, summary, sizeof summary);
    snprintf(path, sizeof path, "%s.stall-rank%d.json", w->record_prefix, w->link.rank);
    fprintf(stderr, "dptrain: error: rank %d on %s: %s\n", w->link.rank, w->link.hosts[w->link.rank], line);
    if (w->record_prefix[0] && write_record(w, &view, line, path, err) == 0)
        fprintf(stderr, "dptrain: at the stall: %s; the last %d collectives of every rank that answered: %s\n",
                summary, STALL_RECENT, path);
    else if (w->record_prefix[0])
        fprintf(stderr, "dptrain: at the stall: %s; no record written: %s\n", summary, err);
    else
        fprintf(stderr, "dptrain: at the stall: %s\n", summary);
    fflush(stderr);
    w->link.abort(w->link.channel);
    exit(DP_EXIT_ERROR);
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
    struct stall_status *mine = &w->ask.replies[w->link.rank];
    describe(&again, timer_now(), mine);
    if (!reporter(w))
        timer_sleep(2 * w->grace + 1); /* the reporter's abort normally ends this process first */
    end_job(w, mine);
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
        timer_sleep(POLL_SECONDS);
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

int watchdog_start(const struct watchdog_transport *link, const struct watchdog_limits *limits,
                   struct watchdog **out, char *err)
{
    int rc = 0;
    struct watchdog *w = NULL;
    *out = NULL;
    CHECK_PTR(w = calloc(1, sizeof *w), "cannot allocate the watchdog");
    w->link = *link;
    w->at.phase = "setting up (reading data, fitting PCA)";
    w->at.may_be_slow = 1; /* until the caller says where it is */
    w->limit = limits->seconds;
    w->grace = w->limit < 10 ? w->limit / 2 : 5;
    snprintf(w->limit_flag, sizeof w->limit_flag, "%s", limits->flag);
    snprintf(w->record_prefix, sizeof w->record_prefix, "%s", limits->record_prefix ? limits->record_prefix : "");
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
