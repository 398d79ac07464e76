#include "dptrain/stop.h"

#include <signal.h>
#include <string.h>

/* A signal handler can only talk to the program through a global; this flag is the one piece of
 * global mutable state besides the MPI world, written only by the handler. */
static volatile sig_atomic_t requested_signal = 0;

static void on_signal(int signal_number)
{
    requested_signal = signal_number;
}

int stop_install(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &action, NULL) != 0 || sigaction(SIGUSR1, &action, NULL) != 0)
        return -1;
    return 0;
}

int stop_requested(void)
{
    return requested_signal;
}
