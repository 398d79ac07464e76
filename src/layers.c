#include "dptrain/layers.h"

#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void dense_forward(const float *x, const float *w, const float *bias, float *y, const struct dense_shape *shape)
{
    int batch = shape->batch, in = shape->in, out = shape->out;
    /* Start from the bias in every row, then accumulate the product on top (beta = 1). */
    for (int b = 0; b < batch; b++)
        memcpy(y + (size_t)b * out, bias, (size_t)out * sizeof(float));
    tensor_gemm(&(struct gemm){0, 1, batch, out, in, 1.0f, x, in, w, in, 1.0f, y, out});
}

void dense_backward(const float *x, const float *w, const float *dy, const struct dense_grads *grads,
                    const struct dense_shape *shape)
{
    int batch = shape->batch, in = shape->in, out = shape->out;
    float *dx = grads->dx, *dw = grads->dw, *dbias = grads->dbias;
    tensor_gemm(&(struct gemm){1, 0, out, in, batch, 1.0f, dy, out, x, in, 0.0f, dw, in});
    memset(dbias, 0, (size_t)out * sizeof(float));
    for (int b = 0; b < batch; b++) {
        const float *row = dy + (size_t)b * out;
        for (int o = 0; o < out; o++)
            dbias[o] += row[o];
    }
    if (dx)
        tensor_gemm(&(struct gemm){0, 0, batch, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in});
}

void relu_forward(const float *x, float *y, size_t n)
{
    /* Written so that NaN passes through (NaN < 0 is false): a diverging rank shows in its loss. */
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward(const float *y, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void dropout_forward(const float *x, float *y, float *mask, size_t n, float rate, struct rng *rng)
{
    /* Four 16-bit draws from each 64-bit number: the generator is the costly part, and a rate
     * resolved to 1/65536 is exact enough for a regulariser. */
    float keep_scale = 1.0f / (1.0f - rate);
    uint32_t threshold = (uint32_t)lrintf(rate * 65536.0f);
    struct rng local = *rng; /* in registers, not re-stored after every mask write */
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t bits = rng_next(&local);
        for (int k = 0; k < 4; k++)
            mask[i + k] = (uint32_t)((bits >> (16 * k)) & 0xffff) >= threshold ? keep_scale : 0.0f;
    }
    if (i < n) {
        uint64_t bits = rng_next(&local);
        for (int k = 0; i < n; i++, k++)
            mask[i] = (uint32_t)((bits >> (16 * k)) & 0xffff) >= threshold ? keep_scale : 0.0f;
    }
    *rng = local;
    for (i = 0; i < n; i++)
        y[i] = x[i] * mask[i];
}

void dropout_backward(const float *mask, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * mask[i];
}

double softmax_cross_entropy(const struct loss_input *in, const struct loss_output *out)
{
    const float *logits = in->logits;
    const uint8_t *labels = in->labels;
    int batch = in->batch, classes = in->classes;
    float smoothing = in->smoothing, scale = out->scale, *dlogits = out->dlogits, *confidence = out->confidence;
    uint8_t *predicted = out->predicted;
    long *correct = out->correct;
    double loss = 0.0;
    float off_target = smoothing / (float)classes;
    for (int b = 0; b < batch; b++) {
        const float *z = logits + (size_t)b * classes;
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (z[c] > z[best])
                best = c;
        float max = z[best];
        double sum = 0.0;
        for (int c = 0; c < classes; c++)
            sum += exp((double)(z[c] - max));
        double log_sum = log(sum);
        int y = labels[b];
        /* -log p_c = log Σ exp(z - max) - (z_c - max) */
        double sample_loss = (1.0 - smoothing) * (log_sum - (double)(z[y] - max));
        if (smoothing > 0.0f)
            for (int c = 0; c < classes; c++)
                sample_loss += off_target * (log_sum - (double)(z[c] - max));
        loss += sample_loss;
        if (best == y)
            (*correct)++;
        if (predicted)
            predicted[b] = (uint8_t)best;
        if (confidence)
            confidence[b] = (float)(1.0 / sum);
        if (dlogits) {
            float *d = dlogits + (size_t)b * classes;
            for (int c = 0; c < classes; c++) {
                float p = (float)(exp((double)(z[c] - max)) / sum);
                float target = off_target + (c == y ? 1.0f - smoothing : 0.0f);
                d[c] = scale * (p - target);
            }
        }
    }
    return loss;
}

/* ---- the layer kinds (layer.h) --------------------------------------------------------- */

static void dense_params(const struct layer *l, struct layer_params *p)
{
    *p = (struct layer_params){(size_t)l->in_size * l->out_size, (size_t)l->out_size, 1};
}

static void dense_init(struct layer *l, struct rng *rng)
{
    size_t weights = (size_t)l->in_size * l->out_size;
    float std = sqrtf(2.0f / (float)l->in_size);
    for (size_t j = 0; j < weights; j++)
        l->weight[j] = std * rng_normal(rng);
    memset(l->bias, 0, (size_t)l->out_size * sizeof(float));
}

static void dense_layer_forward(struct layer *l, const struct layer_pass *p)
{
    dense_forward(p->x, l->weight, l->bias, p->y, &(struct dense_shape){p->batch, l->in_size, l->out_size});
}

static void dense_layer_backward(struct layer *l, const struct layer_pass *p)
{
    dense_backward(p->x, l->weight, p->dy, &(struct dense_grads){p->dx, l->grad_weight, l->grad_bias},
                   &(struct dense_shape){p->batch, l->in_size, l->out_size});
}

static double dense_products(const struct layer *l)
{
    return (double)l->in_size * l->out_size;
}

static void dense_matrix(const struct layer *l, int *rows, int *cols)
{
    *rows = l->out_size;
    *cols = l->in_size;
}

const struct layer_ops layer_dense = {
    .forward_name = "dense forward", .backward_name = "dense backward",
    .params = dense_params, .init = dense_init,
    .forward = dense_layer_forward, .backward = dense_layer_backward,
    .products = dense_products, .matrix = dense_matrix,
};

static void relu_layer_forward(struct layer *l, const struct layer_pass *p)
{
    relu_forward(p->x, p->y, (size_t)p->batch * l->out_size);
}

static void relu_layer_backward(struct layer *l, const struct layer_pass *p)
{
    if (p->dx)
        relu_backward(p->y, p->dy, p->dx, (size_t)p->batch * l->out_size);
}

const struct layer_ops layer_relu = {
    .forward_name = "relu forward", .backward_name = "relu backward",
    .forward = relu_layer_forward, .backward = relu_layer_backward,
};

static int dropout_allocate(struct layer *l, int max_batch)
{
    l->mask = tensor_alloc((size_t)max_batch * l->out_size);
    return l->mask ? 0 : -1;
}

static void dropout_release(struct layer *l)
{
    tensor_free(l->mask);
    l->mask = NULL;
}

static void dropout_layer_forward(struct layer *l, const struct layer_pass *p)
{
    size_t n = (size_t)p->batch * l->out_size;
    if (p->training)
        dropout_forward(p->x, p->y, l->mask, n, l->rate, p->rng);
    else
        memcpy(p->y, p->x, n * sizeof(float));
}

static void dropout_layer_backward(struct layer *l, const struct layer_pass *p)
{
    if (p->dx)
        dropout_backward(l->mask, p->dy, p->dx, (size_t)p->batch * l->out_size);
}

const struct layer_ops layer_dropout = {
    .forward_name = "dropout forward", .backward_name = "dropout backward",
    .allocate = dropout_allocate, .release = dropout_release,
    .forward = dropout_layer_forward, .backward = dropout_layer_backward,
};
