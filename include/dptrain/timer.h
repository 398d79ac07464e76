/* Durations: one monotonic clock for epoch times, fit times and the profile's phases (the wall
 * clock can jump; MPI_Wtime would bring MPI into modules that have no business with it). */
#ifndef DPTRAIN_TIMER_H
#define DPTRAIN_TIMER_H

/* Seconds on CLOCK_MONOTONIC from an arbitrary origin. */
double timer_now(void);
/* Sleep this long (resumed after signals): a pause, not a timer. */
void timer_sleep(double seconds);

#endif
