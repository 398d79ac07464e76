/* Forward and backward of each layer on raw row-major arrays; shapes in the comments.
 * The layers never allocate: the model owns every buffer. */
#ifndef DPTRAIN_LAYERS_H
#define DPTRAIN_LAYERS_H

#include "dptrain/layer.h"
#include "dptrain/rng.h"

#include <stddef.h>
#include <stdint.h>

struct dense_shape {
    int batch, in, out;
};

struct dense_grads {
    float *dx;         /* NULL for the first layer: nothing below needs it */
    float *dw, *dbias;
};

/* y[b][out] = x[b][in] · w[out][in]ᵀ + bias[out] */
void dense_forward(const float *x, const float *w, const float *bias, float *y, const struct dense_shape *shape);
/* dw[out][in] = dyᵀ·x, dbias[out] = Σ_b dy, and dx[b][in] = dy·w unless dx is NULL. */
void dense_backward(const float *x, const float *w, const float *dy, const struct dense_grads *grads,
                    const struct dense_shape *shape);

/* y = max(x, 0); dx = dy where y > 0. */
void relu_forward(const float *x, float *y, size_t n);
void relu_backward(const float *y, const float *dy, float *dx, size_t n);

/* Inverted dropout: keep with probability 1 - rate and scale by 1/(1 - rate); mask holds the
 * scale (0 or 1/(1-rate)) for the backward pass. */
void dropout_forward(const float *x, float *y, float *mask, size_t n, float rate, struct rng *rng);
void dropout_backward(const float *mask, const float *dy, float *dx, size_t n);

/* Softmax cross-entropy over logits[b][classes] with integer labels. With label smoothing s the
 * target is (1 - s) one-hot + s / classes. If dlogits is not NULL it receives
 * scale · (softmax - target), where scale is 1 / (GLOBAL batch size), so that summing over
 * ranks gives the gradient of the mean loss. Returns the summed loss over the batch; counts
 * correct predictions into *correct; writes predicted class and its probability if asked. */
struct loss_input {
    const float *logits;     /* [batch][classes] */
    const uint8_t *labels;   /* [batch] */
    int batch, classes;
    float smoothing;
};

struct loss_output {
    float *dlogits;          /* NULL: no gradient */
    float scale;             /* of the gradient: 1 / the GLOBAL batch size */
    long *correct;           /* incremented per correct prediction */
    uint8_t *predicted;      /* NULL, or the predicted class per sample */
    float *confidence;       /* NULL, or its probability */
};

double softmax_cross_entropy(const struct loss_input *in, const struct loss_output *out);

/* The layer kinds these kernels make (layer.h): a dense layer (He initialisation: normal with
 * std sqrt(2 / fan_in), zero biases), ReLU, and dropout with rate l->rate while training (a copy
 * otherwise). */
extern const struct layer_ops layer_dense, layer_relu, layer_dropout;

#endif
