#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "dptrain/commands.h"

#include "dptrain/check.h"
#include "dptrain/checkpoint.h"
#include "dptrain/cli.h"
#include "dptrain/config.h"
#include "dptrain/console.h"
#include "dptrain/files.h"
#include "dptrain/run_checkpoint.h"
#include "dptrain/stop.h"
#include "dptrain/train.h"

#include <cblas.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- paths ----------------------------------------------------------------------------- */

/* The locks on a command's outputs (files.h), one per entry of check_paths_here's table. */
struct output_locks {
    struct files_lock lock[4];
};
#define OUTPUT_LOCKS_NONE {{{.fd = -1}, {.fd = -1}, {.fd = -1}, {.fd = -1}}}

static void release_outputs(struct output_locks *locks)
{
    for (size_t i = 0; i < sizeof locks->lock / sizeof locks->lock[0]; i++)
        files_unlock(&locks->lock[i]);
}

/* One path a command reads or writes. */
struct named_path {
    const char *flag, *path;
    int output;
};

/* No output may name an input or another output, however the paths are spelt. */
static int check_aliases(const struct named_path *paths, int count, char *err)
{
    for (int i = 0; i < count; i++)
        for (int j = 0; j < count; j++) {
            if (i == j || !paths[i].path || !paths[j].path || !paths[i].output || (paths[j].output && j < i))
                continue;
            if (files_same(paths[i].path, paths[j].path))
                FAIL("%s %s: names the same file as %s %s (%s)", paths[i].flag, paths[i].path, paths[j].flag,
                     paths[j].path, paths[j].output ? "every output needs a file of its own"
                                                    : "writing it would destroy that input");
        }
    return 0;
fail:
    return -1;
}

/* An output that already holds a file (a previous run's results, trace or checkpoint) is replaced
 * only with --overwrite: a rerun with the same flags, or a --checkpoint given without --resume,
 * must not destroy a finished or an unfinished run after its first epoch. An empty file is free. */
static int check_not_previous(const struct config *o, const struct named_path *p, char *err)
{
    struct stat info;
    if (o->overwrite || stat(p->path, &info) != 0 || !S_ISREG(info.st_mode) || info.st_size == 0)
        return 0;
    if (p->path == o->checkpoint)
        FAIL("%s %s: already holds a run's checkpoint: add %s to continue it; to start over, remove it, choose "
             "another file or add %s", p->flag, p->path, cli_flag(OPTION_RESUME), cli_flag(OPTION_OVERWRITE));
    FAIL("%s %s: already exists (a previous run's output): choose another file, remove it, or add %s to "
         "replace it", p->flag, p->path, cli_flag(OPTION_OVERWRITE));
fail:
    return -1;
}

/* Rank 0, before any data is read: every output can be written (its folder exists and takes
 * files, the path is absent or a regular file) and names no input or other output. The
 * default results/ folder is made here, and removed again if a check fails. */
static int check_paths_here(const struct config *o, struct output_locks *locks, char *err)
{
    int train = o->command != CMD_EVAL, made_folder = 0;
    struct named_path paths[] = {
        {cli_flag(OPTION_DATA), o->data, 0},
        {cli_flag(OPTION_OUT), o->out, 1},
        {cli_flag(OPTION_CHECKPOINT), o->checkpoint, train},
        {cli_flag(OPTION_TRACE), o->trace, 1},
    };
    int count = (int)(sizeof paths / sizeof paths[0]);
    if (o->out_is_default)
        made_folder = mkdir("results", 0777) == 0;
    if (o->checkpoint && (o->resume || !train))
        CHECK_DP(files_check_input(o->checkpoint, cli_flag(OPTION_CHECKPOINT), err));
    CHECK_DP(check_aliases(paths, count, err)); /* first: one file named twice would lock against itself */
    for (int i = 0; i < count; i++)
        if (paths[i].output && paths[i].path) {
            CHECK_DP(files_check_output(paths[i].path, paths[i].flag, err));
            CHECK_DP(files_lock_output(paths[i].path, paths[i].flag, &locks->lock[i], err));
            if (!(paths[i].path == o->checkpoint && o->resume))
                CHECK_DP(check_not_previous(o, &paths[i], err));
        }
    /* Every rank checks the data file again before reading it (dataset_read): here rank 0 names
     * the flag, before any rank starts. */
    CHECK_DP(dataset_check_file(o->data, cli_flag(OPTION_DATA), err));
    return 0;
fail:
    release_outputs(locks);
    if (made_folder)
        rmdir("results");
    return -1;
}

