#include "dptrain/model.h"

#include "dptrain/check.h"
#include "dptrain/layers.h"
#include "dptrain/pool.h"
#include "dptrain/tensor.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HIDDEN 8
#define IMAGE_SIDE 28

/* ---- building ------------------------------------------------------------------------ */

static struct layer *add_layer(struct model *m, enum layer_kind kind, int in, int out)
{
    struct layer *l = &m->layers[m->layer_count++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->in_size = in;
    l->out_size = out;
    return l;
}

/* Weights [out][in] (decayed) then biases (not decayed), appended to the flat buffer. */
static void add_params(struct model *m, struct layer *l, size_t weights, size_t biases)
{
    l->param_offset = m->param_count;
    m->ranges[m->range_count++] = (struct param_range){m->param_count, weights, 1};
    if (biases)
        m->ranges[m->range_count++] = (struct param_range){m->param_count + weights, biases, 0};
    m->param_count += weights + biases;
}

static void add_dense(struct model *m, int in, int out)
{
    struct layer *l = add_layer(m, LAYER_DENSE, in, out);
    add_params(m, l, (size_t)in * out, (size_t)out);
}

static void add_hidden_dense(struct model *m, int in, int out, float dropout)
{
    add_dense(m, in, out);
    add_layer(m, LAYER_RELU, out, out);
    if (dropout > 0)
        add_layer(m, LAYER_DROPOUT, out, out)->rate = dropout;
}

static void set_shape(struct layer *l, int c, int h, int w)
{
    l->channels = c;
    l->height = h;
    l->width = w;
}

/* 3×3 convolution (no bias: the batch norm's shift replaces it) → batch norm with ReLU (one
 * layer: batchnorm.h). */
static void add_conv_block(struct model *m, int *c, int h, int w, int out_channels)
{
    int in = *c * h * w, out = out_channels * h * w;
    struct layer *conv = add_layer(m, LAYER_CONV, in, out);
    set_shape(conv, *c, h, w);
    conv->conv = (struct conv_shape){*c, out_channels, h, w, 3, CONV_IM2COL, 0};
    conv_plan(&conv->conv, tensor_gemm_threads()); /* both commands set the threads before the model */
    add_params(m, conv, (size_t)out_channels * *c * 9, 0);
    struct layer *bn = add_layer(m, LAYER_BATCHNORM, out, out);
    set_shape(bn, out_channels, h, w);
    /* gamma (not decayed either: it is a scale, like a bias), then beta */
    bn->param_offset = m->param_count;
    m->ranges[m->range_count++] = (struct param_range){m->param_count, 2 * (size_t)out_channels, 0};
    m->param_count += 2 * (size_t)out_channels;
    bn->running_mean = (float *)(uintptr_t)m->buffer_count; /* offsets until bound */
    m->buffer_count += 2 * (size_t)out_channels;
    *c = out_channels;
}

static int parse_mlp(struct model *m, const char *spec, float dropout, char *err)
{
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
        add_hidden_dense(m, width, hidden[h], dropout);
        width = hidden[h];
    }
    add_dense(m, width, m->classes);
    return 0;
fail:
    return -1;
}

