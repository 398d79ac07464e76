/* Checkpoints: everything needed to continue a run bitwise as if it had never stopped — the
 * configuration, the position (epoch and step), parameters, optimizer state, every unit's
 * random streams and partial-epoch sums, the input normalisation and PCA basis, the history and
 * the best validation parameters, and the identity of the data file. HDF5 with a format name and
 * version; written by rank 0 in memory and published whole (files_write), so the previous
 * checkpoint survives any failure.
 *
 * Integrity: every array carries its CRC-32 (root attribute crc32_NAME) and the scalar
 * attributes one CRC-32 over all their names and values (attributes_crc32); checkpoint_read
 * verifies them all and checks every scalar's range, so damage anywhere in the file is refused
 * with a line naming what is damaged. Before any of that, the whole file's seal (seal.h) is checked,
 * so that damage to HDF5's own structures is refused before HDF5 parses them. */
#ifndef DPTRAIN_CHECKPOINT_H
#define DPTRAIN_CHECKPOINT_H

#include "dptrain/config.h"
#include "dptrain/dataset.h"
#include "dptrain/pca.h"
#include "dptrain/results.h"
#include "dptrain/rng.h"

#include <stddef.h>
#include <stdint.h>

#define CHECKPOINT_FORMAT "dptrain-checkpoint"
#define CHECKPOINT_VERSION 11 /* 2: adds tta; 3: checksums of every array and attribute, data identity;
                                4: compress and the error-feedback residuals; 5: deterministic, units;
                                6: PowerSGD's Q; 7: erase; 8: augment_shift, tta_shift, best_buffers;
                                9: the file's seal (seal.h), required; 10: the data's image shape and
                                classes, flip, the normalisation per channel (arrays norm_mean, norm_std);
                                11: memory_budget */

struct checkpoint {
    /* configuration: what must match for a resume */
    char model[64], optimizer[RESULTS_OPTIMIZER_LENGTH], schedule[16], name[64], compress[CONFIG_COMPRESS_LENGTH];
    int pca_components, global_batch, ranks, epochs, validation, augment, augment_shift, tta, tta_shift;
    int flip;                                 /* training and test views mirrored (--flip, or the data's) */
    int deterministic;                        /* --deterministic: rows are the virtual shards */
    int units;                                /* rows of the per-unit arrays: ranks, or virtual shards */
    int memory_budget;                        /* --memory-budget MB, 0 = held: with the ranks, what a resumed
                                                 epoch's data order depends on (stream.h) */
    uint64_t seed;
    double lr, momentum, weight_decay, warmup, dropout, label_smoothing, erase;
    /* position: `epoch` epochs are complete, and `step` steps of the next one */
    int epoch;
    long step;
    double train_seconds, epoch_seconds;
    /* model and optimizer */
    size_t param_count;
    float *params, *opt_first, *opt_second;   /* opt_second only for adam */
    long opt_step;
    float *best_params;                       /* with --validation */
    float *best_buffers;                      /* with --validation: that epoch's batch-norm statistics */
    double best_val;
    int best_epoch;
    struct data_identity data;                /* the data file it was trained on: its shape, classes, arrays */
    float norm_mean[DATASET_MAX_CHANNELS], norm_std[DATASET_MAX_CHANNELS]; /* the input standardisation per
                                                 channel (features.h), data.image.channels of each */
    struct pca pca;                           /* when pca_components > 0 */
    int history_length;
    struct epoch_record *history;
    /* one row per unit of training work (run.h): per rank, or per virtual shard */
    struct rng *dropout_rng, *augment_rng;
    double *partial_loss;
    int64_t *partial_correct;
    size_t buffer_count;                      /* batch-norm running statistics, per unit */
    float *buffers;                           /* [units][buffer_count] */
    float *residual;                          /* [units][param_count], compress bf16 and powersgd (units = ranks) */
    size_t powersgd_q_count;
    float *powersgd_q;                        /* [powersgd_q_count]: the last step's summed Q (the same on every rank) */
    int owned;                                /* 1 when checkpoint_read allocated the arrays */
};

int checkpoint_write(const char *path, const struct checkpoint *c, char *err);
/* The checkpoint file's sealed bytes, built in memory (malloc'd, *size of them; NULL on failure),
 * for a background writer to publish at path (files_write) while training goes on. */
void *checkpoint_image(const char *path, const struct checkpoint *c, size_t *size, char *err);
int checkpoint_read(const char *path, struct checkpoint *c, char *err);
void checkpoint_free(struct checkpoint *c);
/* Refuse a checkpoint made on data of another image shape or class count than `now`'s, naming
 * both (eval: a network takes one shape of input and gives one count of classes). */
int checkpoint_check_shape(const struct checkpoint *c, const struct data_identity *now, const char *data,
                           const char *path, char *err);
/* Refuse a checkpoint made on other data than `data` names, saying what differs (the shape first,
 * then which array); the hint says to `action` (e.g. "resume") with the run's own data file. */
int checkpoint_check_data(const struct checkpoint *c, const struct data_identity *now, const char *data,
                          const char *path, const char *action, char *err);
/* Refuse a position that this run cannot be at: a step beyond the epoch (steps per epoch), an
 * optimizer step count that does not match, arrays of another model's size (steps_per_epoch 0:
 * the sizes alone, for eval). */
int checkpoint_check_position(const struct checkpoint *c, long steps_per_epoch, size_t param_count,
                              size_t buffer_count, const char *path, char *err);

#endif
