#!/usr/bin/env bash
# Start a private single-node Slurm cluster on this machine: munged, slurmctld and slurmd from
# Debian's munge and slurm-wlm, configured for this host and its CPUs, with every key, socket,
# state file and log under one folder. Idempotent: a running cluster is left as it is.
#
# usage: scripts/slurm-up.sh [STATE_DIR]        (default /tmp/dptrain-slurm)
# then:  export SLURM_CONF=STATE_DIR/slurm.conf  (every Slurm client needs it)
set -euo pipefail
# shellcheck source=slurm-common.sh
source "$(cd "$(dirname "$0")" && pwd)/slurm-common.sh"
state=$(realpath -m "${1:-${DPTRAIN_SLURM_DIR:-/tmp/dptrain-slurm}}")
conf="$state/slurm.conf"
export SLURM_CONF="$conf"

alive() { # pidfile, expected command name
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && grep -q "$2" "/proc/$(cat "$1")/comm" 2>/dev/null
}

for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "slurm-up: $tool is missing (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
if alive "$state/slurmctld.pid" slurmctld && alive "$state/slurmd.pid" slurmd && alive "$state/munged.pid" munged; then
  echo "slurm-up: already running (SLURM_CONF=$conf)"
  exit 0
fi

# Refused before anything starts (a space had failed after munged started, and left it running).
slurm_state_path_ok slurm-up "$state"
# The ports slurmctld and slurmd listen on: another cluster holding them made this one fail later
# with "the node did not come up".
for port in 6817 6818; do
  holder=$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*",pid=[0-9]*\).*/\1/p' | head -n 1)
  if [ -n "$(ss -ltnH "sport = :$port" 2>/dev/null)" ]; then
    echo "slurm-up: port $port (Slurm's $([ "$port" = 6817 ] && echo slurmctld || echo slurmd)) is in use${holder:+ by $holder}: another Slurm cluster runs here (stop it with scripts/slurm-down.sh and its state folder)" >&2
    exit 1
  fi
done

# The state folder must be new, empty, or one this script made: it writes slurm.conf, keys and logs
# there and changes the folder's mode, so any other folder is refused untouched.
if [ -e "$state" ] || [ -L "$state" ]; then
  if [ -L "$state" ] || [ ! -d "$state" ]; then
    echo "slurm-up: $state exists and is not a folder" >&2; exit 1
  fi
  if [ -n "$(ls -A "$state")" ] && [ ! -e "$state/.dptrain-slurm" ]; then
    echo "slurm-up: $state is not empty and not a state folder of slurm-up.sh (no .dptrain-slurm in it): give a new or empty folder; nothing in $state was touched" >&2
    exit 1
  fi
fi
# On any failure from here, stop what this run started: nothing is left running half set up.
started=0
stop_started() { [ "$started" = 1 ] && "$(dirname "$0")/slurm-down.sh" "$state" >/dev/null 2>&1; }
trap 'stop_started' ERR
mkdir -p "$state"/{munge,spool,ctld,log}
touch "$state/.dptrain-slurm"
chmod 0755 "$state" "$state/munge"   # munged refuses a socket folder others can write to
host=$(hostname -s)

# munge: a private key, socket and pid file.
if [ ! -s "$state/munge/munge.key" ]; then
  dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$state/munge/munge.key"
fi
if ! alive "$state/munged.pid" munged; then
  started=1
  munged --force --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
         --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" \
         --seed-file="$state/munge/munge.seed"
fi

# The node's real shape, as slurmd sees it: asking for more drains the node.
node_line=$(slurmd -C | head -n 1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
boards=$(sed -n 's/.*Boards=\([0-9]*\).*/\1/p' <<<"$node_line")
sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$node_line")
cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node_line")
threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$node_line")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")

{
slurm_common_conf "$state"
cat <<CONF
ClusterName=dptrain
SlurmctldHost=$host(127.0.0.1)
TaskPlugin=task/affinity
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
} >"$conf"

started=1
alive "$state/slurmctld.pid" slurmctld || slurmctld -f "$conf"
alive "$state/slurmd.pid" slurmd || slurmd -f "$conf"

# Wait for the node to come up idle.
for _ in $(seq 1 100); do
  if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "slurm-up: node $host idle with $cpus CPUs (SLURM_CONF=$conf)"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-up: the node did not come up; see $state/log/ (stopping what was started)" >&2
sinfo -N -l >&2 || true
stop_started
exit 1