static int parse_cnn(struct model *m, const char *spec, float dropout, char *err)
{
    /* The preset: two convolutional blocks, sized for a 2-core machine (README, "The
     * convolutional network", compares it with deeper specs). */
    const char *tokens = strcmp(spec, "cnn") == 0 ? "32,p,64,p,f256" : spec + 4;
    int c = 1, h = IMAGE_SIDE, w = IMAGE_SIDE, dense = 0, width = 0, convs = 0;
    if (m->input_size != IMAGE_SIDE * IMAGE_SIDE)
        FAIL("%s: a convolutional network needs raw 28x28 images, not principal components", spec);
    m->is_conv = 1;
    const char *p = tokens;
    while (*p) {
        char *end;
        errno = 0;
        if (*p == 'p' && (p[1] == ',' || p[1] == '\0')) {
            if (dense || h % 2 || w % 2)
                FAIL("pooling in '%s' needs an even image side before any dense layer", spec);
            struct layer *last = m->layer_count > 0 ? &m->layers[m->layer_count - 1] : NULL;
            if (last && last->kind == LAYER_BATCHNORM && !last->pool) { /* fused into the block */
                last->pool = 1;
                last->out_size = c * (h / 2) * (w / 2);
            } else {
                struct layer *l = add_layer(m, LAYER_MAXPOOL, c * h * w, c * (h / 2) * (w / 2));
                set_shape(l, c, h, w);
            }
            h /= 2;
            w /= 2;
            end = (char *)p + 1;
        } else if (*p == 'f') {
            long size = strtol(p + 1, &end, 10);
            if (end == p + 1 || errno || size < 1 || size > 65536)
                FAIL("bad dense size in '%s'", spec);
            if (!dense) {
                struct layer *l = add_layer(m, LAYER_TO_ROWS, c * h * w, c * h * w);
                set_shape(l, c, h, w);
                width = c * h * w;
                dense = 1;
            }
            add_hidden_dense(m, width, (int)size, dropout);
            width = (int)size;
        } else {
            long channels = strtol(p, &end, 10);
            if (end == p || errno || channels < 1 || channels > 4096 || dense)
                FAIL("bad token in '%s' (expected cnn:C,...,p,...,fN with channels before dense layers)", spec);
            add_conv_block(m, &c, h, w, (int)channels);
            convs++;
        }
        if (*end != ',' && *end != '\0')
            FAIL("bad token in '%s'", spec);
        if (m->layer_count > MODEL_MAX_LAYERS - 6)
            FAIL("'%s' has too many layers", spec);
        p = *end == ',' ? end + 1 : end;
    }
    if (convs == 0)
        FAIL("'%s' has no convolution", spec);
    if (!dense) {
        struct layer *l = add_layer(m, LAYER_TO_ROWS, c * h * w, c * h * w);
        set_shape(l, c, h, w);
        width = c * h * w;
    }
    add_dense(m, width, m->classes);
    return 0;
fail:
    return -1;
}

/* Weights of a layer with parameters (its biases follow them); 0 for the others. */
static size_t layer_weights(const struct layer *l)
{
    switch (l->kind) {
    case LAYER_DENSE: return (size_t)l->in_size * l->out_size;
    case LAYER_CONV: return (size_t)l->conv.channels_out * l->conv.channels_in * 9;
    case LAYER_BATCHNORM: return (size_t)l->channels;
    default: return 0;
    }
}

/* Point every layer at its slices of the flat buffers. */
static void bind_views(struct model *m)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        size_t weights = layer_weights(l);
        if (l->kind == LAYER_BATCHNORM) {
            size_t offset = (size_t)(uintptr_t)l->running_mean;
            l->running_mean = m->buffers + offset;
            l->running_var = m->buffers + offset + l->channels;
        }
        if (weights == 0)
            continue;
        l->weight = m->params + l->param_offset;
        l->bias = l->weight + weights;
    }
    model_use_grads(m, m->grads);
}

float *model_use_grads(struct model *m, float *grads)
{
    float *before = m->grads;
    m->grads = grads;
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        size_t weights = layer_weights(l);
        if (weights == 0)
            continue;
        l->grad_weight = grads + l->param_offset;
        l->grad_bias = l->grad_weight + weights;
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
        if (l->kind == LAYER_DROPOUT)
            CHECK_PTR(l->mask = tensor_alloc(size), "cannot allocate dropout mask");
        if (l->kind == LAYER_BATCHNORM) {
            CHECK_PTR(l->batch_mean = tensor_alloc((size_t)l->channels), "cannot allocate batch-norm state");
            CHECK_PTR(l->inv_std = tensor_alloc((size_t)l->channels), "cannot allocate batch-norm state");
        }
        if (l->kind == LAYER_MAXPOOL || (l->kind == LAYER_BATCHNORM && l->pool))
            CHECK_PTR(l->argmax = malloc(size + 1), "cannot allocate pooling state");
        if (l->kind == LAYER_CONV) {
            size_t need = conv_workspace_floats(&l->conv, m->max_batch);
            workspace = need > workspace ? need : workspace;
        }
    }
    if (workspace)
        CHECK_PTR(m->workspace = tensor_alloc(workspace), "cannot allocate the im2col workspace (%zu MB)",
                  workspace * sizeof(float) >> 20);
    bind_views(m);
    return 0;
fail:
    return -1;
}

