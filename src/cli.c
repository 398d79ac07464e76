#include "dptrain/cli.h"

#include "dptrain/check.h"
#include "dptrain/dataset.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum value_kind { V_STRING, V_INT, V_DOUBLE, V_FLAG, V_FLAG_OFF, V_SEED, V_PCA, V_MODEL, V_OPTIMIZER, V_SCHEDULE, V_COMPRESS,
                  V_YES_NO };

#define FOR_CONVERT (1u << CMD_CONVERT)
#define FOR_TRAIN (1u << CMD_TRAIN)
#define FOR_COMPARE (1u << CMD_COMPARE)
#define FOR_EVAL (1u << CMD_EVAL)
#define FOR_TRAINING (FOR_TRAIN | FOR_COMPARE)

struct flag {
    const char *name;
    enum value_kind kind;
    size_t offset;
    unsigned commands;
    double min, max;          /* inclusive bounds for numbers */
    const char *help;
};

#define AT(field) offsetof(struct config, field)

static const struct flag flags[] = {
    {"--source", V_STRING, AT(source), FOR_CONVERT, 0, 0,
     "folder of an MNIST-format IDX set: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
     "and t10k-labels-idx1-ubyte, each plain or .gz (default /usr/share/datasets/fashion-mnist)"},
    {"--train-images", V_STRING, AT(idx_files[0]), FOR_CONVERT, 0, 0,
     "the training images' IDX file, [N][H][W] or [N][H][W][C] (with the other three in place of --source)"},
    {"--train-labels", V_STRING, AT(idx_files[1]), FOR_CONVERT, 0, 0, "the training labels' IDX file"},
    {"--test-images", V_STRING, AT(idx_files[2]), FOR_CONVERT, 0, 0, "the test images' IDX file"},
    {"--test-labels", V_STRING, AT(idx_files[3]), FOR_CONVERT, 0, 0, "the test labels' IDX file"},
    {"--class-names", V_STRING, AT(class_names), FOR_CONVERT, 0, 0,
     "the classes' names in label order, comma-separated (default: Fashion-MNIST's for it, else 0,1,...,K-1 "
     "with K the largest label + 1)"},
    {"--mirror-invariant", V_YES_NO, AT(mirror_invariant), FOR_CONVERT, 0, 0,
     "yes if a mirror image keeps its class (clothes, most objects), no if not (digits, letters); training "
     "flips images only where yes (default yes for Fashion-MNIST, else no)"},
    {"--data", V_STRING, AT(data), FOR_TRAINING | FOR_EVAL, 0, 0,
     "HDF5 data file (default data/fashion-mnist.h5)"},
    {"--out", V_STRING, AT(out), FOR_CONVERT | FOR_TRAINING | FOR_EVAL, 0, 0,
     "output file (convert: data/fashion-mnist.h5; train: results/train.h5; compare: "
     "results/compare.h5; eval: results/eval.h5)"},
    {"--model", V_MODEL, AT(model), FOR_TRAINING, 0, 0,
     "network: mlp (hidden layers 256,128), mlp:H1,H2,..., cnn (32,p,64,p,f256) or cnn:TOKENS (default "
     "mlp:512,512)"},
    {"--pca", V_PCA, AT(pca), FOR_TRAINING, 1, DATASET_MAX_IMAGE_VALUES,
     "train: K principal components as inputs (1..D, D = the values of an image, HxWxC); compare: list like "
     "0,50,100 (0 = raw)"},
    {"--epochs", V_INT, AT(epochs), FOR_TRAINING, 1, 100000,
     "epochs (default 60 with --augment; without it 30 for an MLP, 20 for a CNN)"},
    {"--batch", V_INT, AT(batch), FOR_TRAINING, 1, 1 << 20, "GLOBAL batch size, shared by the ranks (default 256 for an augmented MLP, else 128)"},
    {"--batch-per-rank", V_INT, AT(batch_per_rank), FOR_TRAINING, 1, 1 << 16,
     "weak scaling: each rank's batch; the global batch is this times the ranks and the learning rate "
     "grows with it (--lr x global / 128); exclusive with --batch"},
    {"--optimizer", V_OPTIMIZER, AT(optimizer), FOR_TRAINING, 0, 0, "sgd, nesterov (SGD with Nesterov momentum) or adam (default nesterov for cnn with --augment, else adam)"},
    {"--lr", V_DOUBLE, AT(lr), FOR_TRAINING, 1e-12, CONFIG_LR_MAX, "peak learning rate (default 0.001 adam, 0.002 adam for an augmented MLP with the default batch, 0.05 sgd "
     "and nesterov)"},
    {"--momentum", V_DOUBLE, AT(momentum), FOR_TRAINING, 0, 0.999999, "SGD and Nesterov momentum (default 0.9)"},
    {"--weight-decay", V_DOUBLE, AT(weight_decay), FOR_TRAINING, 0, 1,
     "decoupled weight decay on weights, not biases (default 0.0005 for cnn with --augment and SGD or nesterov, "
     "else 0.0001)"},
    {"--schedule", V_SCHEDULE, AT(schedule), FOR_TRAINING, 0, 0,
     "learning-rate decay after warm-up: cosine, step or constant (default cosine)"},
    {"--warmup", V_DOUBLE, AT(warmup), FOR_TRAINING, 0, 1000, "epochs of linear warm-up (default 1)"},
    {"--label-smoothing", V_DOUBLE, AT(label_smoothing), FOR_TRAINING, 0, 0.5,
     "label smoothing of the cross-entropy target (default 0.1 for an MLP, 0 for a CNN)"},
    {"--dropout", V_DOUBLE, AT(dropout), FOR_TRAINING, 0, 0.95,
     "dropout after each hidden dense layer (default 0 for an augmented MLP, else 0.1)"},
    {"--seed", V_SEED, AT(seed), FOR_TRAINING, 0, 0, "random seed (default 1)"},
    {"--threads", V_INT, AT(threads), FOR_TRAINING | FOR_EVAL, 1, 256,
     "BLAS threads per rank (default OPENBLAS_NUM_THREADS, else the node's cores shared among its ranks)"},
    {"--bucket-mb", V_DOUBLE, AT(bucket_mb), FOR_TRAINING, 0, 1024,
     "reduce the gradients in buckets of at least this many MB, started during backward; 0 = one "
     "blocking allreduce after backward (default 0: faster on one node, see docs/performance.md)"},
    {"--compress", V_COMPRESS, AT(compress), FOR_TRAINING, 0, 0,
     "the gradient on the wire: none (float32), bf16 (half the bytes) or powersgd[:R] (each large weight matrix's rank-R factors, R 1-64, default 4); both with error feedback (default none)"},
    {"--shard-optimizer", V_FLAG, AT(shard_optimizer), FOR_TRAINING, 0, 0,
     "each rank updates 1/N of the parameters: a reduce-scatter of the gradient, the optimizer on this rank's "
     "slice, an allgather of the parameters (ZeRO stage 1; docs/training.md says when it wins)"},
    {"--deterministic", V_FLAG, AT(deterministic), FOR_TRAINING, 0, 0,
     "the same parameters, losses and predictions, bit for bit, on any number of ranks (1..12) and hosts, and "
     "on a resume at another rank count: 12 virtual shards, exact gradient sums, 1 BLAS thread by default; "
     "slower (docs/reproducibility.md)"},
    {"--trace", V_STRING, AT(trace), FOR_TRAINING, 0, 0,
     "write a Chrome trace-event JSON of every step's phases, all ranks in one file"},
    {"--augment", V_FLAG, AT(augment), FOR_TRAINING, 0, 0,
     "random flips (see --flip) and shifts of training images (default for an MLP; a CNN needs the flag)"},
    {"--flip", V_YES_NO, AT(flip), FOR_TRAINING, 0, 0,
     "whether training (--augment) and test-time views (--tta) mirror images: yes or no (default: the data "
     "file's mirror_invariant)"},
    {"--no-augment", V_FLAG_OFF, AT(augment), FOR_TRAINING, 0, 0, "train on the images as they are"},
    {"--augment-shift", V_INT, AT(augment_shift), FOR_TRAINING, 0, CONFIG_AUGMENT_SHIFT_MAX,
     "with --augment: the largest shift of a training image each way, in pixels (default 1 for an MLP, 2 for a CNN)"},
    {"--erase", V_DOUBLE, AT(erase), FOR_TRAINING, 0, 1,
     "with --augment: the probability that a random rectangle (2-40% of an image) of a training image is set to the mean pixel, with --pca to background (random erasing; default 0)"},
    {"--tta", V_FLAG, AT(tta), FOR_TRAINING | FOR_EVAL, 0, 0,
     "test-time augmentation: average the logits of each image and its mirror image (where flips are allowed; "
     "with --pca, the mirror image projected; default with --augment)"},
    {"--no-tta", V_FLAG_OFF, AT(tta), FOR_TRAINING | FOR_EVAL, 0, 0, "evaluate each image as it is"},
    {"--tta-shift", V_INT, AT(tta_shift), FOR_TRAINING | FOR_EVAL, 0, CONFIG_TTA_SHIFT_MAX,
     "with --tta: the final predictions also see both views shifted by up to P pixels each way, 2(2P+1)^2 "
     "views, (2P+1)^2 without flips (default 1, 18 views; 0: the image and its mirror image; the evaluations "
     "after each epoch use those two)"},
    {"--validation", V_INT, AT(validation), FOR_TRAINING, 0, INT_MAX,
     "hold out N training images; keep the epoch with the best validation accuracy (default 0)"},
    {"--name", V_STRING, AT(name), FOR_TRAIN, 0, 0, "name of the run in the results file (default raw or pcaK)"},
    {"--quiet", V_FLAG, AT(quiet), FOR_TRAINING, 0, 0, "print only the final summary"},
    {"--on-validation", V_FLAG, AT(on_validation), FOR_EVAL, 0, 0,
     "evaluate the run's --validation hold-out (the training images it held out) in place of the test set, "
     "to choose evaluation settings such as --tta-shift without the test set; the results' test figures "
     "are then the hold-out's (evaluated_set validation)"},
    {"--checkpoint", V_STRING, AT(checkpoint), FOR_TRAIN | FOR_EVAL, 0, 0,
     "train: save the state here after every epoch (and on SIGTERM/SIGUSR1); eval: the checkpoint to evaluate"},
    {"--checkpoint-every", V_INT, AT(checkpoint_every), FOR_TRAIN, 1, INT_MAX,
     "also save every N steps within an epoch"},
    {"--checkpoint-sync", V_FLAG, AT(checkpoint_sync), FOR_TRAIN, 0, 0,
     "write each checkpoint before training goes on (the default hands the file, built in memory at the step "
     "boundary, to a background thread that writes, syncs and renames it while training goes on)"},
    {"--resume", V_FLAG, AT(resume), FOR_TRAIN, 0, 0, "continue from --checkpoint"},
    {"--overwrite", V_FLAG, AT(overwrite), FOR_TRAINING | FOR_EVAL, 0, 0,
     "replace outputs (--out, --checkpoint without --resume, --trace) that already exist; without it such a "
     "file, a previous run's, is refused before any work"},
    {"--drift-check", V_INT, AT(drift_check), FOR_TRAINING, 0, INT_MAX,
     "every N steps check that all ranks hold the same parameters (a hash compared over the ranks); "
     "0 = never (default 200)"},
    {"--stall-timeout", V_DOUBLE, AT(stall_timeout), FOR_TRAINING | FOR_EVAL, 0, 1e6,
     "end the job when a collective has waited this many seconds for ranks that do not arrive (a host or "
     "link lost, a rank stopped); slow evaluation, checkpoints and PCA fits do not count; at least 1, or 0 = off "
     "(default 30)"},
    {"--eval-every", V_INT, AT(eval_every), FOR_TRAINING, 1, INT_MAX,
     "evaluate the test set (and --validation's hold-out) after every Nth epoch and after the last one; the "
     "history holds NaN for the others, and --validation chooses among the evaluated epochs (default: every epoch "
     "up to 19 epochs, else every epochs/10th, about ten evaluations)"},
    {"--memory-budget", V_INT, AT(memory_budget), FOR_TRAIN, 1, 1 << 24,
     "train on data larger than memory: each rank streams its shard of the training set from the data file "
     "through MB megabytes (two windows of chunks read ahead by a thread, shuffled by chunk and within a window, "
     "docs/training.md) instead of holding it; the test and --validation sets stay in memory; not with --pca or "
     "--deterministic (default: hold the shard)"},
    {"--max-time", V_DOUBLE, AT(max_time), FOR_TRAINING, 0, 1e7,
     "a time budget in minutes: training ends after the epoch during which it runs out (timed from the run's "
     "start, each run of compare on its own), with the checkpoint and results written as for a finished run "
     "and ended_by max-time in the results; the learning rate still follows --epochs; 0 = none (default 0)"},
};

