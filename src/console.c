#include "dptrain/console.h"

#include "dptrain/check.h"
#include "dptrain/kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <sys/resource.h>

/* The data's line, and how the training rows reach the ranks when they are streamed. */
static void announce_data(const struct run *run)
{
    const struct config *o = run->config;
    const struct data_description *about = &run->shards->about;
    char shape[48];
    image_shape_text(&about->image, shape, sizeof shape);
    printf("data: %s%s%s images (HxWxC) of %d classes", about->name, about->name[0] ? ", " : "", shape,
           about->classes);
    if (o->augment || o->tta)
        printf("; mirror images %s (%s)", o->flip ? "used" : "not used",
               o->flip == about->mirror_invariant ? "the data file's mirror_invariant" : "--flip");
    printf("\n");
    if (run->stream)
        printf("training data streamed from the file within --memory-budget %d MB a rank: windows of %zu images "
               "read ahead by a thread, shuffled by chunk and within each window\n", o->memory_budget,
               stream_window_images(run->stream));
}

/* Ranks numbered in turn over the hosts cost a flat allreduce its speed (docs/cluster.md
 * measures it); nothing to say when they are numbered host by host. */
static void announce_rank_order(const struct comm *comm)
{
    if (comm->host_runs > comm->hosts)
        printf("rank order: the %d ranks are numbered in turn over the %d hosts (%d runs of consecutive ranks "
               "on one host, not %d), so the gradient's ring allreduce crosses between hosts at every step; "
               "number them host by host (mpirun --map-by node --rank-by slot): docs/cluster.md#rank-order\n",
               comm->size, comm->hosts, comm->host_runs, comm->hosts);
}

void console_announce(const struct run *run)
{
    const struct config *o = run->config;
    const struct run_result *r = run->result;
    if (run->comm->rank != 0)
        return;
    printf("run %s: model %s (%zu parameters), inputs %s", r->name, o->model, r->parameters,
           r->pca_components ? "PCA" : "raw pixels");
    if (r->pca_components)
        printf(" %d components keeping %.2f%% of the variance (fit %.2f s)", r->pca_components,
               100 * pca_variance_kept(&r->pca), r->pca.fit_seconds);
    int threads = openblas_get_num_threads();
    printf(", %d rank%s on %d host%s (%d BLAS thread%s each), global batch %d, %zu training samples\n",
           run->comm->size, run->comm->size == 1 ? "" : "s", run->comm->hosts, run->comm->hosts == 1 ? "" : "s",
           threads, threads == 1 ? "" : "s", o->batch, run->shards->train_total);
    announce_rank_order(run->comm);
    announce_data(run);
    char kernels[KERNELS_DESCRIPTION_LENGTH];
    kernels_describe(kernels, sizeof kernels);
    printf("kernels: OpenBLAS %s\n", kernels);
    size_t wire = reducer_wire_bytes(&run->reducer);
    if (o->deterministic)
        printf("deterministic: %d virtual shards (this rank %d..%d), exact gradient sums: the same bits on any "
               "rank count\n", run->shards->units, run->shards->first_unit + 1, run->shards->first_unit + run->shards->local_units);
    else if (wire > 0 && run->reducer.powersgd)
        printf("gradient allreduce: %.3f MB per step from each rank (%zu bytes: PowerSGD rank %d on %d weight "
               "matrices, the other gradients float32; error feedback)\n", (double)wire / 1e6, wire,
               o->compress.rank, run->reducer.psgd.count);
    else if (wire > 0)
        printf("gradient allreduce: %.2f MB per step from each rank (%s)\n", (double)wire / 1e6,
               run->reducer.bf16 ? "bfloat16 with error feedback" : "float32");
    if (run->reducer.sharded)
        printf("optimizer sharded: each rank updates %.1f%% of the parameters (reduce-scatter, update, allgather)\n",
               100.0 / run->comm->size);
    if (o->batch_per_rank > 0)
        printf("weak scaling: %d per rank x %d ranks; learning rate %g = %g x %d / 128\n", o->batch_per_rank,
               run->comm->size, o->lr, o->lr * 128.0 / (double)o->batch, o->batch);
    if (run->start_epoch == o->epochs)
        printf("%s holds the finished run (%d of %d epochs): nothing to train; evaluating it and writing its "
               "results\n", o->checkpoint, run->start_epoch, o->epochs);
    else if (run->start_epoch > 0 || run->start_step > 0)
        printf("resumed from %s at epoch %d, step %ld\n", o->checkpoint, run->start_epoch + 1, run->start_step + 1);
    if (run->resumed_ranks > 0 && run->resumed_ranks != run->comm->size && run->start_epoch < o->epochs)
        printf("the checkpoint was saved by %d rank%s, this run has %d: %s\n", run->resumed_ranks,
               run->resumed_ranks == 1 ? "" : "s", run->comm->size,
               o->deterministic      ? "deterministic, so the run goes on exactly as it would have"
               : run->start_step > 0 ? "the rest of this epoch takes a new data order and random streams (docs/"
                                       "checkpoints.md)"
                                     : "the same global batch and schedule go on");
    if (run->resumed_ranks > 0 && run->resumed_budget != o->memory_budget && run->start_step > 0 &&
        run->start_epoch < o->epochs)
        printf("the checkpoint was saved with --memory-budget %d, this run has %d (0: in memory): the rest of this "
               "epoch takes a new data order (docs/training.md)\n", run->resumed_budget, o->memory_budget);
}

