#!/usr/bin/env bash
# A cluster of HOSTS hosts on this one machine, for testing dptrain across hosts without a
# cluster: each host is a network namespace (its own interface, address and TCP stack) with its
# own host name (a UTS namespace), joined to the others by a bridge; one private /24 that exists
# only inside this machine. On top: munge and a Slurm controller in the root namespace, one
# slurmd per host (node1..nodeN) inside that host, and an Open MPI launch agent that starts a
# process inside a host. The hosts share this machine's cores and filesystem (a cluster's shared
# filesystem); a host can be given a private view of it (see "hide" below).
#
# usage: scripts/cluster-up.sh HOSTS [STATE_DIR]        (default STATE_DIR /tmp/dptrain-cluster)
# then:  source STATE_DIR/env
#        $DPTRAIN_MPIRUN -np 2 build/dptrain train ...   (ranks spread over the hosts, numbered host by host)
#        sbatch -N 2 jobs/train.sbatch                   (two Slurm nodes)
# stop:  scripts/cluster-down.sh [STATE_DIR]
#
# A host that should not see a path (to test a host that cannot open the data file): list the
# path in STATE_DIR/hosts/nodeI/hide; processes the launch agent starts there run in a private
# mount namespace with an empty tmpfs over it.
# The subnet is 10.213.37.0/24 unless DPTRAIN_CLUSTER_NET gives other first three octets. Idempotent:
# a running cluster with the same number of hosts is left as it is. Needs root.
set -euo pipefail
usage="usage: scripts/cluster-up.sh HOSTS [STATE_DIR]"
hosts=${1:-}
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 1 ] && [ "$hosts" -le 16 ] ||
  { echo "cluster-up: HOSTS must be a number from 1 to 16 (got '${hosts}'); $usage" >&2; exit 2; }
state=$(realpath -m "${2:-${DPTRAIN_CLUSTER_DIR:-/tmp/dptrain-cluster}}")
net=${DPTRAIN_CLUSTER_NET:-10.213.37}
[[ "$net" =~ ^(10|192\.168|172\.(1[6-9]|2[0-9]|3[01]))(\.[0-9]{1,3}){1,2}$ ]] && [ "$(tr -cd . <<<"$net" | wc -c)" -eq 2 ] ||
  { echo "cluster-up: DPTRAIN_CLUSTER_NET=$net is not the first three octets of a private /24 (e.g. 10.213.37)" >&2; exit 2; }
bridge=dptbr0
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=slurm-common.sh
source "$here/slurm-common.sh"

die() { echo "cluster-up: $*" >&2; exit 1; }
slurm_state_path_ok cluster-up "$state"
alive() { # pidfile, expected command name
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && grep -q "$2" "/proc/$(cat "$1")/comm" 2>/dev/null
}

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, a bridge and Slurm daemons)"
for tool in ip nsenter unshare munged slurmctld slurmd sinfo mpirun; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs iproute2, util-linux, slurm-wlm, munge, openmpi-bin)"
done

# The state folder must be new, empty, or one of ours: we write keys, configuration and logs there.
if [ -e "$state" ] || [ -L "$state" ]; then
  { [ -L "$state" ] || [ ! -d "$state" ]; } && die "$state exists and is not a folder"
  if [ -n "$(ls -A "$state")" ] && [ ! -e "$state/.dptrain-cluster" ]; then
    die "$state is not empty and not a state folder of cluster-up.sh (no .dptrain-cluster in it): give a new or empty folder; nothing in $state was touched"
  fi
fi
# One cluster per machine: the bridge and namespace names are fixed.
if ip link show "$bridge" >/dev/null 2>&1; then
  owner=$(cat /run/dptrain-cluster.owner 2>/dev/null || echo unknown)
  [ "$owner" = "$state" ] || die "a cluster is already up with state $owner: stop it first (scripts/cluster-down.sh $owner)"
  running=$(cat "$state/hosts/count" 2>/dev/null || echo 0)
  [ "$running" = "$hosts" ] || die "a cluster of $running hosts is up in $state: stop it first to start one of $hosts"
else
  # The /24 must be ours alone: refuse a subnet this machine already routes.
  ip -4 route show | grep -q "^$net\." && die "the subnet $net.0/24 is already in use on this machine (set DPTRAIN_CLUSTER_NET)"
