/* What rank 0 prints: the run's opening line, one line per epoch, the summary with the
 * classification report and confusion matrix, compare's table, and the two profile lines. */
#ifndef DPTRAIN_CONSOLE_H
#define DPTRAIN_CONSOLE_H

#include "dptrain/results.h"
#include "dptrain/run.h"

void console_announce(const struct run *run);
void console_epoch(const struct epoch_record *e, int epochs, int has_validation);
/* --max-time ran out during this epoch. */
void console_budget_spent(const struct config *o, int epoch);
/* A rank slower than the others in this epoch and the one before (stragglers.h). */
void console_straggler(const struct straggler *slow, const char *host, int epoch);
void console_summary(const struct run_result *r);
void console_comparison(const struct run_result *runs, int count);
/* Collective (the peak memory is the largest rank's); rank 0 prints. */
int console_profile(const struct run *run, char *err);

#endif