static const struct {
    const char *name;
    enum command command;
    const char *summary;
} commands[] = {
    {"convert", CMD_CONVERT, "convert the IDX files into the HDF5 data file"},
    {"train", CMD_TRAIN, "train one network (run under mpirun for several ranks)"},
    {"compare", CMD_COMPARE, "train once per --pca entry with the same settings and compare"},
    {"eval", CMD_EVAL, "evaluate a checkpoint on the test set"},
};

const char *cli_command_name(enum command command)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].command == command)
            return commands[i].name;
    return "dptrain";
}

static void set_defaults(struct config *o)
{
    memset(o, 0, sizeof *o);
    o->source = NULL;        /* the packaged Fashion-MNIST unless the four files are named: below */
    o->mirror_invariant = -1;
    o->flip = -1;
    o->data = "data/fashion-mnist.h5";
    snprintf(o->model, sizeof o->model, "mlp:512,512");
    o->epochs = 0; /* chosen by model below */
    o->batch = 0; /* 128 unless --batch-per-rank: chosen below */
    o->optimizer = OPT_DEFAULT; /* chosen by model below */
    o->lr = -1;                 /* chosen by optimizer below */
    o->momentum = 0.9;
    o->weight_decay = -1;       /* chosen by model and optimizer below */
    o->schedule = SCHEDULE_COSINE;
    o->warmup = 1;
    o->dropout = -1;         /* chosen by model below */
    o->augment = -1;         /* chosen by model below */
    o->label_smoothing = -1; /* chosen by model below */
    o->erase = -1;           /* chosen below */
    o->augment_shift = -1;   /* chosen below */
    o->tta = -1;             /* chosen by model below */
    o->tta_shift = -1;       /* chosen by tta below */
    o->seed = 1;
    o->threads = 0;          /* chosen per node at start-up (train.c) */
    o->drift_check = 200; /* a hash of 1.9M floats every 200 MLP steps: well under 1% of the time */
    o->eval_every = 0; /* chosen from --epochs */
    o->stall_timeout = 30; /* a step's collectives wait milliseconds; 30 s is a lost rank, not a slow one */
    o->bucket_mb = 0; /* measured: the fused allreduce is faster on one node (docs/performance.md) */
}

