/* The command line: subcommands, flags, their defaults and their validation. The one module
 * that knows flag names and spellings; it produces the typed configuration (config.h). */
#ifndef DPTRAIN_CLI_H
#define DPTRAIN_CLI_H

#include "dptrain/config.h"

#include <stdio.h>

/* Parse argv (argv[1] is the subcommand) into a configuration. On error returns -1 with a
 * message naming the flag. */
int cli_parse(int argc, char **argv, struct config *config, char *err);
/* The flag users type for an option ("--data"). */
const char *cli_flag(enum option o);
/* The flag users type for a setting ("--batch"; the rank count, which no flag sets: "ranks"). */
const char *cli_setting_flag(enum setting s);
void cli_print_help(FILE *out, enum command command);
/* The command line that asks for o: the command, then its flags in the order of --help, with
 * defaults resolved, numbers in the shortest form that reads back exactly and strings quoted for
 * a POSIX shell. everything 0: the settings that decide how a run computes (not where its files
 * go or how it reports: pasted after `dptrain`, with --out, it trains the same run again);
 * everything 1: every flag, for comparing the ranks' command lines. Whole flags only when out
 * is too short. */
void cli_command_line(const struct config *o, int everything, char *out, size_t size);
const char *cli_command_name(enum command command);

#endif
