#!/usr/bin/env bash
# Stop the private cluster that scripts/slurm-up.sh started, by its pid files only (each pid's
# command is checked first, so a stale file never kills another process). Idempotent.
# usage: scripts/slurm-down.sh [STATE_DIR]        (default /tmp/dptrain-slurm)
set -uo pipefail
state=$(realpath -m "${1:-${DPTRAIN_SLURM_DIR:-/tmp/dptrain-slurm}}")
for daemon in slurmd slurmctld munged; do
  pidfile="$state/$daemon.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -q "$daemon" "/proc/$pid/comm" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
echo "slurm-down: stopped (state kept in $state)"
