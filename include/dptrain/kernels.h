/* OpenBLAS's kernel set: which one runs, and the one case where dptrain overrides OpenBLAS.
 *
 * OpenBLAS picks its kernels from the CPU model. A build that does not know a CPU (0.3.21, Debian
 * 12, on Intel family 6 model 207) falls back to a generic set (Prescott), 4-6x slower, and says
 * nothing. Where that happens on a CPU with AVX2 and FMA and OPENBLAS_CORETYPE is unset, dptrain
 * starts itself again, before MPI, with OPENBLAS_CORETYPE=Haswell: those kernels need nothing
 * beyond AVX2 and FMA. The AVX-512 sets stay the user's choice (older OpenBLAS builds computed
 * wrong results with them on some CPUs), and OPENBLAS_CORETYPE set by anyone is always kept. */
#ifndef DPTRAIN_KERNELS_H
#define DPTRAIN_KERNELS_H

#include <stddef.h>

/* The variable dptrain sets beside OPENBLAS_CORETYPE when it starts itself again: the set OpenBLAS
 * had chosen, so that the run line and the results can say why. */
#define KERNELS_REPLACED_VARIABLE "DPTRAIN_OPENBLAS_REPLACED"
/* For tests: the kernel set OpenBLAS is taken to have chosen, in place of the real one, when
 * OPENBLAS_CORETYPE is unset (no CPU of the test machines makes OpenBLAS fall back). */
#define KERNELS_TEST_VARIABLE "DPTRAIN_TEST_OPENBLAS_CORE"

struct cpu_features {
    int avx2, fma;
};

enum kernels_choice {
    KERNELS_FAST,        /* OpenBLAS chose a set built for AVX2 and FMA or wider: nothing to do */
    KERNELS_SWITCH,      /* generic set on a CPU with AVX2 and FMA, OPENBLAS_CORETYPE unset: use Haswell */
    KERNELS_USER,        /* OPENBLAS_CORETYPE is set: kept, whatever it says */
    KERNELS_CPU_LIMITED  /* generic set on a CPU without AVX2 or FMA: nothing faster is safe */
};

/* Is this OpenBLAS core name (any case) a kernel set built for AVX2 and FMA or wider? */
int kernels_name_is_fast(const char *core);
/* The decision, from OpenBLAS's core name, the CPU's features and OPENBLAS_CORETYPE (NULL or ""
 * when unset). Pure: the unit tests go over names and features. */
enum kernels_choice kernels_choose(const char *core, struct cpu_features cpu, const char *coretype);
/* This CPU's features (all 0 off x86-64). */
struct cpu_features kernels_cpu_features(void);
/* The set OpenBLAS runs now (openblas_get_corename). */
const char *kernels_core(void);

/* Before MPI starts: where kernels_choose says KERNELS_SWITCH, announce it in one line on stdout
 * (when `announce`), set OPENBLAS_CORETYPE=Haswell and execute this program again with argv.
 * Returns when the kernels are kept, or when the new start failed (then with a warning, going on
 * with OpenBLAS's choice: slower, still right). */
void kernels_ensure_fast(char **argv, int announce);
/* What runs and who chose it, for the run line and the results file: "Haswell (OPENBLAS_CORETYPE
 * set by dptrain: OpenBLAS had chosen its generic Prescott kernels)"; it fits in this many bytes. */
#define KERNELS_DESCRIPTION_LENGTH 256
void kernels_describe(char *out, size_t size);

#endif
