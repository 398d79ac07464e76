#include "dptrain/conv.h"

#include "dptrain/tensor.h"

#include <math.h>
#include <string.h>

#define BN_EPSILON 1e-5f
#define BN_MOMENTUM 0.1f

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

/* Both loop over (channel, image) outermost, so that the one input (or gradient) plane they
 * read (or add into) stays in L1 for all k·k shifts; with the shifts outermost every plane was
 * fetched k·k times from L2 or memory. */
void im2col(const float *in, float *col, const struct conv_shape *s, int batch)
{
    int channels = s->channels_in, height = s->height, width = s->width, kernel = s->kernel;
    int pad = kernel / 2;
    size_t plane = (size_t)height * width, columns = (size_t)batch * plane;
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < batch; n++) {
            const float *src_plane = in + ((size_t)c * batch + n) * plane;
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

void col2im_add(const float *col, float *dx_out, const struct conv_shape *shape, int batch)
{
    int channels = shape->channels_in, height = shape->height, width = shape->width, kernel = shape->kernel;
    int pad = kernel / 2;
    size_t plane = (size_t)height * width, columns = (size_t)batch * plane;
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < batch; n++) {
            float *dst_plane = dx_out + ((size_t)c * batch + n) * plane;
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
                        const float *restrict s = src_plane + (size_t)y * width;
                        for (int x = lo; x < hi; x++)
                            d[x] += s[x];
                    }
                }
        }
}

void conv_forward(const struct conv_shape *s, int batch, const float *x, const float *w, float *y, float *col)
{
    int k = s->channels_in * s->kernel * s->kernel;
    int columns = batch * s->height * s->width;
    im2col(x, col, s, batch);
    tensor_gemm(&(struct gemm){0, 0, s->channels_out, columns, k, 1.0f, w, k, col, columns, 0.0f, y, columns});
}

void conv_backward(const struct conv_shape *s, int batch, const struct conv_inputs *in, const float *dy,
                   const struct conv_grads *grads)
{
    const float *x = in->x, *w = in->w;
    float *col = in->col, *dx = grads->dx, *dw = grads->dw;
    int col_holds_x = in->col_holds_x;
    int k = s->channels_in * s->kernel * s->kernel;
    int columns = batch * s->height * s->width;
    /* One workspace serves every layer, so im2col(x) is recomputed unless the workspace still
     * holds it (the last convolution of forward is the first of backward). */
    if (!col_holds_x)
        im2col(x, col, s, batch);
    tensor_gemm(&(struct gemm){0, 1, s->channels_out, k, columns, 1.0f, dy, columns, col, columns, 0.0f, dw, k});
    if (!dx)
        return;
    tensor_gemm(&(struct gemm){1, 0, k, columns, s->channels_out, 1.0f, w, k, dy, columns, 0.0f, col, columns});
    memset(dx, 0, (size_t)s->channels_in * columns * sizeof(float));
    col2im_add(col, dx, s, batch);
}

/* Row pairs per pass of max pooling: the vertical maxima of this many input row pairs stay in
 * L1 while the horizontal pass reads them. */
enum { POOL_CHUNK = 2048 };

/* Which of the four won: 2 × row + column, the first in row-major order among equal maxima
 * (as PyTorch; equal values are common where flat background gives equal activations). The
 * right column wins a tie only with a top-row value against a bottom-row one. Its own function:
 * inlined into the loop below, GCC left it scalar. */
static __attribute__((noinline)) void pool_which(const float *restrict vmax, const uint8_t *restrict vbit,
                                                 uint8_t *restrict which, size_t outputs)
{
    for (size_t k = 0; k < outputs; k++) {
        float left = vmax[2 * k], right = vmax[2 * k + 1];
        uint8_t left_row = vbit[2 * k], right_row = vbit[2 * k + 1];
        uint8_t take_right = (right > left) | ((right == left) & (left_row > right_row));
        which[k] = (uint8_t)(take_right ? 2 * right_row + 1 : 2 * left_row);
    }
}

/* The tensor is [planes][H][W] with H even, so its rows pair up without straddling planes: one
 * flat sequence of row pairs. First the maximum of each column of a pair (which row: vbit),
 * then of each horizontal pair of those, over a flat chunk (W is even, so pairs never straddle
 * rows). Each pass is a separate plain loop that GCC vectorises; the one-loop version with
 * stride-2 loads and a byte store was scalar and took 8.6% of a CNN step (perf). */
void maxpool_forward(const float *x, float *y, uint8_t *argmax, int planes, int height, int width)
{
    float vmax[POOL_CHUNK];
    uint8_t vbit[POOL_CHUNK];
    size_t pairs = (size_t)planes * (size_t)(height / 2), per_chunk = POOL_CHUNK / (size_t)width;
    for (size_t first = 0; first < pairs; first += per_chunk) {
        size_t count = pairs - first < per_chunk ? pairs - first : per_chunk;
        for (size_t q = 0; q < count; q++) {
            const float *restrict top = x + (first + q) * 2 * (size_t)width, *restrict bottom = top + width;
            float *restrict m = vmax + q * (size_t)width;
            uint8_t *restrict b = vbit + q * (size_t)width;
            for (int i = 0; i < width; i++) {
                m[i] = bottom[i] > top[i] ? bottom[i] : top[i];
                b[i] = bottom[i] > top[i];
            }
        }
        size_t outputs = count * (size_t)width / 2;
        float *restrict out = y + first * (size_t)width / 2;
        const float *restrict m = vmax;
        for (size_t k = 0; k < outputs; k++)
            out[k] = m[2 * k + 1] > m[2 * k] ? m[2 * k + 1] : m[2 * k];
        pool_which(vmax, vbit, argmax + first * (size_t)width / 2, outputs);
    }
}