static int parse_int(const char *flag, const char *text, double min, double max, int *out, char *err)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0)
        FAIL("%s: expected a whole number, got '%s'", flag, text);
    if (value < min || value > max)
        FAIL("%s: %ld is out of range %.0f..%.0f", flag, value, min, max);
    *out = (int)value;
    return 0;
fail:
    return -1;
}

static int parse_double(const char *flag, const char *text, double min, double max, double *out,
                        char *err)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(value))
        FAIL("%s: expected a number, got '%s'", flag, text);
    if (value < min || value > max)
        FAIL("%s: %g is out of range %g..%g", flag, value, min, max);
    *out = value;
    return 0;
fail:
    return -1;
}

static int parse_seed(const char *flag, const char *text, uint64_t *out, char *err)
{
    char *end;
    errno = 0;
    if (text[0] == '-' || text[0] == '\0')
        FAIL("%s: expected a non-negative whole number, got '%s'", flag, text);
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0)
        FAIL("%s: expected a non-negative whole number, got '%s'", flag, text);
    *out = value;
    return 0;
fail:
    return -1;
}

/* train: one K from 1. compare: a comma list of K from 0 (0 = raw pixels). At most an image's
 * values, which only the data file knows: train.c checks. */
static int parse_pca(const char *flag, const char *text, struct config *o, char *err)
{
    if (o->command == CMD_TRAIN)
        return parse_int(flag, text, 1, DATASET_MAX_IMAGE_VALUES, &o->pca, err);
    if (text[0] == '\0')
        FAIL("%s: empty list (expected something like 0,50,100)", flag);
    o->pca_runs = 0;
    const char *p = text;
    while (1) {
        char item[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item)
            FAIL("%s: malformed list '%s' (expected something like 0,50,100)", flag, text);
        memcpy(item, p, len);
        item[len] = '\0';
        if (o->pca_runs == CONFIG_MAX_PCA_RUNS)
            FAIL("%s: at most %d entries", flag, CONFIG_MAX_PCA_RUNS);
        int k;
        if (parse_int(flag, item, 0, DATASET_MAX_IMAGE_VALUES, &k, err) != 0)
            goto fail;
        for (int i = 0; i < o->pca_runs; i++)
            if (o->pca_list[i] == k)
                FAIL("%s: %d appears twice in the list", flag, k);
        o->pca_list[o->pca_runs++] = k;
        p += len;
        if (*p == '\0')
            break;
        p++;
    }
    return 0;
fail:
    return -1;
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static int apply_flag(const struct flag *f, const char *value, struct config *o, char *err)
{
    char *base = (char *)o;
    switch (f->kind) {
    case V_STRING:
        if (value[0] == '\0')
            FAIL("%s: empty value", f->name);
        *(const char **)(base + f->offset) = value;
        return 0;
    case V_INT:
        return parse_int(f->name, value, f->min, f->max, (int *)(base + f->offset), err);
    case V_DOUBLE:
        return parse_double(f->name, value, f->min, f->max, (double *)(base + f->offset), err);
    case V_SEED:
        return parse_seed(f->name, value, (uint64_t *)(base + f->offset), err);
    case V_PCA:
        return parse_pca(f->name, value, o, err);
    case V_MODEL:
        if (value[0] == '\0' || strlen(value) >= CONFIG_MODEL_LENGTH)
            FAIL("%s: the spec must have 1 to %d characters", f->name, CONFIG_MODEL_LENGTH - 1);
        snprintf(o->model, sizeof o->model, "%s", value);
        return 0;
    case V_OPTIMIZER:
        if (config_optimizer_parse(value, &o->optimizer) != 0)
            FAIL("%s: unknown optimizer '%s' (expected sgd, nesterov or adam)", f->name, value);
        return 0;
    case V_SCHEDULE:
        if (config_schedule_parse(value, &o->schedule) != 0)
            FAIL("%s: unknown schedule '%s' (expected cosine, step or constant)", f->name, value);
        return 0;
    case V_COMPRESS:
        if (config_compress_parse(value, &o->compress) != 0)
            FAIL("%s: unknown compression '%s' (expected none, bf16, powersgd or powersgd:R with R from 1 to %d)",
                 f->name, value, CONFIG_POWERSGD_MAX_RANK);
        return 0;
    case V_YES_NO:
        if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0)
            FAIL("%s: expected yes or no, got '%s'", f->name, value);
        *(int *)(base + f->offset) = strcmp(value, "yes") == 0;
        return 0;
    case V_FLAG:
        *(int *)(base + f->offset) = 1;
        return 0;
    case V_FLAG_OFF:
        *(int *)(base + f->offset) = 0;
        return 0;
    }
fail:
    return -1;
}

