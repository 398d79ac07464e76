/* The run configuration: what the command line asked for, typed (enums for the command, the
 * model kind, the optimizer and the schedule; numbers; paths). The command line (cli) fills it
 * and is the only module that knows flag names; everything else reads this. */
#ifndef DPTRAIN_CONFIG_H
#define DPTRAIN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum command { CMD_NONE, CMD_CONVERT, CMD_TRAIN, CMD_COMPARE, CMD_EVAL };
enum model_kind { MODEL_MLP, MODEL_CNN };
/* OPT_DEFAULT: not chosen yet (the command line's default depends on the model: cli.c). */
enum optimizer_kind { OPT_SGD, OPT_ADAM, OPT_NESTEROV, OPT_DEFAULT };
enum schedule_kind { SCHEDULE_COSINE, SCHEDULE_STEP, SCHEDULE_CONSTANT };
/* The gradient on the wire: float32, bfloat16 with error feedback, or PowerSGD's rank-R factors
 * with error feedback (reducer.h, powersgd.h). */
enum compress_kind { COMPRESS_NONE, COMPRESS_BF16, COMPRESS_POWERSGD };
struct compression {
    enum compress_kind kind;
    int rank;                         /* PowerSGD's R; 0 otherwise */
};
#define CONFIG_POWERSGD_DEFAULT_RANK 4
#define CONFIG_POWERSGD_MAX_RANK 64
#define CONFIG_COMPRESS_LENGTH 16     /* "powersgd:64" and its terminator fit */

#define CONFIG_MAX_PCA_RUNS 16
/* --augment shifts training images by up to this many pixels each way, unless --augment-shift
 * (at most CONFIG_AUGMENT_SHIFT_MAX) says otherwise: a CNN 2 (its pooling absorbs the rest), an
 * MLP 1 (on the hold-out, PCA-50 inputs: 91.03% with 1, 90.19% with 2; docs/results-log.md). */
#define CONFIG_AUGMENT_SHIFT_CNN 2
#define CONFIG_AUGMENT_SHIFT_MLP 1
#define CONFIG_AUGMENT_SHIFT_MAX 4
/* --tta-shift's largest value: 2(2P+1)^2 = 50 views. */
#define CONFIG_TTA_SHIFT_MAX 2
#define CONFIG_MODEL_LENGTH 64
/* --lr's largest value; --batch-per-rank's scaled rate is held to it too. */
#define CONFIG_LR_MAX 10.0

struct config {
    enum command command;
    int want_help, want_version;
    /* paths (borrowed from argv) */
    const char *source;               /* convert: the folder of the four IDX files, or */
    const char *idx_files[4];         /* the four files: train images, train labels, test images, test labels */
    const char *class_names;          /* convert: "a,b,..." or NULL */
    int mirror_invariant;             /* convert: 1, 0, or -1 (a known set's answer, else no) */
    const char *data, *out, *checkpoint, *trace;
    int out_is_default;               /* --out not given: results/ may be created */
    const char *name;                 /* train: the run's name, NULL for the default */
    const char *command_line;         /* argv joined, for the results file */
    /* the network and its inputs */
    char model[CONFIG_MODEL_LENGTH];  /* the spec, e.g. mlp:256,128 or cnn */
    enum model_kind model_kind;
    int pca;                          /* train: K, 0 = raw pixels */
    int pca_list[CONFIG_MAX_PCA_RUNS]; /* compare */
    int pca_runs;
    /* optimisation */
    int epochs, batch;                /* batch: the global batch */
    int batch_per_rank;               /* weak scaling: batch = this x ranks, lr scaled (commands.c); 0 = off */
    enum optimizer_kind optimizer;
    double lr, momentum, weight_decay;
    enum schedule_kind schedule;
    double warmup;                    /* epochs of linear warm-up */
    double label_smoothing, dropout;
    double erase;                     /* --augment: probability of random erasing per image */
    int augment_shift;                /* --augment: the largest shift each way, in pixels */
    int flip;                         /* mirrored training and test views: 1, 0, or -1 until the data file's
                                         mirror_invariant decides (commands.c) */
    uint64_t seed;
    int augment, tta, validation;
    int eval_every;                   /* evaluate after every Nth epoch and the last */
    int tta_shift;                    /* --tta: the final predictions' views shifted up to this many pixels */
    int on_validation;                /* eval: the checkpoint's hold-out in place of the test set */
    /* execution */
    int deterministic;                /* the same bits on any rank count: virtual shards, exact sums (train.h) */
    int threads;                      /* 0: chosen from the node (1 with --deterministic) */
    int memory_budget;                /* MB of training images a rank holds, streamed from the file (stream.h);
                                         0 = its whole shard in memory */
    double bucket_mb;                 /* gradient allreduce buckets; 0 = one fused allreduce */
    struct compression compress;      /* the gradient on the wire */
    int shard_optimizer;              /* reduce-scatter, each rank updates its slice, allgather (reducer.h) */
    int quiet, checkpoint_every, resume;
    int checkpoint_sync;              /* write checkpoints on the main thread (else a background writer) */
    int overwrite;                    /* outputs that exist may be replaced (else refused: commands.c) */
    int drift_check;                  /* steps between checks that all ranks hold the same parameters; 0 = off */
    double stall_timeout;             /* seconds a collective may wait before the job ends; 0 = no watchdog */
    double max_time;                  /* minutes of a run after which training ends with the epoch under way; 0 = none */
};

