"""Checkpoints written in the background: rank 0 builds the file in memory at the step boundary and
a thread writes, syncs and renames it while training goes on. Checked: training goes on while a
write is held between its synced temporary file and the rename (DPTRAIN_FAULT=hold); the whole job
killed in that window leaves the previous checkpoint whole, and a resume from it ends bit for bit
where a run never stopped ends (the killed write's temporary file removed, and said); the same
parameters and the same checkpoint contents with --checkpoint-sync; --checkpoint-sync without
--checkpoint refused."""
import glob
import signal
import time

import h5py
import numpy as np

from common import *

dir = temp_dir()
base = ["train", "--data", DATA, "--model", "mlp:64", "--epochs", "4", "--no-tta", "--eval-every", "1"]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")


def parameter_hash(path):
    with h5py.File(path, "r") as f:
        return int(f["runs/raw"].attrs["parameter_hash"])


def checkpoint_epoch(path):
    with h5py.File(path, "r") as f:
        return int(f.attrs["epoch"])


# A run never stopped, with the background writer (the default) and with --checkpoint-sync.
must_succeed(run(base + ["--checkpoint", f"{dir}/whole.ckpt", "--out", f"{dir}/whole.h5"], ranks=2))
must_succeed(run(base + ["--checkpoint", f"{dir}/sync.ckpt", "--checkpoint-sync", "--out", f"{dir}/sync.h5"], ranks=2))
check(parameter_hash(f"{dir}/whole.h5") == parameter_hash(f"{dir}/sync.h5"),
      "--checkpoint-sync trained other parameters than the background writer")
with h5py.File(f"{dir}/whole.ckpt", "r") as a, h5py.File(f"{dir}/sync.ckpt", "r") as b:
    names = []
    a.visit(lambda name: names.append(name) if isinstance(a[name], h5py.Dataset) else None)
    # the history's last two columns are the epochs' seconds and samples/s: times, which differ
    differ = [n for n in names if not np.array_equal(a[n][()][..., :7] if n == "history" else a[n][()],
                                                     b[n][()][..., :7] if n == "history" else b[n][()], equal_nan=True)]
    check(len(names) > 5 and not differ, f"the background writer's checkpoint differs from --checkpoint-sync's: {differ}")
    check(int(a.attrs["epoch"]) == int(b.attrs["epoch"]) == 4, "the last checkpoint is not of epoch 4")

def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def kill_job(job):
    """SIGKILL to mpiexec and to every rank (Open MPI starts the ranks in sessions of their own), then
    wait until they are gone, reaped too (a zombie still counts as a live writer of its temporary file)."""
    ranks = subprocess.run(["pgrep", "-f", f"{DPTRAIN} .*--checkpoint {held}"], capture_output=True, text=True)
    pids = [int(p) for p in ranks.stdout.split()]
    for pid in pids + [job.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait(timeout=60)
    deadline = time.time() + 60
    while time.time() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.1)
    check(all(gone(pid) for pid in pids), f"ranks {pids} still there 60 s after SIGKILL")


held = f"{dir}/held.ckpt"


# The write of epoch 2's checkpoint held for 8 s between its temporary file and the rename.
command = [MPIEXEC, "-n", "2", "--oversubscribe", "-x", "DPTRAIN_FAULT", DPTRAIN] + base + [
    "--checkpoint", held, "--out", f"{dir}/held.h5"]
job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                       env=dict(env, DPTRAIN_FAULT="hold@0:2"))
try:
    seen, deadline = [], time.time() + 120
    while time.time() < deadline:
        line = job.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("epoch   3/4"):
            break
    # epoch 3 was trained and evaluated while epoch 2's file was still being written
    temporary = glob.glob(held + ".tmp.*")
    check(seen and seen[-1].startswith("epoch   3/4") and len(temporary) == 1,
          f"training did not go on during the held write: {seen[-3:]}, temporary files {temporary}")
    check(checkpoint_epoch(held) == 1, "the checkpoint changed before its write was renamed")
finally:
    kill_job(job)   # the whole job, in the middle of the write
check(checkpoint_epoch(held) == 1 and glob.glob(held + ".tmp.*"),
      "after the kill: the previous checkpoint must be whole and the killed write's temporary file left")

# The resume from it ends where the run never stopped ends, and removes the left temporary file.
resumed = must_succeed(run(base + ["--checkpoint", held, "--resume", "--out", f"{dir}/resumed.h5"], ranks=2))
check(parameter_hash(f"{dir}/resumed.h5") == parameter_hash(f"{dir}/whole.h5"),
      "the resume from the checkpoint before the killed write differs from a run never stopped")
check(f"dptrain: removed {temporary[0]}, a temporary file left by process" in resumed.stdout and
      not glob.glob(held + ".tmp.*"), f"the killed write's temporary file: {resumed.stdout[:800]}")
check(checkpoint_epoch(held) == 4, "the resumed run's last checkpoint")

refused = run(["train", "--data", DATA, "--checkpoint-sync", "--out", f"{dir}/x.h5"])
check(refused.returncode == 2 and "--checkpoint-sync needs --checkpoint FILE" in refused.stderr,
      f"--checkpoint-sync alone: {refused.returncode} {refused.stderr!r}")
print("ok: training went on during a held write; killed mid-write, the previous checkpoint stayed whole and resumed "
      "bit for bit; --checkpoint-sync trains and saves the same")
