#include "dptrain/model.h"

#include "dptrain/batchnorm.h"
#include "dptrain/check.h"
#include "dptrain/conv.h"
#include "dptrain/layers.h"
#include "dptrain/pool.h"
#include "dptrain/tensor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HIDDEN 8

/* The layer kinds: one row each (layer.h). */
static const struct layer_ops *const kinds[LAYER_KINDS] = {
    [LAYER_DENSE] = &layer_dense,         [LAYER_RELU] = &layer_relu,
    [LAYER_DROPOUT] = &layer_dropout,     [LAYER_CONV] = &layer_conv,
    [LAYER_BATCHNORM] = &layer_batchnorm, [LAYER_MAXPOOL] = &layer_maxpool,
    [LAYER_TO_ROWS] = &layer_to_rows,     [LAYER_TO_CHANNELS] = &layer_to_channels,
};

/* ---- building ------------------------------------------------------------------------ */

/* A spec being parsed: the model, and whether the data's shape is known (model_check_spec parses
 * before it is: shapes are then notional and not checked). */
struct builder {
    struct model *m;
    int shape_known;
    float dropout;
};

static struct layer *add_layer(struct model *m, enum layer_kind kind, int in, int out)
{
    struct layer *l = &m->layers[m->layer_count++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->ops = kinds[kind];
    l->forward_name = l->ops->forward_name;
    l->backward_name = l->ops->backward_name;
    l->in_size = in;
    l->out_size = out;
    return l;
}

/* The layer's parameters appended to the flat buffer: its weights, then its biases (decayed as
 * the row says; biases never), and its buffers (batch-norm statistics) to the model's. */
static void add_params(struct model *m, struct layer *l)
{
    struct layer_params p = {0, 0, 0};
    if (l->ops->params)
        l->ops->params(l, &p);
    if (l->ops->buffers) {
        l->buffer_offset = m->buffer_count;
        m->buffer_count += l->ops->buffers(l);
    }
    if (p.weights + p.biases == 0)
        return;
    l->param_offset = m->param_count;
    if (p.decay || p.biases == 0) {
        m->ranges[m->range_count++] = (struct param_range){m->param_count, p.weights, p.decay};
        if (p.biases)
            m->ranges[m->range_count++] = (struct param_range){m->param_count + p.weights, p.biases, 0};
    } else { /* neither decayed: one range */
        m->ranges[m->range_count++] = (struct param_range){m->param_count, p.weights + p.biases, 0};
    }
    m->param_count += p.weights + p.biases;
}

static void set_shape(struct layer *l, int c, int h, int w)
{
    l->channels = c;
    l->height = h;
    l->width = w;
}

static void add_dense(struct model *m, int in, int out)
{
    add_params(m, add_layer(m, LAYER_DENSE, in, out));
}

static void add_hidden_dense(const struct builder *b, int in, int out)
{
    add_dense(b->m, in, out);
    add_layer(b->m, LAYER_RELU, out, out);
    if (b->dropout > 0)
        add_layer(b->m, LAYER_DROPOUT, out, out)->rate = b->dropout;
}

/* The feature map's shape while a CNN spec is parsed. */
struct map {
    int c, h, w;
};

/* 3×3 convolution (no bias: the batch norm's shift replaces it) → batch norm with ReLU (one
 * layer: batchnorm.h). */
static void add_conv_block(const struct builder *b, struct map *at, int out_channels)
{
    struct model *m = b->m;
    int in = at->c * at->h * at->w, out = out_channels * at->h * at->w;
    struct layer *conv = add_layer(m, LAYER_CONV, in, out);
    set_shape(conv, at->c, at->h, at->w);
    conv->conv = (struct conv_shape){at->c, out_channels, at->h, at->w, 3, CONV_IM2COL, 0};
    if (b->shape_known)
        conv_plan(&conv->conv, tensor_gemm_threads()); /* both commands set the threads before the model */
    add_params(m, conv);
    struct layer *bn = add_layer(m, LAYER_BATCHNORM, out, out);
    set_shape(bn, out_channels, at->h, at->w);
    add_params(m, bn);
    at->c = out_channels;
}

/* 2×2 max pooling: fused into the batch norm before it where both sides are even (the fast path,
 * batchnorm.h), else a layer of its own that drops an odd side's last row or column. */
static int add_pool(const struct builder *b, struct map *at, const char *spec, char *err)
{
    struct model *m = b->m;
    if (b->shape_known && (at->h < 2 || at->w < 2))
        FAIL("'%s' pools a %dx%d feature map (the images are %dx%d): too many 'p' for images this small", spec,
             at->h, at->w, m->io.height, m->io.width);
    struct layer *last = m->layer_count > 0 ? &m->layers[m->layer_count - 1] : NULL;
    int out = at->c * (at->h / 2) * (at->w / 2);
    if (last && last->kind == LAYER_BATCHNORM && !last->pool && at->h % 2 == 0 && at->w % 2 == 0) {
        last->pool = 1;
        last->out_size = out;
        last->forward_name = "bn+relu+pool forward";
        last->backward_name = "bn+relu+pool backward";
    } else {
        set_shape(add_layer(m, LAYER_MAXPOOL, at->c * at->h * at->w, out), at->c, at->h, at->w);
    }
    at->h /= 2;
    at->w /= 2;
    return 0;
fail:
    return -1;
}

static void add_to_rows(struct model *m, const struct map *at)
{
    int size = at->c * at->h * at->w;
    set_shape(add_layer(m, LAYER_TO_ROWS, size, size), at->c, at->h, at->w);
}

static int parse_mlp(const struct builder *b, const char *spec, char *err)
{
    struct model *m = b->m;
    int hidden[MAX_HIDDEN] = {256, 128}, hidden_count = 2;
    if (strcmp(spec, "mlp") != 0) {
        hidden_count = 0;
        const char *p = spec + 4;
        while (*p) {
            char *end;
            errno = 0;
            long size = strtol(p, &end, 10);
            if (end == p || errno != 0 || size < 1 || size > 65536 || (*end != ',' && *end != '\0'))
                FAIL("bad hidden size in '%s' (expected mlp:H1,H2,... with sizes 1..65536)", spec);
            if (hidden_count == MAX_HIDDEN)
                FAIL("at most %d hidden layers in '%s'", MAX_HIDDEN, spec);
            hidden[hidden_count++] = (int)size;
            p = *end == ',' ? end + 1 : end;
            if (*end == ',' && *p == '\0')
                FAIL("trailing comma in '%s'", spec);
        }
        if (hidden_count == 0)
            FAIL("'%s' names no hidden layers (expected mlp:H1,H2,...)", spec);
    }
    int width = m->input_size;
    for (int h = 0; h < hidden_count; h++) {
        add_hidden_dense(b, width, hidden[h]);
        width = hidden[h];
    }
    add_dense(m, width, m->classes);
    return 0;
fail:
    return -1;
}

/* The input as a CNN takes it: the raw images, reordered to channel-major when they have
 * several channels (one channel: [N][H][W] is already [1][N][H][W]). */
static int cnn_input(const struct builder *b, const char *spec, struct map *at, char *err)
{
    struct model *m = b->m;
    const struct model_io *io = &m->io;
    *at = b->shape_known ? (struct map){io->channels, io->height, io->width} : (struct map){1, 64, 64};
    if (b->shape_known && m->input_size != at->c * at->h * at->w)
        FAIL("%s: a convolutional network needs the raw %dx%dx%d images, not principal components", spec, at->h,
             at->w, at->c);
    if (at->c > 1)
        set_shape(add_layer(m, LAYER_TO_CHANNELS, m->input_size, m->input_size), at->c, at->h, at->w);
    return 0;
fail:
    return -1;
}

/* Where a CNN spec's parse stands: the feature map, whether the dense layers have begun and the
 * width of the last one, the convolutions so far. */
struct cnn_parse {
    struct map at;
    int dense, width, convs;
};

/* One token of a CNN spec at p; *end is set past it. */
static int parse_token(const struct builder *b, const char *spec, const char *p, struct cnn_parse *c, char **end,
                       char *err)
{
    errno = 0;
    if (*p == 'p' && (p[1] == ',' || p[1] == '\0')) {
        if (c->dense)
            FAIL("pooling in '%s' must come before the dense layers", spec);
        CHECK_DP(add_pool(b, &c->at, spec, err));
        *end = (char *)p + 1;
    } else if (*p == 'f') {
        long size = strtol(p + 1, end, 10);
        if (*end == p + 1 || errno || size < 1 || size > 65536)
            FAIL("bad dense size in '%s'", spec);
        if (!c->dense) {
            add_to_rows(b->m, &c->at);
            c->width = c->at.c * c->at.h * c->at.w;
            c->dense = 1;
        }
        add_hidden_dense(b, c->width, (int)size);
        c->width = (int)size;
    } else {
        long channels = strtol(p, end, 10);
        if (*end == p || errno || channels < 1 || channels > 4096 || c->dense)
            FAIL("bad token in '%s' (expected cnn:C,...,p,...,fN with channels before dense layers)", spec);
        add_conv_block(b, &c->at, (int)channels);
        c->convs++;
    }
    return 0;
fail:
    return -1;
}

static int parse_cnn(const struct builder *b, const char *spec, char *err)
{
    struct model *m = b->m;
    /* The preset: two convolutional blocks, sized for a 2-core machine (docs/training.md, "The
     * convolutional network", compares it with deeper specs). */
    const char *tokens = strcmp(spec, "cnn") == 0 ? "32,p,64,p,f256" : spec + 4;
    struct cnn_parse c = {{0, 0, 0}, 0, 0, 0};
    CHECK_DP(cnn_input(b, spec, &c.at, err));
    m->is_conv = 1;
    for (const char *p = tokens; *p;) {
        char *end;
        CHECK_DP(parse_token(b, spec, p, &c, &end, err));
        if (*end != ',' && *end != '\0')
            FAIL("bad token in '%s'", spec);
        if (m->layer_count > MODEL_MAX_LAYERS - 6)
            FAIL("'%s' has too many layers", spec);
        p = *end == ',' ? end + 1 : end;
    }
    if (c.convs == 0)
        FAIL("'%s' has no convolution", spec);
    if (!c.dense) {
        add_to_rows(m, &c.at);
        c.width = c.at.c * c.at.h * c.at.w;
    }
    add_dense(m, c.width, m->classes);
    return 0;
fail:
    return -1;
}

/* Point every layer at its slices of the flat buffers. */
static void bind_views(struct model *m)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        struct layer_params p = {0, 0, 0};
        if (l->ops->buffers) {
            l->running_mean = m->buffers + l->buffer_offset;
            l->running_var = l->running_mean + l->ops->buffers(l) / 2;
        }
        if (l->ops->params)
            l->ops->params(l, &p);
        if (p.weights + p.biases == 0)
            continue;
        l->weight = m->params + l->param_offset;
        l->bias = l->weight + p.weights;
    }
    model_use_grads(m, m->grads);
}

