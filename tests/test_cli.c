/* The command line: every flag lands in its field of the typed configuration, the defaults that
 * depend on other flags, every kind of error, and the settings' names and comparison. */
#include "dptrain/check.h"
#include "dptrain/cli.h"
#include "dptrain/config.h"
#include "dptrain/results.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define MAX_ARGS 80

/* Split a command line at spaces into argv (words kept in `storage`). */
static int split(const char *line, char *storage, size_t size, char **argv)
{
    int argc = 0;
    snprintf(storage, size, "dptrain %s", line);
    for (char *word = strtok(storage, " "); word && argc < MAX_ARGS; word = strtok(NULL, " "))
        argv[argc++] = word;
    return argc;
}

static char storage[4096];

static void parse_ok(const char *line, struct config *c)
{
    char *argv[MAX_ARGS], err[DP_ERR_LEN] = "";
    int argc = split(line, storage, sizeof storage, argv);
    if (cli_parse(argc, argv, c, err) != 0)
        fail_msg("'%s' failed: %s", line, err);
}

static void parse_fails(const char *line, const char *fragment)
{
    char *argv[MAX_ARGS], err[DP_ERR_LEN] = "";
    struct config c;
    int argc = split(line, storage, sizeof storage, argv);
    assert_int_equal(cli_parse(argc, argv, &c, err), -1);
    if (!strstr(err, fragment))
        fail_msg("'%s': message '%s' lacks '%s'", line, err, fragment);
}

static void test_train_defaults(void **state)
{
    (void)state;
    struct config c;
    parse_ok("train", &c);
    assert_int_equal(c.command, CMD_TRAIN);
    assert_string_equal(c.data, "data/fashion-mnist.h5");
    assert_string_equal(c.out, "results/train.h5");
    assert_true(c.out_is_default);
    assert_string_equal(c.model, "mlp:512,512");
    assert_int_equal(c.model_kind, MODEL_MLP);
    assert_int_equal(c.pca, 0);
    assert_int_equal(c.epochs, 60); /* an MLP is augmented unless --no-augment */
    assert_int_equal(c.batch, 256);
    assert_int_equal(c.optimizer, OPT_ADAM);
    assert_true(c.lr == 2e-3 && c.momentum == 0.9 && c.weight_decay == 1e-4);
    assert_int_equal(c.schedule, SCHEDULE_COSINE);
    assert_true(c.warmup == 1 && c.dropout == 0 && c.label_smoothing == 0.1); /* augmented: no dropout */
    assert_true(c.seed == 1 && c.tta == 1 && c.tta_shift == 1 && c.threads == 0 && c.bucket_mb == 0);
    assert_true(c.augment == 1 && c.augment_shift == 1 && c.erase == 0); /* flips, shifts by a pixel */
    assert_true(c.stall_timeout == 30 && c.drift_check == 200 && c.batch_per_rank == 0);
    assert_true(c.eval_every == 6 && c.max_time == 0); /* about ten evaluations of 60 epochs; no budget */
    assert_null(c.checkpoint);
    assert_null(c.trace);
    assert_null(c.name);
    parse_ok("train --no-augment", &c); /* the unaugmented MLP: 30 epochs, one view */
    assert_true(c.augment == 0 && c.augment_shift == 0 && c.epochs == 30 && c.tta == 0 && c.tta_shift == 0);
    assert_true(c.dropout == 0.1); /* an unaugmented MLP keeps its dropout */
    assert_true(c.eval_every == 3 && c.batch == 128 && c.lr == 1e-3); /* the unaugmented MLP steps 128 */
    parse_ok("train --batch 128", &c); /* a batch given keeps the rate of 128 */
    assert_true(c.batch == 128 && c.lr == 1e-3);
    parse_ok("train --lr 0.001", &c);
    assert_true(c.batch == 256 && c.lr == 1e-3);
    parse_ok("train --batch-per-rank 64", &c);
    assert_true(c.batch == 0 && c.batch_per_rank == 64 && c.lr == 1e-3);
    parse_ok("train --epochs 19", &c); /* short runs: every epoch */
    assert_int_equal(c.eval_every, 1);
    parse_ok("train --epochs 19 --eval-every 4 --max-time 2.5", &c);
    assert_true(c.eval_every == 4 && c.max_time == 2.5);
    parse_ok("compare --pca 0,50", &c);
    assert_string_equal(c.out, "results/compare.h5");
    assert_true(c.augment == 1 && c.tta == 1 && c.epochs == 60); /* both runs as train's default */
    parse_ok("eval --checkpoint c.h5", &c);
    assert_string_equal(c.out, "results/eval.h5");
    assert_int_equal(c.tta, -1); /* eval: as the checkpoint's run unless asked */
    assert_int_equal(c.tta_shift, -1);
    parse_ok("convert", &c);
    assert_string_equal(c.out, "data/fashion-mnist.h5");
    assert_false(c.out_is_default);
    assert_string_equal(c.source, "/usr/share/datasets/fashion-mnist");
}

