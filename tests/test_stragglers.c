/* Slow ranks (stragglers.h): which rank is a straggler in an epoch, what it costs the others,
 * and when it is named (two epochs running, once); and the stall summary's grouping of ranks
 * (stall_report.h), pure functions both. */
#include "dptrain/stall_report.h"
#include "dptrain/stragglers.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void test_a_rank_at_twice_the_others_compute_is_a_straggler(void **state)
{
    (void)state;
    const struct rank_seconds epoch[4] = {{1.0, 1.0}, {1.1, 0.9}, {2.0, 0.0}, {0.9, 1.1}};
    struct straggler s;
    assert_true(straggler_find(epoch, 4, &s));
    assert_int_equal(s.rank, 2);
    assert_float_equal(s.ratio, 2.0, 1e-12);         /* the median of 0.9, 1.0, 1.1 */
    assert_float_equal(s.others_waited, 0.5, 1e-12); /* the median of 0.45, 0.5, 0.55 */
}

static void test_two_ranks_compare_with_each_other(void **state)
{
    (void)state;
    struct straggler s;
    assert_true(straggler_find((const struct rank_seconds[]){{3.0, 0.2}, {1.0, 2.2}}, 2, &s));
    assert_int_equal(s.rank, 0);
    assert_float_equal(s.ratio, 3.0, 1e-12);
    assert_false(straggler_find((const struct rank_seconds[]){{1.4, 0.2}, {1.0, 0.6}}, 2, &s)); /* 1.4x: noise */
    assert_true(straggler_find((const struct rank_seconds[]){{1.5, 0.2}, {1.0, 0.6}}, 2, &s));  /* the ratio itself */
}

static void test_no_straggler_without_a_verdict_to_give(void **state)
{
    (void)state;
    struct straggler s;
    assert_false(straggler_find((const struct rank_seconds[]){{5.0, 0.0}}, 1, &s));              /* one rank */
    assert_false(straggler_find((const struct rank_seconds[]){{1.0, 0.0}, {1.0, 0.0}}, 2, &s));  /* even */
    assert_false(straggler_find((const struct rank_seconds[]){{NAN, NAN}, {9.0, 0.0}}, 2, &s));  /* not measured */
    assert_false(straggler_find((const struct rank_seconds[]){{0.0, 0.0}, {9.0, 0.0}}, 2, &s));  /* nothing to compare */
    assert_false(straggler_find((const struct rank_seconds[]){{-1.0, 0.0}, {9.0, 0.0}}, 2, &s)); /* nonsense */
}

static void test_named_after_two_epochs_running_and_once(void **state)
{
    (void)state;
    struct straggler_watch w;
    straggler_watch_init(&w);
    const struct straggler one = {1, 2.0, 0.4}, three = {3, 2.0, 0.4};
    assert_false(straggler_observe(&w, &one));   /* epoch 1: a first sighting */
    assert_true(straggler_observe(&w, &one));    /* epoch 2: named */
    assert_false(straggler_observe(&w, &one));   /* epoch 3: already named */
    assert_false(straggler_observe(&w, &three)); /* another rank: a first sighting */
    assert_true(straggler_observe(&w, &three));
    assert_false(straggler_observe(&w, NULL));   /* recovered */
    assert_false(straggler_observe(&w, &three)); /* slow again: named again after two epochs */
    assert_true(straggler_observe(&w, &three));
    straggler_watch_init(&w);
    assert_false(straggler_observe(&w, &one));   /* alternating slow ranks are noise */
    assert_false(straggler_observe(&w, &three));
    assert_false(straggler_observe(&w, &one));
}

/* ---- the stall summary ---------------------------------------------------------------------- */

static const char hosts[5][STALL_HOST] = {"node1", "node1", "node2", "node2", "node3"};

static struct stall_status waiting(long number)
{
    struct stall_status s = {.waiting = 1, .number = number, .bytes = 7.45e6};
    snprintf(s.what, sizeof s.what, "the gradient allreduce");
    snprintf(s.phase, sizeof s.phase, "a training step");
    return s;
}

static struct stall_status busy(long number, const char *phase)
{
    struct stall_status s = {.waiting = 0, .number = number};
    snprintf(s.phase, sizeof s.phase, "%s", phase);
    return s;
}

static void test_the_summary_groups_ranks_by_where_they_were(void **state)
{
    (void)state;
    struct stall_status status[5] = {waiting(1235), waiting(1235), busy(1234, "evaluation"), {0}, waiting(1235)};
    int answered[5] = {1, 1, 1, 0, 1};
    char line[1024];
    stall_summary(&(struct stall_view){5, 0, status, answered, hosts}, line, sizeof line);
    assert_string_equal(line, "ranks 0-1, 4 on node1, node3 wait in collective #1235 (the gradient allreduce, "
                              "7.45 MB); rank 2 on node2 finished #1234 and is in evaluation; rank 3 on node2 did "
                              "not answer");
}

static void test_the_summary_of_ranks_that_have_not_met_yet(void **state)
{
    (void)state;
    struct stall_status status[2] = {busy(0, "setting up"), {0}};
    status[1] = waiting(1);
    status[1].bytes = 4;
    int answered[2] = {1, 1};
    char line[256];
    stall_summary(&(struct stall_view){2, 1, status, answered, hosts}, line, sizeof line);
    assert_string_equal(line, "rank 0 on node1 entered no collective yet and is in setting up; rank 1 on node1 waits "
                              "in collective #1 (the gradient allreduce, 4 B)");
    char short_line[40]; /* cut, never overrun */
    stall_summary(&(struct stall_view){2, 1, status, answered, hosts}, short_line, sizeof short_line);
    assert_int_equal(strlen(short_line), sizeof short_line - 1);
}

static void test_the_record_escapes_host_names(void **state)
{
    (void)state;
    static const char odd[2][STALL_HOST] = {"no\"de\\1", "node\n2"};
    struct stall_status status[2] = {waiting(3), {0}};
    int answered[2] = {1, 0};
    size_t length = 0;
    char *json = stall_record_json(&(struct stall_view){2, 0, status, answered, odd}, "stalled \"here\"", &length);
    assert_non_null(json);
    assert_int_equal(strlen(json), length);
    assert_non_null(strstr(json, "{\"stall\": \"stalled \\\"here\\\"\""));
    assert_non_null(strstr(json, "\"host\": \"no\\\"de\\\\1\""));
    assert_non_null(strstr(json, "\"host\": \"node\\u000a2\", \"answered\": false}"));
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_rank_at_twice_the_others_compute_is_a_straggler),
        cmocka_unit_test(test_two_ranks_compare_with_each_other),
        cmocka_unit_test(test_no_straggler_without_a_verdict_to_give),
        cmocka_unit_test(test_named_after_two_epochs_running_and_once),
        cmocka_unit_test(test_the_summary_groups_ranks_by_where_they_were),
        cmocka_unit_test(test_the_summary_of_ranks_that_have_not_met_yet),
        cmocka_unit_test(test_the_record_escapes_host_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