fi

mkdir -p "$state"/{munge,spool,ctld,log,uts,hosts}
touch "$state/.dptrain-cluster"
chmod 0755 "$state" "$state/munge"   # munged refuses a socket folder others can write to
echo "$state" >/run/dptrain-cluster.owner
echo "$hosts" >"$state/hosts/count"

# The network: a bridge holding the first address (so mpirun, slurmctld and munge in the root
# namespace reach every host), and per host a namespace, a veth pair and a UTS namespace.
if ! ip link show "$bridge" >/dev/null 2>&1; then
  ip link add "$bridge" type bridge || die "cannot create the bridge $bridge (is this a container without CAP_NET_ADMIN?)"
  ip addr add "$net.1/24" dev "$bridge"
  ip link set "$bridge" up
fi
# Every namespace gives up on a dead TCP peer after about 13 s (6 retransmissions; Linux's default
# of 15 takes over 15 minutes): when a host's link is cut, mpirun's daemons must see it and end
# the job, as a cluster's resource manager would. A sysctl of these namespaces only.
fast_tcp_failure() { ip netns exec "$1" sysctl -q -w net.ipv4.tcp_retries2=5; }
# The head node: where DPTRAIN_MPIRUN starts mpirun (as on a cluster's login node).
if ! ip netns list | grep -qw dpt-head; then
  ip netns add dpt-head || die "cannot create the network namespace dpt-head"
  ip link add dptv0 type veth peer name eth0 netns dpt-head || die "cannot create the veth pair for the head node"
  ip link set dptv0 master "$bridge" up
  ip -n dpt-head addr add "$net.10/24" dev eth0
  ip -n dpt-head link set eth0 up
  ip -n dpt-head link set lo up
  fast_tcp_failure dpt-head
fi
: >"$state/hostfile"
for i in $(seq 1 "$hosts"); do
  name=node$i ns=dpt-node$i veth=dptv$i addr=$net.$((10 + i))
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns" || die "cannot create the network namespace $ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns" || die "cannot create the veth pair for $name"
    ip link set "$veth" master "$bridge" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$net.1"
    fast_tcp_failure "$ns"
  fi
  uts="$state/uts/$name"
  if ! nsenter --uts="$uts" true 2>/dev/null; then
    touch "$uts"
    unshare --uts="$uts" hostname "$name" || die "cannot create a UTS namespace for $name"
  fi
  mkdir -p "$state/hosts/$name"
  echo "$addr" >"$state/hosts/$name/address"
  echo "$addr slots=2" >>"$state/hostfile"
done