/* A run name becomes an HDF5 group (/runs/NAME) and is stored in checkpoints (63 bytes): letters,
 * digits and . _ - + =, and not "." or "..", which HDF5 reads as paths. */
static int check_name(const char *name, char *err)
{
    size_t length = strlen(name);
    if (length > 63)
        FAIL("--name: '%.20s...' has %zu characters (at most 63)", name, length);
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        FAIL("--name: '%s' is not a name (use letters, digits and . _ - + =)", name);
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-+=", *p))
            FAIL("--name: '%s' has the character '%c' (use letters, digits and . _ - + =)", name, *p);
    return 0;
fail:
    return -1;
}

/* convert: --source or the four files, not both and not some of them. */
static int choose_sources(struct config *o, char *err)
{
    static const char *const names[4] = {"--train-images", "--train-labels", "--test-images", "--test-labels"};
    int given = 0;
    for (int i = 0; i < 4; i++)
        given += o->idx_files[i] != NULL;
    if (given > 0 && o->source)
        FAIL("--source and %s are exclusive: give the folder of the four IDX files, or the four files",
             names[o->idx_files[0] ? 0 : o->idx_files[1] ? 1 : o->idx_files[2] ? 2 : 3]);
    for (int i = 0; given > 0 && i < 4; i++)
        if (!o->idx_files[i])
            FAIL("%s is missing: with named IDX files, give all four (--train-images, --train-labels, --test-images, "
                 "--test-labels)", names[i]);
    if (given == 0 && !o->source)
        o->source = "/usr/share/datasets/fashion-mnist";
    return 0;
fail:
    return -1;
}