float *model_use_grads(struct model *m, float *grads)
{
    float *before = m->grads;
    m->grads = grads;
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        if (!l->weight)
            continue;
        l->grad_weight = grads + l->param_offset;
        l->grad_bias = l->grad_weight + (l->bias - l->weight);
    }
    return before;
}

static int alloc_buffers(struct model *m, char *err)
{
    size_t rows = (size_t)m->max_batch, workspace = 0;
    CHECK_PTR(m->params = tensor_alloc(m->param_count), "cannot allocate %zu parameters", m->param_count);
    CHECK_PTR(m->grads = tensor_alloc(m->param_count), "cannot allocate %zu gradients", m->param_count);
    CHECK_PTR(m->buffers = tensor_alloc(m->buffer_count), "cannot allocate batch-norm statistics");
    CHECK_PTR(m->acts[0] = tensor_alloc(rows * m->input_size), "cannot allocate input batch");
    CHECK_PTR(m->grad_acts[0] = tensor_alloc(rows * m->input_size), "cannot allocate input gradient");
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        size_t size = rows * (size_t)l->out_size;
        CHECK_PTR(m->acts[i + 1] = tensor_alloc(size), "cannot allocate activations");
        CHECK_PTR(m->grad_acts[i + 1] = tensor_alloc(size), "cannot allocate activation gradients");
        if (l->ops->allocate && l->ops->allocate(l, m->max_batch) != 0)
            FAIL("cannot allocate the state of layer %d (%s)", i + 1, l->forward_name);
        size_t need = l->ops->workspace ? l->ops->workspace(l, m->max_batch) : 0;
        workspace = need > workspace ? need : workspace;
    }
    if (workspace)
        CHECK_PTR(m->workspace = tensor_alloc(workspace), "cannot allocate the im2col workspace (%zu MB)",
                  workspace * sizeof(float) >> 20);
    bind_views(m);
    return 0;
