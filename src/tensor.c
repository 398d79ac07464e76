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

void tensor_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m == 0 || n == 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
