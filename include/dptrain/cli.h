/* The command line: subcommands, flags, their defaults and their validation. */
#ifndef DPTRAIN_CLI_H
#define DPTRAIN_CLI_H

#include <stdint.h>
#include <stdio.h>

enum command { CMD_NONE, CMD_CONVERT, CMD_TRAIN, CMD_COMPARE, CMD_EVAL };

#define CLI_MAX_PCA_RUNS 16

struct options {
    enum command command;
    int want_help, want_version;
    /* convert */
    const char *source;
    /* all */
    const char *data;
    const char *out;
    int out_is_default;               /* --out not given: results/ may be created */
    /* train / compare */
    const char *model;
    int pca;                          /* train: K, 0 = raw pixels */
    int pca_list[CLI_MAX_PCA_RUNS];   /* compare */
    int pca_runs;
    int epochs;
    int batch;                        /* global batch */
    const char *optimizer;            /* sgd | adam */
    double lr, momentum, weight_decay;
    const char *schedule;             /* cosine | step | constant */
    double warmup;                    /* epochs of linear warm-up */
    double label_smoothing;
    double dropout;
    uint64_t seed;
    int threads;                      /* 0: chosen from the node */
    double bucket_mb;                 /* gradient allreduce buckets; 0 = one fused allreduce */
    const char *trace;                /* Chrome trace-event JSON */
    int augment;
    int tta;          /* evaluate each image and its mirror image */
    int validation;
    const char *name;
    int quiet;
    const char *checkpoint;
    int checkpoint_every;
    int resume;
    const char *command_line;         /* argv joined, for the results file */
};

/* Parse argv (argv[1] is the subcommand). On error returns -1 with a message naming the flag. */
int cli_parse(int argc, char **argv, struct options *options, char *err);
void cli_print_help(FILE *out, enum command command);
const char *cli_command_name(enum command command);

#endif
