/* Fault injection for the reliability tests: DPTRAIN_FAULT=KIND@RANK[:EPOCH[:STEP]] makes one
 * rank fail in one way at one point, so that the tests can check that every rank stops with one
 * clear message. KIND is nan (that rank's loss and gradient become NaN), exit (that rank dies
 * without a word), alloc (its model allocation fails), io (rank 0's checkpoint write fails), flip
 * (one bit of one parameter flips) or slow (that rank's end of an epoch takes FAULT_SLOW_SECONDS
 * longer: a merely slow phase, which the stall watchdog must let pass) or lag (each of that rank's
 * steps takes FAULT_LAG_SECONDS longer in its own work: a slow host, which must be named as a
 * straggler) or hold (rank 0's background write of the checkpoint saved after EPOCH epochs pauses
 * FAULT_HOLD_SECONDS between its synced temporary file and the rename: a window to kill it
 * mid-write).
 * Unset, nothing is injected. */
#ifndef DPTRAIN_FAULT_H
#define DPTRAIN_FAULT_H

enum fault_kind { FAULT_NONE, FAULT_NAN, FAULT_EXIT, FAULT_ALLOC, FAULT_IO, FAULT_FLIP, FAULT_SLOW, FAULT_LAG,
                  FAULT_HOLD };
#define FAULT_SLOW_SECONDS 6
#define FAULT_LAG_SECONDS 0.01
#define FAULT_HOLD_SECONDS 8

struct fault {
    enum fault_kind kind;
    int rank, epoch;
    long step;
};

/* Parse the environment variable; a malformed value is an error naming it. */
int fault_from_environment(struct fault *fault, char *err);
/* Does the fault of this kind strike this rank at (epoch, step)? epoch/step 0 match any. */
int fault_strikes(const struct fault *fault, enum fault_kind kind, int rank, int epoch, long step);

#endif
