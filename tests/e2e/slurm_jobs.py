"""Slurm helpers shared by the single-node (slurm.py) and multi-node (cluster.py) tests: run a
client command, submit a job script, poll a job's state (sbatch --wait polls slowly), wait for
a checkpoint, requeue. Every function takes the environment that holds SLURM_CONF."""
import re
import subprocess
import time

import h5py

from common import fail

FINAL_FAILURES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def slurm(env, cwd, *args, timeout=60, check_ok=True):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check_ok and r.returncode != 0:
        fail(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def job_state(env, cwd, job):
    r = slurm(env, cwd, "scontrol", "show", "job", "-o", job, check_ok=False)
    m = re.search(r"JobState=(\S+)", r.stdout)
    return m.group(1) if m else "UNKNOWN"


def wait_state(env, cwd, job, wanted, timeout, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = job_state(env, cwd, job)
        if s in wanted:
            return s
        if s in FINAL_FAILURES:
            fail(f"job {job} ended {s}" + (f": {open(log).read()[-3000:]}" if log else ""))
        time.sleep(0.5)
    fail(f"job {job} not in {wanted} after {timeout} s (state {job_state(env, cwd, job)})")


def submit(env, cwd, script, exports, options=()):
    """sbatch SCRIPT with the environment plus exports (through the environment: --export would
    split values at their commas); returns the job id."""
    r = slurm(dict(env, **exports), cwd, "sbatch", "--parsable", "--export=ALL", *options, script, timeout=60)
    return r.stdout.strip().split(";")[0]


def wait_checkpoint_epoch(path, epoch, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with h5py.File(path, "r") as f:
                if f.attrs["epoch"] >= epoch:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.2)
    fail(f"no checkpoint of epoch {epoch} in {path} after {timeout} s")


def requeue_resized(env, cwd, job, *updates):
    """Requeue a running job held, change its size (scontrol update fields such as NumTasks=1),
    release it: the job comes back on other resources, as after a node failure."""
    slurm(env, cwd, "scontrol", "requeuehold", job)
    wait_state(env, cwd, job, ("PENDING",), 120)
    slurm(env, cwd, "scontrol", "update", f"JobId={job}", *updates)
    slurm(env, cwd, "scontrol", "release", job)