static int parse_spec(struct model *m, const char *spec, float dropout, char *err)
{
    if (strcmp(spec, "mlp") == 0 || strncmp(spec, "mlp:", 4) == 0)
        return parse_mlp(m, spec, dropout, err);
    if (strcmp(spec, "cnn") == 0 || strncmp(spec, "cnn:", 4) == 0)
        return parse_cnn(m, spec, dropout, err);
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
        if ((l->kind != LAYER_DENSE && l->kind != LAYER_CONV) || l->param_offset != offset)
            continue;
        const struct conv_shape *c = &l->conv;
        *rows = l->kind == LAYER_DENSE ? l->out_size : c->channels_out;
        *cols = l->kind == LAYER_DENSE ? l->in_size : c->channels_in * c->kernel * c->kernel;
        return 1;
    }
    return 0;
}

int model_check_spec(const char *spec, int input_size, char *err)
{
    struct model *m = calloc(1, sizeof *m);
    if (!m) {
        err_set(err, "cannot allocate the model description");
        return -1;
    }
    m->input_size = input_size;
    m->classes = 10;
    int status = parse_spec(m, spec, 0.5f, err);
    free(m);
    return status;
}

struct model *model_create(const char *spec, int input_size, int classes, int max_batch,
                           float dropout, char *err)
{
    struct model *m = NULL;
    CHECK_PTR(m = calloc(1, sizeof *m), "cannot allocate the model");
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    m->input_size = input_size;
    m->classes = classes;
    m->max_batch = max_batch;
    CHECK_DP(parse_spec(m, spec, dropout, err));
    CHECK_DP(alloc_buffers(m, err));
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
        if (i < m->layer_count) {
            tensor_free(m->layers[i].mask);
            tensor_free(m->layers[i].batch_mean);
            tensor_free(m->layers[i].inv_std);
            free(m->layers[i].argmax);
        }
    }
    free(m);
}

void model_init_params(struct model *m, struct rng *rng)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        if (l->kind == LAYER_DENSE || l->kind == LAYER_CONV) {
            int fan_in = l->kind == LAYER_DENSE ? l->in_size : l->conv.channels_in * 9;
            size_t weights = l->kind == LAYER_DENSE ? (size_t)l->in_size * l->out_size
                                                    : (size_t)l->conv.channels_out * fan_in;
            float std = sqrtf(2.0f / (float)fan_in);
            for (size_t j = 0; j < weights; j++)
                l->weight[j] = std * rng_normal(rng);
            if (l->kind == LAYER_DENSE)
                memset(l->bias, 0, (size_t)l->out_size * sizeof(float));
        } else if (l->kind == LAYER_BATCHNORM) {
            for (int c = 0; c < l->channels; c++) {
                l->weight[c] = 1.0f;
                l->bias[c] = 0.0f;
                l->running_mean[c] = 0.0f;
                l->running_var[c] = 1.0f;
            }
        }
    }
}

/* ---- running ------------------------------------------------------------------------- */

/* Names for the profile (string literals: the profile keeps the pointers). */
static const char *const forward_names[] = {
    [LAYER_DENSE] = "dense forward", [LAYER_RELU] = "relu forward", [LAYER_DROPOUT] = "dropout forward",
    [LAYER_CONV] = "conv forward", [LAYER_BATCHNORM] = "bn+relu forward",
    [LAYER_MAXPOOL] = "maxpool forward", [LAYER_TO_ROWS] = "to_rows forward",
};
static const char *const backward_names[] = {
    [LAYER_DENSE] = "dense backward", [LAYER_RELU] = "relu backward", [LAYER_DROPOUT] = "dropout backward",
    [LAYER_CONV] = "conv backward", [LAYER_BATCHNORM] = "bn+relu backward",
    [LAYER_MAXPOOL] = "maxpool backward", [LAYER_TO_ROWS] = "to_rows backward",
};

static struct batchnorm layer_batchnorm(const struct layer *l, int batch)
{
    return (struct batchnorm){l->channels, batch, l->height, l->width, l->pool,
                              l->weight, l->bias, l->running_mean, l->running_var};
}

