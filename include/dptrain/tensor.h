/* Aligned float buffers and the BLAS helpers that the layers share. */
#ifndef DPTRAIN_TENSOR_H
#define DPTRAIN_TENSOR_H

#include <stddef.h>

/* 64-byte aligned (one cache line, one AVX-512 vector), zero-filled; free with tensor_free. */
float *tensor_alloc(size_t count);
void tensor_free(float *buffer);

/* C[m][n] = alpha * op(A) op(B) + beta * C, row-major; the only GEMM entry point, so that the
 * dimension checks and any instrumentation live in one place. */
/* c = alpha * op(a) op(b) + beta * c, row-major, as cblas_sgemm: op transposes when trans_*;
 * c is m x n, op(a) m x k, op(b) k x n; ld* are the leading dimensions as stored. */
struct gemm {
    int trans_a, trans_b, m, n, k;
    float alpha;
    const float *a;
    int lda;
    const float *b;
    int ldb;
    float beta;
    float *c;
    int ldc;
};
void tensor_gemm(const struct gemm *g);

/* The threads each GEMM runs on (OpenBLAS's pool, set once by the command). */
int tensor_gemm_threads(void);

#endif
