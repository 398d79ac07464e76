#include "dptrain/tensor.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

float *tensor_alloc(size_t count)
{
    size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0)
        bytes = 64;
    float *buffer = aligned_alloc(64, bytes);
    if (buffer)
        memset(buffer, 0, bytes);
    return buffer;
}

void tensor_free(float *buffer)
{
    free(buffer);
}

int tensor_gemm_threads(void)
{
    return openblas_get_num_threads();
}

void tensor_gemm(const struct gemm *g)
{
    if (g->m == 0 || g->n == 0)
        return;
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, g->m,
                g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb, g->beta, g->c, g->ldc);
}