const float *model_forward(struct model *m, int batch, int training, struct rng *rng)
{
    /* Only training's layers are step time: evaluation is timed as one phase by its caller. */
    struct profile *profile = training ? m->profile : NULL;
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        const float *x = m->acts[i];
        float *y = m->acts[i + 1];
        size_t n = (size_t)batch * l->out_size;
        struct batchnorm bn = layer_batchnorm(l, batch);
        struct pool_shape pool = {(size_t)l->channels * batch, l->height, l->width};
        double started = profile_now(profile);
        switch (l->kind) {
        case LAYER_DENSE:
            dense_forward(x, l->weight, l->bias, y, &(struct dense_shape){batch, l->in_size, l->out_size});
            break;
        case LAYER_RELU:
            relu_forward(x, y, n);
            break;
        case LAYER_DROPOUT:
            if (training)
                dropout_forward(x, y, l->mask, n, l->rate, rng);
            else
                memcpy(y, x, n * sizeof(float));
            break;
        case LAYER_CONV:
            conv_forward(&l->conv, batch, x, l->weight, y, m->workspace);
            break;
        case LAYER_BATCHNORM:
            if (training)
                batchnorm_forward_train(&bn, x, y, &(struct batchnorm_saved){l->batch_mean, l->inv_std, l->argmax});
            else
                batchnorm_forward_eval(&bn, x, y, l->argmax);
            break;
        case LAYER_MAXPOOL:
            maxpool_forward(x, y, l->argmax, &pool, &(struct pool_map){1.0f, 0.0f, 0});
            break;
        case LAYER_TO_ROWS:
            channels_to_rows(x, y, l->channels, batch, l->height * l->width);
            break;
        }
        profile_end(profile, l->pool ? "bn+relu+pool forward" : forward_names[l->kind], CATEGORY_LAYER, started);
    }
    return m->acts[m->layer_count];
}

void model_backward(struct model *m, int batch, const struct backward_hook *hook)
{
    for (int i = m->layer_count - 1; i >= 0; i--) {
        struct layer *l = &m->layers[i];
        const float *dy = m->grad_acts[i + 1];
        float *dx = i == 0 ? NULL : m->grad_acts[i]; /* the input's gradient is never used */
        size_t n = (size_t)batch * l->out_size;
        struct batchnorm bn = layer_batchnorm(l, batch);
        struct pool_shape pool = {(size_t)l->channels * batch, l->height, l->width};
        double started = profile_now(m->profile);
        switch (l->kind) {
        case LAYER_DENSE:
            dense_backward(m->acts[i], l->weight, dy, &(struct dense_grads){dx, l->grad_weight, l->grad_bias}, &(struct dense_shape){batch, l->in_size, l->out_size});
            break;
        case LAYER_RELU:
            relu_backward(m->acts[i + 1], dy, m->grad_acts[i], n);
            break;
        case LAYER_DROPOUT:
            dropout_backward(l->mask, dy, m->grad_acts[i], n);
            break;
        case LAYER_CONV:
            conv_backward(&l->conv, batch, &(struct conv_inputs){m->acts[i], l->weight, m->workspace}, dy, &(struct conv_grads){dx, l->grad_weight});
            break;
        case LAYER_BATCHNORM:
            batchnorm_backward(&bn, &(struct batchnorm_saved){l->batch_mean, l->inv_std, l->argmax},
                               &(struct batchnorm_backward_io){m->acts[i], m->acts[i + 1], dy, m->grad_acts[i], l->grad_weight, l->grad_bias});
            break;
        case LAYER_MAXPOOL:
            maxpool_backward(dy, l->argmax, m->grad_acts[i], &pool);
            break;
        case LAYER_TO_ROWS:
            rows_to_channels(dy, m->grad_acts[i], l->channels, batch, l->height * l->width);
            break;
        }
        profile_end(m->profile, l->pool ? "bn+relu+pool backward" : backward_names[l->kind], CATEGORY_LAYER, started);
        if (hook && l->weight)
            hook->grads_ready(hook->context, l->param_offset);
    }
}

double model_training_flops(const struct model *m)
{
    double flops = 0;
    for (int i = 0; i < m->layer_count; i++) {
        const struct layer *l = &m->layers[i];
        double products = 0; /* multiply-adds of the forward pass */
        if (l->kind == LAYER_DENSE)
            products = (double)l->in_size * l->out_size;
        else if (l->kind == LAYER_CONV)
            products = (double)l->conv.channels_out * l->conv.channels_in * l->conv.kernel * l->conv.kernel *
                       l->height * l->width;
        else
            continue;
        flops += 2 * products * (i == 0 ? 2 : 3);
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
