#include "dptrain/conv.h"

#include "dptrain/rng.h"
#include "dptrain/tensor.h"
#include "dptrain/winograd.h"

#include <math.h>
#include <string.h>

/* One output row of im2col: the input row shifted by dx with zeros outside. Split into the
 * padded edges and one straight copy; the copy is a loop, not memcpy, because rows are 14 or 28
 * floats and a call per row cost more than the copying (measured: 2.4 ms of a 55 ms CNN step). */
static inline void shifted_row(const float *restrict src, float *restrict dst, int width, int dx)
{
    int lo = dx < 0 ? -dx : 0;                 /* first x whose source is inside */
    int hi = dx > 0 ? width - dx : width;      /* one past the last */
    for (int x = 0; x < lo; x++)
        dst[x] = 0.0f;
    for (int x = lo; x < hi; x++)
        dst[x] = src[x + dx];
    for (int x = hi > lo ? hi : lo; x < width; x++)
        dst[x] = 0.0f;
}

/* Samples first .. first + count − 1 of a batch of `batch`: one chunk of a convolution. */
struct span {
    int batch, first, count;
};

/* On one BLAS thread the im2col workspace holds one chunk of samples, about this many bytes, not
 * the whole batch: the GEMM then packs columns that im2col has just written into L2, not 29 MB
 * from memory, and backward recomputes a chunk's im2col while it is cheap instead of keeping the
 * batch's. Measured on the CNN's step (docs/performance.md). */
enum { CONV_CHUNK_BYTES = 512 * 1024 };

/* Winograd's padded tiles cost as much as real ones: below this share of real tiles (7×7 images,
 * 4 of 8) its 2.25x fewer products no longer pay for the transforms. Measured: docs/performance.md. */
#define WINOGRAD_MIN_TILE_USE 0.75

static struct winograd_shape winograd_shape(const struct conv_shape *s, int swapped)
{
    return (struct winograd_shape){swapped ? s->channels_out : s->channels_in,
                                   swapped ? s->channels_in : s->channels_out, s->height, s->width};
}

/* Winograd's F(2×2, 3×3) for 3×3 layers with enough input channels that its transforms cost
 * little beside the products it saves (the CNN's second convolution: 32 -> 64); im2col and one
 * GEMM for the others (the first: 1 input channel, where the products are few anyway). Only on
 * one BLAS thread: its GEMMs are small, and OpenBLAS's threads cost more than they share out on
 * them (1 rank with 2 threads ran at 0.65x of 1 thread, scripts/bench.sh); with more threads,
 * im2col over the whole batch, whose GEMMs are wide enough to share. */
void conv_plan(struct conv_shape *s, int threads)
{
    s->method = CONV_IM2COL;
    s->chunk = 0;
    if (threads > 1)
        return;
    struct winograd_shape ws = winograd_shape(s, 0);
    if (s->kernel == 3 && s->channels_in >= 16 && s->width <= WINOGRAD_MAX_SIDE && s->height <= WINOGRAD_MAX_SIDE &&
        winograd_tile_use(&ws) >= WINOGRAD_MIN_TILE_USE) {
        s->method = CONV_WINOGRAD;
        return;
    }
    size_t per_sample = (size_t)s->channels_in * s->kernel * s->kernel * s->height * s->width * sizeof(float);
    s->chunk = CONV_CHUNK_BYTES / per_sample < 1 ? 1 : (int)(CONV_CHUNK_BYTES / per_sample);
}

/* im2col's samples per chunk for a batch of `batch`. */
static int chunk_samples(const struct conv_shape *s, int batch)
{
    return s->chunk > 0 && s->chunk < batch ? s->chunk : batch;
}

size_t conv_workspace_floats(const struct conv_shape *s, int max_batch)
{
    if (s->method == CONV_WINOGRAD) {
        struct winograd_shape ws = winograd_shape(s, 0);
        return winograd_workspace_floats(&ws);
    }
    return (size_t)s->channels_in * s->kernel * s->kernel * (size_t)chunk_samples(s, max_batch) * s->height * s->width;
}

/* col[(ci·k + ky)·k + kx][j·H·W + y·W + x] = in[ci][first + j][y + ky − p][x + kx − p] (0 outside)
 * for the span's samples j. Both this and col2im loop over (channel, image) outermost, so that
 * the one input (or gradient) plane they read (or write) stays in L1 for all k·k shifts; with
 * the shifts outermost every plane was fetched k·k times from L2 or memory. */