# The launch agent: Open MPI calls it as `agent HOST COMMAND...` in place of ssh.
cat >"$state/agent" <<AGENT
#!/bin/bash
# Open MPI's launch agent for the cluster in $state: runs a command inside host \$1's network and
# UTS namespaces (by its address or name), as ssh would run it on that host.
state=$(printf %q "$state")
host=\$1; shift
for dir in "\$state"/hosts/node*/; do
  name=\$(basename "\$dir")
  if [ "\$host" = "\$name" ] || [ "\$host" = "\$(cat "\$dir/address")" ]; then
    hide=()
    [ -s "\$dir/hide" ] && mapfile -t hide <"\$dir/hide"
    if [ \${#hide[@]} -gt 0 ]; then
      # A private view of the filesystem: an empty tmpfs over each hidden path.
      mounts=""
      for p in "\${hide[@]}"; do mounts+="mount -t tmpfs none '\$p' && "; done
      exec nsenter --net=/var/run/netns/dpt-\$name --uts="\$state/uts/\$name" -- \\
        unshare --mount --propagation private -- /bin/sh -c "\$mounts exec \$*"
    fi
    exec nsenter --net=/var/run/netns/dpt-\$name --uts="\$state/uts/\$name" -- /bin/sh -c "\$*"
  fi
done
echo "cluster agent: no host \$host in \$state" >&2
exit 255
AGENT
chmod 0755 "$state/agent"

# munge: a private key, socket and pid file.
if [ ! -s "$state/munge/munge.key" ]; then
  dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$state/munge/munge.key"
fi
alive "$state/munged.pid" munged ||
  munged --force --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
         --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/munge.seed"

# Slurm: every node has the machine's real shape (slurmd -C; asking for more drains a node): the
# hosts share its cores. Ports differ from scripts/slurm-up.sh's so that both can run.
node_line=$(slurmd -C | head -n 1)
shape=$(grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]* RealMemory=[0-9]*' <<<"$node_line")
[ -n "$shape" ] || die "cannot read this machine's shape from 'slurmd -C': $node_line"
conf="$state/slurm.conf"
{
  slurm_common_conf "$state"
  cat <<CONF
ClusterName=dptcluster
SlurmctldHost=$(hostname -s)($net.1)
TaskPlugin=task/none
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldPort=6827
SlurmdPort=6828
CONF
  for i in $(seq 1 "$hosts"); do
    echo "NodeName=node$i NodeAddr=$net.$((10 + i)) $shape State=UNKNOWN"
  done
  echo "PartitionName=main Nodes=node[1-$hosts] Default=YES MaxTime=INFINITE State=UP"
} >"$conf"
export SLURM_CONF="$conf"

alive "$state/slurmctld.pid" slurmctld || slurmctld -f "$conf"
for i in $(seq 1 "$hosts"); do
  mkdir -p "$state/spool/node$i"
  alive "$state/slurmd-node$i.pid" slurmd ||
    nsenter --net="/var/run/netns/dpt-node$i" --uts="$state/uts/node$i" -- slurmd -f "$conf" -N "node$i"
done

# The environment for users of the cluster. The MCA settings are what a cluster's site
# configuration would hold: TCP on the cluster's subnet only, and ranks that yield the CPU while
# they wait (on shared cores, busy-polling ranks starve the kernel's network processing: an
# allreduce of one float took 8 ms instead of 19 us). The hosts share the same cores, so
# DPTRAIN_MPIRUN does not bind ranks (each host would bind its first rank to the same core).
# It spreads the ranks evenly over the hosts (--map-by node) and numbers them host by host
# (--rank-by slot: 4 ranks on 2 hosts are 0, 1 on node1 and 2, 3 on node2): the gradient's ring
# allreduce then crosses between hosts once per host, not at every edge; 1.8x faster at 1 Gbit/s
# (scripts/collectives-bench.sh, docs/cluster.md#rank-order). Open MPI's coll/tuned stays: its
# coll/han crashes on dptrain's in-place sums in Open MPI 4.1.4 and is slower in one segment.
# (The state path holds only characters that survive word splitting: slurm_state_path_ok.)
mpi_flags="--hostfile $state/hostfile --map-by node --rank-by slot --bind-to none --mca plm_rsh_agent $state/agent"
mpi_flags+=" --mca btl self,vader,tcp --mca btl_tcp_if_include $net.0/24 --mca oob_tcp_if_include $net.0/24"
mpi_flags+=" --mca mpi_yield_when_idle 1 --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 2"
mpi_flags+=" --mca oob_tcp_keepalive_probes 5"
cat >"$state/env" <<ENV
# source this file to use the cluster of $hosts hosts in $state
export SLURM_CONF=$(printf %q "$conf")
export DPTRAIN_CLUSTER_DIR=$(printf %q "$state")
export DPTRAIN_MPIRUN="nsenter --net=/var/run/netns/dpt-head mpirun $mpi_flags"
export OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_tcp_if_include=$net.0/24
export OMPI_MCA_oob_tcp_if_include=$net.0/24
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_oob_tcp_keepalive_time=10
export OMPI_MCA_oob_tcp_keepalive_intvl=2
export OMPI_MCA_oob_tcp_keepalive_probes=5
ENV

# Wait for every node to come up idle.
for _ in $(seq 1 150); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$' || true)
  if [ "$idle" -ge "$hosts" ]; then
    echo "cluster-up: $hosts hosts node1..node$hosts at $net.11-$net.$((10 + hosts)), Slurm nodes idle; source $state/env"
    exit 0
  fi
  sleep 0.2
done
echo "cluster-up: the Slurm nodes did not come up; see $state/log/" >&2
sinfo -N -l >&2 || true
exit 1
