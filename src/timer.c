#include "dptrain/timer.h"

#include <errno.h>
#include <time.h>

double timer_now(void)
{
    struct timespec now;
    /* CLOCK_MONOTONIC cannot fail on Linux (EINVAL is for clocks the system lacks); should it
     * ever, a zero duration is the harmless answer. */
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return 0.0;
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

void timer_sleep(double seconds)
{
    struct timespec left = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ; /* a signal cut it short: sleep the rest (nanosleep's only other failure is a bad time) */
}