static void im2col(const float *in, float *col, const struct conv_shape *s, const struct span *span)
{
    int channels = s->channels_in, height = s->height, width = s->width, kernel = s->kernel;
    int pad = kernel / 2;
    size_t plane = (size_t)height * width, columns = (size_t)span->count * plane;
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < span->count; n++) {
            const float *src_plane = in + ((size_t)c * span->batch + span->first + n) * plane;
            for (int ky = 0; ky < kernel; ky++)
                for (int kx = 0; kx < kernel; kx++) {
                    float *dst_plane = col + ((size_t)(c * kernel + ky) * kernel + kx) * columns + (size_t)n * plane;
                    int dy = ky - pad, dx = kx - pad;
                    for (int y = 0; y < height; y++) {
                        int sy = y + dy;
                        float *d = dst_plane + (size_t)y * width;
                        if (sy < 0 || sy >= height)
                            memset(d, 0, (size_t)width * sizeof(float));
                        else
                            shifted_row(src_plane + (size_t)sy * width, d, width, dx);
                    }
                }
        }
}

/* The adjoint: each of the span's planes of dx is the sum of every col entry read from it
 * (written, not added: zeroed here while the plane is in L1, not by a pass of its own). */
static void col2im(const float *col, float *dx_out, const struct conv_shape *shape, const struct span *span)
{
    int channels = shape->channels_in, height = shape->height, width = shape->width, kernel = shape->kernel;
    int pad = kernel / 2;
    size_t plane = (size_t)height * width, columns = (size_t)span->count * plane;
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < span->count; n++) {
            float *dst_plane = dx_out + ((size_t)c * span->batch + span->first + n) * plane;
            memset(dst_plane, 0, plane * sizeof(float));
            for (int ky = 0; ky < kernel; ky++)
                for (int kx = 0; kx < kernel; kx++) {
                    const float *src_plane = col + ((size_t)(c * kernel + ky) * kernel + kx) * columns + (size_t)n * plane;
                    int dy = ky - pad, dx = kx - pad;
                    int lo = dx < 0 ? -dx : 0, hi = dx > 0 ? width - dx : width;
                    for (int y = 0; y < height; y++) {
                        int sy = y + dy;
                        if (sy < 0 || sy >= height)
                            continue;
                        float *restrict d = dst_plane + (size_t)sy * width + dx;
                        const float *restrict src = src_plane + (size_t)y * width;
                        for (int x = lo; x < hi; x++)
                            d[x] += src[x];
                    }
                }
        }
}

void conv_forward(const struct conv_shape *s, int batch, const float *x, const float *w, float *y, float *col)
{
    if (s->method == CONV_WINOGRAD) {
        struct winograd_shape ws = winograd_shape(s, 0);
        winograd_filters(w, col, &ws, 0);
        winograd_convolve(&ws, batch, x, y, col);
        return;
    }
    int k = s->channels_in * s->kernel * s->kernel, plane = s->height * s->width, chunk = chunk_samples(s, batch);
    for (int first = 0; first < batch; first += chunk) {
        struct span span = {batch, first, batch - first < chunk ? batch - first : chunk};
        int columns = span.count * plane;
        im2col(x, col, s, &span);
        tensor_gemm(&(struct gemm){0, 0, s->channels_out, columns, k, 1.0f, w, k, col, columns, 0.0f,
                                   y + (size_t)first * plane, batch * plane});
    }
}

void conv_backward(const struct conv_shape *s, int batch, const struct conv_inputs *in, const float *dy,
                   const struct conv_grads *grads)
{
    if (s->method == CONV_WINOGRAD) {
        struct winograd_shape forward = winograd_shape(s, 0), swapped = winograd_shape(s, 1);
        winograd_filter_gradient(&forward, batch, in->x, dy, grads->dw, in->col);
        if (!grads->dx)
            return;
        /* dx is the convolution of dy with the filters rotated by 180°, from out to in channels */
        winograd_filters(in->w, in->col, &forward, 1);
        winograd_convolve(&swapped, batch, dy, grads->dx, in->col);
        return;
    }
    int k = s->channels_in * s->kernel * s->kernel, plane = s->height * s->width, chunk = chunk_samples(s, batch);
    for (int first = 0; first < batch; first += chunk) {
        struct span span = {batch, first, batch - first < chunk ? batch - first : chunk};
        int columns = span.count * plane;
        const float *dy_chunk = dy + (size_t)first * plane;
        im2col(in->x, in->col, s, &span);
        /* dw = Σ over chunks of dy_chunk · colᵀ */
        tensor_gemm(&(struct gemm){0, 1, s->channels_out, k, columns, 1.0f, dy_chunk, batch * plane, in->col, columns,
                                   first == 0 ? 0.0f : 1.0f, grads->dw, k});
        if (!grads->dx)
            continue;
        tensor_gemm(&(struct gemm){1, 0, k, columns, s->channels_out, 1.0f, in->w, k, dy_chunk, batch * plane, 0.0f,
                                   in->col, columns});
        col2im(in->col, grads->dx, s, &span);
    }
}

