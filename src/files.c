#define _GNU_SOURCE /* F_OFD_SETLK */
#include "dptrain/files.h"

#include "dptrain/check.h"
#include "dptrain/timer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Below this much free space a failed write is reported as a full disk. */
#define FILES_FULL_BYTES (1u << 20)
/* Temporary names are "FINAL.tmp.HOST.PID", in the final file's folder so that rename() is
 * atomic; the host and pid say whose it is, so that one left by a killed writer can be removed
 * by the next run on that host (files_check_output). A host name has at most 64 characters
 * (HOST_NAME_MAX), a pid at most 10 digits. */
#define TEMP_SUFFIX ".tmp."
#define TEMP_SUFFIX_MAX (sizeof TEMP_SUFFIX - 1 + 64 + 1 + 10)
#define LOCK_SUFFIX ".lock"

/* This machine's name, for temporary names and the lock file's holder line. */
static void this_host(char *host, size_t size)
{
    if (gethostname(host, size) != 0 || host[0] == '\0')
        snprintf(host, size, "localhost");
    host[size - 1] = '\0';
}

/* The name as part of a file name: short, and no path separator. */
static void host_name(char *host, size_t size)
{
    this_host(host, size);
    for (char *c = host; *c; c++)
        if (*c == '/' || *c == '.')
            *c = '_';
}

static int temp_name(const char *final_path, char *tmp_path, size_t size, char *err)
{
    char host[65];
    host_name(host, sizeof host);
    int n = snprintf(tmp_path, size, "%s" TEMP_SUFFIX "%s.%ld", final_path, host, (long)getpid());
    if (n < 0 || (size_t)n >= size) {
        err_set(err, "%s: path too long", final_path);
        tmp_path[0] = '\0';
        return -1;
    }
    return 0;
}

static void folder_of(const char *path, char *folder, size_t size)
{
    snprintf(folder, size, "%s", path);
    char *slash = strrchr(folder, '/');
    if (!slash)
        snprintf(folder, size, ".");
    else if (slash == folder)
        folder[1] = '\0';
    else
        *slash = '\0';
}

static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* What a path that is not a regular file is, for messages. */
static const char *kind_of(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a folder";
    if (S_ISFIFO(mode))
        return "a named pipe (FIFO)";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "not a regular file";
}

/* For ENOTDIR: the longest leading part of path that exists and is not a folder. */
static void first_file_in_path(const char *path, char *out, size_t size)
{
    char prefix[FILES_PATH_MAX];
    struct stat info;
    snprintf(out, size, "%s", path);
    for (const char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        size_t len = (size_t)(p - path);
        if (len >= sizeof prefix)
            return;
        memcpy(prefix, path, len);
        prefix[len] = '\0';
        if (stat(prefix, &info) == 0 && !S_ISDIR(info.st_mode)) {
            snprintf(out, size, "%s", prefix);
            return;
        }
    }
}

/* "FLAG PATH: reason" for a stat() that failed with errno. */
static void describe_stat_failure(const char *path, const char *flag, char *err)
{
    if (errno == ENOTDIR) {
        char file[FILES_PATH_MAX];
        first_file_in_path(path, file, sizeof file);
        err_set(err, "%s %s: %s is a file, not a folder", flag, path, file);
    } else {
        err_set(err, "%s %s: %s", flag, path, strerror(errno));
    }
}

int files_check_input(const char *path, const char *flag, char *err)
{
    struct stat info;
    if (path[0] == '\0')
        FAIL("%s: empty path", flag);
    if (stat(path, &info) != 0) {
        describe_stat_failure(path, flag, err);
        goto fail;
    }
    if (!S_ISREG(info.st_mode))
        FAIL("%s %s: is %s, not a regular file", flag, path, kind_of(info.st_mode));
    if (access(path, R_OK) != 0)
        FAIL("%s %s: cannot read: %s", flag, path, strerror(errno));
    return 0;
fail:
    return -1;
}

static int check_folder(const char *path, const char *folder, const char *flag, char *err)
{
    struct stat info;
    if (stat(folder, &info) != 0) {
        if (errno == ENOENT)
            FAIL("%s %s: folder %s does not exist", flag, path, folder);
        describe_stat_failure(folder, flag, err);
        goto fail;
    }
    if (!S_ISDIR(info.st_mode))
        FAIL("%s %s: %s is %s, not a folder", flag, path, folder,
             S_ISREG(info.st_mode) ? "a file" : kind_of(info.st_mode));
    return 0;
fail:
    return -1;
}

