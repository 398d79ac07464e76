#include "dptrain/exactsum.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Adding and subtracting 1.5 x 2^52 rounds a double below 2^51 in magnitude to the nearest
 * integer (ties to even): the sum has no bits below 1. Unlike rint() it vectorises. */
#define ROUND_MAGIC 6755399441055744.0

/* Elements per block: the accumulator's block stays in the L1 cache while every term adds to it. */
#define BLOCK 2048

double exactsum_max_abs(const float *x, size_t n)
{
    /* On the bits: without the sign, a float's bits order as its magnitude does, and Inf and NaN
     * sit above every finite value. An integer maximum vectorises; a float one with NaN does not. */
    uint32_t biggest = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        bits &= 0x7fffffffu;
        biggest = bits > biggest ? bits : biggest;
    }
    if (biggest >= 0x7f800000u)
        return INFINITY;
    float magnitude;
    memcpy(&magnitude, &biggest, sizeof magnitude);
    return (double)magnitude;
}

int exactsum_exponent(double max_abs, int terms)
{
    if (max_abs == 0.0)
        return 0;
    int top, room;
    frexp(max_abs, &top);            /* max_abs < 2^top */
    frexp((double)terms, &room);     /* terms <= 2^room */
    return 52 - room - top;          /* terms x max_abs x 2^e <= 2^52 */
}

void exactsum_add(double *acc, const float *const *terms, int count, size_t n, int exponent)
{
    double scale = ldexp(1.0, exponent);
    for (size_t start = 0; start < n; start += BLOCK) {
        size_t end = n - start < BLOCK ? n : start + BLOCK;
        for (int t = 0; t < count; t++) {
            const float *x = terms[t];
            for (size_t i = start; i < end; i++)
                acc[i] += ((double)x[i] * scale + ROUND_MAGIC) - ROUND_MAGIC;
        }
    }
}

void exactsum_result(const double *acc, float *out, size_t n, int exponent)
{
    double scale = ldexp(1.0, -exponent);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(acc[i] * scale);
}
