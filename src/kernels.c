#include "dptrain/kernels.h"

#include "dptrain/check.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* OpenBLAS's x86-64 sets whose kernels use AVX2 and FMA or AVX-512. Everything else it can name
 * (Prescott, Core2, Nehalem, Sandybridge, Barcelona, Bulldozer, ...) is older; "Unknown" too. */
static const char *const fast_sets[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};

int kernels_name_is_fast(const char *core)
{
    for (size_t i = 0; core && i < sizeof fast_sets / sizeof fast_sets[0]; i++)
        if (strcasecmp(core, fast_sets[i]) == 0)
            return 1;
    return 0;
}

enum kernels_choice kernels_choose(const char *core, struct cpu_features cpu, const char *coretype)
{
    if (coretype && coretype[0])
        return KERNELS_USER;
    if (kernels_name_is_fast(core))
        return KERNELS_FAST;
    return cpu.avx2 && cpu.fma ? KERNELS_SWITCH : KERNELS_CPU_LIMITED;
}

struct cpu_features kernels_cpu_features(void)
{
    struct cpu_features cpu = {0, 0};
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    cpu.avx2 = __builtin_cpu_supports("avx2") != 0;
    cpu.fma = __builtin_cpu_supports("fma") != 0;
#endif
    return cpu;
}

const char *kernels_core(void)
{
    const char *core = openblas_get_corename();
    return core ? core : "unknown";
}

/* The set OpenBLAS chose, or the test's stand-in for it. */
static const char *chosen_core(void)
{
    const char *test = getenv(KERNELS_TEST_VARIABLE);
    return test && test[0] ? test : kernels_core();
}

void kernels_ensure_fast(char **argv, int announce)
{
    char err[DP_ERR_LEN] = "";
    const char *core = chosen_core();
    if (kernels_choose(core, kernels_cpu_features(), getenv("OPENBLAS_CORETYPE")) != KERNELS_SWITCH)
        return;
    if (announce) {
        printf("dptrain: OpenBLAS chose its generic %s kernels on this CPU, which has AVX2 and FMA: starting again "
               "with OPENBLAS_CORETYPE=Haswell (set OPENBLAS_CORETYPE to choose the kernels yourself)\n", core);
        fflush(stdout);
    }
    CHECK_SYS(setenv(KERNELS_REPLACED_VARIABLE, core, 1), "cannot set %s", KERNELS_REPLACED_VARIABLE);
    CHECK_SYS(setenv("OPENBLAS_CORETYPE", "Haswell", 1), "cannot set OPENBLAS_CORETYPE");
    CHECK_SYS(execv("/proc/self/exe", argv), "cannot start dptrain again with OPENBLAS_CORETYPE=Haswell");
fail:
    /* Slower is still right: run on with the kernels OpenBLAS chose, and say what the line above promised. */
    unsetenv(KERNELS_REPLACED_VARIABLE);
    unsetenv("OPENBLAS_CORETYPE");
    if (announce)
        fprintf(stderr, "dptrain: warning: %s; going on with the %s kernels\n", err, core);
}

void kernels_describe(char *out, size_t size)
{
    const char *core = kernels_core(), *coretype = getenv("OPENBLAS_CORETYPE");
    const char *replaced = getenv(KERNELS_REPLACED_VARIABLE);
    struct cpu_features cpu = kernels_cpu_features();
    switch (kernels_choose(chosen_core(), cpu, coretype)) {
    case KERNELS_USER:
        if (replaced && replaced[0] && strcmp(coretype, "Haswell") == 0)
            snprintf(out, size, "%s (OPENBLAS_CORETYPE=Haswell set by dptrain: OpenBLAS had chosen its generic %s "
                     "kernels)", core, replaced);
        else if (kernels_choose(core, cpu, NULL) == KERNELS_SWITCH)
            snprintf(out, size, "%s (OPENBLAS_CORETYPE=%s, kept as set; this CPU could run the faster Haswell "
                     "kernels)", core, coretype);
        else
            snprintf(out, size, "%s (OPENBLAS_CORETYPE=%s, kept as set)", core, coretype);
        break;
    case KERNELS_CPU_LIMITED:
        snprintf(out, size, "%s (chosen by OpenBLAS; this CPU lacks AVX2 or FMA, which the faster sets need)", core);
        break;
    default:
        snprintf(out, size, "%s (chosen by OpenBLAS)", core);
    }
}
