#!/usr/bin/env bash
# Figures across hosts, on the cluster of namespaced hosts (scripts/cluster-up.sh): the allreduce's
# latency (1 float) and bandwidth (the MLP's 235,146-float gradient and 4 Mi floats) over shared
# memory on one host and over TCP between 2 hosts, and MLP and CNN training samples/s on 1 host x 2
# ranks against 2 hosts x 1 rank (the MLP also with --compress bf16 and
# powersgd:4, and powersgd:4 with weak scaling, --batch-per-rank 128); the TCP figures at full speed and with both hosts' links limited
# by tc tbf to 10 Gbit/s and 1 Gbit/s (this kernel has no netem: no added latency). One BLAS thread
# per rank. Prints one table, headed by the OpenBLAS kernels in use. Needs root.
#
# usage: scripts/cluster-bench.sh [build-dir]
#   environment: BENCH_MLP_EPOCHS (3), BENCH_CNN_EPOCHS (1; 0 skips the CNN), BENCH_BIG_FLOATS (the
#   large allreduce, 4194304 = 16 MiB), BENCH_DATA (an HDF5 data file; default: converted into a
#   temporary folder). Uses the cluster in DPTRAIN_CLUSTER_DIR if one is up there, else starts its
#   own of 2 hosts and stops it at the end. Figures are medians of 300 allreduces (bench_kernels)
#   and whole training runs; the machine is shared, so compare rows of one run only.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[[ -x $build/dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build" >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/dptrain-cluster-bench-XXXXXX)
# shellcheck source=cluster-session.sh
source scripts/cluster-session.sh
cluster_session 2 "$work"
data=$(bench_data "$build")
log() { echo "cluster-bench: $*" >&2; }
big_floats=${BENCH_BIG_FLOATS:-4194304}

shape() { # rate (empty: full speed) -- on both hosts' links
  shape_links "$1" 2
}

median_seconds() { # where(local|hosts) floats
  local out
  if [ "$1" = local ]; then
    out=$(mpirun -np 2 --bind-to core "$build/bench_kernels" allreduce "$2")
  else
    out=$($DPTRAIN_MPIRUN -np 2 "$build/bench_kernels" allreduce "$2")
  fi
  awk '/allreduce_median_seconds/ {print $2}' <<<"$out"
}

samples_per_second() { # where(one|local|hosts) model epochs [train flags...] -> samples/s over the training time
  local where=$1 model=$2 epochs=$3 out=$work/run.h5
  shift 3
  rm -f "$out"
  if [ "$where" = one ]; then
    mpirun -np 1 --bind-to core "$build/dptrain" train --model "$model" --data "$data" --out "$out" \
      --epochs "$epochs" --quiet --threads 1 --no-augment "$@" >/dev/null
  elif [ "$where" = local ]; then
    mpirun -np 2 --bind-to core "$build/dptrain" train --model "$model" --data "$data" --out "$out" \
      --epochs "$epochs" --quiet --threads 1 --no-augment "$@" >/dev/null
  else
    $DPTRAIN_MPIRUN -np 2 "$build/dptrain" train --model "$model" --data "$data" --out "$out" \
      --epochs "$epochs" --quiet --threads 1 --no-augment "$@" >/dev/null
  fi
  /usr/bin/python3 - "$out" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    run = next(iter(f["runs"].values()))
    h = run["history"]
    print(f"{(h['samples_per_second'][:] * h['seconds'][:]).sum() / run.attrs['train_seconds']:.0f}")
PY
}

row() { # label where rate
  shape "$3"
  local one mlp_grad big mlp mlp_bf16 mlp_psgd mlp_psgd_weak cnn=-
  one=$(median_seconds "$2" 1)
  mlp_grad=$(median_seconds "$2" 235146)
  big=$(median_seconds "$2" "$big_floats")
  mlp=$(samples_per_second "$2" mlp "${BENCH_MLP_EPOCHS:-3}")
  mlp_bf16=$(samples_per_second "$2" mlp "${BENCH_MLP_EPOCHS:-3}" --compress bf16)
  mlp_psgd=$(samples_per_second "$2" mlp "${BENCH_MLP_EPOCHS:-3}" --compress powersgd:4)
  mlp_psgd_weak=$(samples_per_second "$2" mlp "${BENCH_MLP_EPOCHS:-3}" --compress powersgd:4 --batch-per-rank 128)
  [ "${BENCH_CNN_EPOCHS:-1}" -gt 0 ] && cnn=$(samples_per_second "$2" cnn "${BENCH_CNN_EPOCHS:-1}")
  awk -v l="$1" -v one="$one" -v g="$mlp_grad" -v b="$big" -v n="$big_floats" -v mlp="$mlp" -v m16="$mlp_bf16" \
      -v psgd="$mlp_psgd" -v weak="$mlp_psgd_weak" -v cnn="$cnn" 'BEGIN {
    printf "%-30s %9.1f %9.3f %9.2f %9.3f %9.2f %10s %10s %10s %10s %9s\n", l, one * 1e6, g * 1e3, 235146 * 4 / g / 1e9,
           b * 1e3, n * 4 / b / 1e9, mlp, m16, psgd, weak, cnn }'
  log "$1 done"
}

echo "OpenBLAS kernels: ${OPENBLAS_CORETYPE:-auto-detected} (OPENBLAS_CORETYPE); $(nproc) cores; $(date -u +%F)"
big_label=$(awk -v n="$big_floats" 'BEGIN { printf "%.3g MiB", n * 4 / 1048576 }')
printf "%-30s %9s %9s %9s %9s %9s %10s %10s %10s %10s %9s\n" "2 ranks on" "1 float" "MLP grad" "GB/s" "$big_label" "GB/s" \
  "MLP" "MLP bf16" "MLP psgd:4" "+weak" "CNN"
printf "%-30s %9s %9s %9s %9s %9s %10s %10s %10s %10s %9s\n" "" "us" "ms" "" "ms" "" "samples/s" "samples/s" "samples/s" \
  "samples/s" "samples/s"
one_rank=$(samples_per_second one mlp "${BENCH_MLP_EPOCHS:-3}")
row "1 host (shared memory)" local ""
row "2 hosts (TCP, full speed)" hosts ""
row "2 hosts, links at 10 Gbit/s" hosts 10gbit
row "2 hosts, links at 1 Gbit/s" hosts 1gbit
echo "(1 rank, no allreduce: MLP $one_rank samples/s; each row's MLP columns divided by it are the speed-ups of 2 ranks)"
