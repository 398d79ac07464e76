#include "dptrain/profile.h"

#include "dptrain/check.h"
#include "dptrain/files.h"
#include "dptrain/timer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int profile_init(struct profile *p, size_t event_capacity, char *err)
{
    memset(p, 0, sizeof *p);
    if (event_capacity > 0) {
        CHECK_PTR(p->events = malloc(event_capacity * sizeof *p->events),
                  "cannot allocate room for %zu trace events", event_capacity);
        p->event_capacity = event_capacity;
    }
    p->origin = timer_now();
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
    return p ? timer_now() - p->origin : 0.0;
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

int profile_rank_json(const struct profile *p, int rank, struct trace_text *out, char *err)
{
    struct text e = {0}, t = {0};
    events_json(p, rank, &e);
    totals_json(p, rank, &t);
    if (e.failed || t.failed) {
        free(e.data);
        free(t.data);
        err_set(err, "rank %d cannot allocate the trace text", rank);
        return -1;
    }
    *out = (struct trace_text){.events = e.data, .totals = t.data, .events_length = e.length,
                               .totals_length = t.length};
    return 0;
}

void profile_trace_text_free(struct trace_text *t)
{
    free(t->events);
    free(t->totals);
    free(t->event_offsets);
    free(t->total_offsets);
    memset(t, 0, sizeof *t);
}

/* The merged JSON is assembled in memory and published by files_write (atomic, and a full disk
 * is one clear line). */
int profile_write_merged(const char *path, int ranks, const struct trace_text *merged, char *err)
{
    const char *events = merged->events, *totals = merged->totals;
    const size_t *event_offsets = merged->event_offsets, *total_offsets = merged->total_offsets;
    char *text = NULL;
    size_t length = 0;
    FILE *out = NULL;
    CHECK_PTR(out = open_memstream(&text, &length), "%s: cannot assemble the trace", path);
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", out);
    for (int r = 0; r < ranks; r++) {
        if (r > 0)
            fputs(",\n", out);
        fwrite(events + event_offsets[r], 1, event_offsets[r + 1] - event_offsets[r], out);
    }
    fputs("\n],\n\"otherData\":{\"producer\":\"dptrain\",\"ranks\":[\n", out);
    for (int r = 0; r < ranks; r++) {
        if (r > 0)
            fputs(",\n", out);
        fwrite(totals + total_offsets[r], 1, total_offsets[r + 1] - total_offsets[r], out);
    }
    fputs("\n]}}\n", out);
    int failed = ferror(out);
    FILE *closing = out;
    out = NULL;
    if (fclose(closing) != 0 || failed)
        FAIL("%s: cannot assemble the trace (out of memory)", path);
    CHECK_DP(files_write(path, text, length, err));
    free(text);
    return 0;
fail:
    if (out)
        fclose(out);
    free(text);
    return -1;
}

