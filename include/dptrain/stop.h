/* SIGTERM and SIGUSR1 (what Slurm and mpirun deliver before a time limit or preemption) ask
 * the run to stop: the training loop agrees on it at the next step boundary, writes a
 * checkpoint and exits with DP_EXIT_STOPPED. */
#ifndef DPTRAIN_STOP_H
#define DPTRAIN_STOP_H

int stop_install(void);
/* The signal that asked to stop, or 0. */
int stop_requested(void);

#endif
