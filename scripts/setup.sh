#!/usr/bin/env bash
# Install, idempotently, every Debian package dptrain needs (build, tests, data, report).
# Quiet when everything is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin libopenblas-dev liblapacke-dev
  libhdf5-openmpi-dev hdf5-tools zlib1g-dev libcmocka-dev
  dataset-fashion-mnist
  python3-h5py python3-matplotlib python3-numpy valgrind procps
  slurm-wlm munge iproute2 util-linux
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