/* Collective: rank 0 checks the paths and locks the outputs (held until release_outputs). */
static int check_paths(const struct comm *comm, const struct config *o, struct output_locks *locks, char *err)
{
    int ok = comm->rank != 0 || check_paths_here(o, locks, err) == 0;
    return comm_agree(comm, ok, err);
}

/* ---- set-up ---------------------------------------------------------------------------- */

/* --threads, or by default: OPENBLAS_NUM_THREADS if the user set it, else 1 for a deterministic
 * run (the guarantee holds at a given thread count: docs/reproducibility.md), else this node's
 * cores shared among the ranks on it, and never more than the cores this rank is bound to
 * (mpirun binds each of a few ranks to one core). */
static int blas_threads(const struct comm *comm, int requested, int deterministic)
{
    if (requested > 0)
        return requested;
    const char *from_environment = getenv("OPENBLAS_NUM_THREADS");
    if (from_environment && atoi(from_environment) > 0)
        return atoi(from_environment);
    if (deterministic)
        return 1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores > comm->node_ranks ? (int)(cores / comm->node_ranks) : 1;
    cpu_set_t bound;
    if (sched_getaffinity(0, sizeof bound, &bound) == 0 && CPU_COUNT(&bound) < threads)
        threads = CPU_COUNT(&bound);
    return threads > 0 ? threads : 1;
}

/* Room for every event of the command: per step its phases and two per layer. Beyond the cap
 * (160 MB of events) the rest are counted as dropped rather than allocated per step. */
static size_t trace_capacity(const struct config *o, const struct shards *d, int run_count)
{
    size_t steps = (size_t)shards_steps_per_epoch(d, o->batch);
    size_t per_step = (6 + 2 * MODEL_MAX_LAYERS) * (size_t)d->local_units; /* layers timed once per unit */
    size_t events = (size_t)run_count * (size_t)o->epochs * (steps * per_step + 4) + 64;
    return events < (size_t)4 << 20 ? events : (size_t)4 << 20;
}

/* Collective: the profile, started right after a barrier so that the ranks share its zero. */
static int start_profile(const struct comm *comm, struct profile *p, size_t capacity, char *err)
{
    CHECK_DP(comm_barrier(comm, err));
    int ok = profile_init(p, capacity, err) == 0;
    return comm_agree(comm, ok, err);
fail:
    return -1;
}

/* Collective: rank 0 writes every rank's events as one Chrome trace. */
static int write_trace(const struct comm *comm, const struct profile *p, const char *path, char *err)
{
    struct trace_text mine = {0}, all = {0};
    int ok = profile_rank_json(p, comm->rank, &mine, err) == 0;
    CHECK_DP(comm_agree(comm, ok, err));
    CHECK_DP(comm_gather_text(comm, mine.events, mine.events_length, &all.events, &all.event_offsets, err));
    CHECK_DP(comm_gather_text(comm, mine.totals, mine.totals_length, &all.totals, &all.total_offsets, err));
    if (comm->rank == 0)
        ok = profile_write_merged(path, comm->size, &all, err) == 0;
    ok = comm_agree(comm, ok, err) == 0;
    goto done;
fail:
    ok = 0;
done:
    profile_trace_text_free(&mine);
    profile_trace_text_free(&all);
    return ok ? 0 : -1;
}

/* ---- train and compare ----------------------------------------------------------------- */

/* Every setting a run was trained with, defaults resolved, as the command line that trains it
 * again (cli_command_line): a results file says what a default meant when it was written, and
 * pasting it after `dptrain` (with an --out) reproduces the run. A run of compare is the
 * train command of its own --pca. */
static void describe_settings(const struct config *o, int pca_k, char *out, size_t size)
{
    struct config one = *o;
    one.command = CMD_TRAIN;
    one.pca = pca_k;
    cli_command_line(&one, 0, out, size);
}

