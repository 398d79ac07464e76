/* Sums of float vectors that come out bitwise the same in any order and any grouping, the
 * gradient sum of --deterministic.
 *
 * Floating-point addition is not associative: the sum of the same gradients grouped by 2 ranks
 * or by 3 differs in its last bits, and those bits grow over a run. Here every term is rounded
 * once to a fixed-point grid (multiples of 2^-e, e chosen from the largest magnitude over all
 * terms so that `terms` of them cannot exceed 2^52) and held as an integer-valued double. Every
 * partial sum is then an integer below 2^53, which a double holds exactly: the terms can be added
 * in any order, on any rank, and through any allreduce with the same result, bit for bit. The
 * grid keeps 48 bits below the largest magnitude (with 12 terms), finer than float32's 24 bits
 * for every value within 2^-24 of it. */
#ifndef DPTRAIN_EXACTSUM_H
#define DPTRAIN_EXACTSUM_H

#include <stddef.h>

/* The largest |x[i]|; INFINITY when any value is not finite. */
double exactsum_max_abs(const float *x, size_t n);
/* The grid exponent e for `terms` terms whose largest magnitude (over all of them, on every rank)
 * is max_abs (finite). */
int exactsum_exponent(double max_abs, int terms);
/* acc[i] += round(terms[t][i] * 2^e) for t = 0..count-1. */
void exactsum_add(double *acc, const float *const *terms, int count, size_t n, int exponent);
/* out[i] = acc[i] * 2^-e, rounded to float. */
void exactsum_result(const double *acc, float *out, size_t n, int exponent);

#endif
