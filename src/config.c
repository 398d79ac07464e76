#include "dptrain/config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const char *const optimizer_names[] = {[OPT_SGD] = "sgd", [OPT_ADAM] = "adam", [OPT_NESTEROV] = "nesterov"};
static const char *const schedule_names[] = {[SCHEDULE_COSINE] = "cosine", [SCHEDULE_STEP] = "step",
                                             [SCHEDULE_CONSTANT] = "constant"};
static const char *const compress_names[] = {[COMPRESS_NONE] = "none", [COMPRESS_BF16] = "bf16",
                                             [COMPRESS_POWERSGD] = "powersgd"};

/* The index of name in names, or -1. */
static int find_name(const char *const *names, int count, const char *name)
{
    for (int k = 0; k < count; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return -1;
}

const char *config_optimizer_name(enum optimizer_kind kind)
{
    return optimizer_names[kind];
}

int config_optimizer_parse(const char *name, enum optimizer_kind *kind)
{
    int k = find_name(optimizer_names, (int)(sizeof optimizer_names / sizeof *optimizer_names), name);
    if (k >= 0)
        *kind = (enum optimizer_kind)k;
    return k >= 0 ? 0 : -1;
}

const char *config_schedule_name(enum schedule_kind kind)
{
    return schedule_names[kind];
}

int config_schedule_parse(const char *name, enum schedule_kind *kind)
{
    int k = find_name(schedule_names, (int)(sizeof schedule_names / sizeof *schedule_names), name);
    if (k >= 0)
        *kind = (enum schedule_kind)k;
    return k >= 0 ? 0 : -1;
}

void config_compress_text(const struct compression *c, char *out, size_t size)
{
    if (c->kind == COMPRESS_POWERSGD)
        snprintf(out, size, "%s:%d", compress_names[c->kind], c->rank);
    else
        snprintf(out, size, "%s", compress_names[c->kind]);
}

int config_compress_parse(const char *text, struct compression *c)
{
    char name[CONFIG_COMPRESS_LENGTH], tail;
    int rank = CONFIG_POWERSGD_DEFAULT_RANK;
    size_t length = strcspn(text, ":");
    if (length >= sizeof name)
        return -1;
    memcpy(name, text, length);
    name[length] = '\0';
    int k = find_name(compress_names, (int)(sizeof compress_names / sizeof *compress_names), name);
    if (k < 0 || (text[length] == ':' && k != COMPRESS_POWERSGD))
        return -1;
    /* the rank: digits only, nothing after them */
    if (text[length] == ':' && (sscanf(text + length + 1, "%d%c", &rank, &tail) != 1 ||
                                !isdigit((unsigned char)text[length + 1])))
        return -1;
    if (rank < 1 || rank > CONFIG_POWERSGD_MAX_RANK)
        return -1;
    c->kind = (enum compress_kind)k;
    c->rank = k == COMPRESS_POWERSGD ? rank : 0;
    return 0;
}

enum model_kind config_model_kind(const char *spec)
{
    return strncmp(spec, "cnn", 3) == 0 ? MODEL_CNN : MODEL_MLP;
}

/* Every compared setting as text; `real` formats the real numbers (%.17g is exact, so equal texts
 * are equal settings; %g reads well in messages). */
static void setting_text(const struct config *c, enum setting s, const char *real, char *out, size_t size)
{
    switch (s) {
    case SETTING_MODEL: snprintf(out, size, "%s", c->model); break;
    case SETTING_COMPRESS: config_compress_text(&c->compress, out, size); break;
    case SETTING_PCA: snprintf(out, size, "%d", c->pca); break;
    case SETTING_BATCH: snprintf(out, size, "%d", c->batch); break;
    case SETTING_EPOCHS: snprintf(out, size, "%d", c->epochs); break;
    case SETTING_SEED: snprintf(out, size, "%llu", (unsigned long long)c->seed); break;
    case SETTING_OPTIMIZER: snprintf(out, size, "%s", config_optimizer_name(c->optimizer)); break;
    case SETTING_LR: snprintf(out, size, real, c->lr); break;
    case SETTING_MOMENTUM: snprintf(out, size, real, c->momentum); break;
    case SETTING_WEIGHT_DECAY: snprintf(out, size, real, c->weight_decay); break;
    case SETTING_SCHEDULE: snprintf(out, size, "%s", config_schedule_name(c->schedule)); break;
    case SETTING_WARMUP: snprintf(out, size, real, c->warmup); break;
    case SETTING_DROPOUT: snprintf(out, size, real, c->dropout); break;
    case SETTING_LABEL_SMOOTHING: snprintf(out, size, real, c->label_smoothing); break;
    case SETTING_AUGMENT: snprintf(out, size, "%d", c->augment); break;
    case SETTING_AUGMENT_SHIFT: snprintf(out, size, "%d", c->augment_shift); break;
    case SETTING_ERASE: snprintf(out, size, real, c->erase); break;
    case SETTING_FLIP: snprintf(out, size, "%s", c->flip ? "yes" : "no"); break;
    case SETTING_TTA: snprintf(out, size, "%d", c->tta); break;
    case SETTING_TTA_SHIFT: snprintf(out, size, "%d", c->tta_shift); break;
    case SETTING_VALIDATION: snprintf(out, size, "%d", c->validation); break;
    case SETTING_DETERMINISTIC: snprintf(out, size, "%s", c->deterministic ? "on" : "off"); break;
    case SETTING_NONE: snprintf(out, size, "-"); break;
    }
}

void config_setting_value(const struct config *c, enum setting s, char *out, size_t size)
{
    setting_text(c, s, "%g", out, size);
}

enum setting config_first_difference(const struct config *a, const struct config *b)
{
    char va[96], vb[96];
    for (int s = 0; s < SETTING_NONE; s++) {
        setting_text(a, (enum setting)s, "%.17g", va, sizeof va);
        setting_text(b, (enum setting)s, "%.17g", vb, sizeof vb);
        if (strcmp(va, vb) != 0)
            return (enum setting)s;
    }
    return SETTING_NONE;
}
