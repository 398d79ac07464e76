#!/usr/bin/env bash
# Configure and build dptrain into build/ (Release, warnings as errors).
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DDPTRAIN_WERROR=ON "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
