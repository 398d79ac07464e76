#!/usr/bin/env bash
# Time to accuracy: trains one setting on 2 ranks from the command line's flags, as a user would
# (`mpirun -np 2 dptrain train FLAGS`), and prints its wall time (start-up and every evaluation
# included), test accuracy, the single-core sgemm peak P measured just before and just after, the
# wall time scaled to a machine of P = 100 GFLOP/s (wall x P / 100, P the mean of the two), the
# OpenBLAS kernels, and the run's two profile lines (where a step goes, and its GFLOP/s against 2 x P).
#
# usage: scripts/time-to-accuracy.sh [train flags...]
#        e.g. scripts/time-to-accuracy.sh                        (the default MLP)
#             scripts/time-to-accuracy.sh --model cnn --augment  (the CNN)
#        (environment: BUILD=build, DATA=data/fashion-mnist.h5, RANKS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
data=${DATA:-data/fashion-mnist.h5}
ranks=${RANKS:-2}
[[ -x $build/dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build" >&2
[[ -f $data ]] || "$build/dptrain" convert --out "$data" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/dptrain-tta-XXXXXX)
trap 'rm -rf "$work"' EXIT

peak() { "$build/bench_kernels" sgemm | awk '/^sgemm_peak_gflops/ { print $2 }'; }
before=$(peak)
start=$(date +%s.%N)
mpirun -np "$ranks" --bind-to core "$build/dptrain" train --data "$data" --out "$work/run.h5" "$@" > "$work/run.log"
wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
after=$(peak)
accuracy=$(grep -m1 -E '^run .*: test accuracy' "$work/run.log" | sed -E 's/.*test accuracy ([0-9.]+%).*/\1/')
kernels=$(grep -m1 '^kernels: ' "$work/run.log" | sed 's/^kernels: //')
echo "flags: ${*:-(the defaults)}; $ranks ranks on $(hostname), $(nproc) cores, $(date -u +%F)"
echo "kernels: $kernels"
echo "sgemm peak P: $before GFLOP/s before, $after after (build/bench_kernels sgemm, one thread)"
awk -v w="$wall" -v b="$before" -v a="$after" -v acc="$accuracy" 'BEGIN {
  p = (b + a) / 2
  printf "test accuracy %s; wall %.1f s; at P = 100: %.1f s (wall x %.1f / 100)\n", acc, w, w * p / 100, p }'
grep -E '^profile|budget|^run .*: test accuracy' "$work/run.log"