static int check_choices(const struct config *o, char *err)
{
    if (o->name && check_name(o->name, err) != 0)
        goto fail;
    if (o->command == CMD_COMPARE && o->pca_runs == 0)
        FAIL("compare: --pca LIST is required (for example --pca 0,50,100)");
    if (o->resume && !o->checkpoint)
        FAIL("--resume needs --checkpoint FILE");
    if (o->checkpoint_every && !o->checkpoint)
        FAIL("--checkpoint-every needs --checkpoint FILE");
    if (o->checkpoint_sync && !o->checkpoint)
        FAIL("--checkpoint-sync needs --checkpoint FILE");
    if (o->command == CMD_EVAL && !o->checkpoint)
        FAIL("eval: --checkpoint FILE is required");
    char compress[CONFIG_COMPRESS_LENGTH];
    config_compress_text(&o->compress, compress, sizeof compress);
    if (o->deterministic && o->compress.kind != COMPRESS_NONE)
        FAIL("--deterministic cannot be combined with --compress %s: its error-feedback residuals belong to ranks, "
             "so the result would depend on their number", compress);
    if (o->shard_optimizer && o->compress.kind != COMPRESS_NONE)
        FAIL("--shard-optimizer reduce-scatters the whole float32 gradient after backward: it cannot be combined "
             "with --compress %s", compress);
    if (o->shard_optimizer && (o->bucket_mb > 0 || o->deterministic))
        FAIL("--shard-optimizer reduce-scatters the whole float32 gradient after backward: it cannot be combined "
             "with %s", o->deterministic ? "--deterministic" : "--bucket-mb");
    if (o->memory_budget > 0 && (o->pca > 0 || o->deterministic))
        FAIL("--memory-budget cannot be combined with %s: %s", o->pca > 0 ? "--pca" : "--deterministic",
             o->pca > 0 ? "the PCA basis is fitted on the training images held in memory"
                        : "its virtual shards each keep their own order of samples held in memory");
    if (o->deterministic && o->batch_per_rank > 0)
        FAIL("--deterministic cannot be combined with --batch-per-rank: the global batch would change with the "
             "number of ranks (give --batch)");
    return 0;
fail:
    return -1;
}

static void set_output_default(struct config *o)
{
    if (o->out)
        return;
    o->out_is_default = o->command != CMD_CONVERT;
    if (o->command == CMD_CONVERT)
        o->out = "data/fashion-mnist.h5";
    else if (o->command == CMD_COMPARE)
        o->out = "results/compare.h5";
    else if (o->command == CMD_EVAL)
        o->out = "results/eval.h5";
    else
        o->out = "results/train.h5";
}

