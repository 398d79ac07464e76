/* Seeded random numbers: xoshiro256** seeded through splitmix64. One generator per purpose
 * (init, shuffle, dropout, augmentation, validation split), each derived from the run's seed and
 * a purpose tag and indices (epoch, rank), so runs are reproducible and the state is 4 words
 * that a checkpoint can store. */
#ifndef DPTRAIN_RNG_H
#define DPTRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

enum rng_purpose {
    RNG_INIT = 1,
    RNG_SHUFFLE = 2,
    RNG_DROPOUT = 3,
    RNG_AUGMENT = 4,
    RNG_VALIDATION = 5,
    RNG_POWERSGD = 6,
    RNG_CHUNKS = 7,  /* --memory-budget: an epoch's order of a rank's chunks (stream.h) */
    RNG_WINDOW = 8,  /* and the order within one window */
};

struct rng {
    uint64_t s[4];
};

void rng_seed(struct rng *rng, uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b);
/* Inline: dropout draws one number per four activations, and a call per draw cost a third of
 * the MLP's dropout time (measured). */
static inline uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return result;
}

/* 0 for the one state xoshiro cannot leave, all four words zero (every draw is then 0, and
 * rng_below's rejection loop never ends); 1 otherwise. A restored state must pass it. */
static inline int rng_valid(const struct rng *rng)
{
    return (rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]) != 0;
}

/* Unbiased integer in [0, n), n > 0. */
uint64_t rng_below(struct rng *rng, uint64_t n);
/* Standard normal (Box-Muller). */
float rng_normal(struct rng *rng);
/* A uniform double in [0, 1): the top 53 bits of one draw. */
double rng_uniform(struct rng *rng);
/* Fisher-Yates shuffle of indices. */
void rng_shuffle(struct rng *rng, uint32_t *items, size_t count);

#endif
