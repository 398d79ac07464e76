#!/usr/bin/env bash
# Collectives that know the hosts (issue 31, item 4), on the cluster of namespaced hosts
# (scripts/cluster-up.sh) with COLL_PER_HOST ranks on each of COLL_HOSTS hosts. For each link
# (full speed, and every host's link limited by tc tbf to 1 Gbit/s) and each rank order
#   round-robin  --map-by node --rank-by node   (ranks 0, 2 on node1; 1, 3 on node2)
#   block        --map-by node --rank-by slot   (ranks 0, 1 on node1; 2, 3 on node2: DPTRAIN_MPIRUN's)
# it times the allreduce of 1 float and of the CNN's and the 1024-1024 MLP's gradients (824,554 and
# 1,863,690 floats, in place, as dptrain sums them; bench_kernels checks every sum) with
#   tuned        Open MPI's default component (coll/tuned: flat algorithms over the ranks)
#   tuned ring   coll/tuned forced to its ring (algorithm 4), the flat algorithm the model describes
#   han          coll/han, Open MPI's hierarchical collectives (--mca coll_han_priority 100)
#   han 1 seg    coll/han with its allreduce in one segment (coll_han_allreduce_segsize 1 GiB)
# and that MLP's training step (dptrain's profile line; the default MLP until 2026-12-07) with tuned
# and with han 1 seg.
# The 2-rank references (2 ranks on one host; 1 rank on each of 2 hosts) give the latency and
# bandwidth of shared memory and of the link; scripts/scaling_model.py --collectives then predicts
# every flat-ring and hierarchical row from them (the intra- and inter-host terms) and prints the
# error. A run that crashes prints "crash" in its cell. Figures are medians (300 sums of 1 float,
# COLL_REPS of a gradient; the median of COLL_REPEATS training runs); the machine is shared, so
# compare rows of one run only. Needs root.
#
# usage: scripts/collectives-bench.sh [build-dir]
#   environment: COLL_HOSTS (2; 2..4), COLL_PER_HOST (2; 2..4), COLL_REPS (20), COLL_RATES ("full
#   1gbit"), COLL_REPEATS (3), COLL_IMAGES (12800: training images of each run), BENCH_DATA (an
#   HDF5 data file; default: converted into a temporary folder), DPTRAIN_CLUSTER_DIR (use the
#   cluster that is up there, if it has enough hosts; else one is started and stopped).
#   COLL_FIGURES=PATH keeps the figures for scripts/scaling_model.py --collectives PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
hosts=${COLL_HOSTS:-2}
per_host=${COLL_PER_HOST:-2}
reps=${COLL_REPS:-20}
rates=${COLL_RATES:-full 1gbit}
repeats=${COLL_REPEATS:-3}
images=${COLL_IMAGES:-12800}
die() { echo "collectives-bench: $*" >&2; exit 1; }
[[ "$hosts" =~ ^[2-4]$ ]] || die "COLL_HOSTS must be 2..4 (got '$hosts')"
[[ "$per_host" =~ ^[2-4]$ ]] || die "COLL_PER_HOST must be 2..4 (got '$per_host')"
[[ "$reps" =~ ^[0-9]+$ ]] && [ "$reps" -ge 1 ] && [ "$reps" -le 1000 ] || die "COLL_REPS must be 1..1000 (got '$reps')"
[[ "$repeats" =~ ^[1-9]$ ]] || die "COLL_REPEATS must be 1..9 (got '$repeats')"
[[ "$images" =~ ^[0-9]+$ ]] && [ "$images" -ge 1280 ] || die "COLL_IMAGES must be a number of at least 1280 (got '$images')"
for rate in $rates; do
  [[ "$rate" =~ ^(full|[0-9]+gbit|[0-9]+mbit)$ ]] || die "COLL_RATES: '$rate' is not full, NNgbit or NNmbit"
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and tc)"
[[ -x $build/dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build" >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/dptrain-collectives-XXXXXX)
# shellcheck source=cluster-session.sh
source scripts/cluster-session.sh
cluster_session "$hosts" "$work"
log() { echo "collectives-bench: $*" >&2; }
figures=$work/figures.txt
ranks=$((hosts * per_host))
mlp_floats=1863690
cnn_floats=824554

data=$(bench_data "$build")
subset_data "$data" "$images" "$work/mlp.h5"

# The cluster's launcher without its rank order (DPTRAIN_MPIRUN numbers ranks host by host).
launcher=${DPTRAIN_MPIRUN/ --rank-by slot/}
order_flags() { # order
  if [ "$1" = block ]; then echo "--rank-by slot"; else echo "--rank-by node"; fi
}
collective_flags() { # collective
  case $1 in
    tuned) ;;
    tuned-ring) echo "--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4" ;;
    han) echo "--mca coll_han_priority 100" ;;
    han-1seg) echo "--mca coll_han_priority 100 --mca coll_han_allreduce_segsize 1073741824" ;;
  esac
}