/* The final name must be absent or a regular file: rename() would replace anything else. */
static int check_replaceable(const char *path, const char *flag, char *err)
{
    struct stat info;
    if (lstat(path, &info) != 0) {
        if (errno == ENOENT)
            return 0;
        describe_stat_failure(path, flag, err);
        return -1;
    }
    if (S_ISDIR(info.st_mode))
        FAIL("%s %s: is a folder", flag, path);
    if (S_ISLNK(info.st_mode))
        FAIL("%s %s: is a symbolic link (give the path of the file it points to: writing would "
             "replace the link)", flag, path);
    if (!S_ISREG(info.st_mode))
        FAIL("%s %s: is %s, not a regular file (dptrain replaces its outputs whole, so it "
             "writes only regular files)", flag, path, kind_of(info.st_mode));
    return 0;
fail:
    return -1;
}

/* Create and remove the temporary file the real write will use. */
static int probe_folder(const char *path, const char *folder, const char *flag, char *err)
{
    char tmp[FILES_PATH_MAX];
    int fd = -1;
    CHECK_DP(temp_name(path, tmp, sizeof tmp, err));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            FAIL("%s %s: %s already exists (left by another process with this id? remove it)", flag,
                 path, tmp);
        if (errno == ENOSPC || errno == EDQUOT)
            FAIL("%s %s: no space left on %s", flag, path, folder);
        FAIL("%s %s: cannot create files in folder %s: %s", flag, path, folder, strerror(errno));
    }
    CHECK_SYS(close(fd), "%s %s: cannot close the probe file %s", flag, path, tmp);
    CHECK_SYS(unlink(tmp), "%s %s: cannot remove the probe file %s", flag, path, tmp);
    return 0;
fail:
    return -1;
}

static int check_name_length(const char *path, const char *folder, const char *flag, char *err)
{
    long name_max = pathconf(folder, _PC_NAME_MAX);
    if (name_max <= 0)
        name_max = NAME_MAX;
    size_t suffix = TEMP_SUFFIX_MAX; /* the temporary name adds this to the final one */
    size_t length = strlen(base_of(path));
    if (length + suffix > (size_t)name_max)
        FAIL("%s %s: the file name has %zu characters; this file system allows %ld, and dptrain "
             "needs %zu of them for its temporary name", flag, path, length, name_max, suffix);
    if (strlen(path) + suffix >= FILES_PATH_MAX)
        FAIL("%s: path of %zu characters is too long (at most %zu)", flag, strlen(path),
             (size_t)FILES_PATH_MAX - suffix - 1);
    return 0;
fail:
    return -1;
}

/* A temporary file of this output left on this host by a writer that is gone (killed while
 * writing: 22 MB for the default MLP's checkpoint, left forever otherwise) is removed, and said. */
static int remove_stale_temporaries(const char *path, const char *folder, char *err)
{
    char prefix[FILES_PATH_MAX], host[65], stale[FILES_PATH_MAX];
    DIR *dir = NULL;
    host_name(host, sizeof host);
    snprintf(prefix, sizeof prefix, "%s" TEMP_SUFFIX "%s.", base_of(path), host);
    CHECK_PTR(dir = opendir(folder), "folder %s: cannot list", folder);
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        char *end = NULL;
        if (strncmp(entry->d_name, prefix, strlen(prefix)) != 0)
            continue;
        long pid = strtol(entry->d_name + strlen(prefix), &end, 10);
        if (pid <= 0 || *end != '\0' || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        int n = snprintf(stale, sizeof stale, "%s/%s", folder, entry->d_name);
        if (n < 0 || (size_t)n >= sizeof stale)
            continue;
        CHECK_SYS(unlink(stale), "%s: cannot remove the stale temporary file", stale);
        printf("dptrain: removed %s, a temporary file left by process %ld on %s, which is gone\n", stale, pid, host);
    }
    CHECK_SYS(closedir(dir), "folder %s: cannot close its listing", folder);
    return 0;
fail:
    if (dir)
        closedir(dir);
    return -1;
}

int files_check_output(const char *path, const char *flag, char *err)
{
    char folder[FILES_PATH_MAX];
    if (path[0] == '\0')
        FAIL("%s: empty path", flag);
    if (strlen(path) >= sizeof folder)
        FAIL("%s: path of %zu characters is too long", flag, strlen(path));
    folder_of(path, folder, sizeof folder);
    CHECK_DP(check_folder(path, folder, flag, err));
    CHECK_DP(check_replaceable(path, flag, err));
    CHECK_DP(check_name_length(path, folder, flag, err));
    CHECK_DP(remove_stale_temporaries(path, folder, err));
    CHECK_DP(probe_folder(path, folder, flag, err));
    return 0;
fail:
    return -1;
}