/* The settings the command line left to us, and those that need another one. Defaults chosen by
 * measurement, on a validation hold-out (docs/results-log.md and docs/training.md, "The convolutional network", has
 * the figures): an MLP is 512-512 wide, trains 60 epochs on flipped images moved by up to a
 * pixel, without dropout and with label smoothing 0.1 (hold-out: 91.66%, against 91.77% for
 * 1024-1024 with dropout 0.1 in three times the FLOPs, and 91.43% for the former 512-256, 30
 * epochs, unaugmented; on 50 principal components 90.98%); an augmented CNN keeps improving for
 * 60 epochs, trains best with Nesterov's momentum and weight decay 5e-4. An augmented network is
 * evaluated on each image and its mirror image, as it was trained on both; its final predictions
 * also on both moved by a pixel (18 views; CNN hold-out: 94.61% against 94.48% with 2 and 94.59%
 * with 50). */
static int choose_defaults(struct config *o, char *err)
{
    if (o->batch > 0 && o->batch_per_rank > 0)
        FAIL("--batch-per-rank and --batch are exclusive: give the global batch or each rank's, not both");
    o->model_kind = config_model_kind(o->model);
    int cnn = o->model_kind == MODEL_CNN;
    if (o->augment < 0)
        o->augment = !cnn;
    /* The augmented MLP steps 256 images at twice the rate: on the hold-out 91.73-91.77% against
     * 91.82% for 128 (within run-to-run noise), in 20% less time, its GEMMs larger. */
    int wide_batch = !cnn && o->augment && o->batch == 0 && o->batch_per_rank == 0;
    if (o->batch == 0 && o->batch_per_rank == 0)
        o->batch = wide_batch ? 256 : 128;
    if (o->optimizer == OPT_DEFAULT)
        o->optimizer = cnn && o->augment ? OPT_NESTEROV : OPT_ADAM;
    if (o->weight_decay < 0)
        o->weight_decay = cnn && o->augment && o->optimizer != OPT_ADAM ? 5e-4 : 1e-4;
    if (o->lr < 0)
        o->lr = o->optimizer != OPT_ADAM ? 0.05 : wide_batch ? 2e-3 : 1e-3;
    if (o->tta < 0 && o->command != CMD_EVAL) /* eval: as the checkpoint's run */
        o->tta = o->augment;
    if (o->tta == 0 && o->tta_shift > 0)
        FAIL("--tta-shift %d needs --tta: the shifted views are test-time augmentation's", o->tta_shift);
    if (o->tta_shift < 0 && o->command != CMD_EVAL) /* eval: as the checkpoint's run */
        o->tta_shift = o->tta ? 1 : 0;
    if (o->epochs == 0)
        o->epochs = o->augment ? 60 : cnn ? 20 : 30;
    /* About ten evaluations a run: each is a forward pass over the test set (and the hold-out) with 2
     * views, a tenth of an MLP epoch; every epoch's cost 7% of the default MLP's time. */
    if (o->eval_every == 0)
        o->eval_every = o->epochs >= 20 ? o->epochs / 10 : 1;
    /* The augmented images regularise the MLP enough: dropout 0.1 cost the 512-512 network 0.17
     * points on the hold-out (91.49% against 91.66% without). */
    if (o->dropout < 0)
        o->dropout = !cnn && o->augment ? 0 : 0.1;
    if (o->label_smoothing < 0)
        o->label_smoothing = cnn ? 0 : 0.1;
    if (o->erase > 0 && !o->augment)
        FAIL("--erase %g needs --augment: erasing is part of the training images' augmentation", o->erase);
    if (o->erase < 0)
        o->erase = 0;
    if (o->augment_shift >= 0 && !o->augment)
        FAIL("--augment-shift %d needs --augment: shifting is part of the training images' augmentation",
             o->augment_shift);
    if (o->augment_shift < 0)
        o->augment_shift = !o->augment ? 0 : cnn ? CONFIG_AUGMENT_SHIFT_CNN : CONFIG_AUGMENT_SHIFT_MLP;
    /* A watchdog limit below a second ends healthy runs (a collective on a shared, busy machine
     * waits that long) with two lines that contradict each other. */
    if (o->stall_timeout > 0 && o->stall_timeout < 1)
        FAIL("--stall-timeout %g: below 1 s would end healthy runs; give at least 1, or 0 to turn the watchdog off",
             o->stall_timeout);
    return 0;
fail:
    return -1;
}

