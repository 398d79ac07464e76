/* The OpenBLAS kernel choice (kernels.h) over core names and CPU features: when dptrain starts
 * itself again with the Haswell kernels, and when it keeps what runs. */
#include "dptrain/kernels.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static const struct cpu_features avx2_fma = {1, 1}, avx2_only = {1, 0}, fma_only = {0, 1}, neither = {0, 0};

static void test_fast_sets_are_kept(void **state)
{
    (void)state;
    static const char *const fast[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "haswell",
                                       "SKYLAKEX"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++) {
        assert_true(kernels_name_is_fast(fast[i]));
        assert_int_equal(kernels_choose(fast[i], avx2_fma, NULL), KERNELS_FAST);
        assert_int_equal(kernels_choose(fast[i], avx2_fma, ""), KERNELS_FAST);
    }
}

/* The sets OpenBLAS falls back to, and the older ones it may pick for a CPU it half knows. */
static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Sandybridge",
                                      "Barcelona", "Opteron", "Bulldozer", "Piledriver", "Steamroller", "Excavator",
                                      "Unknown", "", "Haswell2", "Zen "};

static void test_generic_set_with_avx2_and_fma_switches(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++) {
        assert_false(kernels_name_is_fast(generic[i]));
        assert_int_equal(kernels_choose(generic[i], avx2_fma, NULL), KERNELS_SWITCH);
    }
    assert_false(kernels_name_is_fast(NULL));
    assert_int_equal(kernels_choose(NULL, avx2_fma, NULL), KERNELS_SWITCH);
}

/* Haswell's kernels would fault without AVX2 or without FMA: keep the generic set and say why. */
static void test_generic_set_without_avx2_or_fma_is_kept(void **state)
{
    (void)state;
    const struct cpu_features lacking[] = {avx2_only, fma_only, neither};
    for (size_t c = 0; c < 3; c++)
        for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
            assert_int_equal(kernels_choose(generic[i], lacking[c], NULL), KERNELS_CPU_LIMITED);
}

/* OPENBLAS_CORETYPE set by the user or the environment wins over every rule, a generic set included. */
static void test_coretype_set_is_always_kept(void **state)
{
    (void)state;
    const struct cpu_features cpus[] = {avx2_fma, avx2_only, neither};
    const char *const names[] = {"Prescott", "Haswell", "SkylakeX", "Unknown"};
    for (size_t c = 0; c < 3; c++)
        for (size_t i = 0; i < 4; i++) {
            assert_int_equal(kernels_choose(names[i], cpus[c], "Prescott"), KERNELS_USER);
            assert_int_equal(kernels_choose(names[i], cpus[c], "Haswell"), KERNELS_USER);
        }
}

/* On this machine: the real core name is one OpenBLAS reports, and the description names it and
 * who chose it; a coretype the environment set is described as kept. */
static void test_describe_names_the_running_set(void **state)
{
    (void)state;
    char text[256];
    const char *core = kernels_core();
    assert_true(strlen(core) > 0);
    kernels_describe(text, sizeof text);
    assert_true(strncmp(text, core, strlen(core)) == 0);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (coretype && coretype[0])
        assert_non_null(strstr(text, "OPENBLAS_CORETYPE="));
    else
        assert_non_null(strstr(text, "chosen by OpenBLAS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_sets_are_kept),
        cmocka_unit_test(test_generic_set_with_avx2_and_fma_switches),
        cmocka_unit_test(test_generic_set_without_avx2_or_fma_is_kept),
        cmocka_unit_test(test_coretype_set_is_always_kept),
        cmocka_unit_test(test_describe_names_the_running_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
