#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build, convert the data, train the default
# MLP on 2 ranks, write the results file and the report.
# Extra arguments go to `dptrain train` (for example: scripts/run.sh --epochs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# Converted again when missing, or made by a dptrain older than the data file's mirror_invariant.
if [ ! -s data/fashion-mnist.h5 ] ||
   ! /usr/bin/python3 -c 'import h5py, sys; sys.exit("mirror_invariant" not in h5py.File(sys.argv[1], "r").attrs)' \
     data/fashion-mnist.h5 2>/dev/null; then
  build/dptrain convert --out data/fashion-mnist.h5
fi
mkdir -p results
mpirun -np 2 build/dptrain train --data data/fashion-mnist.h5 --out results/train.h5 --overwrite "$@"
if [ -f scripts/report.py ]; then
  /usr/bin/python3 scripts/report.py results/train.h5 --data data/fashion-mnist.h5 --out results/report
fi
echo "results: results/train.h5"
