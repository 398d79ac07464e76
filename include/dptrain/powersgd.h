/* PowerSGD (Vogels, Karimireddy and Jaggi, NeurIPS 2019): each large weight matrix's gradient
 * travels as a rank-R approximation, two thin factors instead of the matrix.
 *
 * Per matrix and step, with M = G + E (this rank's gradient plus its error-feedback residual):
 *   P = M Q                 [rows][R], Q the previous step's (the warm start: one power iteration
 *                           per step tracks the gradient's top subspace across steps)
 *   P = sum over ranks of P, then orthonormalised (Gram-Schmidt; every rank gets the same bits)
 *   Q = M^T P               [cols][R], then summed over ranks
 *   G' = P Q^T              the sum's approximation, what the optimizer gets
 *   E = M - G' / ranks      this rank's share of what the approximation missed: sent next step,
 *                           so that nothing is lost, only delayed (the sum of E over the ranks is
 *                           exactly the total missed).
 * This module is the arithmetic only (BLAS, no MPI): the reducer packs the P's into its buckets
 * and sums P and Q over the ranks. Q starts from a fixed seed, the same on every rank. */
#ifndef DPTRAIN_POWERSGD_H
#define DPTRAIN_POWERSGD_H

#include <stddef.h>

#define POWERSGD_MAX_MATRICES 32

struct psgd_matrix {
    size_t offset;      /* of its gradient in the flat buffer, row-major [rows][cols] */
    int rows, cols;
    size_t p, q;        /* where its P sits in the wire buffer, its Q in q */
};

struct powersgd {
    int rank;                              /* R */
    int count;
    struct psgd_matrix matrices[POWERSGD_MAX_MATRICES];
    size_t q_count;
    float *q;                              /* [q_count]: the last step's summed Q */
    /* borrowed: the gradients, the error-feedback residuals (both the flat buffer's length) and
     * the wire buffer that holds the P's */
    float *grads, *residual, *wire;
};

/* Whether compressing a rows × cols matrix at rank R pays: its factors are at most a quarter of
 * its size (small layers and the output layer travel whole). */
int powersgd_worth(int rows, int cols, int rank);
/* Start empty at rank R, on these buffers. */
void powersgd_init(struct powersgd *s, int rank, float *grads, float *residual, float *wire);
/* Add a matrix whose P goes to wire[p]: its Q is placed after the others'. */
void powersgd_add(struct powersgd *s, size_t offset, int rows, int cols, size_t p);
/* After the last powersgd_add: Q's starting values (normal, from a fixed seed). */
int powersgd_alloc(struct powersgd *s, char *err);
void powersgd_free(struct powersgd *s);

/* Matrix i: M = G + E in place of G, and P = M Q into the wire. */
void powersgd_project(const struct powersgd *s, int i);
/* Matrix i, once P is summed: orthonormalise P's columns, then Q = M^T P. */
void powersgd_back(struct powersgd *s, int i);
/* Matrix i, once Q is summed: E = M - P Q^T / ranks, G = P Q^T. */
void powersgd_expand(const struct powersgd *s, int i, int ranks);

#endif