void channels_to_rows(const float *in, float *out, int channels, int batch, int plane)
{
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < batch; n++)
            memcpy(out + ((size_t)n * channels + c) * plane, in + ((size_t)c * batch + n) * plane,
                   (size_t)plane * sizeof(float));
}

void rows_to_channels(const float *in, float *out, int channels, int batch, int plane)
{
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < batch; n++)
            memcpy(out + ((size_t)c * batch + n) * plane, in + ((size_t)n * channels + c) * plane,
                   (size_t)plane * sizeof(float));
}

void pixels_to_channels(const float *in, float *out, int channels, int batch, int plane)
{
    size_t pixels = (size_t)batch * plane; /* [N][P] flattened: the same order on both sides */
    for (size_t i = 0; i < pixels; i++)
        for (int c = 0; c < channels; c++)
            out[(size_t)c * pixels + i] = in[i * channels + c];
}

void channels_to_pixels(const float *in, float *out, int channels, int batch, int plane)
{
    size_t pixels = (size_t)batch * plane;
    for (size_t i = 0; i < pixels; i++)
        for (int c = 0; c < channels; c++)
            out[i * channels + c] = in[(size_t)c * pixels + i];
}

/* ---- the layer kinds (layer.h) --------------------------------------------------------- */

static size_t conv_weights(const struct conv_shape *c)
{
    return (size_t)c->channels_out * c->channels_in * c->kernel * c->kernel;
}

static void conv_params(const struct layer *l, struct layer_params *p)
{
    *p = (struct layer_params){conv_weights(&l->conv), 0, 1};
}

static void conv_init(struct layer *l, struct rng *rng)
{
    int fan_in = l->conv.channels_in * l->conv.kernel * l->conv.kernel;
    float std = sqrtf(2.0f / (float)fan_in);
    size_t weights = conv_weights(&l->conv);
    for (size_t j = 0; j < weights; j++)
        l->weight[j] = std * rng_normal(rng);
}

static size_t conv_layer_workspace(const struct layer *l, int max_batch)
{
    return conv_workspace_floats(&l->conv, max_batch);
}

static void conv_layer_forward(struct layer *l, const struct layer_pass *p)
{
    conv_forward(&l->conv, p->batch, p->x, l->weight, p->y, p->workspace);
}

static void conv_layer_backward(struct layer *l, const struct layer_pass *p)
{
    conv_backward(&l->conv, p->batch, &(struct conv_inputs){p->x, l->weight, p->workspace}, p->dy,
                  &(struct conv_grads){p->dx, l->grad_weight});
}

static double conv_products(const struct layer *l)
{
    return (double)conv_weights(&l->conv) * l->height * l->width;
}

static void conv_matrix(const struct layer *l, int *rows, int *cols)
{
    *rows = l->conv.channels_out;
    *cols = l->conv.channels_in * l->conv.kernel * l->conv.kernel;
}

const struct layer_ops layer_conv = {
    .forward_name = "conv forward", .backward_name = "conv backward",
    .params = conv_params, .init = conv_init, .workspace = conv_layer_workspace,
    .forward = conv_layer_forward, .backward = conv_layer_backward,
    .products = conv_products, .matrix = conv_matrix,
};

static void to_rows_forward(struct layer *l, const struct layer_pass *p)
{
    channels_to_rows(p->x, p->y, l->channels, p->batch, l->height * l->width);
}

static void to_rows_backward(struct layer *l, const struct layer_pass *p)
{
    if (p->dx)
        rows_to_channels(p->dy, p->dx, l->channels, p->batch, l->height * l->width);
}

const struct layer_ops layer_to_rows = {
    .forward_name = "to_rows forward", .backward_name = "to_rows backward",
    .forward = to_rows_forward, .backward = to_rows_backward,
};

static void to_channels_forward(struct layer *l, const struct layer_pass *p)
{
    pixels_to_channels(p->x, p->y, l->channels, p->batch, l->height * l->width);
}

static void to_channels_backward(struct layer *l, const struct layer_pass *p)
{
    if (p->dx)
        channels_to_pixels(p->dy, p->dx, l->channels, p->batch, l->height * l->width);
}

const struct layer_ops layer_to_channels = {
    .forward_name = "to_channels forward", .backward_name = "to_channels backward",
    .forward = to_channels_forward, .backward = to_channels_backward,
};