const char *config_optimizer_name(enum optimizer_kind kind);
/* 0 and *kind set for a known name, -1 otherwise. */
int config_optimizer_parse(const char *name, enum optimizer_kind *kind);
const char *config_schedule_name(enum schedule_kind kind);
int config_schedule_parse(const char *name, enum schedule_kind *kind);
enum model_kind config_model_kind(const char *spec);
/* "none", "bf16", "powersgd:R" (at most CONFIG_COMPRESS_LENGTH bytes with the terminator). */
void config_compress_text(const struct compression *c, char *out, size_t size);
/* "none", "bf16", "powersgd" (rank CONFIG_POWERSGD_DEFAULT_RANK) or "powersgd:R" with R in
 * 1..CONFIG_POWERSGD_MAX_RANK: 0 and *c set, -1 otherwise. */
int config_compress_parse(const char *text, struct compression *c);

/* The options that messages outside cli name (cli_flag spells them as users type them). */
enum option {
    OPTION_DATA, OPTION_OUT, OPTION_CHECKPOINT, OPTION_TRACE, OPTION_SOURCE, OPTION_MODEL, OPTION_RESUME,
    OPTION_BATCH, OPTION_TTA, OPTION_STALL_TIMEOUT, OPTION_DETERMINISTIC, OPTION_OVERWRITE, OPTION_FLIP,
    OPTION_PCA, OPTION_MEMORY_BUDGET
};

/* The settings a run must keep to be resumed from its checkpoint, in the order they are compared.
 * The rank count is not one of them: a resume may run on any number of ranks (run_checkpoint.c). */
enum setting {
    SETTING_MODEL, SETTING_PCA, SETTING_BATCH, SETTING_EPOCHS, SETTING_SEED, SETTING_OPTIMIZER,
    SETTING_LR, SETTING_MOMENTUM, SETTING_WEIGHT_DECAY, SETTING_SCHEDULE, SETTING_WARMUP, SETTING_DROPOUT,
    SETTING_LABEL_SMOOTHING, SETTING_AUGMENT, SETTING_AUGMENT_SHIFT, SETTING_ERASE, SETTING_FLIP, SETTING_TTA,
    SETTING_TTA_SHIFT, SETTING_VALIDATION, SETTING_COMPRESS,
    SETTING_DETERMINISTIC, SETTING_NONE
};

/* The first setting in which two runs differ, or SETTING_NONE. */
enum setting config_first_difference(const struct config *a, const struct config *b);
/* A setting's value as text, for messages. */
void config_setting_value(const struct config *c, enum setting s, char *out, size_t size);

#endif
