/* Batch normalisation, ReLU and (optionally) 2×2 max pooling as one layer, over channel-major
 * activations [C][N][H][W] (conv.h). Fused because each alone is a pass over a large tensor
 * that does almost no arithmetic: apart, the three wrote the normalised values, the scaled
 * values, the rectified values and a zeroed full-size gradient every step, 25% of a CNN step
 * (docs/performance.md). Together, forward reads the input twice (statistics, then output) and
 * writes only the output, a quarter of the size when pooled; backward reads the input, not a
 * saved copy of the normalised values, which it recomputes from the mean and 1/std. */
#ifndef DPTRAIN_BATCHNORM_H
#define DPTRAIN_BATCHNORM_H

#include "dptrain/layer.h"

#include <stddef.h>
#include <stdint.h>

struct batchnorm {
    int channels, samples, height, width;
    int pool;                           /* 2×2 max pooling after the ReLU (H and W even) */
    const float *gamma, *beta;
    float *running_mean, *running_var;  /* momentum 0.1, unbiased variance */
};

/* What training's forward keeps for backward: per channel the batch mean and 1/std; with
 * pooling, which input of each window won (pool.h). */
struct batchnorm_saved {
    float *mean, *inv_std;
    uint8_t *argmax;
};

/* Backward's tensors: forward's input x and output y, the gradient dy of y, and the results. */
struct batchnorm_backward_io {
    const float *x, *y, *dy;
    float *dx, *dgamma, *dbeta;
};

/* y = ReLU(gamma·(x − mean)/sqrt(var + 1e-5) + beta), pooled when bn->pool; training uses the
 * batch's statistics per channel (over N·H·W values) and updates the running ones. */
void batchnorm_forward_train(const struct batchnorm *bn, const float *x, float *y, const struct batchnorm_saved *saved);
/* The same with the running statistics; argmax is written when pooled (workspace). */
void batchnorm_forward_eval(const struct batchnorm *bn, const float *x, float *y, uint8_t *argmax);
void batchnorm_backward(const struct batchnorm *bn, const struct batchnorm_saved *saved,
                        const struct batchnorm_backward_io *io);

/* The layer kind (layer.h): the fused block over [C][N][H][W] activations; gamma and beta are
 * its parameters (1 and 0 at first; no weight decay: a scale and a shift), the running mean and
 * variance (0 and 1 at first) its buffers. */
extern const struct layer_ops layer_batchnorm;

#endif
