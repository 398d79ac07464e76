/* A background file writer: checkpoints written while training goes on.
 *
 * A checkpoint's file is built in memory at the step boundary (its state copied into an HDF5
 * image); writing, syncing and renaming it can take longer than many steps on a slow or shared
 * file system. The writer's thread does that part: the trainer hands it the image and goes on.
 * One write is in flight at a time: handing over the next waits for the one before, and reports
 * its failure, so that a failed write is never silent (it surfaces at the next checkpoint or at
 * the end). The thread only calls files_write (no HDF5, no MPI). A process killed during a write
 * leaves the previous file whole, as files_write always does. */
#ifndef DPTRAIN_WRITER_H
#define DPTRAIN_WRITER_H

#include <stddef.h>

struct file_writer;

int writer_start(struct file_writer **out, char *err);
/* Wait for the write in flight, then hand over the next: `image` (malloc'd) belongs to the writer
 * from now on, also on failure. hold_seconds > 0 pauses between the synced temporary file and its
 * rename (files_write_held: the tests' window). Returns -1 with err set when the write before
 * failed; then this image is dropped. */
int writer_submit(struct file_writer *w, const char *path, void *image, size_t size, double hold_seconds, char *err);
/* Wait for the write in flight; -1 with its message when it failed. */
int writer_wait(struct file_writer *w, char *err);
/* Wait for the write in flight, end the thread and free the writer; NULL is ignored. A failure of
 * that last write is not reported here: writer_wait first for it. */
int writer_stop(struct file_writer *w, char *err);

#endif