fail:
    return -1;
}

static int parse_spec(const struct builder *b, const char *spec, char *err)
{
    if (strcmp(spec, "mlp") == 0 || strncmp(spec, "mlp:", 4) == 0)
        return parse_mlp(b, spec, err);
    if (strcmp(spec, "cnn") == 0 || strncmp(spec, "cnn:", 4) == 0)
        return parse_cnn(b, spec, err);
    err_set(err, "unknown model spec '%s' (expected mlp, mlp:H1,H2,..., cnn or cnn:TOKENS)", spec);
    return -1;
}

uint64_t model_param_hash(const struct model *m)
{
    const unsigned char *bytes = (const unsigned char *)m->params;
    size_t length = m->param_count * sizeof(float), i = 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, 8);
        h = (h ^ word) * 0x100000001b3ULL;
    }
    for (; i < length; i++)
        h = (h ^ bytes[i]) * 0x100000001b3ULL;
    /* splitmix64's finaliser: every input bit reaches every output bit */
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

int model_param_boundaries(const struct model *m, size_t *offsets, int max)
{
    int count = 0;
    for (int i = m->layer_count - 1; i >= 0 && count < max; i--) {
        const struct layer *l = &m->layers[i];
        if (l->weight != NULL && l->param_offset != 0)
            offsets[count++] = l->param_offset;
    }
    return count;
}

