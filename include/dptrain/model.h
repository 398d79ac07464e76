/* A network built from a spec, with every parameter in one flat buffer and every gradient in
 * another (so one allreduce moves them all); layers hold views into both.
 *
 * Specs: "mlp" = hidden layers 256,128; "mlp:H1,H2,..." any hidden sizes (up to 8).
 * Each hidden layer is dense → ReLU → dropout (when the rate is > 0); the last layer is dense
 * to the classes, followed by softmax cross-entropy.
 * "cnn" = "cnn:32,p,64,p,f256"; "cnn:TOKENS" with tokens C (3×3 convolution to C channels,
 * batch normalisation, ReLU), p (2×2 max pooling) and fN (dense N, ReLU, dropout); convolutional
 * activations are channel-major [C][N][H][W] (see conv.h), so over images of several channels
 * the first layer reorders the input's [N][H][W][C]. Batch normalisation, its ReLU and a pooling
 * right after them are one layer (LAYER_BATCHNORM, batchnorm.h) where both sides are even; a
 * pooling of an odd side, or a second pooling in a row, is its own layer, and an odd side loses
 * its last row or column (pool.h).
 *
 * Every layer kind is one row of function pointers (layer.h); this module builds the layers from
 * a spec and runs them in order, with no switch over kinds. */
#ifndef DPTRAIN_MODEL_H
#define DPTRAIN_MODEL_H

#include "dptrain/layer.h"
#include "dptrain/profile.h"
#include "dptrain/rng.h"

#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_LAYERS 32
#define MODEL_SPEC_LEN 64

/* A contiguous run of parameters and whether weight decay applies to it (weights yes,
 * biases no). */
struct param_range {
    size_t offset, count;
    int decay;
};

/* What a network takes and gives: images of height × width × channels, seen as `features` inputs
 * each (their values, H·W·C, or K principal components), and `classes` outputs. */
struct model_io {
    int height, width, channels, features, classes;
};

struct model {
    char spec[MODEL_SPEC_LEN];
    struct model_io io;
    int input_size, classes, max_batch;
    int layer_count;
    struct layer layers[MODEL_MAX_LAYERS];
    int range_count;
    struct param_range ranges[MODEL_MAX_LAYERS];
    size_t param_count;
    float *params, *grads;      /* one allocation each */
    size_t buffer_count;
    float *buffers;             /* batch-norm running statistics: state, not trained */
    float *workspace;           /* im2col or Winograd's tiles, shared by every convolution */
    int is_conv;
    int first_trained;          /* the first layer with parameters: backward stops passing gradients there */
    /* acts[0] is the input batch [max_batch][input_size]; acts[i+1] is layer i's output.
     * grad_acts[i] is the gradient with respect to acts[i]. */
    float *acts[MODEL_MAX_LAYERS + 1];
    float *grad_acts[MODEL_MAX_LAYERS + 1];
    struct profile *profile;    /* when set, every layer's training forward and backward is timed */
};

/* Called by model_backward after each layer that has parameters: every gradient at offsets
 * >= first_ready is final for this batch (the gradient allreduce starts on them). */
struct backward_hook {
    void (*grads_ready)(void *context, size_t first_ready);
    void *context;
};

/* Parse spec and allocate everything for batches of up to max_batch samples. */
/* A 64-bit hash of the parameters' bits (FNV-1a over 64-bit words, then a finaliser): equal
 * parameters give equal hashes on any machine with the same byte order. */
uint64_t model_param_hash(const struct model *m);
/* The offsets in the flat parameter buffer where a layer's parameters begin, from the last layer
 * to the first, leaving out 0 (the gradient reducer cuts its buckets there). Returns the count. */
int model_param_boundaries(const struct model *m, size_t *offsets, int max);
/* The weight matrix that starts at `offset` of the flat buffer, as rows × cols (dense: outputs ×
 * inputs; convolution: output channels × input channels·k·k): 1, or 0 when no dense or
 * convolution weight starts there (gradient compression treats each as a matrix). */
int model_weight_shape(const struct model *m, size_t offset, int *rows, int *cols);
/* Parse a model spec without allocating it or knowing the data: the command line's check, before
 * MPI starts (pca: the run's --pca, which a CNN cannot take). model_create checks the rest. */
int model_check_spec(const char *spec, int pca, char *err);
struct model *model_create(const char *spec, const struct model_io *io, int max_batch, float dropout, char *err);
void model_free(struct model *model);

/* Every layer's own initialisation, in layer order from one stream (layer.h's init: He's for
 * dense and convolution weights, zero biases, batch-norm scale 1 and shift 0, running mean 0 and
 * variance 1). */
void model_init_params(struct model *model, struct rng *rng);

/* Forward from acts[0] for `batch` rows; returns the logits [batch][classes]. Dropout is
 * active only when training (rng then drives it). */
const float *model_forward(struct model *model, int batch, int training, struct rng *rng);
/* Backward from grad_acts[layer_count] (d loss / d logits) down to the first layer, writing
 * the gradients of this batch into model->grads (overwriting them). hook may be NULL. */
void model_backward(struct model *model, int batch, const struct backward_hook *hook);

/* Floating-point operations of the matrix products (dense and convolution) for one training
 * sample: forward, weight gradient and input gradient (none for the first layer). */
double model_training_flops(const struct model *model);

/* Backward writes the gradients into `grads` (param_count floats) from now on; returns the buffer
 * it wrote before (--deterministic: each unit's gradient straight into its own row; the model's
 * own buffer must be back in place when it is freed). */
float *model_use_grads(struct model *model, float *grads);

float *model_input(struct model *model);
float *model_grad_logits(struct model *model);

#endif