void console_epoch(const struct epoch_record *e, int epochs, int has_validation)
{
    printf("epoch %3d/%d  loss %.4f  train %.2f%%", e->epoch, epochs, e->train_loss, 100 * e->train_accuracy);
    if (has_validation && !isnan(e->val_accuracy))
        printf("  val %.2f%%", 100 * e->val_accuracy);
    if (!isnan(e->test_accuracy)) /* --eval-every skips the others */
        printf("  test %.2f%%", 100 * e->test_accuracy);
    printf("  %.1f s  %.0f samples/s\n", e->seconds, e->samples_per_second);
    fflush(stdout);
}

void console_budget_spent(const struct config *o, int epoch)
{
    printf("--max-time %g: the time budget ran out during epoch %d of %d; training ends here\n", o->max_time, epoch,
           o->epochs);
}

void console_straggler(const struct straggler *slow, const char *host, int epoch)
{
    printf("dptrain: a slow rank: rank %d on %s computed %.1fx the median of the other ranks in epochs %d-%d; they "
           "waited %.0f%% of their steps for it\n", slow->rank, host, slow->ratio, epoch - 1, epoch,
           100 * slow->others_waited);
    fflush(stdout);
}

void console_summary(const struct run_result *r)
{
    printf("\nrun %s: %s accuracy %.2f%%", r->name, r->on_validation ? "validation" : "test", 100 * r->test_accuracy);
    if (r->test_views > 1)
        printf(" (%d views of each image)", r->test_views);
    printf(", %s loss %.4f, %.1f s of training", r->on_validation ? "validation" : "test", r->test_loss,
           r->train_seconds);
    if (r->has_validation)
        printf(", parameters of epoch %d (best validation accuracy)", r->best_epoch);
    if (r->ended_by_budget)
        printf(", %d of %d epochs (--max-time ended training)", r->history_length, r->epochs);
    printf("\nparameter hash %016llx\n\n", (unsigned long long)r->parameter_hash);
    metrics_print_report(stdout, &r->metrics, r->class_names);
    printf("\n");
    metrics_print_confusion(stdout, &r->metrics, r->class_names);
    fflush(stdout);
}

void console_comparison(const struct run_result *runs, int count)
{
    printf("\n%-8s %10s %9s %11s %9s %9s %10s %10s\n", "input", "components", "variance", "parameters", "test acc",
           "macro F1", "train s", "samples/s");
    for (int i = 0; i < count; i++) {
        const struct run_result *r = &runs[i];
        double kept = r->pca_components ? pca_variance_kept(&r->pca) : 1.0;
        double total_samples = 0;
        for (int e = 0; e < r->history_length; e++)
            total_samples += r->history[e].samples_per_second * r->history[e].seconds;
        printf("%-8s %10d %8.2f%% %11zu %8.2f%% %9.4f %10.1f %10.0f\n", r->pca_components ? "pca" : "raw",
               r->inputs, 100 * kept, r->parameters,
               100 * r->test_accuracy, r->metrics.macro_f1, r->train_seconds, total_samples / r->train_seconds);
    }
    fflush(stdout);
}

static const char *const step_phases[] = {PHASE_STOP_CHECK, PHASE_DATA, PHASE_FORWARD, PHASE_BACKWARD,
                                          PHASE_ALLREDUCE_WAIT, PHASE_OPTIMIZER};
static const char *const products[] = {"dense forward", "dense backward", "conv forward", "conv backward"};

static double sum_seconds(const struct profile *p, const char *const *names, size_t count)
{
    double seconds = 0;
    for (size_t i = 0; i < count; i++)
        seconds += profile_seconds(p, names[i]);
    return seconds;
}

static void print_phases(const struct profile *p, double step_seconds, long steps)
{
    size_t phases = sizeof step_phases / sizeof *step_phases;
    printf("profile (rank 0): %.3f ms per step:", 1e3 * step_seconds / (double)steps);
    for (size_t i = 0; i < phases; i++)
        printf("%s %s %.1f%%", i ? "," : "", step_phases[i], 100 * profile_seconds(p, step_phases[i]) / step_seconds);
    printf("; matrix-product layers (dense, conv) %.1f%% of the step\n",
           100 * sum_seconds(p, products, sizeof products / sizeof *products) / step_seconds);
}

int console_profile(const struct run *run, char *err)
{
    const struct profile *p = run->profile;
    const struct run_result *r = run->result;
    struct rusage usage;
    CHECK_SYS(getrusage(RUSAGE_SELF, &usage), "getrusage failed");
    long peak_kb = usage.ru_maxrss;
    CHECK_DP(comm_max_long(run->comm, &peak_kb, err));
    double step_seconds = sum_seconds(p, step_phases, sizeof step_phases / sizeof *step_phases), samples = 0;
    long steps = profile_count(p, PHASE_OPTIMIZER);
    if (run->comm->rank != 0 || steps == 0 || step_seconds <= 0)
        return 0;
    for (int e = 0; e < r->history_length; e++)
        samples += r->history[e].samples_per_second * r->history[e].seconds;
    print_phases(p, step_seconds, steps);
    double flops = model_training_flops(run->model);
    printf("profile: %.2f MFLOP per training sample, %.1f GFLOP/s over all ranks; evaluation %.1f s, "
           "checkpoints %.1f s; peak memory %.0f MB per rank (largest)\n",
           1e-6 * flops, r->train_seconds > 0 ? 1e-9 * flops * samples / r->train_seconds : 0.0,
           profile_seconds(p, PHASE_EVALUATION), profile_seconds(p, PHASE_CHECKPOINT), (double)peak_kb / 1024.0);
    fflush(stdout);
    return 0;
fail:
    return -1;
}
