# Sourced by the scripts that measure on the cluster of namespaced hosts (cluster-bench.sh,
# scaling.sh). cluster_session NEED WORK: use the cluster in DPTRAIN_CLUSTER_DIR if one is up there
# with at least NEED hosts, else start one of NEED hosts in WORK/cluster, and source its env. On
# exit, also on a signal: the links shaped here are freed, a cluster started here is stopped, and
# WORK is removed. shape_links RATE COUNT: every link of node1..nodeCOUNT limited by tc tbf to
# RATE (e.g. 10gbit), or freed with an empty RATE. bench_data BUILD: the data file to measure on
# (BENCH_DATA, or Fashion-MNIST converted into WORK). subset_data SOURCE IMAGES PATH: a short data
# file for short training runs.

cluster_session_end() {
  local h
  for h in "${shaped[@]}"; do ip netns exec "dpt-$h" tc qdisc del dev eth0 root 2>/dev/null || true; done
  if [ "$own" -eq 1 ]; then scripts/cluster-down.sh "$state" >/dev/null; fi
  rm -rf "$session_work"
}

cluster_session() { # need work
  state=${DPTRAIN_CLUSTER_DIR:-}
  own=0
  shaped=()
  session_work=$2
  trap cluster_session_end EXIT
  trap 'exit 1' INT TERM
  if [ -z "$state" ] || [ ! -s "$state/env" ] || [ "$(cat "$state/hosts/count" 2>/dev/null || echo 0)" -lt "$1" ]; then
    state=$2/cluster
    scripts/cluster-up.sh "$1" "$state" >/dev/null
    own=1
  fi
  # shellcheck disable=SC1091
  source "$state/env"
}

burst_of() { # rate -> the tbf burst in KiB: at least rate / HZ
  if [ "$1" = 10gbit ]; then echo 4096; else echo 256; fi
}

shape_links() { # rate count
  local i h
  for ((i = 1; i <= $2; i++)); do
    h=node$i
    ip netns exec "dpt-$h" tc qdisc del dev eth0 root 2>/dev/null || true
    [ -z "$1" ] && continue
    ip netns exec "dpt-$h" tc qdisc add dev eth0 root tbf rate "$1" burst "$(burst_of "$1")kb" latency 50ms
    shaped+=("$h")
  done
}

bench_data() { # build -> the path of BENCH_DATA, or of the data set converted into the session's WORK
  if [ -n "${BENCH_DATA:-}" ]; then
    echo "$BENCH_DATA"
  else
    # (a failed convert fails the caller's $(...): errexit does not reach into it)
    "$1/dptrain" convert --out "$session_work/data.h5" >/dev/null && echo "$session_work/data.h5"
  fi
}

subset_data() { # source images path: the first IMAGES training images and 1,000 test images of
  # SOURCE, with the file's attributes (class_names, mirror_invariant: the file describes itself)
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import sys, h5py
source, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with h5py.File(source, "r") as f, h5py.File(path, "w") as g:
    for name, rows in (("train", n), ("test", 1000)):
        for key in ("images", "labels"):
            g.create_dataset(f"{name}/{key}", data=f[f"{name}/{key}"][:rows])
    for key, value in f.attrs.items():
        g.attrs[key] = value
PY
}
