/* The files dptrain reads and writes, kept safe from bad paths.
 *
 * Inputs must be regular files (a FIFO or a device would block open() or feed garbage).
 * Outputs are published atomically: written under a temporary name in their own folder, synced,
 * and renamed over the final name, which must be absent or a regular file (never a device, a
 * FIFO, a socket, a folder or a symbolic link: the rename would replace it). files_same() lets
 * every command refuse an output that names one of its inputs or another output, however the
 * path is spelt (a/./r.h5, a/sub/../r.h5, a hard or symbolic link). */
#ifndef DPTRAIN_FILES_H
#define DPTRAIN_FILES_H

#include <stddef.h>

#define FILES_PATH_MAX 4096

/* An input file: exists, is a regular file (not a folder, FIFO, device or socket), readable.
 * The message names the flag and the path. Never opens the file, so it cannot block. */
int files_check_input(const char *path, const char *flag, char *err);

/* An output file, checked before any work: its folder exists and is a folder; the path is
 * absent or a regular file; the temporary name fits the file system; a file can really be
 * created there (a probe file is made and removed, which catches read-only mounts, full
 * disks, permissions and names that are too long). Temporary files of this output that a
 * writer on this host left when it was killed are removed, with a line saying so. */
int files_check_output(const char *path, const char *flag, char *err);

/* 1 when the two paths name the same file, existing or not (parent folders resolved, then
 * device and inode compared when both exist); 0 otherwise. */
int files_same(const char *a, const char *b);

/* The one way dptrain publishes a file: write size bytes to a temporary file beside
 * final_path (a replaced file's mode and owner kept, a new one's mode from the umask), sync, rename it over final_path (refused again if that is no longer absent or a regular
 * file) and sync the folder. On failure the temporary file is removed, the previous
 * final_path is untouched, and a full disk is reported as "no space left on FOLDER while
 * writing FILE". */
int files_write(const char *final_path, const void *data, size_t size, char *err);
/* files_write with a pause of hold_seconds between the synced temporary file and its rename: the
 * tests' window to kill a writer in the middle of a write (DPTRAIN_FAULT=hold). */
int files_write_held(const char *final_path, const void *data, size_t size, double hold_seconds, char *err);

/* Exactly size bytes of the open file fd from byte offset on (reads resumed after signals and
 * short reads). A file that ends before them is "PATH: the file ends before byte N (it was
 * truncated or changed)". Safe from any thread: no state beyond fd. */
int files_read_at(int fd, void *data, size_t size, long long offset, const char *path, char *err);

/* An advisory lock on an output for a run's life, so that two runs given the same --out or
 * --checkpoint cannot both report success while one silently loses: the lock file PATH.lock
 * (an open file description lock, released by the kernel when the holder dies however it
 * dies) names its holder ("pid N on HOST"), which the second run's refusal repeats. The lock
 * file is removed when the lock is given back. */
struct files_lock {
    int fd;
    char path[FILES_PATH_MAX + 8];
};
int files_lock_output(const char *path, const char *flag, struct files_lock *lock, char *err);
void files_unlock(struct files_lock *lock);

#endif
