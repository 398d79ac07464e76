#include "dptrain/pca.h"

#include "dptrain/check.h"
#include "dptrain/comm.h"
#include "dptrain/timer.h"
#include "dptrain/tensor.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PCA_BLOCK_ROWS 512

void pca_free(struct pca *pca)
{
    free(pca->mean);
    tensor_free(pca->basis);
    free(pca->explained_variance);
    free(pca->explained_ratio);
    memset(pca, 0, sizeof *pca);
}

/* stats = [ Gram (dim×dim, upper triangle) | column sums (dim) | n ] for this rank, of the raw
 * pixel values 0..255. Every product and every partial sum is then an integer below 2^53 (at most
 * 255² x 60000), which doubles hold exactly: the sums come out the same in any order, so the fit
 * is the same on any number of ranks and any BLAS. */
static int local_statistics(const uint8_t *pixels, size_t count, int dim, double *stats, char *err)
{
    double *block = NULL;
    double *gram = stats, *sums = stats + (size_t)dim * dim;
    CHECK_PTR(block = malloc((size_t)PCA_BLOCK_ROWS * dim * sizeof(double)), "cannot allocate PCA block");
    for (size_t start = 0; start < count; start += PCA_BLOCK_ROWS) {
        size_t rows = count - start < PCA_BLOCK_ROWS ? count - start : PCA_BLOCK_ROWS;
        const uint8_t *src = pixels + start * dim;
        for (size_t i = 0; i < rows * (size_t)dim; i++)
            block[i] = src[i];
        for (size_t r = 0; r < rows; r++)
            for (int j = 0; j < dim; j++)
                sums[j] += block[r * dim + j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dim, (int)rows, 1.0, block, dim, 1.0,
                    gram, dim);
    }
    stats[(size_t)dim * dim + dim] = (double)count;
    free(block);
    return 0;
fail:
    return -1;
}

/* On rank 0: covariance from the global statistics, top-K eigenpairs, ordered and signed. */
static int solve(double *stats, int dim, int k, struct pca *pca, char *err)
{
    double *gram = stats, *sums = stats + (size_t)dim * dim;
    double n = stats[(size_t)dim * dim + dim];
    double *values = NULL, *vectors = NULL;
    lapack_int *support = NULL, found = 0;
    if (n < 2)
        FAIL("PCA needs at least 2 training samples, got %.0f", n);
    for (int j = 0; j < dim; j++)
        pca->mean[j] = sums[j] / n / 255.0;
    /* Upper triangle of cov = (XᵀX − n μμᵀ)/(n − 1), X in pixel / 255. */
    pca->total_variance = 0;
    for (int i = 0; i < dim; i++)
        for (int j = i; j < dim; j++) {
            double *c = &gram[(size_t)i * dim + j];
            *c = (*c / (255.0 * 255.0) - n * pca->mean[i] * pca->mean[j]) / (n - 1);
            if (i == j)
                pca->total_variance += *c;
        }
    /* Images that do not vary at all have no components (a component without variance is
     * whitened to 0, but with none the inputs are all 0): refused here, as the checkpoint's reader
     * refuses such a basis, instead of training on nothing and saving a checkpoint eval refuses. */
    if (!(pca->total_variance > 0))
        FAIL("PCA: the training images do not vary (every pixel is constant): there are no components to find; "
             "train on raw pixels");
    CHECK_PTR(values = malloc((size_t)dim * sizeof(double)), "cannot allocate eigenvalues");
    CHECK_PTR(vectors = malloc((size_t)dim * k * sizeof(double)), "cannot allocate eigenvectors");
    CHECK_PTR(support = malloc(2 * (size_t)k * sizeof(lapack_int)), "cannot allocate eigen support");
    CHECK_LAPACK(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', dim, gram, dim, 0.0, 0.0,
                                dim - k + 1, dim, 0.0, &found, values, vectors, k, support),
                 "PCA eigen-decomposition (LAPACKE_dsyevr) failed");
    if (found != k)
        FAIL("PCA: LAPACKE_dsyevr found %d eigenpairs, expected %d", (int)found, k);
    /* dsyevr returns ascending eigenvalues; column c of vectors is the c-th. */
    for (int out = 0; out < k; out++) {
        int c = k - 1 - out;
        int biggest = 0;
        for (int j = 1; j < dim; j++)
            if (fabs(vectors[(size_t)j * k + c]) > fabs(vectors[(size_t)biggest * k + c]))
                biggest = j;
        double sign = vectors[(size_t)biggest * k + c] < 0 ? -1.0 : 1.0;
        for (int j = 0; j < dim; j++)
            pca->basis[(size_t)out * dim + j] = (float)(sign * vectors[(size_t)j * k + c]);
        double variance = values[c] > 0 ? values[c] : 0.0;
        pca->explained_variance[out] = variance;
        pca->explained_ratio[out] = pca->total_variance > 0 ? variance / pca->total_variance : 0.0;
    }
    free(values);
    free(vectors);
    free(support);
    return 0;
