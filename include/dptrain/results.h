/* The results file (layout in docs/file-formats.md), written by rank 0 and published whole (files_write). */
#ifndef DPTRAIN_RESULTS_H
#define DPTRAIN_RESULTS_H

#include "dptrain/dataset.h"
#include "dptrain/metrics.h"
#include "dptrain/pca.h"
#include "dptrain/stragglers.h"

#include <stddef.h>
#include <stdint.h>

struct epoch_record {
    int epoch;
    double train_loss, train_accuracy, test_loss, test_accuracy;
    double val_loss, val_accuracy, seconds, samples_per_second;
};

/* The history as files store it: one row of doubles per epoch, its columns named in this order
 * (results files store each column as a dataset; checkpoints the rows as one array). */
#define RESULTS_HISTORY_COLUMNS 9
extern const char *const results_history_columns[RESULTS_HISTORY_COLUMNS];
void results_history_row(const struct epoch_record *e, double row[RESULTS_HISTORY_COLUMNS]);
void results_history_record(const double row[RESULTS_HISTORY_COLUMNS], struct epoch_record *e);

/* An optimizer's name with its terminator ("nesterov" needs 9: 8 bytes had cut it to "nestero",
 * which no checkpoint reader then knew). */
#define RESULTS_OPTIMIZER_LENGTH 16
#define RESULTS_SETTINGS_LENGTH 20480 /* a command line: --data may be a long path */

enum { RESULTS_HOST = 64 }; /* a host name's bytes in the rank table (longer names are cut) */

struct run_result {
    char name[64];
    char model[64];
    char optimizer[RESULTS_OPTIMIZER_LENGTH];
    char settings[RESULTS_SETTINGS_LENGTH]; /* the command line that trains the run again (cli.h) */
    int pca_components;
    int inputs;                       /* values per input: an image's H*W*C, or the components */
    int flip;                         /* trained and evaluated with mirror images (--flip) */
    const char *const *class_names;   /* borrowed: the data's (shards.h), [metrics.classes] */
    int epochs, global_batch, ranks, has_validation, best_epoch;
    long partial_steps;               /* eval of a mid-epoch checkpoint: steps trained after `epochs` whole ones */
    double lr;
    uint64_t seed;
    size_t parameters;
    uint64_t parameter_hash;          /* model_param_hash of the final parameters */
    double train_seconds, test_accuracy, test_loss;
    int test_views;                   /* views averaged in each final prediction (--tta): 1, 2, 18 or 50 */
    int on_validation;                /* eval --on-validation: the test figures are the hold-out's */
    int ended_by_budget;              /* --max-time ended training before the last epoch */
    int history_length;
    struct epoch_record *history;     /* [epochs] */
    struct metrics metrics;
    size_t test_count;
    uint8_t *labels, *predictions;    /* [test_count] */
    float *confidence;                /* softmax probability of the predicted class */
    struct pca pca;                   /* owned; used when pca_components > 0 */
    /* Each rank's seconds in each epoch's steps (stragglers.h), on rank 0 of a run on 2 ranks or more:
     * [epochs][timing_ranks] of compute and wait, NaN for the epochs this process did not train (those
     * before a resume); timing_ranks 0: no table. */
    int timing_ranks;
    struct rank_seconds *rank_seconds;
    char (*rank_hosts)[RESULTS_HOST]; /* [timing_ranks] */
};

void run_result_free(struct run_result *run);

/* A run that diverged: its final loss is not finite, or its accuracy is at chance (below the
 * share of the most frequent class plus 5% of the rest: 14.5% for ten balanced classes) with a
 * test loss above twice a uniform guess's (2 ln K), as training with too high a rate ends. A
 * short run still near a uniform guess has not learned yet and is not flagged. 1 with the reason
 * in why (written to the results as `diverged` and `diverged_reason`), else 0. */
int results_did_not_learn(const struct run_result *run, char *why, size_t size);

/* Where the runs of a results file came from: its file attributes (the data's description:
 * class_names, image_height, image_width, image_channels, mirror_invariant, data_name). */
struct results_origin {
    const char *command; /* the command line */
    int ranks, hosts;
    const struct data_description *data;
};

/* Write every run into path (replacing it atomically). */
int results_write(const char *path, const struct results_origin *origin, const struct run_result *runs,
                  int run_count, char *err);

#endif
