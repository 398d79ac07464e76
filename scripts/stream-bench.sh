#!/usr/bin/env bash
# Data larger than memory: the same training with each rank's shard held in memory and streamed
# from the data file through --memory-budget (docs/training.md#data-larger-than-memory), one seed
# after another, alternating, on 2 ranks. Prints for every run its test accuracy, training samples/s
# (training samples x epochs / the epochs' own seconds: evaluation excluded) and the largest rank's peak memory, then the streamed runs' samples/s as a share of
# the held runs' and the mean accuracy of each, beside the spread of the held runs over the seeds
# (the run-to-run noise the streamed runs are judged against). Figures, not a test.
#
# usage: scripts/stream-bench.sh [extra train flags...]
#        (environment: BUILD=build, DATA=data/fashion-mnist.h5, RANKS=2, EPOCHS=10, SEEDS="1 2 3",
#         BUDGET=8 (MB))
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
data=${DATA:-data/fashion-mnist.h5}
ranks=${RANKS:-2}
epochs=${EPOCHS:-10}
seeds=${SEEDS:-1 2 3}
budget=${BUDGET:-8}
[[ -x $build/dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build" >&2
[[ -f $data ]] || "$build/dptrain" convert --out "$data" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/dptrain-stream-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

peak() { "$build/bench_kernels" sgemm | awk '/^sgemm_peak_gflops/ { print $2 }'; }
echo "data: $data; $ranks ranks on $(hostname), $(nproc) cores, $(date -u +%F); $epochs epochs; budget $budget MB"
echo "sgemm peak P before: $(peak) GFLOP/s (build/bench_kernels sgemm, one thread)"

# one run: prints "MODE SEED ACCURACY SAMPLES_PER_S PEAK_MB"
one() {
  local mode=$1 seed=$2 flags=()
  [[ $mode == streamed ]] && flags=(--memory-budget "$budget")
  mpirun -np "$ranks" --bind-to core "$build/dptrain" train --data "$data" --out "$work/$mode-$seed.h5" \
    --epochs "$epochs" --seed "$seed" "${flags[@]}" "${@:3}" > "$work/$mode-$seed.log"
  grep -m1 '^kernels: ' "$work/$mode-$seed.log" > "$work/kernels"
  local peak_mb
  peak_mb=$(grep -m1 -oE 'peak memory [0-9]+ MB' "$work/$mode-$seed.log" | awk '{ print $3 }')
  # samples/s over the run's epochs: training samples x epochs / the epochs' own seconds (the
  # epoch lines' times, evaluation excluded)
  awk -v mode="$mode" -v seed="$seed" -v peak="$peak_mb" '
    /^run .* training samples$/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "training") samples = $i }
    /^epoch / { for (i = 1; i <= NF; i++) if ($(i + 1) == "s" && $(i + 3) == "samples/s") { seconds += $i; n++ } }
    /^run .*: test accuracy/ { sub(/%/, "", $5); accuracy = $5 / 100 }
    END { printf "%s %s %.4f %.0f %s\n", mode, seed, accuracy, samples * n / seconds, peak }' "$work/$mode-$seed.log"
}

printf '%-9s %4s %9s %10s %8s\n' mode seed accuracy samples/s peak_MB
for seed in $seeds; do
  for mode in held streamed; do
    one "$mode" "$seed" "$@" | tee -a "$work/rows" | awk '{ printf "%-9s %4s %9s %10s %8s\n", $1, $2, $3, $4, $5 }'
  done
done
cat "$work/kernels"
echo "sgemm peak P after: $(peak) GFLOP/s"
awk '
  { n[$1]++; acc[$1] += $3; sq[$1] += $3 * $3; rate[$1] += $4 }
  END {
    for (m in n) { mean[m] = acc[m] / n[m]; sd[m] = n[m] > 1 ? sqrt((sq[m] - n[m] * mean[m] ^ 2) / (n[m] - 1)) : 0 }
    printf "streamed samples/s: %.1f%% of held (means over %d seeds)\n", 100 * rate["streamed"] / rate["held"], n["held"]
    printf "test accuracy: held %.2f%% (sd %.2f over the seeds), streamed %.2f%% (sd %.2f); difference %+.2f points\n",
      100 * mean["held"], 100 * sd["held"], 100 * mean["streamed"], 100 * sd["streamed"], 100 * (mean["streamed"] - mean["held"])
  }' "$work/rows"
