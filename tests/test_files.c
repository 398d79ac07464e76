/* The files module (inputs, outputs, aliases, atomic writes) and the one-line error messages. */
#include "dptrain/check.h"
#include "dptrain/files.h"
#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

static const char *dir; /* the running test's folder (test_folder_setup) */

static const char *at(const char *name)
{
    static char paths[8][FILES_PATH_MAX];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, FILES_PATH_MAX, "%s/%s", dir, name);
    return path;
}

static void write_text(const char *path, const char *text)
{
    test_write_file(path, (const uint8_t *)text, strlen(text));
}

static void read_text(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* No leftover temporary or probe files in the folder. */
static void assert_no_temporaries(void)
{
    char command[FILES_PATH_MAX + 64];
    snprintf(command, sizeof command, "ls -A '%s' | grep -q '\\.tmp\\.'", dir);
    assert_int_not_equal(system(command), 0);
}

static void test_same_spellings(void **state)
{
    dir = *state;
    char folder[FILES_PATH_MAX], link_path[FILES_PATH_MAX];
    snprintf(folder, sizeof folder, "%s/sub", dir);
    assert_int_equal(mkdir(folder, 0755), 0);
    write_text(at("r.h5"), "x");
    /* existing file, several spellings */
    assert_true(files_same(at("r.h5"), at("./r.h5")));
    assert_true(files_same(at("r.h5"), at("sub/../r.h5")));
    assert_true(files_same(at("r.h5"), at("sub/./../r.h5")));
    /* absent files: the folder resolves */
    assert_true(files_same(at("new.h5"), at("sub/../new.h5")));
    assert_false(files_same(at("new.h5"), at("sub/new.h5")));
    assert_false(files_same(at("r.h5"), at("new.h5")));
    /* a hard link and a symbolic link name the same file */
    assert_int_equal(link(at("r.h5"), at("hard.h5")), 0);
    assert_true(files_same(at("r.h5"), at("hard.h5")));
    snprintf(link_path, sizeof link_path, "%s/soft.h5", dir);
    assert_int_equal(symlink(at("r.h5"), link_path), 0);
    assert_true(files_same(at("r.h5"), link_path));
    assert_false(files_same(at("r.h5"), NULL));
}

static void test_output_refusals(void **state)
{
    dir = *state;
    char err[DP_ERR_LEN] = "", long_name[400];
    assert_int_equal(files_check_output(at("fine.h5"), "--out", err), 0);
    assert_false(test_file_exists(at("fine.h5"))); /* the probe is gone */
    assert_int_equal(files_check_output("/dev/null", "--out", err), -1);
    assert_non_null(strstr(err, "--out /dev/null: is a character device, not a regular file"));
    assert_int_equal(mkfifo(at("pipe"), 0600), 0);
    assert_int_equal(files_check_output(at("pipe"), "--checkpoint", err), -1);
    assert_non_null(strstr(err, "is a named pipe (FIFO)"));
    assert_int_equal(files_check_output(dir, "--trace", err), -1);
    assert_non_null(strstr(err, "is a folder"));
    write_text(at("target"), "keep");
    assert_int_equal(symlink(at("target"), at("link")), 0);
    assert_int_equal(files_check_output(at("link"), "--out", err), -1);
    assert_non_null(strstr(err, "is a symbolic link"));
    assert_int_equal(files_check_output(at("missing/r.h5"), "--out", err), -1);
    assert_non_null(strstr(err, "/missing does not exist"));
    assert_int_equal(files_check_output(at("target/r.h5"), "--out", err), -1);
    assert_non_null(strstr(err, "target is a file, not a folder"));
    memset(long_name, 'n', 250);
    long_name[250] = '\0';
    assert_int_equal(files_check_output(at(long_name), "--out", err), -1);
    assert_non_null(strstr(err, "the file name has 250 characters"));
    assert_int_equal(files_check_output("", "--out", err), -1);
    assert_no_temporaries();
}

static void test_input_refusals(void **state)
{
    dir = *state;
    char err[DP_ERR_LEN] = "";
    write_text(at("data.h5"), "x");
    assert_int_equal(files_check_input(at("data.h5"), "--data", err), 0);
    assert_int_equal(mkfifo(at("fifo"), 0600), 0);
    assert_int_equal(files_check_input(at("fifo"), "--data", err), -1); /* and does not block */
    assert_non_null(strstr(err, "is a named pipe (FIFO), not a regular file"));
    assert_int_equal(files_check_input(dir, "--data", err), -1);
    assert_non_null(strstr(err, "is a folder, not a regular file"));
    assert_int_equal(files_check_input(at("absent.h5"), "--checkpoint", err), -1);
    assert_non_null(strstr(err, "absent.h5: No such file or directory"));
    assert_int_equal(files_check_input(at("data.h5/x"), "--data", err), -1);
    assert_non_null(strstr(err, "data.h5 is a file, not a folder"));
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", at("sock"));
    assert_int_equal(bind(s, (struct sockaddr *)&address, sizeof address), 0);
    assert_int_equal(files_check_input(at("sock"), "--data", err), -1);
    assert_non_null(strstr(err, "is a socket"));
    close(s);
}

static void test_write_replaces_atomically(void **state)
{
    dir = *state;
    char err[DP_ERR_LEN] = "", text[64];
    write_text(at("out.h5"), "old");
    assert_int_equal(files_write(at("out.h5"), "new contents", 12, err), 0);
    read_text(at("out.h5"), text, sizeof text);
    assert_string_equal(text, "new contents");
    /* a device that appeared under the name since the checks is refused, not replaced */
    assert_int_equal(mkfifo(at("late"), 0600), 0);
    assert_int_equal(files_write(at("late"), "x", 1, err), -1);
    assert_non_null(strstr(err, "named pipe"));
    struct stat info;
    assert_int_equal(lstat(at("late"), &info), 0);
    assert_true(S_ISFIFO(info.st_mode));
    assert_no_temporaries();
}

static void test_messages_stay_one_line_with_reason(void **state)
{
    dir = *state;
    char err[DP_ERR_LEN], path[2000];
    memset(path, 'p', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    err_set(err, "%s: cannot open", path);
    err_append(err, "No such file or directory");
    assert_true(strlen(err) < DP_ERR_LEN);
    const char *end = err + strlen(err) - strlen(": No such file or directory");
    assert_string_equal(end, ": No such file or directory");
    assert_non_null(strstr(err, "..."));
    err_set(err, "line one\nline two\r");
    assert_null(strchr(err, '\n'));
    assert_null(strchr(err, '\r'));
    err_set(err, "short");
    err_append(err, "reason\nwith a newline");
    assert_string_equal(err, "short: reason with a newline");
    err_append_hint(err, "try %s", "this");
    assert_string_equal(err, "short: reason with a newline; try this");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_spellings, test_folder_setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_output_refusals, test_folder_setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_input_refusals, test_folder_setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_write_replaces_atomically, test_folder_setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_messages_stay_one_line_with_reason, test_folder_setup, test_folder_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
