#include "dptrain/model.h"

#include "dptrain/check.h"
#include "dptrain/layers.h"
#include "dptrain/tensor.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HIDDEN 8

/* "mlp" or "mlp:H1,H2,..." → hidden sizes. */
static int parse_spec(const char *spec, int *hidden, int *hidden_count, char *err)
{
    if (strcmp(spec, "mlp") == 0) {
        hidden[0] = 256;
        hidden[1] = 128;
        *hidden_count = 2;
        return 0;
    }
    if (strncmp(spec, "mlp:", 4) != 0)
        FAIL("--model: unknown model spec '%s' (expected mlp or mlp:H1,H2,...)", spec);
    *hidden_count = 0;
    const char *p = spec + 4;
    while (*p) {
        char *end;
        errno = 0;
        long size = strtol(p, &end, 10);
        if (end == p || errno != 0 || size < 1 || size > 65536 || (*end != ',' && *end != '\0'))
            FAIL("--model: bad hidden size in '%s' (expected mlp:H1,H2,... with sizes 1..65536)", spec);
        if (*hidden_count == MAX_HIDDEN)
            FAIL("--model: at most %d hidden layers in '%s'", MAX_HIDDEN, spec);
        hidden[(*hidden_count)++] = (int)size;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && *p == '\0')
            FAIL("--model: trailing comma in '%s'", spec);
    }
    if (*hidden_count == 0)
        FAIL("--model: '%s' names no hidden layers (expected mlp:H1,H2,...)", spec);
    return 0;
fail:
    return -1;
}

static void add_layer(struct model *m, enum layer_kind kind, int in, int out, float rate)
{
    struct layer *l = &m->layers[m->layer_count++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->in_size = in;
    l->out_size = out;
    l->rate = rate;
    if (kind == LAYER_DENSE) {
        l->param_offset = m->param_count;
        m->ranges[m->range_count++] = (struct param_range){m->param_count, (size_t)in * out, 1};
        m->ranges[m->range_count++] =
            (struct param_range){m->param_count + (size_t)in * out, (size_t)out, 0};
        m->param_count += (size_t)in * out + out;
    }
}

/* Point every dense layer at its slice of the flat buffers. */
static void bind_views(struct model *m)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        if (l->kind != LAYER_DENSE)
            continue;
        size_t weights = (size_t)l->in_size * l->out_size;
        l->weight = m->params + l->param_offset;
        l->bias = l->weight + weights;
        l->grad_weight = m->grads + l->param_offset;
        l->grad_bias = l->grad_weight + weights;
    }
}

static int alloc_buffers(struct model *m, char *err)
{
    CHECK_PTR(m->params = tensor_alloc(m->param_count), "cannot allocate %zu parameters", m->param_count);
    CHECK_PTR(m->grads = tensor_alloc(m->param_count), "cannot allocate %zu gradients", m->param_count);
    size_t rows = (size_t)m->max_batch;
    CHECK_PTR(m->acts[0] = tensor_alloc(rows * m->input_size), "cannot allocate input batch");
    CHECK_PTR(m->grad_acts[0] = tensor_alloc(rows * m->input_size), "cannot allocate input gradient");
    for (int i = 0; i < m->layer_count; i++) {
        size_t size = rows * (size_t)m->layers[i].out_size;
        CHECK_PTR(m->acts[i + 1] = tensor_alloc(size), "cannot allocate activations");
        CHECK_PTR(m->grad_acts[i + 1] = tensor_alloc(size), "cannot allocate activation gradients");
        if (m->layers[i].kind == LAYER_DROPOUT)
            CHECK_PTR(m->layers[i].mask = tensor_alloc(size), "cannot allocate dropout mask");
    }
    bind_views(m);
    return 0;
fail:
    return -1;
}

struct model *model_create(const char *spec, int input_size, int classes, int max_batch,
                           float dropout, char *err)
{
    int hidden[MAX_HIDDEN], hidden_count = 0;
    struct model *m = NULL;
    CHECK_DP(parse_spec(spec, hidden, &hidden_count, err));
    CHECK_PTR(m = calloc(1, sizeof *m), "cannot allocate the model");
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    m->input_size = input_size;
    m->classes = classes;
    m->max_batch = max_batch;
    int width = input_size;
    for (int h = 0; h < hidden_count; h++) {
        add_layer(m, LAYER_DENSE, width, hidden[h], 0);
        add_layer(m, LAYER_RELU, hidden[h], hidden[h], 0);
        if (dropout > 0)
            add_layer(m, LAYER_DROPOUT, hidden[h], hidden[h], dropout);
        width = hidden[h];
    }
    add_layer(m, LAYER_DENSE, width, classes, 0);
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
    for (int i = 0; i <= m->layer_count; i++) {
        tensor_free(m->acts[i]);
        tensor_free(m->grad_acts[i]);
        if (i < m->layer_count)
            tensor_free(m->layers[i].mask);
    }
    free(m);
}

void model_init_params(struct model *m, struct rng *rng)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        if (l->kind != LAYER_DENSE)
            continue;
        float std = sqrtf(2.0f / (float)l->in_size);
        size_t weights = (size_t)l->in_size * l->out_size;
        for (size_t j = 0; j < weights; j++)
            l->weight[j] = std * rng_normal(rng);
        memset(l->bias, 0, (size_t)l->out_size * sizeof(float));
    }
}

const float *model_forward(struct model *m, int batch, int training, struct rng *rng)
{
    for (int i = 0; i < m->layer_count; i++) {
        struct layer *l = &m->layers[i];
        const float *x = m->acts[i];
        float *y = m->acts[i + 1];
        size_t n = (size_t)batch * l->out_size;
        switch (l->kind) {
        case LAYER_DENSE:
            dense_forward(x, l->weight, l->bias, y, batch, l->in_size, l->out_size);
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
        }
    }
    return m->acts[m->layer_count];
}

void model_backward(struct model *m, int batch)
{
    for (int i = m->layer_count - 1; i >= 0; i--) {
        struct layer *l = &m->layers[i];
        const float *dy = m->grad_acts[i + 1];
        float *dx = m->grad_acts[i];
        size_t n = (size_t)batch * l->out_size;
        switch (l->kind) {
        case LAYER_DENSE:
            /* The input layer's dx is never used: skip that GEMM. */
            dense_backward(m->acts[i], l->weight, dy, i == 0 ? NULL : dx, l->grad_weight,
                           l->grad_bias, batch, l->in_size, l->out_size);
            break;
        case LAYER_RELU:
            relu_backward(m->acts[i + 1], dy, dx, n);
            break;
        case LAYER_DROPOUT:
            dropout_backward(l->mask, dy, dx, n);
            break;
        }
    }
}

float *model_input(struct model *m)
{
    return m->acts[0];
}

float *model_grad_logits(struct model *m)
{
    return m->grad_acts[m->layer_count];
}
