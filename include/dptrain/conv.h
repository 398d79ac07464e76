/* Convolutional kernels on channel-major activations [C][N][H][W] (channel, sample, row,
 * column). With that layout a convolution over a whole batch is one im2col and one GEMM, batch
 * normalisation reduces over one contiguous block per channel, and no transposes are needed
 * between convolutional layers; one transpose joins them to the dense head ([N][C·H·W]). */
#ifndef DPTRAIN_CONV_H
#define DPTRAIN_CONV_H

#include "dptrain/layer.h"

#include <stddef.h>

/* struct conv_shape and enum conv_method: layer.h */

/* The inputs of a convolution's backward pass; col is the im2col workspace. */
struct conv_inputs {
    const float *x, *w;
    float *col;
};

struct conv_grads {
    float *dx;                 /* NULL: not needed (first layer) */
    float *dw;
};

/* Chooses the method and chunk for a layer that will run on `threads` BLAS threads, once, when
 * the model is made (a plan stays correct at any thread count; it is only fastest at its own).
 * conv_workspace_floats is the workspace the plan needs for batches of up to max_batch. */
void conv_plan(struct conv_shape *s, int threads);
size_t conv_workspace_floats(const struct conv_shape *s, int max_batch);

/* y[co][N·H·W] = w[co][ci·k·k] · im2col(x), where im2col(x)[(ci·k + ky)·k + kx][n·H·W + y·W + x]
 * = x[ci][n][y + ky − p][x + kx − p] (0 outside, p = k/2). */
void conv_forward(const struct conv_shape *s, int batch, const float *x, const float *w, float *y,
                  float *col);
/* dw = dy · im2col(x)ᵀ, and dx = col2im(wᵀ · dy) (the adjoint of im2col) unless dx is NULL. */
void conv_backward(const struct conv_shape *s, int batch, const struct conv_inputs *in, const float *dy,
                   const struct conv_grads *grads);

/* [C][N][P] ↔ [N][C][P] */
void channels_to_rows(const float *in, float *out, int channels, int batch, int plane);
void rows_to_channels(const float *in, float *out, int channels, int batch, int plane);
/* [N][P][C] (an image's pixels with their channels together, as data files store them) ↔
 * [C][N][P] */
void pixels_to_channels(const float *in, float *out, int channels, int batch, int plane);
void channels_to_pixels(const float *in, float *out, int channels, int batch, int plane);

/* The layer kinds (layer.h): a 3×3 convolution without bias (He initialisation, fan-in C·9);
 * the change from channel-major activations to a dense layer's rows; and, first in a network
 * over images of several channels, the change from the input's [N][H][W][C] to [C][N][H][W]. */
extern const struct layer_ops layer_conv, layer_to_rows, layer_to_channels;

#endif