static void describe_result(struct run_result *r, const struct config *o, const struct shards *d, const char *name,
                            int pca_k)
{
    describe_settings(o, pca_k, r->settings, sizeof r->settings);
    r->inputs = pca_k > 0 ? pca_k : (int)image_values(&d->about.image);
    r->class_names = d->about.class_names;
    r->flip = o->flip;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->model, sizeof r->model, "%s", o->model);
    snprintf(r->optimizer, sizeof r->optimizer, "%s", config_optimizer_name(o->optimizer));
    r->pca_components = pca_k;
    r->epochs = o->epochs;
    r->global_batch = o->batch;
    r->lr = o->lr;
    r->seed = o->seed;
    r->has_validation = o->validation > 0;
}

static void run_name(const struct config *o, int k, char *name, size_t size)
{
    if (o->name && o->command == CMD_TRAIN)
        snprintf(name, size, "%s", o->name);
    else if (k > 0)
        snprintf(name, size, "pca%d", k);
    else
        snprintf(name, size, "raw");
}

/* Everything a command shares between its runs. */
struct command_state {
    const struct comm *comm;
    struct config *config;            /* its flip is decided once the data file is read */
    struct shards shards;
    struct checkpoint resume;
    struct profile profile;
    struct run_result *runs;
    int run_count;
    int diverged;                     /* a run diverged (results_did_not_learn): exit DP_EXIT_DIVERGED */
    struct output_locks locks;
};

/* Train run i and write the results of runs 0..i (rewritten after every run, so a long
 * comparison keeps what it has finished). */
static int train_one(struct command_state *cs, int i, char *err)
{
    const struct config *o = cs->config;
    int k = o->command == CMD_COMPARE ? o->pca_list[i] : o->pca;
    char name[64];
    run_name(o, k, name, sizeof name);
    describe_result(&cs->runs[i], o, &cs->shards, name, k);
    cs->runs[i].ranks = cs->comm->size;
    struct run run = {.comm = cs->comm, .config = o, .shards = &cs->shards, .profile = &cs->profile, .result = &cs->runs[i]};
    int status = train_run(&run, k, o->resume ? &cs->resume : NULL, err);
    if (status != DP_EXIT_OK)
        return status;
    int ok = 1, diverged = 0;
    if (cs->comm->rank == 0) {
        char why[256];
        console_summary(&cs->runs[i]);
        if ((diverged = results_did_not_learn(&cs->runs[i], why, sizeof why)))
            fprintf(stderr, "dptrain: warning: run %s diverged: %s; its results are written and marked diverged "
                    "(try a lower --lr)\n", name, why);
        struct results_origin origin = {o->command_line, cs->comm->size, cs->comm->hosts, &cs->shards.about};
        ok = results_write(o->out, &origin, cs->runs, i + 1, err) == 0;
        if (!ok && o->checkpoint) /* its last save holds the finished run */
            err_append_hint(err, "the trained state is kept in %s %s: write the results from it with "
                            "'dptrain eval %s %s %s FILE'", cli_flag(OPTION_CHECKPOINT), o->checkpoint,
                            cli_flag(OPTION_CHECKPOINT), o->checkpoint, cli_flag(OPTION_OUT));
    }
    if (comm_agree(cs->comm, ok, err) != 0 || comm_max_int(cs->comm, &diverged, err) != 0)
        return DP_EXIT_ERROR;
    cs->diverged |= diverged;
    return DP_EXIT_OK;
}

static int train_all(struct command_state *cs, char *err)
{
    for (int i = 0; i < cs->run_count; i++) {
        int status = train_one(cs, i, err);
        if (status != DP_EXIT_OK)
            return status;
    }
    if (cs->comm->rank == 0) {
        if (cs->config->command == CMD_COMPARE)
            console_comparison(cs->runs, cs->run_count);
        printf("\nresults written to %s\n", cs->config->out);
    }
    return cs->diverged ? DP_EXIT_DIVERGED : DP_EXIT_OK;
}

/* Every run's --pca at most an image's values: checked before the first run trains, so that a
 * comparison does not write its first results and then fail (the same data on every rank: the
 * same verdict). */