fail:
    free(values);
    free(vectors);
    free(support);
    return -1;
}

int pca_fit(const struct comm *comm, const struct pca_data *data, int components, struct pca *pca, char *err)
{
    const uint8_t *pixels = data->pixels;
    size_t count = data->count;
    int dim = data->dim;
    double *stats = NULL;
    size_t stats_len = (size_t)dim * dim + dim + 1;
    double start = timer_now();
    memset(pca, 0, sizeof *pca);
    if (components < 1 || components > dim)
        FAIL("%d principal components is out of range 1..%d", components, dim);
    pca->dim = dim;
    pca->components = components;
    CHECK_PTR(stats = calloc(stats_len, sizeof(double)), "cannot allocate PCA statistics");
    CHECK_PTR(pca->mean = calloc((size_t)dim, sizeof(double)), "cannot allocate PCA mean");
    CHECK_PTR(pca->basis = tensor_alloc((size_t)components * dim), "cannot allocate PCA basis");
    CHECK_PTR(pca->explained_variance = calloc((size_t)components + 1, sizeof(double)), "cannot allocate");
    CHECK_PTR(pca->explained_ratio = calloc((size_t)components + 1, sizeof(double)), "cannot allocate");
    int ok = local_statistics(pixels, count, dim, stats, err) == 0;
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_allreduce_doubles(comm, stats, stats_len, err));
    pca->samples = (size_t)stats[stats_len - 1];
    ok = comm->rank != 0 || solve(stats, dim, components, pca, err) == 0;
    CHECK_DP(comm_agree(comm, ok, err));
    /* Everyone gets rank 0's answer; the basis travels as float, as it is used. */
    CHECK_DP(comm_bcast_doubles(comm, pca->mean, (size_t)dim, 0, err));
    CHECK_DP(comm_bcast_floats(comm, pca->basis, (size_t)components * dim, 0, err));
    CHECK_DP(comm_bcast_doubles(comm, pca->explained_variance, (size_t)components, 0, err));
    CHECK_DP(comm_bcast_doubles(comm, pca->explained_ratio, (size_t)components, 0, err));
    CHECK_DP(comm_bcast_doubles(comm, &pca->total_variance, 1, 0, err));
    free(stats);
    pca->fit_seconds = timer_now() - start;
    return 0;
fail:
    free(stats);
    pca_free(pca);
    return -1;
}

int pca_project(const struct pca *pca, const uint8_t *pixels, size_t count, float scale, float *out,
                char *err)
{
    int dim = pca->dim;
    float *block = NULL, *mean = NULL;
    CHECK_PTR(block = tensor_alloc((size_t)PCA_BLOCK_ROWS * dim), "cannot allocate PCA block");
    CHECK_PTR(mean = tensor_alloc((size_t)dim), "cannot allocate PCA mean");
    for (int j = 0; j < dim; j++)
        mean[j] = (float)pca->mean[j];
    for (size_t start = 0; start < count; start += PCA_BLOCK_ROWS) {
        size_t rows = count - start < PCA_BLOCK_ROWS ? count - start : PCA_BLOCK_ROWS;
        const uint8_t *src = pixels + start * dim;
        for (size_t r = 0; r < rows; r++)
            for (int j = 0; j < dim; j++)
                block[r * dim + j] = src[r * dim + j] * (1.0f / 255.0f) - mean[j];
        tensor_gemm(&(struct gemm){0, 1, (int)rows, pca->components, dim, scale, block, dim, pca->basis, dim,
                    0.0f, out + start * pca->components, pca->components});
    }
    tensor_free(block);
    tensor_free(mean);
    return 0;
fail:
    tensor_free(block);
    tensor_free(mean);
    return -1;
}

double pca_variance_kept(const struct pca *pca)
{
    double kept = 0;
    for (int i = 0; i < pca->components; i++)
        kept += pca->explained_ratio[i];
    return kept;
}
