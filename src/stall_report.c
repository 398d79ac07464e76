#include "dptrain/stall_report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HOSTS_LISTED = 3, GROUPS_LISTED = 8 };

/* Where a rank was, as the summary groups it. */
enum whereabouts { SILENT, WAITING, BUSY };

static enum whereabouts whereabouts_of(const struct stall_view *v, int r)
{
    if (!v->answered[r] && r != v->reporter)
        return SILENT;
    return v->status[r].waiting ? WAITING : BUSY;
}

/* Two ranks were at the same place: the same kind, collective and phase or collective. */
static int same_place(const struct stall_view *v, int a, int b)
{
    enum whereabouts wa = whereabouts_of(v, a), wb = whereabouts_of(v, b);
    if (wa != wb)
        return 0;
    if (wa == SILENT)
        return 1;
    const struct stall_status *sa = &v->status[a], *sb = &v->status[b];
    return sa->number == sb->number &&
           strcmp(wa == WAITING ? sa->what : sa->phase, wa == WAITING ? sb->what : sb->phase) == 0;
}

static size_t append(char *out, size_t size, size_t used, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* snprintf at out + used that never runs past size; returns the new length. */
static size_t append(char *out, size_t size, size_t used, const char *format, ...)
{
    if (used + 1 >= size)
        return used;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(out + used, size - used, format, args);
    va_end(args);
    if (n < 0)
        return used;
    return (size_t)n < size - used ? used + (size_t)n : size - 1;
}

/* "rank 2 on node2" or "ranks 0-1, 3 on node1, node2": the ranks at the same place as `first`. */
static size_t name_group(const struct stall_view *v, int first, char *out, size_t size, size_t used)
{
    int count = 0, hosts = 0, listed_host[HOSTS_LISTED];
    for (int r = first; r < v->size; r++)
        count += same_place(v, first, r);
    used = append(out, size, used, "%s ", count > 1 ? "ranks" : "rank");
    for (int r = first, separator = 0; r < v->size; r++) {
        if (!same_place(v, first, r) || (r > first && same_place(v, first, r - 1)))
            continue;
        int last = r;
        while (last + 1 < v->size && same_place(v, first, last + 1))
            last++;
        used = last > r ? append(out, size, used, "%s%d-%d", separator ? ", " : "", r, last)
                        : append(out, size, used, "%s%d", separator ? ", " : "", r);
        separator = 1;
    }
    for (int r = first; r < v->size; r++) {
        int known = !same_place(v, first, r);
        for (int h = 0; h < hosts && h < HOSTS_LISTED && !known; h++)
            known = strcmp(v->hosts[listed_host[h]], v->hosts[r]) == 0;
        if (!known && hosts < HOSTS_LISTED)
            listed_host[hosts] = r;
        hosts += !known;
    }
    for (int h = 0; h < hosts && h < HOSTS_LISTED; h++)
        used = append(out, size, used, "%s%s", h ? ", " : " on ", v->hosts[listed_host[h]]);
    return hosts > HOSTS_LISTED ? append(out, size, used, " and %d more hosts", hosts - HOSTS_LISTED) : used;
}

static size_t describe_bytes(double bytes, char *out, size_t size, size_t used)
{
    if (bytes >= 1e6)
        return append(out, size, used, "%.2f MB", bytes / 1e6);
    if (bytes >= 1e3)
        return append(out, size, used, "%.2f kB", bytes / 1e3);
    return append(out, size, used, "%.0f B", bytes);
}

/* " wait in collective #1235 (the gradient allreduce, 7.45 MB)" and its kin. */
static size_t describe_place(const struct stall_view *v, int r, int plural, char *out, size_t size, size_t used)
{
    const struct stall_status *s = &v->status[r];
    switch (whereabouts_of(v, r)) {
    case SILENT:
        return append(out, size, used, " did not answer");
    case WAITING:
        used = append(out, size, used, " %s in collective #%ld (%s, ", plural ? "wait" : "waits", s->number, s->what);
        return append(out, size, describe_bytes(s->bytes, out, size, used), ")");
    case BUSY:
        if (s->number == 0)
            return append(out, size, used, " entered no collective yet and %s in %s", plural ? "are" : "is", s->phase);
        return append(out, size, used, " finished #%ld and %s in %s", s->number, plural ? "are" : "is", s->phase);
    }
    return used;
}

void stall_summary(const struct stall_view *v, char *line, size_t size)
{
    size_t used = 0;
    int groups = 0;
    line[0] = '\0';
    for (int r = 0; r < v->size; r++) {
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = same_place(v, q, r);
        if (seen)
            continue;
        if (groups == GROUPS_LISTED) {
            used = append(line, size, used, "; and more");
            break;
        }
        int plural = 0;
        for (int q = r + 1; q < v->size && !plural; q++)
            plural = same_place(v, r, q);
        used = append(line, size, used, "%s", groups ? "; " : "");
        used = name_group(v, r, line, size, used);
        used = describe_place(v, r, plural, line, size, used);
        groups++;
    }
}

/* ---- the JSON record ------------------------------------------------------------------------ */

/* A JSON string: quotes, backslashes and control characters escaped (host names come from the
 * system). */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void json_collective(FILE *out, const struct stall_collective *c)
{
    fprintf(out, "{\"number\": %ld, \"what\": ", c->number);
    json_string(out, c->what);
    fprintf(out, ", \"bytes\": %.0f, \"phase\": ", c->bytes);
    json_string(out, c->phase);
    fprintf(out, ", \"epoch\": %d, \"step\": %ld, \"started_seconds_ago\": %.6f, \"seconds\": ", c->epoch, c->step,
            c->ago);
    if (c->seconds < 0)
        fprintf(out, "null}");
    else
        fprintf(out, "%.6f}", c->seconds);
}

static void json_rank(FILE *out, const struct stall_view *v, int r)
{
    const struct stall_status *s = &v->status[r];
    int answered = whereabouts_of(v, r) != SILENT;
    fprintf(out, "    {\"rank\": %d, \"host\": ", r);
    json_string(out, v->hosts[r]);
    fprintf(out, ", \"answered\": %s", answered ? "true" : "false");
    if (answered) {
        fprintf(out, ", \"waiting\": %s, \"collective\": %ld, \"phase\": ", s->waiting ? "true" : "false", s->number);
        json_string(out, s->phase);
        fprintf(out, ", \"epoch\": %d, \"step\": %ld, \"seconds_there\": %.6f, \"recent_collectives\": [", s->epoch,
                s->step, s->seconds);
        for (int i = 0; i < s->recent_count && i < STALL_RECENT; i++) {
            fputs(i ? ",\n      " : "\n      ", out);
            json_collective(out, &s->recent[i]);
        }
        fputs(s->recent_count ? "\n    ]" : "]", out);
    }
    fputc('}', out);
}

char *stall_record_json(const struct stall_view *v, const char *stall_line, size_t *length)
{
    char *text = NULL;
    FILE *out = open_memstream(&text, length);
    if (!out)
        return NULL;
    fputs("{\"stall\": ", out);
    json_string(out, stall_line);
    fprintf(out, ",\n \"reporter\": %d,\n \"ranks\": [\n", v->reporter);
    for (int r = 0; r < v->size; r++) {
        json_rank(out, v, r);
        fputs(r + 1 < v->size ? ",\n" : "\n", out);
    }
    fputs(" ]}\n", out);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