sum_seconds() { # launcher-args... -- floats reps -> seconds, or "crash"
  local out
  if out=$(timeout 600 "$@" 2>"$work/err"); then
    awk '/allreduce_median_seconds/ {print $2}' <<<"$out"
  else
    log "a run failed: $* ($(grep -m1 -oE 'Segmentation fault|signal [0-9]+|bench_kernels: .*' "$work/err" || echo "exit status"))"
    echo crash
  fi
}

reference() { # link: the 2-rank sums that fit the model's alpha and beta
  local n
  for n in 1 "$mlp_floats"; do
    echo "ref $1 shm $n $(sum_seconds env -u OMPI_MCA_btl_tcp_if_include -u OMPI_MCA_oob_tcp_if_include \
      mpirun -np 2 --bind-to none "$build/bench_kernels" allreduce "$n" "$(reps_for "$n")")" >> "$figures"
    # shellcheck disable=SC2086
    echo "ref $1 hosts $n $(sum_seconds $DPTRAIN_MPIRUN -np 2 "$build/bench_kernels" allreduce "$n" \
      "$(reps_for "$n")")" >> "$figures"
  done
}

reps_for() { # floats
  if [ "$1" -eq 1 ]; then echo 300; else echo "$reps"; fi
}

sums() { # link order collective
  local n
  for n in 1 "$cnn_floats" "$mlp_floats"; do
    # shellcheck disable=SC2086,SC2046
    echo "coll $1 $2 $3 $n $(sum_seconds $launcher -np "$ranks" $(order_flags "$2") $(collective_flags "$3") \
      "$build/bench_kernels" allreduce "$n" "$(reps_for "$n")")" >> "$figures"
  done
}

train_step() { # link order collective -> "step ..." with the median ms per step, or crash
  local r ms steps=()
  for ((r = 1; r <= repeats; r++)); do
    rm -f "$work/run.h5"
    # shellcheck disable=SC2086,SC2046
    if timeout 900 $launcher -np "$ranks" $(order_flags "$2") $(collective_flags "$3") "$build/dptrain" train \
        --data "$work/mlp.h5" --out "$work/run.h5" --model mlp:1024,1024 --epochs 1 --threads 1 --drift-check 0 --no-augment \
        >"$work/run.log" 2>&1; then
      ms=$(sed -nE 's/.*profile \(rank 0\): ([0-9.]+) ms per step.*/\1/p' "$work/run.log")
      steps+=("${ms:-crash}")
    else
      log "training failed: $2 $3 ($(grep -m1 -oE 'Segmentation fault|signal [0-9]+' "$work/run.log" || tail -n1 "$work/run.log"))"
      steps+=(crash)
    fi
  done
  echo "step $1 $2 $3 mlp $(printf '%s\n' "${steps[@]}" | sort -g | sed -n "$(((repeats + 1) / 2))p")" >> "$figures"
}

peak=$("$build/bench_kernels" sgemm)
{
  echo "cores $(nproc)"
  echo "kernels $(awk '/openblas_core/ {print $2}' <<<"$peak") (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}; sgemm peak P $(awk '/sgemm_peak_gflops/ {print $2}' <<<"$peak") GFLOP/s before the run)"
  echo "hosts $hosts"
  echo "per_host $per_host"
  echo "openmpi $(ompi_info --version 2>/dev/null | sed -n "s/^Open MPI v//p" | head -n1)"
} > "$figures"
for link in $rates; do
  if [ "$link" = full ]; then shape_links "" "$hosts"; else shape_links "$link" "$hosts"; fi
  reference "$link"
  for order in round-robin block; do
    for collective in tuned tuned-ring han han-1seg; do sums "$link" "$order" "$collective"; done
    for collective in tuned han-1seg; do train_step "$link" "$order" "$collective"; done
    log "$link, $order done"
  done
done
shape_links "" "$hosts"
if [ -n "${COLL_FIGURES:-}" ]; then cp "$figures" "$COLL_FIGURES"; fi
/usr/bin/python3 scripts/scaling_model.py --collectives "$figures"