static void test_every_flag(void **state)
{
    (void)state;
    struct config c;
    parse_ok("train --data d.h5 --out o.h5 --model mlp:64,32 --pca 50 --epochs 7 --batch 256 --optimizer sgd "
             "--lr 0.02 --momentum 0.8 --weight-decay 0.001 --schedule step --warmup 2 --label-smoothing 0.1 "
             "--dropout 0.2 --seed 42 --threads 3 --bucket-mb 0.5 --trace t.json --augment --validation 100 "
             "--name run1 --quiet --checkpoint c.h5 --checkpoint-every 50 --resume --stall-timeout 1.5 --drift-check 7",
             &c);
    assert_string_equal(c.data, "d.h5");
    assert_string_equal(c.out, "o.h5");
    assert_false(c.out_is_default);
    assert_string_equal(c.model, "mlp:64,32");
    assert_int_equal(c.pca, 50);
    assert_int_equal(c.epochs, 7);
    assert_int_equal(c.batch, 256);
    assert_int_equal(c.optimizer, OPT_SGD);
    assert_true(c.lr == 0.02 && c.momentum == 0.8 && c.weight_decay == 0.001);
    assert_int_equal(c.schedule, SCHEDULE_STEP);
    assert_true(c.warmup == 2 && c.label_smoothing == 0.1 && c.dropout == 0.2);
    assert_true(c.seed == 42 && c.threads == 3 && c.bucket_mb == 0.5);
    assert_true(c.stall_timeout == 1.5 && c.drift_check == 7);
    assert_string_equal(c.trace, "t.json");
    assert_true(c.augment && c.quiet && c.resume);
    assert_int_equal(c.validation, 100);
    assert_string_equal(c.name, "run1");
    assert_string_equal(c.checkpoint, "c.h5");
    assert_int_equal(c.checkpoint_every, 50);
    /* --flag=value, and the schedule's third value */
    parse_ok("train --epochs=3 --schedule=constant --seed=18446744073709551615", &c);
    assert_int_equal(c.epochs, 3);
    assert_int_equal(c.schedule, SCHEDULE_CONSTANT);
    assert_true(c.seed == UINT64_MAX);
    parse_ok("convert --source s --out o.h5", &c);
    assert_string_equal(c.source, "s");
    parse_ok("eval --checkpoint c.h5 --data d.h5 --out e.h5 --tta --threads 2", &c);
    assert_true(c.tta == 1 && c.threads == 2);
    assert_string_equal(c.checkpoint, "c.h5");
    parse_ok("train --compress powersgd", &c);
    assert_true(c.compress.kind == COMPRESS_POWERSGD && c.compress.rank == CONFIG_POWERSGD_DEFAULT_RANK);
    parse_ok("train --compress powersgd:64", &c);
    assert_true(c.compress.kind == COMPRESS_POWERSGD && c.compress.rank == 64);
    char text[CONFIG_COMPRESS_LENGTH];
    config_compress_text(&c.compress, text, sizeof text);
    assert_string_equal(text, "powersgd:64");
    parse_ok("train --compress bf16", &c);
    assert_true(c.compress.kind == COMPRESS_BF16 && c.compress.rank == 0);
    parse_ok("compare --pca 0,50 --batch-per-rank 96", &c); /* the global batch waits for the rank count */
    assert_true(c.batch_per_rank == 96 && c.batch == 0);
}