static int check_components(const struct config *o, const struct data_description *about, char *err)
{
    int values = (int)image_values(&about->image), runs = o->command == CMD_COMPARE ? o->pca_runs : 1;
    char shape[48];
    image_shape_text(&about->image, shape, sizeof shape);
    for (int i = 0; i < runs; i++) {
        int k = o->command == CMD_COMPARE ? o->pca_list[i] : o->pca;
        if (k > values)
            FAIL("%s %d: the images (%s) have %d values; give at most %d components", cli_flag(OPTION_PCA), k, shape,
                 values, values);
    }
    return 0;
fail:
    return -1;
}

/* Collective: paths, the checkpoint to resume, the data, the results and the profile. Flips follow
 * the data file's mirror_invariant unless --flip says otherwise. */
static int prepare_command(struct command_state *cs, char *err)
{
    struct config *o = cs->config;
    CHECK_DP(check_paths(cs->comm, o, &cs->locks, err));
    struct shard_plan plan = {o->data, o->validation, o->seed, o->deterministic ? SHARDS_VIRTUAL : 0,
                              (size_t)o->memory_budget << 20};
    CHECK_DP(shards_load(cs->comm, &plan, &cs->shards, err));
    CHECK_DP(check_components(o, &cs->shards.about, err));
    if (o->flip < 0)
        o->flip = cs->shards.about.mirror_invariant;
    if (o->resume)
        CHECK_DP(run_checkpoint_load(cs->comm, o, &cs->resume, err));
    if (o->resume && checkpoint_check_data(&cs->resume, &cs->shards.identity, o->data, o->checkpoint, "resume", err) != 0) {
        err_prefix(err, cli_flag(OPTION_RESUME)); /* every rank holds the same checkpoint and identity */
        goto fail;
    }
    int ok = (cs->runs = calloc((size_t)cs->run_count, sizeof *cs->runs)) != NULL;
    if (!ok)
        err_set(err, "cannot allocate results");
    CHECK_DP(comm_agree(cs->comm, ok, err));
    CHECK_DP(start_profile(cs->comm, &cs->profile, o->trace ? trace_capacity(o, &cs->shards, cs->run_count) : 0, err));
    return 0;
fail:
    return -1;
}

static int finish_trace(struct command_state *cs, int status, char *err)
{
    const struct config *o = cs->config;
    if (!o->trace || (status != DP_EXIT_OK && status != DP_EXIT_STOPPED && status != DP_EXIT_DIVERGED))
        return status;
    if (write_trace(cs->comm, &cs->profile, o->trace, err) != 0)
        return DP_EXIT_ERROR;
    if (cs->comm->rank == 0)
        printf("trace of %zu events per rank (rank 0) written to %s%s\n", cs->profile.event_count, o->trace,
               cs->profile.dropped ? "; later events dropped (the trace holds 4 M per rank)" : "");
    return status;
}

/* Weak scaling (--batch-per-rank B): the global batch is B x ranks and the learning rate grows
 * linearly with it from the rate given for a global batch of 128, with the usual warm-up (Goyal
 * et al. 2017, "Accurate, Large Minibatch SGD"). Everything downstream sees a global batch. */
static struct config scaled_for_ranks(const struct config *o, int ranks)
{
    struct config c = *o;
    if (o->batch_per_rank > 0) {
        c.batch = o->batch_per_rank * ranks;
        c.lr = o->lr * (double)c.batch / 128.0;
    }
    return c;
}

