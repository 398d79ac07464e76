#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: install what is needed, build the release
# tree and the AddressSanitizer + UndefinedBehaviorSanitizer tree, run every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DDPTRAIN_SANITIZE=ON
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
(cd build && ctest --output-on-failure)
(cd build-asan && ctest --output-on-failure -L sanitize)
