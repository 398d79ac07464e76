#include "dptrain/profile.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/comm.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int profile_init(struct profile *p, MPI_Comm world, size_t event_capacity, char *err)
{
    memset(p, 0, sizeof *p);
    if (event_capacity > 0) {
        CHECK_PTR(p->events = malloc(event_capacity * sizeof *p->events),
                  "--trace: cannot allocate room for %zu events", event_capacity);
        p->event_capacity = event_capacity;
    }
    /* A common zero, so that the ranks' tracks line up in the viewer. */
    CHECK_MPI(MPI_Barrier(world), "MPI failed while starting the profile");
    p->origin = MPI_Wtime();
    return 0;
fail:
    free(p->events);
    p->events = NULL;
    return -1;
}

void profile_free(struct profile *p)
{
    free(p->events);
    memset(p, 0, sizeof *p);
}

void profile_reset_totals(struct profile *p)
{
    p->total_count = 0;
}

double profile_now(const struct profile *p)
{
    return p ? MPI_Wtime() - p->origin : 0.0;
}

static struct profile_total *total_of(struct profile *p, const char *name, const char *category)
{
    for (int i = 0; i < p->total_count; i++)
        if (p->totals[i].name == name || strcmp(p->totals[i].name, name) == 0)
            return &p->totals[i];
    if (p->total_count == PROFILE_MAX_NAMES)
        return NULL; /* more names than the model can have: leave them out of the totals */
    struct profile_total *t = &p->totals[p->total_count++];
    *t = (struct profile_total){name, category, 0.0, 0};
    return t;
}

double profile_end(struct profile *p, const char *name, const char *category, double start)
{
    if (!p)
        return 0.0;
    double now = profile_now(p);
    struct profile_total *t = total_of(p, name, category);
    if (t) {
        t->seconds += now - start;
        t->count++;
    }
    if (p->events) {
        if (p->event_count < p->event_capacity)
            p->events[p->event_count++] = (struct trace_event){name, category, start, now, p->epoch, p->step};
        else
            p->dropped++;
    }
    return now;
}

static const struct profile_total *find_total(const struct profile *p, const char *name)
{
    for (int i = 0; i < p->total_count; i++)
        if (strcmp(p->totals[i].name, name) == 0)
            return &p->totals[i];
    return NULL;
}

double profile_seconds(const struct profile *p, const char *name)
{
    const struct profile_total *t = find_total(p, name);
    return t ? t->seconds : 0.0;
}

long profile_count(const struct profile *p, const char *name)
{
    const struct profile_total *t = find_total(p, name);
    return t ? t->count : 0;
}

/* ---- writing -------------------------------------------------------------------------- */

/* A growing text buffer; allocation happens only here, once per run at the end. */
struct text {
    char *data;
    size_t length, capacity;
    int failed;
};

static void text_printf(struct text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *format, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list args;
        va_start(args, format);
        size_t room = t->capacity - t->length;
        int n = vsnprintf(t->data ? t->data + t->length : NULL, t->data ? room : 0, format, args);
        va_end(args);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->data && (size_t)n < room) {
            t->length += (size_t)n;
            return;
        }
        size_t want = (t->capacity ? 2 * t->capacity : 1 << 16) + (size_t)n + 1;
        char *grown = realloc(t->data, want);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->capacity = want;
    }
}

/* This rank's events, each as one JSON object preceded by a comma (but the first). */
static void events_json(const struct profile *p, int rank, struct text *t)
{
    text_printf(t, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"rank %d\"}}",
                rank, rank);
    text_printf(t, ",\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"sort_index\":%d}}",
                rank, rank);
    for (size_t i = 0; i < p->event_count && !t->failed; i++) {
        const struct trace_event *e = &p->events[i];
        text_printf(t, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                       "\"pid\":%d,\"tid\":0,\"args\":{\"epoch\":%d,\"step\":%ld}}",
                    e->name, e->category, 1e6 * e->start, 1e6 * (e->end - e->start), rank, e->epoch,
                    e->step + 1);
    }
}

static void totals_json(const struct profile *p, int rank, struct text *t)
{
    text_printf(t, "{\"rank\":%d,\"events\":%zu,\"dropped_events\":%zu,\"seconds\":{", rank, p->event_count,
                p->dropped);
    for (int i = 0; i < p->total_count; i++)
        text_printf(t, "%s\"%s\":%.6f", i ? "," : "", p->totals[i].name, p->totals[i].seconds);
    text_printf(t, "},\"counts\":{");
    for (int i = 0; i < p->total_count; i++)
        text_printf(t, "%s\"%s\":%ld", i ? "," : "", p->totals[i].name, p->totals[i].count);
    text_printf(t, "}}");
}