int train_command(const struct comm *comm, const struct config *given, char *err)
{
    struct config scaled = scaled_for_ranks(given, comm->size);
    scaled.threads = blas_threads(comm, given->threads, given->deterministic); /* as run: it changes the bits */
    struct config *o = &scaled;
    struct command_state cs = {.comm = comm, .config = o, .run_count = o->command == CMD_COMPARE ? o->pca_runs : 1,
                               .locks = OUTPUT_LOCKS_NONE};
    int status = DP_EXIT_ERROR;
    openblas_set_num_threads(o->threads);
    if (given->batch_per_rank > 0 && o->lr > CONFIG_LR_MAX) {
        err_set(err, "--batch-per-rank %d: on %d ranks the learning rate grows to %g (--lr %g x global batch %d / "
                "128), beyond --lr's largest value %g: lower --lr or --batch-per-rank", given->batch_per_rank,
                comm->size, o->lr, given->lr, o->batch, CONFIG_LR_MAX);
        return DP_EXIT_USAGE;
    }
    if ((size_t)o->batch < (size_t)comm->size) {
        err_set(err, "%s %d: the global batch must be at least the number of ranks (%d)", cli_flag(OPTION_BATCH),
                o->batch, comm->size);
        return DP_EXIT_USAGE;
    }
    if (o->deterministic && comm->size > SHARDS_VIRTUAL) {
        err_set(err, "%s: %d ranks, but a deterministic run takes at most %d (it cuts the training set into %d "
                "virtual shards and every rank holds whole ones)", cli_flag(OPTION_DETERMINISTIC), comm->size,
                SHARDS_VIRTUAL, SHARDS_VIRTUAL);
        return DP_EXIT_USAGE;
    }
    if (stop_install() != 0)
        FAIL("cannot install the SIGTERM/SIGUSR1 handlers");
    CHECK_DP(prepare_command(&cs, err));
    status = finish_trace(&cs, train_all(&cs, err), err);
fail:
    profile_free(&cs.profile);
    for (int i = 0; cs.runs && i < cs.run_count; i++)
        run_result_free(&cs.runs[i]);
    free(cs.runs);
    checkpoint_free(&cs.resume);
    shards_free(&cs.shards);
    release_outputs(&cs.locks);
    return status;
}

/* ---- eval ------------------------------------------------------------------------------ */

/* The checkpoint's settings as the configuration, so the model and inputs are built as in
 * training; the data, output, --tta and --tta-shift from the command line. */
static int config_from_checkpoint(const struct checkpoint *c, const struct config *given, struct config *o, char *err)
{
    if (run_checkpoint_settings(c, given, o) != 0)
        FAIL("%s: corrupt checkpoint: unknown optimizer '%s' or schedule '%s'", given->checkpoint, c->optimizer,
             c->schedule);
    o->validation = 0; /* eval uses the whole training set only for the input normalisation */
    o->bucket_mb = 0;
    o->tta = given->tta < 0 ? c->tta : given->tta; /* neither --tta nor --no-tta: as the training run did */
    o->tta_shift = given->tta_shift < 0 ? c->tta_shift : given->tta_shift;
    if (given->on_validation && c->validation == 0)
        FAIL("--on-validation: the run in %s held out no images (it was trained without --validation)",
             given->checkpoint);
    if (!o->tta && given->tta_shift > 0)
        FAIL("--tta-shift %d needs --tta (the run in %s was evaluated without it: add --tta)", given->tta_shift,
             given->checkpoint);
    return 0;
fail:
    return -1;
}

/* The run as the checkpoint holds it: parameters (the best validation epoch's, if kept),
 * statistics and history. */
static int load_checkpointed(struct run *run, struct checkpoint *c, char *err)
{
    struct run_result *r = run->result;
    CHECK_PTR(r->history = calloc((size_t)c->history_length + 1, sizeof *r->history), "cannot allocate the history");
    CHECK_DP(checkpoint_check_position(c, 0, run->model->param_count, run->model->buffer_count, run->config->checkpoint,
                                       err));
    r->parameters = run->model->param_count;
    memcpy(run->model->params, c->best_params ? c->best_params : c->params, r->parameters * sizeof(float));
    if (run->model->buffer_count) /* averaged over the ranks at every epoch end: row 0 is theirs */
        memcpy(run->model->buffers, c->best_buffers ? c->best_buffers : c->buffers,
               run->model->buffer_count * sizeof(float));
    memcpy(r->history, c->history, (size_t)c->history_length * sizeof *r->history);
    r->history_length = c->history_length;
    r->train_seconds = c->train_seconds;
    return 0;
fail:
    return -1;
}

static void print_evaluated(const struct checkpoint *c, const char *path)
{
    /* Say exactly which parameters were evaluated: a checkpoint may be mid-epoch, and with
     * --validation it holds the best epoch's parameters beside the latest. */
    printf("evaluated %s: run %s saved after %d of %d epochs", path, c->name, c->epoch, c->epochs);
    if (c->step > 0)
        printf(" and %ld steps of epoch %d", c->step, c->epoch + 1);
    if (c->best_params)
        printf("; parameters of epoch %d, the best on validation\n", c->best_epoch);
    else
        printf("; its latest parameters\n");
}

