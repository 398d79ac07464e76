# Sourced by slurm-up.sh and cluster-up.sh: the slurm.conf keys both private clusters share, found
# to work on these machines (PLATFORM.md): root daemons, munge with a private socket and short
# credential expiry (a requeue then takes ~13 s, not ~130), core-level scheduling, a fast
# scheduler, no accounting database (completions in a text log), state under one folder.
# usage: slurm_common_conf STATE_DIR   (prints the lines)

# A state folder's path goes into slurm.conf, whose values cannot be quoted, and into the
# DPTRAIN_MPIRUN command line that users expand unquoted: only characters that survive both.
# usage: slurm_state_path_ok SCRIPT PATH   (exits 1 with one line naming the path otherwise)
slurm_state_path_ok() {
  if [[ ! $2 =~ ^[A-Za-z0-9._/@+,:-]+$ ]]; then
    echo "$1: state folder '$2': Slurm's configuration and the launch command cannot hold its spaces, quotes or other special characters; choose a path of letters, digits and ._/@+,:-" >&2
    exit 1
  fi
}

slurm_common_conf() {
  local state=$1
  cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket,cred_expire=10
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5,batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.log
ReturnToService=2
MinJobAge=3600
KillWait=5
StateSaveLocation=$state/ctld
CONF
}