int cli_parse(int argc, char **argv, struct config *o, char *err)
{
    set_defaults(o);
    if (argc < 2)
        FAIL("no command given (try 'dptrain --help')");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        o->want_help = 1;
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        o->want_version = 1;
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            o->command = commands[i].command;
    if (o->command == CMD_NONE)
        FAIL("unknown command '%s' (expected convert, train, compare or eval)", argv[1]);
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            o->want_help = 1;
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            FAIL("unexpected argument '%s' (flags start with --)", arg);
        const char *equals = strchr(arg, '=');
        size_t name_len = equals ? (size_t)(equals - arg) : strlen(arg);
        const struct flag *f = find_flag(arg, name_len);
        if (!f)
            FAIL("%.*s: unknown flag for '%s' (see 'dptrain %s --help')", (int)name_len, arg,
                 argv[1], argv[1]);
        if (!(f->commands & (1u << o->command)))
            FAIL("%s: not a flag of '%s' (see 'dptrain %s --help')", f->name, argv[1], argv[1]);
        const char *value = NULL;
        if (f->kind == V_FLAG || f->kind == V_FLAG_OFF) {
            if (equals)
                FAIL("%s takes no value", f->name);
        } else if (equals) {
            value = equals + 1;
        } else {
            /* "--epochs --data x": a flag where the value should be is a missing value. */
            if (i + 1 >= argc || (strncmp(argv[i + 1], "--", 2) == 0 &&
                                  find_flag(argv[i + 1], strcspn(argv[i + 1], "=")) != NULL))
                FAIL("%s needs a value", f->name);
            value = argv[++i];
        }
        if (apply_flag(f, value ? value : "", o, err) != 0)
            goto fail;
    }
    CHECK_DP(choose_defaults(o, err));
    if (o->command == CMD_CONVERT)
        CHECK_DP(choose_sources(o, err));
    set_output_default(o);
    return check_choices(o, err);
fail:
    return -1;
}

void cli_print_help(FILE *out, enum command command)
{
    if (command == CMD_NONE) {
        fprintf(out, "dptrain %s: data-parallel neural-network training on MPI, OpenBLAS and HDF5\n\n"
                     "usage: dptrain COMMAND [flags]     (mpirun -np N dptrain train ... for N ranks)\n\n"
                     "commands:\n", DPTRAIN_VERSION);
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
        fprintf(out, "\n'dptrain COMMAND --help' lists the flags of a command; --version prints the version.\n");
        return;
    }
    fprintf(out, "usage: dptrain %s [flags]\n\nflags:\n", cli_command_name(command));
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!(flags[i].commands & (1u << command)))
            continue;
        enum value_kind kind = flags[i].kind;
        int number = kind == V_INT || kind == V_DOUBLE || kind == V_SEED || kind == V_PCA;
        const char *value = kind == V_FLAG || kind == V_FLAG_OFF ? "" : kind == V_YES_NO ? " yes|no" : number ? " N" : " VALUE";
        char left[40];
        snprintf(left, sizeof left, "%s%s", flags[i].name, value);
        fprintf(out, "  %-22s %s\n", left, flags[i].help);
    }
}

const char *cli_setting_flag(enum setting s)
{
    static const char *const flags_of[] = {
        [SETTING_MODEL] = "--model", [SETTING_PCA] = "--pca", [SETTING_BATCH] = "--batch",
        [SETTING_EPOCHS] = "--epochs", [SETTING_SEED] = "--seed",
        [SETTING_OPTIMIZER] = "--optimizer", [SETTING_LR] = "--lr", [SETTING_MOMENTUM] = "--momentum",
        [SETTING_WEIGHT_DECAY] = "--weight-decay", [SETTING_SCHEDULE] = "--schedule", [SETTING_WARMUP] = "--warmup",
        [SETTING_DROPOUT] = "--dropout", [SETTING_LABEL_SMOOTHING] = "--label-smoothing",
        [SETTING_AUGMENT] = "--augment",
        [SETTING_AUGMENT_SHIFT] = "--augment-shift", [SETTING_ERASE] = "--erase", [SETTING_FLIP] = "--flip",
        [SETTING_TTA] = "--tta",
        [SETTING_TTA_SHIFT] = "--tta-shift", [SETTING_VALIDATION] = "--validation",
        [SETTING_COMPRESS] = "--compress", [SETTING_DETERMINISTIC] = "--deterministic",
        [SETTING_NONE] = "",
    };
    return flags_of[s];
}

const char *cli_flag(enum option o)
{
    static const char *const flags_of[] = {
        [OPTION_DATA] = "--data", [OPTION_OUT] = "--out", [OPTION_CHECKPOINT] = "--checkpoint",
        [OPTION_TRACE] = "--trace", [OPTION_SOURCE] = "--source", [OPTION_MODEL] = "--model",
        [OPTION_RESUME] = "--resume", [OPTION_BATCH] = "--batch", [OPTION_TTA] = "--tta",
        [OPTION_STALL_TIMEOUT] = "--stall-timeout", [OPTION_DETERMINISTIC] = "--deterministic",
        [OPTION_OVERWRITE] = "--overwrite", [OPTION_FLIP] = "--flip", [OPTION_PCA] = "--pca", [OPTION_MEMORY_BUDGET] = "--memory-budget",
    };
    return flags_of[o];
}

/* ---- the command line of a configuration -------------------------------------------------- */

/* The shortest decimal that reads back as exactly this double (0.1, not 0.10000000000000001). */
static void exact_number(double value, char *out, size_t size)
{
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(out, size, "%.*g", digits, value);
        if (strtod(out, NULL) == value)
            return;
    }
}