/* --on-validation: the run's hold-out takes the test set's place (rank 0's whole set and every
 * rank's block), to be evaluated, predicted and written as the test set would be. */
static void holdout_as_test(struct shards *d)
{
    struct split whole = d->test, part = d->test_part;
    d->test = d->validation;
    d->test_part = d->validation_part;
    d->validation = whole;
    d->validation_part = part;
}

/* Collective: the checkpoint's run on this data's test set, and rank 0 writes the results. */
static int evaluate_checkpoint(struct run *run, struct checkpoint *c, struct shards *d, char *err)
{
    struct run_result *r = run->result;
    int ok = 1;
    if (c->pca_components > 0) {
        r->pca = c->pca;
        memset(&c->pca, 0, sizeof c->pca);
    }
    /* the saved normalisation, not this data file's: the model saw those inputs */
    d->norm.channels = c->data.image.channels;
    memcpy(d->norm.mean, c->norm_mean, sizeof d->norm.mean);
    memcpy(d->norm.std, c->norm_std, sizeof d->norm.std);
    CHECK_DP(run_allocate(run, c->pca_components > 0 ? &r->pca : NULL, err));
    ok = load_checkpointed(run, c, err) == 0;
    CHECK_DP(comm_agree(run->comm, ok, err));
    CHECK_DP(evaluate_predictions(run->comm, &run->eval, &run->test, &d->test, r, err));
    r->parameter_hash = model_param_hash(run->model);
    if (run->comm->rank == 0) {
        print_evaluated(c, run->config->checkpoint);
        console_summary(r);
        struct results_origin origin = {run->config->command_line, run->comm->size, run->comm->hosts, &d->about};
        ok = results_write(run->config->out, &origin, r, 1, err) == 0;
        if (ok)
            printf("\nresults written to %s\n", run->config->out);
    }
    return comm_agree(run->comm, ok, err);
fail:
    return -1;
}

int eval_command(const struct comm *comm, const struct config *given, char *err)
{
    struct checkpoint c = {0};
    struct config o;
    struct shards d = {0};
    struct run_result r = {0};
    struct run run = {.comm = comm, .config = &o, .shards = &d, .result = &r};
    struct output_locks locks = OUTPUT_LOCKS_NONE;
    int status = DP_EXIT_ERROR;
    CHECK_DP(check_paths(comm, given, &locks, err));
    int ok = checkpoint_read(given->checkpoint, &c, err) == 0 && config_from_checkpoint(&c, given, &o, err) == 0;
    CHECK_DP(comm_agree(comm, ok, err));
    struct config as_trained = o; /* the settings as trained, the views as evaluated here */
    as_trained.validation = c.validation;
    /* as the run was trained: a deterministic run's predictions again, bit for bit */
    openblas_set_num_threads(blas_threads(comm, given->threads, c.deterministic));
    o.deterministic = 0; /* nothing is trained: one unit per rank */
    /* the hold-out as the run chose it: from its seed, the same for any rank count */
    CHECK_DP(shards_load(comm, &(struct shard_plan){o.data, given->on_validation ? c.validation : 0, o.seed, 0, 0}, &d,
                         err));
    /* the same checkpoint and data on every rank: the same verdict */
    CHECK_DP(checkpoint_check_shape(&c, &d.identity, o.data, given->checkpoint, err));
    describe_result(&r, &as_trained, &d, c.name, c.pca_components);
    r.ranks = comm->size;
    r.epochs = c.epoch; /* what was trained, not what the run set out to train */
    r.partial_steps = c.step;
    /* The hold-out is a draw from the run's own training images: on any other data (another file,
     * or the same images shuffled) its accuracy would be of other images, said as if it were not. */
    if (given->on_validation &&
        checkpoint_check_data(&c, &d.identity, o.data, given->checkpoint, "evaluate its hold-out", err) != 0) {
        err_prefix(err, "--on-validation");
        goto fail;
    }
    if (given->on_validation)
        holdout_as_test(&d);
    r.has_validation = 0;
    r.on_validation = given->on_validation;
    CHECK_DP(evaluate_checkpoint(&run, &c, &d, err));
    status = DP_EXIT_OK;
fail:
    run_free(&run);
    run_result_free(&r);
    checkpoint_free(&c);
    shards_free(&d);
    release_outputs(&locks);
    return status;
}
