/* 3×3 convolution (stride 1, zero padding 1) by Winograd's minimal filtering F(2×2, 3×3)
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 2×2 block of
 * outputs comes from a 4×4 input tile as Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, so the channel sums become 16
 * independent GEMMs with 2.25× fewer multiply-adds than im2col's. On channel-major activations
 * [C][N][H][W] (conv.h); used by conv.c for the layers where it pays. */
#ifndef DPTRAIN_WINOGRAD_H
#define DPTRAIN_WINOGRAD_H

#include <stddef.h>

/* Images up to this side (the transforms' row buffers live on the stack). */
#define WINOGRAD_MAX_SIDE 64

struct winograd_shape {
    int channels_in, channels_out, height, width;
};

/* The share of the tiles the transforms and GEMMs work on that hold an image's pixels: each row of
 * tiles is padded to whole vectors of 8 (7 tiles on 14×14 images: 7/8; 4 on 7×7: 4/8). */
double winograd_tile_use(const struct winograd_shape *s);

/* Floats of workspace a convolution of this shape needs (also with channels in and out swapped). */
size_t winograd_workspace_floats(const struct winograd_shape *s);

/* The transformed filters u[16][out][in] from w[out][in][3][3]; with for_input_gradient, from w
 * rotated by 180° and with in and out swapped (w[in][out][3][3] read as the filter of a
 * convolution from out channels to in channels), which gives the input gradient. */
void winograd_filters(const float *w, float *u, const struct winograd_shape *s, int for_input_gradient);

/* out[co][n][y][x] = Σ_ci Σ_ky,kx g[co][ci][ky][kx] · in[ci][n][y + ky − 1][x + kx − 1] for the
 * filters g that u was made from; work holds u first (winograd_filters wrote it there). */
void winograd_convolve(const struct winograd_shape *s, int batch, const float *in, float *out, float *work);

/* dw[co][ci][ky][kx] = Σ_n,y,x dy[co][n][y][x] · in[ci][n][y + ky − 1][x + kx − 1], the filter
 * gradient of that convolution, from the same tiles: the 16 GEMMs sum the tiles' products. */
void winograd_filter_gradient(const struct winograd_shape *s, int batch, const float *in, const float *dy,
                              float *dw, float *work);

#endif
