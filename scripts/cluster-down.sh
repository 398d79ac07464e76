#!/usr/bin/env bash
# Stop the cluster that scripts/cluster-up.sh started: every process in its hosts (slurmd, Open
# MPI daemons and ranks), slurmctld and munged by their pid files (each pid's command checked
# first), then the namespaces, links and bridge. The state folder (logs) is kept. Idempotent.
# usage: scripts/cluster-down.sh [STATE_DIR]        (default /tmp/dptrain-cluster)
set -uo pipefail
state=$(realpath -m "${1:-${DPTRAIN_CLUSTER_DIR:-/tmp/dptrain-cluster}}")
bridge=dptbr0
owner=$(cat /run/dptrain-cluster.owner 2>/dev/null || true)
if [ -n "$owner" ] && [ "$owner" != "$state" ]; then
  echo "cluster-down: the cluster on this machine belongs to $owner, not $state: nothing stopped" >&2
  exit 1
fi

stop_pid() { # pid: TERM, then KILL after 5 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}

# What this state folder records: the hosts its cluster-up made (none once it is down, or for a
# folder that is not a cluster's). Only those are stopped: without the owner file it had stopped
# every dpt-* namespace on the machine, whatever folder it was given.
count=$(cat "$state/hosts/count" 2>/dev/null || echo 0)
[[ $count =~ ^[0-9]+$ ]] || count=0
if [ ! -e "$state/.dptrain-cluster" ] || [ "$count" -eq 0 ]; then
  rm -f "$state/hosts/count"
  [ "$owner" = "$state" ] && rm -f /run/dptrain-cluster.owner
  echo "cluster-down: no cluster is up with state $state: nothing to stop"
  exit 0
fi
recorded="dpt-head"
for i in $(seq 1 "$count"); do recorded+=" dpt-node$i"; done

# Everything running inside a host: a stopped (SIGSTOP) process needs SIGCONT to see SIGTERM.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -xF -f <(tr ' ' '\n' <<<"$recorded")); do
  pids=$(ip netns pids "$ns" 2>/dev/null)
  [ -n "$pids" ] && kill -CONT $pids 2>/dev/null
  for pid in $pids; do stop_pid "$pid" & done
  wait
  ip netns delete "$ns" 2>/dev/null
done
for pidfile in "$state"/slurmctld.pid "$state"/munged.pid "$state"/slurmd-node*.pid; do
  [ -f "$pidfile" ] || continue
  daemon=$(basename "$pidfile" .pid); daemon=${daemon%%-*}
  pid=$(cat "$pidfile")
  grep -q "$daemon" "/proc/$pid/comm" 2>/dev/null && stop_pid "$pid"
  rm -f "$pidfile"
done
for i in $(seq 0 "$count"); do
  ip link show "dptv$i" >/dev/null 2>&1 && ip link delete "dptv$i" 2>/dev/null
done
ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
for uts in "$state"/uts/node*; do
  [ -e "$uts" ] && { umount "$uts" 2>/dev/null; rm -f "$uts"; }
done
rm -f "$state/hosts/count" /run/dptrain-cluster.owner
echo "cluster-down: stopped (state kept in $state)"