static void test_dependent_defaults(void **state)
{
    (void)state;
    struct config c;
    parse_ok("train --optimizer sgd", &c);
    assert_true(c.lr == 0.05);
    parse_ok("train --model cnn --augment", &c);
    assert_int_equal(c.model_kind, MODEL_CNN);
    assert_int_equal(c.epochs, 60);
    assert_int_equal(c.tta, 1);
    assert_int_equal(c.tta_shift, 1); /* 18 views in the final predictions */
    assert_int_equal(c.augment_shift, 2);
    assert_true(c.optimizer == OPT_NESTEROV && c.lr == 0.05 && c.weight_decay == 5e-4);
    parse_ok("train --pca 50 --augment --augment-shift 1", &c);
    assert_int_equal(c.augment_shift, 1);
    parse_ok("train --model cnn --augment --tta-shift 0", &c);
    assert_true(c.tta == 1 && c.tta_shift == 0);
    parse_ok("train --model mlp --tta --tta-shift 2", &c);
    assert_true(c.tta == 1 && c.tta_shift == 2);
    parse_ok("eval --checkpoint c.h5 --tta-shift 0", &c);
    assert_true(c.tta == -1 && c.tta_shift == 0 && c.on_validation == 0);
    parse_ok("eval --checkpoint c.h5 --on-validation", &c);
    assert_int_equal(c.on_validation, 1);
    parse_ok("train --model cnn --augment --optimizer adam", &c); /* Adam's own defaults */
    assert_true(c.optimizer == OPT_ADAM && c.lr == 1e-3 && c.weight_decay == 1e-4);
    parse_ok("train --model cnn --augment --weight-decay 0.001 --lr 0.02", &c);
    assert_true(c.optimizer == OPT_NESTEROV && c.lr == 0.02 && c.weight_decay == 0.001);
    parse_ok("train --model cnn --augment --no-tta --epochs 5", &c);
    assert_int_equal(c.tta, 0);
    assert_int_equal(c.tta_shift, 0);
    assert_int_equal(c.epochs, 5);
    parse_ok("train --model cnn", &c);
    assert_int_equal(c.augment, 0); /* a CNN is augmented only when asked */
    assert_int_equal(c.epochs, 20);
    assert_true(c.optimizer == OPT_ADAM && c.lr == 1e-3 && c.weight_decay == 1e-4); /* not measured otherwise */
    assert_int_equal(c.tta, 0);
    assert_true(c.dropout == 0.1 && c.label_smoothing == 0 && c.erase == 0); /* a CNN's own defaults */
    parse_ok("train --model mlp --dropout 0 --label-smoothing 0.05", &c); /* given values stay */
    assert_true(c.epochs == 60 && c.dropout == 0 && c.label_smoothing == 0.05);
    parse_ok("train --augment --no-augment", &c); /* the last word counts, as with --tta --no-tta */
    assert_int_equal(c.augment, 0);
    parse_ok("compare --pca 0,50,100", &c);
    assert_int_equal(c.pca_runs, 3);
    assert_int_equal(c.pca_list[0], 0);
    assert_int_equal(c.pca_list[2], 100);
    parse_ok("--help", &c);
    assert_true(c.want_help);
    parse_ok("train --help", &c);
    assert_true(c.want_help && c.command == CMD_TRAIN);
    parse_ok("--version", &c);
    assert_true(c.want_version);
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", "no command given"},
        {"fly", "unknown command 'fly'"},
        {"train --bogus", "--bogus: unknown flag for 'train'"},
        {"convert --epochs 3", "--epochs: not a flag of 'convert'"},
        {"train stray", "unexpected argument 'stray'"},
        {"train --batch 64 --batch-per-rank 32", "--batch-per-rank and --batch are exclusive"},
        {"train --epochs", "--epochs needs a value"},
        {"train --epochs --data x", "--epochs needs a value"},
        {"train --epochs 0", "--epochs: 0 is out of range 1..100000"},
        {"train --epochs ten", "--epochs: expected a whole number, got 'ten'"},
        {"train --lr nan", "--lr: expected a number, got 'nan'"},
        {"train --lr -1", "--lr: -1 is out of range"},
        {"train --seed -1", "--seed: expected a non-negative whole number"},
        {"train --pca 16777217", "--pca: 16777217 is out of range 1..16777216"},
        {"train --flip maybe", "--flip: expected yes or no, got 'maybe'"},
        {"convert --source d --train-images a", "--source and --train-images are exclusive"},
        {"convert --train-images a --train-labels b --test-images c", "--test-labels is missing"},
        {"compare --pca 0,,50", "--pca: malformed list"},
        {"compare --pca 50,50", "--pca: 50 appears twice"},
        {"compare", "--pca LIST is required"},
        {"train --optimizer rmsprop", "--optimizer: unknown optimizer 'rmsprop' (expected sgd, nesterov or adam)"},
        {"train --schedule linear", "--schedule: unknown schedule 'linear' (expected cosine, step or constant)"},
        {"train --model mlp:1111111111111111111111111111111111111111111111111111111111111111111", "--model: the spec"},
        {"train --resume", "--resume needs --checkpoint FILE"},
        {"train --checkpoint-every 5", "--checkpoint-every needs --checkpoint FILE"},
        {"eval", "eval: --checkpoint FILE is required"},
        {"train --name a/b", "--name: 'a/b' has the character '/'"},
        {"train --name ..", "--name: '..' is not a name"},
        {"train --quiet=yes", "--quiet takes no value"},
        {"train --data=", "--data: empty value"},
        {"train --threads 0", "--threads: 0 is out of range 1..256"},
        {"train --bucket-mb -1", "--bucket-mb: -1 is out of range 0..1024"},
        {"train --model cnn --erase 0.5", "--erase 0.5 needs --augment"},
        {"train --no-augment --erase 0.5", "--erase 0.5 needs --augment"},
        {"train --no-augment --augment-shift 1", "--augment-shift 1 needs --augment"},
        {"train --no-augment --tta-shift 1", "--tta-shift 1 needs --tta"},
        {"train --augment --erase 1.5", "--erase: 1.5 is out of range 0..1"},
        {"train --compress zip", "--compress: unknown compression 'zip' (expected none, bf16, powersgd or powersgd:R"},
        {"train --compress powersgd:0", "--compress: unknown compression 'powersgd:0'"},
        {"train --compress powersgd:65", "with R from 1 to 64"},
        {"train --compress powersgd:4x", "unknown compression 'powersgd:4x'"},
        {"train --compress powersgd:-4", "unknown compression 'powersgd:-4'"},
        {"train --compress powersgd:", "unknown compression 'powersgd:'"},
        {"train --compress bf16:2", "unknown compression 'bf16:2'"},
        {"train --compress powersgd:2 --deterministic", "--deterministic cannot be combined with --compress powersgd:2"},
        {"train --compress powersgd --shard-optimizer", "cannot be combined with --compress powersgd:4"},
        {"train --eval-every 0", "--eval-every: 0 is out of range 1.."},
        {"train --max-time -1", "--max-time: -1 is out of range 0..1e+07"},
        {"eval --checkpoint c.h5 --max-time 5", "--max-time: not a flag of 'eval'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        parse_fails(cases[i][0], cases[i][1]);
}

static void test_settings(void **state)
{
    (void)state;
    struct config a, b;
    char text[96];
    parse_ok("train", &a);
    parse_ok("train", &b);
    assert_int_equal(config_first_difference(&a, &b), SETTING_NONE);
    parse_ok("train --batch 512 --lr 0.001", &b);
    enum setting s = config_first_difference(&a, &b);
    assert_int_equal(s, SETTING_BATCH); /* the first difference, in the compared order */
    assert_string_equal(cli_setting_flag(s), "--batch");
    config_setting_value(&b, s, text, sizeof text);
    assert_string_equal(text, "512");
    parse_ok("train --lr 0.0020000000000000005", &b); /* a difference %g would hide */
    assert_int_equal(config_first_difference(&a, &b), SETTING_LR);
    parse_ok("train --optimizer sgd --lr 0.002", &b);
    assert_int_equal(config_first_difference(&a, &b), SETTING_OPTIMIZER);
    config_setting_value(&b, SETTING_OPTIMIZER, text, sizeof text);
    assert_string_equal(text, "sgd");
    for (int i = 0; i < SETTING_NONE; i++)
        assert_true(strlen(cli_setting_flag((enum setting)i)) > 0);
    enum optimizer_kind o;
    enum schedule_kind k;
    assert_int_equal(config_optimizer_parse("adam", &o), 0);
    assert_int_equal(o, OPT_ADAM);
    assert_int_equal(config_optimizer_parse("Adam", &o), -1);
    for (int i = OPT_SGD; i < OPT_DEFAULT; i++) /* every name fits the files' field */
        assert_true(strlen(config_optimizer_name((enum optimizer_kind)i)) < RESULTS_OPTIMIZER_LENGTH);
    assert_int_equal(config_optimizer_parse("nesterov", &o), 0);
    assert_string_equal(config_optimizer_name(o), "nesterov");
    parse_ok("train --optimizer nesterov", &b); /* SGD's default learning rate */
    assert_true(b.optimizer == OPT_NESTEROV && b.lr == 0.05);
    assert_int_equal(config_schedule_parse("step", &k), 0);
    assert_string_equal(config_schedule_name(k), "step");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_defaults),
        cmocka_unit_test(test_every_flag),
        cmocka_unit_test(test_dependent_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
