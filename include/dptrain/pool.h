/* 2×2 max pooling with stride 2 over planes of H×W values, optionally of an affine map of the
 * input followed by ReLU: the form batch normalisation's fused block uses (batchnorm.h), which
 * so never writes its full-size output. An odd side loses its last row or column (the output is
 * floor(H/2) × floor(W/2), as PyTorch's MaxPool2d by default); the fused block takes even sides
 * only (model.c adds a pooling layer of its own for odd ones). */
#ifndef DPTRAIN_POOL_H
#define DPTRAIN_POOL_H

#include "dptrain/layer.h"

#include <stddef.h>
#include <stdint.h>

struct pool_shape {
    size_t planes;
    int height, width;
};

/* Each input x is pooled as scale·x + shift, and the maximum then goes through ReLU when relu
 * is set. {1, 0, 0} is plain max pooling. */
struct pool_map {
    float scale, shift;
    int relu;
};

/* y[p][oy][ox] = the (mapped) maximum of the 2×2 window; argmax = 2 × row + column of the
 * first maximum in row-major order, for backward. */
void maxpool_forward(const float *x, float *y, uint8_t *argmax, const struct pool_shape *s,
                     const struct pool_map *map);
/* dx = dy placed at each window's maximum, zero elsewhere. */
void maxpool_backward(const float *dy, const uint8_t *argmax, float *dx, const struct pool_shape *s);

/* The layer kind (layer.h): max pooling of [C][N][H][W] activations. */
extern const struct layer_ops layer_maxpool;

#endif