/* The path with its folder resolved: realpath() of the whole path when it exists (links
 * followed), else realpath() of its folder plus its last name. Empty when neither resolves. */
static void canonical(const char *path, char *out)
{
    char folder[FILES_PATH_MAX], resolved[PATH_MAX];
    out[0] = '\0';
    if (realpath(path, resolved)) {
        snprintf(out, FILES_PATH_MAX, "%s", resolved);
        return;
    }
    folder_of(path, folder, sizeof folder);
    if (realpath(folder, resolved)) {
        int n = snprintf(out, FILES_PATH_MAX, "%s/%s", strcmp(resolved, "/") ? resolved : "", base_of(path));
        if (n < 0 || n >= FILES_PATH_MAX)
            out[0] = '\0';
    }
}

int files_same(const char *a, const char *b)
{
    char ca[FILES_PATH_MAX], cb[FILES_PATH_MAX];
    struct stat sa, sb;
    if (!a || !b)
        return 0;
    if (strcmp(a, b) == 0)
        return 1;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
        return 1;
    canonical(a, ca);
    canonical(b, cb);
    return ca[0] != '\0' && strcmp(ca, cb) == 0;
}

static int fsync_path(const char *path, int flags, char *err)
{
    int fd = -1;
    CHECK_SYS(fd = open(path, flags | O_CLOEXEC), "%s: cannot open to sync", path);
    CHECK_SYS(fsync(fd), "%s: cannot sync to disk", path);
    CHECK_SYS(close(fd), "%s: cannot close after syncing", path);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Rename tmp_path over final_path (refusing once more a final_path that is not a regular file:
 * it may have changed since the run began), then sync the folder so the rename survives a crash. */
static int publish(const char *tmp_path, const char *final_path, char *err)
{
    char folder[FILES_PATH_MAX];
    CHECK_DP(check_replaceable(final_path, "output", err));
    CHECK_SYS(rename(tmp_path, final_path), "%s: cannot move %s into place", final_path, tmp_path);
    folder_of(final_path, folder, sizeof folder);
    CHECK_DP(fsync_path(folder, O_RDONLY | O_DIRECTORY, err));
    return 0;
fail:
    return -1;
}

/* After a failed write of final_path's temporary file (before it is removed): when the folder's
 * file system is full, replace the message by one line that says so. */
static void explain_write_failure(const char *final_path, int error, char *err)
{
    char folder[FILES_PATH_MAX];
    struct statvfs fs;
    folder_of(final_path, folder, sizeof folder);
    int full = error == ENOSPC || error == EDQUOT;
    if (!full && statvfs(folder, &fs) == 0)
        full = (unsigned long long)fs.f_bavail * fs.f_frsize < FILES_FULL_BYTES;
    if (full)
        err_set(err, "no space left on %s while writing %s (the previous %s, if any, is intact)", folder,
                final_path, base_of(final_path));
}

static int write_all(int fd, const char *data, size_t size, const char *tmp, char *err)
{
    while (size > 0) {
        ssize_t written = write(fd, data, size);
        if (written < 0 && errno == EINTR)
            continue;
        CHECK_SYS(written, "%s: cannot write", tmp);
        data += written;
        size -= (size_t)written;
    }
    return 0;
fail:
    return -1;
}

/* The replacement keeps the replaced file's mode and owner (a 0600 checkpoint stays 0600). A
 * user who may not give a file to its owner (EPERM: not root, another owner) keeps the file as
 * theirs, as a copy would. */
static int keep_mode_and_owner(int fd, const char *final_path, const char *tmp, char *err)
{
    struct stat info;
    if (stat(final_path, &info) != 0)
        return 0; /* a new file: the creation mode and the umask decide */
    CHECK_SYS(fchmod(fd, info.st_mode & 07777), "%s: cannot set the mode of %s", tmp, final_path);
    if ((info.st_uid != geteuid() || info.st_gid != getegid()) && fchown(fd, info.st_uid, info.st_gid) != 0 &&
        errno != EPERM)
        CHECK_SYS(-1, "%s: cannot give it the owner of %s", tmp, final_path);
    return 0;
fail:
    return -1;
}

int files_write(const char *final_path, const void *data, size_t size, char *err)
{
    return files_write_held(final_path, data, size, 0, err);
}

int files_write_held(const char *final_path, const void *data, size_t size, double hold_seconds, char *err)
{
    char tmp[FILES_PATH_MAX] = "";
    int fd = -1, error = 0;
    CHECK_DP(temp_name(final_path, tmp, sizeof tmp, err));
    /* 0666: a new file follows the user's umask, as files made by other programs do */
    CHECK_SYS(fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666), "%s: cannot create", tmp);
    CHECK_DP(keep_mode_and_owner(fd, final_path, tmp, err));
    CHECK_DP(write_all(fd, data, size, tmp, err));
    CHECK_SYS(fsync(fd), "%s: cannot sync to disk", tmp);
    int closing = fd;
    fd = -1;
    CHECK_SYS(close(closing), "%s: cannot close", tmp);
    if (hold_seconds > 0)
        timer_sleep(hold_seconds);
    CHECK_DP(publish(tmp, final_path, err));
    return 0;
fail:
    error = errno;
    explain_write_failure(final_path, error, err);
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    return -1;
}