/* A word as a POSIX shell reads it: bare when it is made of safe characters, else in single
 * quotes (a quote inside written '\''). */
static size_t shell_word(const char *word, char *out, size_t size)
{
    size_t used = 0;
    int bare = word[0] != '\0' && strspn(word, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:,=+-@%") ==
                                     strlen(word);
    if (bare)
        return (size_t)snprintf(out, size, "%s", word);
    used += (size_t)snprintf(out, size, "'");
    for (const char *c = word; *c && used < size; c++)
        used += (size_t)snprintf(out + used, size - used, *c == '\'' ? "'\\''" : "%c", *c);
    if (used < size)
        used += (size_t)snprintf(out + used, size - used, "'");
    return used;
}

/* A flag's value in o as text; 0 when the flag is absent from the command line (an unset path,
 * a switch that is off, --pca 0), 1 with the value in value (empty for a switch that is on). */
static int flag_value(const struct config *o, const struct flag *f, char *value, size_t size)
{
    const char *base = (const char *)o;
    value[0] = '\0';
    switch (f->kind) {
    case V_STRING: {
        const char *text = *(const char *const *)(base + f->offset);
        if (!text)
            return 0;
        shell_word(text, value, size);
        return 1;
    }
    case V_INT: /* below the flag's minimum: unset (--threads 0 is "chosen from the node") */
        snprintf(value, size, "%d", *(const int *)(base + f->offset));
        return *(const int *)(base + f->offset) >= f->min;
    case V_DOUBLE:
        exact_number(*(const double *)(base + f->offset), value, size);
        return *(const double *)(base + f->offset) >= f->min;
    case V_SEED:
        snprintf(value, size, "%llu", (unsigned long long)*(const uint64_t *)(base + f->offset));
        return 1;
    case V_PCA:
        if (o->command != CMD_COMPARE) {
            snprintf(value, size, "%d", o->pca);
            return o->pca > 0;
        }
        for (int i = 0, used = 0; i < o->pca_runs && (size_t)used < size; i++)
            used += snprintf(value + used, size - (size_t)used, "%s%d", i ? "," : "", o->pca_list[i]);
        return 1;
    case V_MODEL:
        shell_word(o->model, value, size);
        return 1;
    case V_OPTIMIZER:
        snprintf(value, size, "%s", config_optimizer_name(o->optimizer));
        return 1;
    case V_SCHEDULE:
        snprintf(value, size, "%s", config_schedule_name(o->schedule));
        return 1;
    case V_COMPRESS:
        config_compress_text(&o->compress, value, size);
        return 1;
    case V_YES_NO:
        snprintf(value, size, "%s", *(const int *)(base + f->offset) ? "yes" : "no");
        return *(const int *)(base + f->offset) >= 0;
    case V_FLAG:
        return *(const int *)(base + f->offset) != 0;
    case V_FLAG_OFF:
        return *(const int *)(base + f->offset) == 0;
    }
    return 0;
}

/* A flag that only means something under another (--augment-shift and --erase under --augment,
 * --tta-shift under --tta), whose parent is off: the parser would refuse it. */
static int parent_off(const struct config *o, const struct flag *f)
{
    if (f->offset == AT(augment_shift) || f->offset == AT(erase))
        return !o->augment;
    return f->offset == AT(tta_shift) && o->tta <= 0;
}

/* Flags that say where files go or how the run reports, not how it computes. */
static int is_setting(const struct flag *f)
{
    static const char *const not_settings[] = {"--out",   "--checkpoint",    "--checkpoint-every", "--trace", "--checkpoint-sync",
                                               "--quiet", "--resume",        "--overwrite",        "--stall-timeout",
                                               "--name",  "--batch-per-rank", "--drift-check",      "--max-time"};
    for (size_t i = 0; i < sizeof not_settings / sizeof not_settings[0]; i++)
        if (strcmp(f->name, not_settings[i]) == 0)
            return 0;
    return 1;
}

void cli_command_line(const struct config *o, int everything, char *out, size_t size)
{
    char value[4 * 4096 + 16]; /* a path of up to 4095 characters, each quoted at worst as 4 */
    size_t used = (size_t)snprintf(out, size, "%s", cli_command_name(o->command));
    for (size_t i = 0; i < sizeof flags / sizeof flags[0] && used < size; i++) {
        const struct flag *f = &flags[i];
        if (!(f->commands & (1u << o->command)) || (!everything && !is_setting(f)) || parent_off(o, f) ||
            !flag_value(o, f, value, sizeof value))
            continue;
        int n = snprintf(out + used, size - used, " %s%s%s", f->name, value[0] ? " " : "", value);
        if (n < 0 || (size_t)n >= size - used) {
            out[used] = '\0'; /* whole flags only */
            return;
        }
        used += (size_t)n;
    }
}
