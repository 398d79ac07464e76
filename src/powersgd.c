#include "dptrain/powersgd.h"

#include "dptrain/check.h"
#include "dptrain/rng.h"
#include "dptrain/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int powersgd_worth(int rows, int cols, int rank)
{
    return 4.0 * rank * ((double)rows + cols) <= (double)rows * cols;
}

void powersgd_init(struct powersgd *s, int rank, float *grads, float *residual, float *wire)
{
    memset(s, 0, sizeof *s);
    s->rank = rank;
    s->grads = grads;
    s->residual = residual;
    s->wire = wire;
}

void powersgd_add(struct powersgd *s, size_t offset, int rows, int cols, size_t p)
{
    s->matrices[s->count++] = (struct psgd_matrix){offset, rows, cols, p, s->q_count};
    s->q_count += (size_t)cols * (size_t)s->rank;
}

int powersgd_alloc(struct powersgd *s, char *err)
{
    struct rng rng;
    CHECK_PTR(s->q = malloc(sizeof(float) * (s->q_count + 1)), "cannot allocate PowerSGD's Q (%zu floats)", s->q_count);
    /* a fixed seed: every rank starts from the same Q, whatever the run's seed */
    rng_seed(&rng, 0, RNG_POWERSGD, 0, 0);
    for (size_t i = 0; i < s->q_count; i++)
        s->q[i] = rng_normal(&rng);
    return 0;
fail:
    return -1;
}

void powersgd_free(struct powersgd *s)
{
    free(s->q);
    s->q = NULL;
}

void powersgd_project(const struct powersgd *s, int i)
{
    const struct psgd_matrix *m = &s->matrices[i];
    size_t n = (size_t)m->rows * (size_t)m->cols;
    float *g = s->grads + m->offset;
    const float *e = s->residual + m->offset;
    for (size_t j = 0; j < n; j++)
        g[j] += e[j];
    tensor_gemm(&(struct gemm){0, 0, m->rows, s->rank, m->cols, 1.0f, g, m->cols, s->q + m->q, s->rank, 0.0f,
                               s->wire + m->p, s->rank});
}

/* Modified Gram-Schmidt on the columns of p [rows][r], sums in double. A column with nothing left
 * (a zero gradient, or a rank above the gradient's) becomes zero: it then adds nothing to the
 * approximation, and everything stays in the residual. */
static void orthonormalise(float *p, int rows, int r)
{
    for (int c = 0; c < r; c++) {
        double norm = 0;
        for (int i = 0; i < rows; i++)
            norm += (double)p[(size_t)i * r + c] * p[(size_t)i * r + c];
        norm = sqrt(norm);
        float scale = norm > 0 ? (float)(1.0 / norm) : 0.0f;
        for (int i = 0; i < rows; i++)
            p[(size_t)i * r + c] *= scale;
        for (int d = c + 1; d < r; d++) {
            double dot = 0;
            for (int i = 0; i < rows; i++)
                dot += (double)p[(size_t)i * r + c] * p[(size_t)i * r + d];
            for (int i = 0; i < rows; i++)
                p[(size_t)i * r + d] -= (float)dot * p[(size_t)i * r + c];
        }
    }
}

void powersgd_back(struct powersgd *s, int i)
{
    const struct psgd_matrix *m = &s->matrices[i];
    float *p = s->wire + m->p;
    orthonormalise(p, m->rows, s->rank);
    tensor_gemm(&(struct gemm){1, 0, m->cols, s->rank, m->rows, 1.0f, s->grads + m->offset, m->cols, p, s->rank,
                               0.0f, s->q + m->q, s->rank});
}

void powersgd_expand(const struct powersgd *s, int i, int ranks)
{
    const struct psgd_matrix *m = &s->matrices[i];
    size_t n = (size_t)m->rows * (size_t)m->cols;
    float *g = s->grads + m->offset, *e = s->residual + m->offset;
    float share = 1.0f / (float)ranks;
    memcpy(e, g, n * sizeof(float));
    tensor_gemm(&(struct gemm){0, 1, m->rows, m->cols, s->rank, 1.0f, s->wire + m->p, s->rank, s->q + m->q, s->rank,
                               0.0f, g, m->cols});
    for (size_t j = 0; j < n; j++)
        e[j] -= g[j] * share;
}
