/* Aligned float buffers and the BLAS helpers that the layers share. */
#ifndef DPTRAIN_TENSOR_H
#define DPTRAIN_TENSOR_H

#include <stddef.h>

/* 64-byte aligned (one cache line, one AVX-512 vector), zero-filled; free with tensor_free. */
float *tensor_alloc(size_t count);
void tensor_free(float *buffer);

/* C[m][n] = alpha * op(A) op(B) + beta * C, row-major; the only GEMM entry point, so that the
 * dimension checks and any instrumentation live in one place. */
void tensor_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);

#endif