void maxpool_backward(const float *dy, const uint8_t *argmax, float *dx, int planes, int height, int width)
{
    int oh = height / 2, ow = width / 2;
    memset(dx, 0, (size_t)planes * height * width * sizeof(float));
    for (int p = 0; p < planes; p++) {
        float *g = dx + (size_t)p * height * width;
        const float *d = dy + (size_t)p * oh * ow;
        const uint8_t *arg = argmax + (size_t)p * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                int which = arg[oy * ow + ox];
                g[(size_t)(2 * oy + (which >> 1)) * width + 2 * ox + (which & 1)] = d[oy * ow + ox];
            }
    }
}

/* Channel sums in eight float lanes, which the compiler keeps in one vector register, added
 * into double every block so that a long channel (64 images x 784 pixels) keeps its precision.
 * A plain double sum is a serial chain of adds: it made batch normalisation 17% of a CNN step. */
enum { SUM_LANES = 8, SUM_BLOCK = 256 };

/* Sum of a - shift and of (a - shift)(b - shift): with a = b = x, the sums of the shifted
 * values and of their squares; with shift 0, the sum of a and the dot product of a and b. */
static void paired_sums(const float *a, const float *b, size_t n, float shift, double *sum, double *products)
{
    *sum = 0;
    *products = 0;
    for (size_t start = 0; start < n; start += SUM_BLOCK) {
        size_t end = n - start < SUM_BLOCK ? n : start + SUM_BLOCK;
        float s[SUM_LANES] = {0}, p[SUM_LANES] = {0};
        size_t i = start;
        for (; i + SUM_LANES <= end; i += SUM_LANES)
            for (int j = 0; j < SUM_LANES; j++) {
                s[j] += a[i + j] - shift;
                p[j] += (a[i + j] - shift) * (b[i + j] - shift);
            }
        for (; i < end; i++) {
            s[0] += a[i] - shift;
            p[0] += (a[i] - shift) * (b[i] - shift);
        }
        for (int j = 0; j < SUM_LANES; j++) {
            *sum += s[j];
            *products += p[j];
        }
    }
}

void batchnorm_forward_train(const struct batchnorm *bn, const float *x, float *y, float *xhat, float *inv_std)
{
    int channels = bn->channels;
    size_t count = bn->count;
    const float *gamma = bn->gamma, *beta = bn->beta;
    float *running_mean = bn->running_mean, *running_var = bn->running_var;
    for (int c = 0; c < channels; c++) {
        const float *in = x + (size_t)c * count;
        double sum, squares;
        /* Shifted by the first value so the float lanes do not lose the variance of a channel
         * whose mean is far from zero; then centred exactly on the mean. */
        paired_sums(in, in, count, in[0], &sum, &squares);
        double mean = in[0] + sum / (double)count;
        double variance = squares / (double)count - (sum / (double)count) * (sum / (double)count);
        if (variance < 0)
            variance = 0;
        float istd = (float)(1.0 / sqrt(variance + BN_EPSILON)), m = (float)mean;
        float scale = gamma[c], shift = beta[c];
        inv_std[c] = istd;
        float *h = xhat + (size_t)c * count, *out = y + (size_t)c * count;
        for (size_t i = 0; i < count; i++) {
            h[i] = (in[i] - m) * istd;
            out[i] = scale * h[i] + shift;
        }
        double unbiased = count > 1 ? variance * (double)count / (double)(count - 1) : variance;
        running_mean[c] = (1 - BN_MOMENTUM) * running_mean[c] + BN_MOMENTUM * m;
        running_var[c] = (1 - BN_MOMENTUM) * running_var[c] + BN_MOMENTUM * (float)unbiased;
    }
}

void batchnorm_forward_eval(const struct batchnorm *bn, const float *x, float *y)
{
    int channels = bn->channels;
    size_t count = bn->count;
    const float *gamma = bn->gamma, *beta = bn->beta, *running_mean = bn->running_mean, *running_var = bn->running_var;
    for (int c = 0; c < channels; c++) {
        float scale = gamma[c] / sqrtf(running_var[c] + BN_EPSILON);
        float shift = beta[c] - running_mean[c] * scale;
        const float *in = x + (size_t)c * count;
        float *out = y + (size_t)c * count;
        for (size_t i = 0; i < count; i++)
            out[i] = in[i] * scale + shift;
    }
}

void batchnorm_backward(const struct batchnorm *bn, const float *dy, const float *xhat, const float *inv_std,
                        const struct batchnorm_grads *grads)
{
    int channels = bn->channels;
    size_t count = bn->count;
    const float *gamma = bn->gamma;
    float *dx = grads->dx, *dgamma = grads->dgamma, *dbeta = grads->dbeta;
    for (int c = 0; c < channels; c++) {
        const float *g = dy + (size_t)c * count, *h = xhat + (size_t)c * count;
        double sum_g, sum_gh;
        paired_sums(g, h, count, 0.0f, &sum_g, &sum_gh);
        dgamma[c] = (float)sum_gh;
        dbeta[c] = (float)sum_g;
        if (!dx)
            continue;
        float scale = gamma[c] * inv_std[c] / (float)count;
        float mean_g = (float)sum_g, mean_gh = (float)sum_gh, n = (float)count;
        float *out = dx + (size_t)c * count;
        for (size_t i = 0; i < count; i++)
            out[i] = scale * (n * g[i] - mean_g - h[i] * mean_gh);
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
