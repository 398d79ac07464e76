#!/usr/bin/env bash
# Throughput benchmark: dptrain's MLP and CNN at 1 rank, 2 ranks (1 BLAS thread each, fused and
# bucketed allreduce, weak scaling: --batch-per-rank 128, --compress bf16 and powersgd:4,
# --deterministic and --shard-optimizer) and 1 rank with 2 BLAS threads; the phase shares of a step from --trace; the
# achieved GFLOP/s against the single-core cblas_sgemm peak measured in this same run; peak memory
# per rank; the times of convert and of the PCA fit; and, if Debian's python3-torch is installed
# (this script does not install it), PyTorch on the same networks, data, batch and threads.
# Prints one table (scripts/bench_summary.py), headed by the OpenBLAS kernels in use (the
# environment's OPENBLAS_CORETYPE, if set, chooses them for dptrain and PyTorch alike). Machines are shared and noisy: every ratio here
# compares figures measured minutes apart in one run.
#
# usage: scripts/bench.sh [build-dir]
#        (environment: BENCH_MLP_EPOCHS=3 BENCH_CNN_EPOCHS=1 BENCH_BUCKET_MB=0.1, which gives both
#        models two buckets, and
#        BENCH_SOURCE=DIR for other IDX files than Fashion-MNIST's, as the tests use)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
dptrain=$build/dptrain
[[ -x $dptrain && -x $build/bench_kernels ]] || scripts/build.sh "$build"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OPENBLAS_NUM_THREADS # every run says --threads itself
work=$(mktemp -d /tmp/dptrain-bench-XXXXXX)
mlp_epochs=${BENCH_MLP_EPOCHS:-3}
# the files of each run (results, logs, traces) are removed at the end unless BENCH_KEEP is set
cnn_epochs=${BENCH_CNN_EPOCHS:-1}
python=/usr/bin/python3
log() { echo "bench: $*" >&2; }

now() { date +%s.%N; }
start=$(now)
"$dptrain" convert --source "${BENCH_SOURCE:-/usr/share/datasets/fashion-mnist}" --out "$work/data.h5" \
  > "$work/convert.log"
echo "convert_seconds $(awk "BEGIN { print $(now) - $start }")" > "$work/figures.txt"
log "convert done"

OPENBLAS_NUM_THREADS=1 "$build/bench_kernels" sgemm >> "$work/figures.txt"
log "sgemm peak measured"

# name ranks threads model epochs [extra flags...]
train() {
  local name=$1 ranks=$2 threads=$3 model=$4 epochs=$5
  shift 5
  # the MLP as bench_torch.py builds it: dropout 0.1, no label smoothing, no augmentation (the
  # default MLP differs)
  [[ $model == mlp ]] && set -- --dropout 0.1 --label-smoothing 0 --no-augment "$@"
  mpirun -np "$ranks" --oversubscribe --bind-to "$([[ $threads == 1 ]] && echo core || echo none)" \
    "$dptrain" train --data "$work/data.h5" --out "$work/$name.h5" --model "$model" --epochs "$epochs" \
    --threads "$threads" --trace "$work/$name.json" "$@" > "$work/$name.log"
  log "$name done"
}
for model in mlp cnn; do
  epochs=$([[ $model == mlp ]] && echo "$mlp_epochs" || echo "$cnn_epochs")
  train "${model}_1rank" 1 1 $model "$epochs"
  train "${model}_2ranks" 2 1 $model "$epochs"
  train "${model}_2ranks_bucketed" 2 1 $model "$epochs" --bucket-mb "${BENCH_BUCKET_MB:-0.1}"
  train "${model}_2ranks_weak" 2 1 $model "$epochs" --batch-per-rank 128
  train "${model}_2ranks_bf16" 2 1 $model "$epochs" --compress bf16
  train "${model}_2ranks_psgd" 2 1 $model "$epochs" --compress powersgd:4
  train "${model}_2ranks_deterministic" 2 1 $model "$epochs" --deterministic
  train "${model}_2ranks_sharded" 2 1 $model "$epochs" --shard-optimizer
  train "${model}_1rank_2threads" 1 2 $model "$epochs"
done
mpirun -np 2 --bind-to core "$dptrain" train --data "$work/data.h5" --out "$work/pca.h5" --pca 50 --epochs 1 \
  --model mlp --no-augment --threads 1 > "$work/pca.log"
log "PCA fit done"

if $python -c "import torch" 2>/dev/null; then
  # 1 thread; then 2 threads split both ways (PyTorch's pool + OpenBLAS's), the faster kept
  for split in "1 1 t1" "2 1 t2a" "1 2 t2b"; do
    read -r threads blas tag <<< "$split"
    for model in mlp cnn; do
      steps=$([[ $model == mlp ]] && echo $((469 * mlp_epochs)) || echo 100)
      $python scripts/bench_torch.py "$work/data.h5" $model "$threads" "$steps" "$blas" | sed "s/^/${tag}_/" >> "$work/figures.txt"
    done
    log "PyTorch with $threads + $blas threads done"
  done
else
  log "python3-torch is not installed: no PyTorch comparison (apt-get install python3-torch adds it)"
fi
$python scripts/bench_summary.py "$work"
[[ -n ${BENCH_KEEP:-} ]] || rm -rf "$work"