int files_read_at(int fd, void *data, size_t size, long long offset, const char *path, char *err)
{
    unsigned char *at = data;
    while (size > 0) {
        ssize_t n = pread(fd, at, size, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK_SYS(n, "%s: cannot read %zu bytes at byte %lld", path, size, offset);
        if (n == 0)
            FAIL("%s: the file ends before byte %lld (it was truncated or changed)", path, offset + (long long)size);
        at += n;
        size -= (size_t)n;
        offset += n;
    }
    return 0;
fail:
    return -1;
}

/* ---- output locks ------------------------------------------------------------------------ */

/* What the lock file says of its holder: "pid N on HOST". */
static void read_holder(int fd, char *holder, size_t size)
{
    ssize_t n = pread(fd, holder, size - 1, 0);
    holder[n > 0 ? n : 0] = '\0';
    holder[strcspn(holder, "\n")] = '\0';
    if (holder[0] == '\0')
        snprintf(holder, size, "another process");
}

/* One attempt: open PATH.lock and take its lock without waiting. 1: taken; 0: the file was
 * replaced between open and lock (try again); -1: held by another run, or an error. */
static int try_lock(struct files_lock *lock, const char *path, const char *flag, char *err)
{
    struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    struct stat held, named;
    char holder[128];
    CHECK_SYS(lock->fd = open(lock->path, O_RDWR | O_CREAT | O_CLOEXEC, 0666), "%s %s: cannot create the lock file %s",
              flag, path, lock->path);
    if (fcntl(lock->fd, F_OFD_SETLK, &whole) != 0) {
        if (errno != EAGAIN && errno != EACCES)
            CHECK_SYS(-1, "%s %s: cannot lock %s", flag, path, lock->path);
        read_holder(lock->fd, holder, sizeof holder);
        FAIL("%s %s: another run is writing it (%s, which holds %s): wait for it to end, or choose another file",
             flag, path, holder, lock->path);
    }
    /* The holder before us removes the lock file when it ends: ours must still be the one named. */
    CHECK_SYS(fstat(lock->fd, &held), "%s: cannot read its status", lock->path);
    if (stat(lock->path, &named) != 0 || named.st_ino != held.st_ino || named.st_dev != held.st_dev) {
        CHECK_SYS(close(lock->fd), "%s: cannot close", lock->path);
        lock->fd = -1;
        return 0;
    }
    return 1;
fail:
    if (lock->fd >= 0)
        close(lock->fd);
    lock->fd = -1;
    return -1;
}

int files_lock_output(const char *path, const char *flag, struct files_lock *lock, char *err)
{
    char host[65], holder[128];
    lock->fd = -1;
    int n = snprintf(lock->path, sizeof lock->path, "%s" LOCK_SUFFIX, path);
    if (n < 0 || (size_t)n >= sizeof lock->path)
        FAIL("%s %s: path too long for its lock file", flag, path);
    int taken = 0;
    for (int attempt = 0; attempt < 8 && taken == 0; attempt++)
        CHECK_DP((taken = try_lock(lock, path, flag, err)) < 0);
    if (!taken)
        FAIL("%s %s: its lock file %s keeps being replaced by other runs", flag, path, lock->path);
    this_host(host, sizeof host);
    n = snprintf(holder, sizeof holder, "pid %ld on %s\n", (long)getpid(), host);
    CHECK_SYS(ftruncate(lock->fd, 0), "%s: cannot write", lock->path);
    CHECK_SYS(pwrite(lock->fd, holder, (size_t)n, 0), "%s: cannot write", lock->path);
    return 0;
fail:
    files_unlock(lock);
    return -1;
}

void files_unlock(struct files_lock *lock)
{
    if (lock->fd < 0)
        return;
    unlink(lock->path); /* still holding the lock: a run that opened it meanwhile sees it replaced */
    close(lock->fd);
    lock->fd = -1;
}
