/* Distributed PCA of the training images (pixels scaled to [0, 1]).
 * Every rank forms the column sums and the Gram matrix XᵀX of its shard in double precision
 * (cblas_dsyrk over blocks of rows), one allreduce combines them, rank 0 forms the covariance
 * (XᵀX − n·μμᵀ)/(n − 1), takes the top K eigenpairs with LAPACKE_dsyevr, orders them by
 * decreasing variance, makes each component's largest-magnitude entry positive, and
 * broadcasts the result. */
#ifndef DPTRAIN_PCA_H
#define DPTRAIN_PCA_H

#include <stddef.h>
#include <stdint.h>

struct comm; /* comm.h: only the fit's callers need the world */

struct pca {
    int dim, components;
    size_t samples;               /* n over all ranks */
    double *mean;                 /* [dim] */
    float *basis;                 /* [components][dim], orthonormal rows */
    double *explained_variance;   /* [components] */
    double *explained_ratio;      /* [components] */
    double total_variance;        /* trace of the covariance */
    double fit_seconds;
};

/* This rank's images: [count][dim] uint8. */
struct pca_data {
    const uint8_t *pixels;
    size_t count;
    int dim;
};

/* Collective: the first `components` principal components of every rank's images. */
int pca_fit(const struct comm *comm, const struct pca_data *data, int components, struct pca *pca, char *err);
/* out[count][components] = (pixels / 255 − mean) · basisᵀ · scale */
int pca_project(const struct pca *pca, const uint8_t *pixels, size_t count, float scale, float *out,
                char *err);
double pca_variance_kept(const struct pca *pca);
void pca_free(struct pca *pca);

#endif
