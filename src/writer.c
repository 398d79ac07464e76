#include "dptrain/writer.h"

#include "dptrain/check.h"
#include "dptrain/files.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct file_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;       /* a job arrived, a write ended, or the writer is to stop */
    /* guarded by lock */
    void *image;                  /* the job: non-NULL from submit until the write ends */
    size_t size;
    double hold;
    char path[FILES_PATH_MAX];
    int failed, stop;
    char err[DP_ERR_LEN];         /* the last failed write's message */
};

static void *write_jobs(void *arg)
{
    struct file_writer *w = arg;
    char err[DP_ERR_LEN];
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->image && !w->stop)
            pthread_cond_wait(&w->changed, &w->lock);
        if (!w->image)
            break; /* stopping, nothing left to write */
        void *image = w->image;
        size_t size = w->size;
        double hold = w->hold;
        char path[FILES_PATH_MAX];
        memcpy(path, w->path, sizeof path);
        pthread_mutex_unlock(&w->lock);
        int status = files_write_held(path, image, size, hold, err);
        free(image);
        pthread_mutex_lock(&w->lock);
        if (status != 0) {
            w->failed = 1;
            memcpy(w->err, err, sizeof w->err);
        }
        w->image = NULL;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int writer_start(struct file_writer **out, char *err)
{
    int rc = 0;
    struct file_writer *w = NULL;
    *out = NULL;
    CHECK_PTR(w = calloc(1, sizeof *w), "cannot allocate the checkpoint writer");
    if ((rc = pthread_mutex_init(&w->lock, NULL)) != 0)
        FAIL("cannot create the checkpoint writer's lock: %s", strerror(rc));
    if ((rc = pthread_cond_init(&w->changed, NULL)) != 0) {
        pthread_mutex_destroy(&w->lock);
        FAIL("cannot create the checkpoint writer's condition: %s", strerror(rc));
    }
    if ((rc = pthread_create(&w->thread, NULL, write_jobs, w)) != 0) {
        pthread_cond_destroy(&w->changed);
        pthread_mutex_destroy(&w->lock);
        FAIL("cannot start the checkpoint writer's thread: %s", strerror(rc));
    }
    *out = w;
    return 0;
fail:
    free(w);
    return -1;
}

/* With the lock held: wait until no write is in flight; the failure of the last one, if any, is
 * reported once. */
static int settle(struct file_writer *w, char *err)
{
    while (w->image)
        pthread_cond_wait(&w->changed, &w->lock);
    if (!w->failed)
        return 0;
    w->failed = 0;
    memcpy(err, w->err, DP_ERR_LEN);
    return -1;
}

int writer_submit(struct file_writer *w, const char *path, void *image, size_t size, double hold_seconds, char *err)
{
    pthread_mutex_lock(&w->lock);
    int status = settle(w, err);
    if (status == 0 && snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path) {
        err_set(err, "%s: the path is too long", path);
        status = -1;
    }
    if (status == 0) {
        w->image = image;
        w->size = size;
        w->hold = hold_seconds;
        image = NULL;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->lock);
    free(image);
    return status;
}

int writer_wait(struct file_writer *w, char *err)
{
    pthread_mutex_lock(&w->lock);
    int status = settle(w, err);
    pthread_mutex_unlock(&w->lock);
    return status;
}

int writer_stop(struct file_writer *w, char *err)
{
    int rc = 0;
    if (!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    /* The write in flight ends first: the thread never leaves a file half-published. */
    if ((rc = pthread_join(w->thread, NULL)) != 0) {
        free(w); /* the thread is stuck or gone: the process ends next anyway */
        FAIL("cannot stop the checkpoint writer's thread: %s", strerror(rc));
    }
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return 0;
fail:
    return -1;
}
