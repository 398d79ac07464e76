#!/usr/bin/env bash
# A scaling model checked against measurements (issue 17, item 4). On the cluster of namespaced
# hosts (scripts/cluster-up.sh) it measures:
#   - the allreduce's latency and bandwidth on 2 to 4 ranks (bench_kernels: the median of 300
#     allreduces of 1 float and of SCALING_BIG_FLOATS floats) over shared memory on one host, and
#     over TCP between 2 to HOSTS hosts at full speed and with every host's link limited by tc tbf
#     to 10 Gbit/s and 1 Gbit/s (this kernel has no netem: latency enters the model as a parameter);
#   - each model's step on 1 rank at per-rank batches 128, 64, 32 and 16 (compute per sample, and
#     the optimizer's update), from dptrain's own profile line; the same step at batch 64 in two
#     1-rank runs at once (what a rank loses to a neighbour computing beside it: shared memory
#     bandwidth and caches); the MLP's with --compress bf16
#     and powersgd:4 on 2 ranks of one host (each compression's own cost per parameter);
#   - the step time of every configuration that fits on this machine: the MLP on 1 to 4 ranks of
#     one host and on 2 to HOSTS hosts at each shaping (float32; bf16 and powersgd:4 on 2 hosts),
#     the CNN on 1 and 2 ranks of one host and on 2 hosts at each shaping (and powersgd:4 at
#     10 Gbit/s);
# then scripts/scaling_model.py fits the model from the first two kinds of figures only, prints
# its equations and constants, every measured configuration beside its prediction, the
# predicted efficiency for 1 to 256 nodes, draws OUT/scaling.png (the figures it used are kept in
# OUT/scaling-figures.txt), and ends with the line `worst prediction error: X%`.
#
# usage: scripts/scaling.sh [build-dir] [out-dir]        (default build, results)
#   environment: SCALING_HOSTS (4: the largest host count measured), SCALING_IMAGES (25600
#   training images: 200 steps of the MLP; the CNN takes a quarter), SCALING_BIG_FLOATS (262144),
#   SCALING_REPEATS (3: every training configuration runs this many times, the median kept),
#   BENCH_DATA (an HDF5 data file; default: converted into a temporary folder),
#   DPTRAIN_CLUSTER_DIR (use the cluster that is up there, if it has enough hosts; else this script
#   starts its own and stops it at the end). One BLAS thread per rank; needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-results}
hosts=${SCALING_HOSTS:-4}
images=${SCALING_IMAGES:-25600}
big=${SCALING_BIG_FLOATS:-262144}
repeats=${SCALING_REPEATS:-3}
die() { echo "scaling: $*" >&2; exit 1; }
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 2 ] && [ "$hosts" -le 8 ] || die "SCALING_HOSTS must be 2..8 (got '$hosts')"
[[ "$images" =~ ^[0-9]+$ ]] && [ "$images" -ge 2560 ] || die "SCALING_IMAGES must be a number of at least 2560 (got '$images')"
[[ "$big" =~ ^[0-9]+$ ]] && [ "$big" -ge 4096 ] || die "SCALING_BIG_FLOATS must be a number of at least 4096 (got '$big')"
[[ "$repeats" =~ ^[1-9]$ ]] || die "SCALING_REPEATS must be 1..9 (got '$repeats')"
[ -e "$out" ] && [ ! -d "$out" ] && die "$out exists and is not a folder"
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and tc)"
[[ -x $build/dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build" >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/dptrain-scaling-XXXXXX)
# shellcheck source=cluster-session.sh
source scripts/cluster-session.sh
cluster_session "$hosts" "$work"
log() { echo "scaling: $*" >&2; }
figures=$work/figures.txt

data=$(bench_data "$build")
# The first SCALING_IMAGES training images (and 1,000 test images): enough steps to time, short runs.
subset() { # images path
  subset_data "$data" "$1" "$2"
}
subset "$images" "$work/mlp.h5"
subset $((images / 4)) "$work/cnn.h5"

shape() { # rate (empty: full speed), on the links of every host
  shape_links "$1" "$hosts"
}

allreduce() { # net ranks floats
  local result
  if [ "$1" = shm ]; then
    result=$(env -u OMPI_MCA_btl_tcp_if_include -u OMPI_MCA_oob_tcp_if_include \
      mpirun -np "$2" --oversubscribe --bind-to none "$build/bench_kernels" allreduce "$3")
  else
    result=$($DPTRAIN_MPIRUN -np "$2" "$build/bench_kernels" allreduce "$3")
  fi
  echo "allreduce $1 $2 $3 $(awk '/allreduce_median_seconds/ {print $2}' <<<"$result")" >> "$figures"
}

# SCALING_REPEATS training runs of one configuration; appends the median's
# "KIND model compress where net ranks batch step_ms optimizer_ms params [wire_bytes]" (the bytes
# per step for PowerSGD, as dptrain printed them).
step() { # kind model compress where(host|hosts) net ranks batch
  local kind=$1 model=$2 compress=$3 where=$4 net=$5 ranks=$6 batch=$7 launcher logs=()
  if [ "$where" = host ]; then # this namespace has no cluster subnet: no MCA settings for it
    launcher=(env -u OMPI_MCA_btl_tcp_if_include -u OMPI_MCA_oob_tcp_if_include mpirun -np "$ranks" --oversubscribe
      --bind-to none)
  else
    read -r -a launcher <<<"$DPTRAIN_MPIRUN"
    launcher+=(-np "$ranks")
  fi
  for ((r = 1; r <= repeats; r++)); do
    "${launcher[@]}" "$build/dptrain" train --model "$model" --data "$work/$model.h5" --out "$work/run.h5" \
      --epochs 1 --batch "$batch" --threads 1 --compress "$compress" --drift-check 0 --no-augment > "$work/run$r.log"
    logs+=("$work/run$r.log")
    rm -f "$work/run.h5"
  done
  /usr/bin/python3 - "$kind $model $compress $where $net $ranks $batch" "${logs[@]}" >> "$figures" <<'PY'
import re, statistics, sys
runs = []
for path in sys.argv[2:]:
    text = open(path).read()
    step = re.search(r"profile \(rank 0\): ([0-9.]+) ms per step:.* optimizer ([0-9.]+)%", text)
    params = re.search(r"\((\d+) parameters\)", text).group(1)
    wire = re.search(r"^gradient allreduce: .*\((\d+) bytes: PowerSGD", text, re.M)
    runs.append((float(step.group(1)), float(step.group(1)) * float(step.group(2)) / 100))
ms, update = sorted(runs)[len(runs) // 2]
print(f"{sys.argv[1]} {ms:.4f} {update:.4f} {params}" + (f" {wire.group(1)}" if wire else ""))
PY
}

# Two 1-rank runs at once, each at per-rank batch 64 (2 ranks' share of 128): "contended model 64
# step_ms", the median over SCALING_REPEATS of the two runs' mean.
contended() { # model
  local model=$1 r i pids
  for ((r = 1; r <= repeats; r++)); do
    pids=()
    for i in 1 2; do
      env -u OMPI_MCA_btl_tcp_if_include -u OMPI_MCA_oob_tcp_if_include mpirun -np 1 --bind-to none \
        "$build/dptrain" train --model "$model" --data "$work/$model.h5" --out "$work/busy$i.h5" --epochs 1 \
        --batch 64 --threads 1 --no-augment > "$work/busy$r-$i.log" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    rm -f "$work"/busy?.h5
  done
  /usr/bin/python3 - "$model" "$work"/busy*-?.log >> "$figures" <<'PY'
import re, statistics, sys
steps = [float(re.search(r"profile \(rank 0\): ([0-9.]+) ms per step", open(p).read()).group(1)) for p in sys.argv[2:]]
pairs = [(a + b) / 2 for a, b in zip(steps[::2], steps[1::2])]
print(f"contended {sys.argv[1]} 64 {statistics.median(pairs):.4f}")
PY
}

echo "cores $(nproc)" > "$figures"
echo "kernels ${OPENBLAS_CORETYPE:-auto-detected}" >> "$figures"
echo "hosts $hosts" >> "$figures"
for rate in 10gbit 1gbit; do # the tbf shaping: its rate in bits/s and its burst in bytes
  echo "shaping $rate ${rate%gbit}000000000 $(($(burst_of "$rate") * 1024))" >> "$figures"
done
for model in mlp cnn; do
  for batch in 128 64 32 16; do step compute "$model" none host shm 1 "$batch"; done
done
for model in mlp cnn; do contended "$model"; done
# bf16's own cost (rounding with error feedback, the user-defined sum): the MLP on 2 ranks of one host
step compute mlp bf16 host shm 2 128
step compute mlp powersgd:4 host shm 2 128
log "compute per sample measured"
for net in shm tcp 10gbit 1gbit; do
  case $net in shm | tcp) shape "" ;; *) shape "$net" ;; esac
  most=$hosts
  [ "$net" = shm ] && most=4
  for ((n = 2; n <= most; n++)); do
    allreduce "$net" "$n" 1
    allreduce "$net" "$n" "$big"
  done
done
log "allreduce latency and bandwidth measured"
shape ""
for ranks in 1 2 3 4; do step measured mlp none host shm "$ranks" 128; done
step measured cnn none host shm 1 128
step measured cnn none host shm 2 128
for net in tcp 10gbit 1gbit; do
  if [ "$net" = tcp ]; then shape ""; else shape "$net"; fi
  for ((n = 2; n <= hosts; n++)); do step measured mlp none hosts "$net" "$n" 128; done
  step measured mlp bf16 hosts "$net" 2 128
  step measured mlp powersgd:4 hosts "$net" 2 128
  step measured cnn none hosts "$net" 2 128
  if [ "$net" = 10gbit ]; then step measured cnn powersgd:4 hosts "$net" 2 128; fi
  log "$net measured"
done
shape ""
mkdir -p "$out"
cp "$figures" "$out/scaling-figures.txt" # the measurements behind the plot, for scaling_model.py again
/usr/bin/python3 scripts/scaling_model.py "$out/scaling-figures.txt" "$out/scaling.png"