int model_weight_shape(const struct model *m, size_t offset, int *rows, int *cols)
{
    for (int i = 0; i < m->layer_count; i++) {
        const struct layer *l = &m->layers[i];
        if (!l->ops->matrix || l->param_offset != offset || !l->weight)
            continue;
        l->ops->matrix(l, rows, cols);
        return 1;
    }
    return 0;
}

int model_check_spec(const char *spec, int pca, char *err)
{
    struct model *m = calloc(1, sizeof *m);
    if (!m) {
        err_set(err, "cannot allocate the model description");
        return -1;
    }
    /* notional sizes: the data are not known yet, and model_create checks the spec against them */
    enum { SIDE = 64, CLASSES = 2 };
    m->io = (struct model_io){SIDE, SIDE, 1, SIDE * SIDE, CLASSES};
    m->input_size = m->io.features;
    m->classes = m->io.classes;
    int status = parse_spec(&(struct builder){m, 0, 0.5f}, spec, err);
    if (status == 0 && pca > 0 && m->is_conv) {
        err_set(err, "%s: a convolutional network needs the raw images, not principal components (--pca %d)", spec,
                pca);
        status = -1;
    }
    free(m);
    return status;
}

struct model *model_create(const char *spec, const struct model_io *io, int max_batch, float dropout, char *err)
{
    struct model *m = NULL;
    CHECK_PTR(m = calloc(1, sizeof *m), "cannot allocate the model");
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    m->io = *io;
    m->input_size = io->features;
    m->classes = io->classes;
    m->max_batch = max_batch;
    CHECK_DP(parse_spec(&(struct builder){m, 1, dropout}, spec, err));
    CHECK_DP(alloc_buffers(m, err));
    while (m->first_trained < m->layer_count - 1 && !m->layers[m->first_trained].weight)
        m->first_trained++;
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_free(struct model *m)
{
    if (!m)
        return;
    tensor_free(m->params);
    tensor_free(m->grads);
    tensor_free(m->buffers);
    tensor_free(m->workspace);
    for (int i = 0; i <= m->layer_count; i++) {
        tensor_free(m->acts[i]);
        tensor_free(m->grad_acts[i]);
        if (i < m->layer_count && m->layers[i].ops->release)
            m->layers[i].ops->release(&m->layers[i]);
    }
    free(m);
}

void model_init_params(struct model *m, struct rng *rng)
{
    for (int i = 0; i < m->layer_count; i++)
        if (m->layers[i].ops->init)
            m->layers[i].ops->init(&m->layers[i], rng);
}

/* ---- running ------------------------------------------------------------------------- */

const float *model_forward(struct model *m, int batch, int training, struct rng *rng)
{
    /* Only training's layers are step time: evaluation is timed as one phase by its caller. */
    struct profile *profile = training ? m->profile : NULL;
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        struct layer_pass pass = {batch, training, m->acts[i], m->acts[i + 1], NULL, NULL, m->workspace, rng};
        double started = profile_now(profile);
        l->ops->forward(l, &pass);
        profile_end(profile, l->forward_name, CATEGORY_LAYER, started);
    }
    return m->acts[m->layer_count];
}

void model_backward(struct model *m, int batch, const struct backward_hook *hook)
{
    for (int i = m->layer_count - 1; i >= 0; i--) {
        struct layer *l = &m->layers[i];
        /* the gradient of what lies below the first trained layer is never used */
        float *dx = i <= m->first_trained ? NULL : m->grad_acts[i];
        struct layer_pass pass = {batch, 1, m->acts[i], m->acts[i + 1], m->grad_acts[i + 1], dx, m->workspace, NULL};
        double started = profile_now(m->profile);
        l->ops->backward(l, &pass);
        profile_end(m->profile, l->backward_name, CATEGORY_LAYER, started);
        if (hook && l->weight)
            hook->grads_ready(hook->context, l->param_offset);
    }
}

double model_training_flops(const struct model *m)
{
    double flops = 0;
    for (int i = 0; i < m->layer_count; i++) {
        const struct layer *l = &m->layers[i];
        if (l->ops->products) /* the first trained layer computes no input gradient */
            flops += 2 * l->ops->products(l) * (i <= m->first_trained ? 2 : 3);
    }
    return flops;
}

float *model_input(struct model *m)
{
    return m->acts[0];
}

float *model_grad_logits(struct model *m)
{
    return m->grad_acts[m->layer_count];
}
