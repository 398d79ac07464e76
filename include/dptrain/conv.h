/* Convolutional kernels on channel-major activations [C][N][H][W] (channel, sample, row,
 * column). With that layout a convolution over a whole batch is one im2col and one GEMM, batch
 * normalisation reduces over one contiguous block per channel, and no transposes are needed
 * between convolutional layers; one transpose joins them to the dense head ([N][C·H·W]). */
#ifndef DPTRAIN_CONV_H
#define DPTRAIN_CONV_H

#include <stddef.h>
#include <stdint.h>

struct conv_shape {
    int channels_in, channels_out, height, width, kernel; /* stride 1, zero padding kernel/2 */
};

/* The inputs of a convolution's backward pass: col is the im2col workspace, which already holds
 * im2col(x) when col_holds_x (the last convolution of forward is the first of backward). */
struct conv_inputs {
    const float *x, *w;
    float *col;
    int col_holds_x;
};

struct conv_grads {
    float *dx;                 /* NULL: not needed (first layer) */
    float *dw;
};

/* One batch-normalisation layer: `count` = N·H·W contiguous values per channel. */
struct batchnorm {
    int channels;
    size_t count;
    const float *gamma, *beta;
    float *running_mean, *running_var;
};

struct batchnorm_grads {
    float *dx, *dgamma, *dbeta;
};

/* col[(ci·k + ky)·k + kx][n·H·W + y·W + x] = in[ci][n][y + ky − p][x + kx − p] (0 outside), for
 * s's input channels, height, width and kernel. */
void im2col(const float *in, float *col, const struct conv_shape *s, int batch);
/* The adjoint: dx[ci][n][..] += every col entry that was read from it. dx must be zeroed first. */
void col2im_add(const float *col, float *dx, const struct conv_shape *s, int batch);

/* y[co][N·H·W] = w[co][ci·k·k] · im2col(x); col is workspace of ci·k·k · N·H·W floats. */
void conv_forward(const struct conv_shape *s, int batch, const float *x, const float *w, float *y,
                  float *col);
/* dw = dy · im2col(x)ᵀ, and dx = col2im(wᵀ · dy) unless dx is NULL. col is overwritten when dx
 * is asked. */
void conv_backward(const struct conv_shape *s, int batch, const struct conv_inputs *in, const float *dy,
                   const struct conv_grads *grads);

/* 2×2 max pooling with stride 2 (H and W even); argmax holds 0..3 per output for backward. */
void maxpool_forward(const float *x, float *y, uint8_t *argmax, int planes, int height, int width);
void maxpool_backward(const float *dy, const uint8_t *argmax, float *dx, int planes, int height, int width);

/* Batch normalisation per channel over `count` = N·H·W contiguous values. Training uses the
 * batch's statistics and updates the running ones (momentum 0.1, unbiased variance); evaluation
 * uses the running ones. xhat is saved for backward. */
void batchnorm_forward_train(const struct batchnorm *bn, const float *x, float *y, float *xhat, float *inv_std);
void batchnorm_forward_eval(const struct batchnorm *bn, const float *x, float *y);
void batchnorm_backward(const struct batchnorm *bn, const float *dy, const float *xhat, const float *inv_std,
                        const struct batchnorm_grads *grads);

/* [C][N][P] ↔ [N][C][P] */
void channels_to_rows(const float *in, float *out, int channels, int batch, int plane);
void rows_to_channels(const float *in, float *out, int channels, int batch, int plane);

#endif
