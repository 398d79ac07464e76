/* A layer of a network and what every kind of layer provides: one row of function pointers
 * (struct layer_ops), in the manner of kann's operator table. The model (model.h) holds layers
 * and calls their rows; it has no switch over kinds. Each kind's row lives beside its kernels
 * (layers.c: dense, relu, dropout; conv.c: conv and the two layout changes; batchnorm.c;
 * pool.c), and model.c lists the rows in one table: a new kind of layer is one new source file
 * and one row there. */
#ifndef DPTRAIN_LAYER_H
#define DPTRAIN_LAYER_H

#include <stddef.h>
#include <stdint.h>

struct rng;

enum layer_kind { LAYER_DENSE, LAYER_RELU, LAYER_DROPOUT, LAYER_CONV, LAYER_BATCHNORM,
                  LAYER_MAXPOOL, LAYER_TO_ROWS, LAYER_TO_CHANNELS, LAYER_KINDS };

/* How a convolution runs: im2col and one GEMM per chunk of samples, or Winograd's
 * F(2×2, 3×3) (winograd.h). */
enum conv_method { CONV_IM2COL, CONV_WINOGRAD };

struct conv_shape {
    int channels_in, channels_out, height, width, kernel; /* stride 1, zero padding kernel/2 */
    int method;   /* enum conv_method, chosen by conv_plan; unplanned: im2col */
    int chunk;    /* im2col's samples per chunk; 0: the whole batch */
};

struct layer_ops;

struct layer {
    enum layer_kind kind;
    const struct layer_ops *ops;
    const char *forward_name, *backward_name; /* the profile's (string literals) */
    int in_size, out_size;      /* features per sample */
    int channels, height, width;            /* input shape of conv/bn/pool/layout layers */
    struct conv_shape conv;
    /* batch normalisation (with its ReLU, and its pooling when pool is set: batchnorm.h):
     * gamma, beta are weight, bias; running statistics in model->buffers */
    float *running_mean, *running_var;
    size_t buffer_offset;                   /* of running_mean in the model's buffers */
    float *batch_mean, *inv_std;            /* saved for backward */
    int pool;
    uint8_t *argmax;                        /* max pooling (fused or not) */
    /* parameters: views into the model's flat buffers */
    float *weight, *bias;       /* dense: [out][in], [out] */
    float *grad_weight, *grad_bias;
    size_t param_offset;        /* of weight; bias follows it */
    /* dropout */
    float rate;
    float *mask;                /* [max_batch][size] */
};

/* One layer's tensors in a pass over a batch. Forward reads x and writes y; backward reads x, y
 * (forward's) and dy, and writes dx (NULL for the first layer: nothing below needs it) and the
 * layer's gradients. */
struct layer_pass {
    int batch, training;
    const float *x;
    float *y;
    const float *dy;
    float *dx;
    float *workspace;           /* the model's, shared by every convolution */
    struct rng *rng;            /* training forward: dropout's stream */
};

/* Where a layer's parameters lie in the flat buffer: `weights` values then `biases`; weight
 * decay applies to the weights when `decay` is set (never to biases). */
struct layer_params {
    size_t weights, biases;
    int decay;
};

struct layer_ops {
    const char *forward_name, *backward_name;
    /* parameters (NULL: none) and their initialisation */
    void (*params)(const struct layer *l, struct layer_params *p);
    void (*init)(struct layer *l, struct rng *rng);
    /* batch-norm running statistics in the model's buffers (NULL: none) */
    size_t (*buffers)(const struct layer *l);
    /* state kept between forward and backward, for batches of up to max_batch (NULL: none);
     * 0 or -1 when out of memory; release frees it */
    int (*allocate)(struct layer *l, int max_batch);
    void (*release)(struct layer *l);
    size_t (*workspace)(const struct layer *l, int max_batch);   /* floats; NULL: none */
    void (*forward)(struct layer *l, const struct layer_pass *p);
    void (*backward)(struct layer *l, const struct layer_pass *p);
    /* multiply-adds of one sample's forward pass (NULL: too few to count) */
    double (*products)(const struct layer *l);
    /* the weight matrix as rows × cols, for gradient compression (NULL: none) */
    void (*matrix)(const struct layer *l, int *rows, int *cols);
};

#endif