/* Gather every rank's text on rank 0, in rank order; *all and *offsets (size+1) on rank 0.
 * Collective, and every failure is agreed on before the next collective, so none can hang. */
static int gather_text(MPI_Comm world, int rank, int size, const struct text *mine, char **all,
                       int **offsets, char *err)
{
    int length = (int)mine->length, ok = mine->length < (size_t)INT_MAX / 2;
    int *counts = NULL;
    *all = NULL;
    *offsets = NULL;
    if (!ok)
        err_set(err, "--trace: rank %d has more than 1 GB of events; trace fewer epochs", rank);
    if (ok && rank == 0) {
        counts = malloc(sizeof(int) * (size_t)size);
        *offsets = malloc(sizeof(int) * (size_t)(size + 1));
        if (!counts || !*offsets)
            ok = 0, err_set(err, "--trace: cannot allocate");
    }
    CHECK_DP(comm_agree(world, ok, err));
    CHECK_MPI(MPI_Gather(&length, 1, MPI_INT, counts, 1, MPI_INT, 0, world), "--trace: gather failed");
    if (rank == 0) {
        long long total = 0;
        for (int r = 0; r < size; r++) {
            (*offsets)[r] = (int)total;
            total += counts[r];
        }
        if (total > INT_MAX)
            ok = 0, err_set(err, "--trace: the merged trace exceeds 2 GB; trace fewer epochs");
        else if (!(*all = malloc((size_t)total + 1)))
            ok = 0, err_set(err, "--trace: cannot allocate %lld bytes", total);
        else
            (*offsets)[size] = (int)total;
    }
    CHECK_DP(comm_agree(world, ok, err));
    CHECK_MPI(MPI_Gatherv(mine->data, length, MPI_CHAR, *all, counts, *offsets, MPI_CHAR, 0, world),
              "--trace: gather failed");
    free(counts);
    return 0;
fail:
    free(counts);
    free(*all);
    free(*offsets);
    *all = NULL;
    *offsets = NULL;
    return -1;
}

/* The merged JSON is assembled in memory and published by files_write (atomic, and a full disk
 * is one clear line). */
static int write_merged(const char *path, int size, const char *events, const int *event_offsets,
                        const char *totals, const int *total_offsets, char *err)
{
    char *text = NULL;
    size_t length = 0;
    FILE *out = NULL;
    CHECK_PTR(out = open_memstream(&text, &length), "--trace %s: cannot assemble the trace", path);
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", out);
    for (int r = 0; r < size; r++) {
        if (r > 0)
            fputs(",\n", out);
        fwrite(events + event_offsets[r], 1, (size_t)(event_offsets[r + 1] - event_offsets[r]), out);
    }
    fputs("\n],\n\"otherData\":{\"producer\":\"dptrain\",\"ranks\":[\n", out);
    for (int r = 0; r < size; r++) {
        if (r > 0)
            fputs(",\n", out);
        fwrite(totals + total_offsets[r], 1, (size_t)(total_offsets[r + 1] - total_offsets[r]), out);
    }
    fputs("\n]}}\n", out);
    int failed = ferror(out);
    FILE *closing = out;
    out = NULL;
    if (fclose(closing) != 0 || failed)
        FAIL("--trace %s: cannot assemble the trace (out of memory)", path);
    CHECK_DP(files_write(path, text, length, err));
    free(text);
    return 0;
fail:
    if (out)
        fclose(out);
    free(text);
    return -1;
}

int profile_write_trace(const struct profile *p, MPI_Comm world, const char *path, char *err)
{
    int rank, size, ok = 1;
    struct text events = {0}, totals = {0};
    char *all_events = NULL, *all_totals = NULL;
    int *event_offsets = NULL, *total_offsets = NULL;
    CHECK_MPI(MPI_Comm_rank(world, &rank), "MPI_Comm_rank failed");
    CHECK_MPI(MPI_Comm_size(world, &size), "MPI_Comm_size failed");
    events_json(p, rank, &events);
    totals_json(p, rank, &totals);
    if (events.failed || totals.failed) {
        err_set(err, "--trace: rank %d cannot allocate the trace text", rank);
        ok = 0;
    }
    CHECK_DP(comm_agree(world, ok, err));
    CHECK_DP(gather_text(world, rank, size, &events, &all_events, &event_offsets, err));
    CHECK_DP(gather_text(world, rank, size, &totals, &all_totals, &total_offsets, err));
    if (rank == 0)
        ok = write_merged(path, size, all_events, event_offsets, all_totals, total_offsets, err) == 0;
    ok = comm_agree(world, ok, err) == 0;
    goto done;
fail: /* every way here was already agreed on by all ranks */
    ok = 0;
done:
    free(events.data);
    free(totals.data);
    free(all_events);
    free(all_totals);
    free(event_offsets);
    free(total_offsets);
    return ok ? 0 : -1;
}
