"""A real single-node Slurm cluster (scripts/slurm-up.sh): jobs/train.sbatch through
`sbatch --wait`, then a job requeued with `scontrol requeue` in the middle of training, which
must finish from its checkpoint with every epoch once. Exit 77 (reported as skipped by ctest)
with the exact reason when the daemons cannot start here."""
import re
import time

from common import *
import slurm_jobs

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SKIPPED = 77
state = temp_dir()
results = temp_dir()
env = dict(os.environ, SLURM_CONF=f"{state}/slurm.conf", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")


def slurm(*args, timeout=60, check_ok=True):
    return slurm_jobs.slurm(env, ROOT, *args, timeout=timeout, check_ok=check_ok)


def wait_state(job, wanted, timeout):
    return slurm_jobs.wait_state(env, ROOT, job, wanted, timeout)


def submit(args, wait=False):
    extra = ["--wait"] if wait else []
    exports = (f"ALL,DPTRAIN_ARGS={args},DPTRAIN_DATA={DATA},DPTRAIN_RESULTS={results},"
               f"DPTRAIN_BIN={DPTRAIN}")
    return slurm("sbatch", "--parsable", *extra, f"--export={exports}", f"--output={results}/slurm-%j.out",
                 "--ntasks=2", "jobs/train.sbatch", timeout=600, check_ok=not wait)


# A folder that slurm-up.sh did not make is refused and left as it was (mode included).
foreign = tempfile.mkdtemp(prefix="dptrain-foreign-")
with open(f"{foreign}/slurm.conf", "w") as f:
    f.write("mine")
os.chmod(foreign, 0o700)
refused = subprocess.run([f"{ROOT}/scripts/slurm-up.sh", foreign], capture_output=True, text=True, timeout=60, env=env)
check(refused.returncode != 0 and "is not empty and not a state folder" in refused.stderr, f"foreign state: {refused}")
check(os.listdir(foreign) == ["slurm.conf"] and open(f"{foreign}/slurm.conf").read() == "mine" and
      os.stat(foreign).st_mode & 0o777 == 0o700, "slurm-up.sh touched a foreign folder")

# A state folder whose path slurm.conf cannot hold is refused before anything starts (a space had
# failed after munged started, and left it running).
spaced = f"{tempfile.mkdtemp(prefix='dptrain-spaced-')}/my slurm"
refused = subprocess.run([f"{ROOT}/scripts/slurm-up.sh", spaced], capture_output=True, text=True, timeout=60, env=env)
check(refused.returncode == 1 and len(refused.stderr.splitlines()) == 1 and "cannot hold its spaces" in refused.stderr
      and not os.path.exists(spaced), f"a state folder with a space: {refused}")
check(subprocess.run(["pgrep", "-f", "my slurm"], capture_output=True).returncode == 1, "a daemon was left running")

up = subprocess.run([f"{ROOT}/scripts/slurm-up.sh", state], capture_output=True, text=True, timeout=120, env=env)
if up.returncode != 0:
    print("SKIPPED: the Slurm daemons could not start here:", (up.stderr or up.stdout).strip()[-1500:])
    sys.exit(SKIPPED)
print(up.stdout.strip())
try:
    # A second cluster in another folder finds the ports taken: it names the port and starts nothing.
    second = temp_dir()
    r = subprocess.run([f"{ROOT}/scripts/slurm-up.sh", second], capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode == 1 and "port 6817 (Slurm's slurmctld) is in use by" in r.stderr and
          not os.listdir(second), f"a second slurm-up.sh on taken ports: {r}")

    with h5py.File(DATA, "r") as f:
        labels = f["test/labels"][:]

    # 1. A short training through sbatch --wait, its training rows streamed from the file
    #    (--memory-budget: each task reads its own rows with plain reads).
    start = time.time()
    r = submit("--model mlp --epochs 2 --quiet --memory-budget 8", wait=True)
    job = r.stdout.strip().split(";")[0]
    print(f"job {job}: sbatch --wait returned {r.returncode} after {time.time() - start:.0f} s")
    check(r.returncode == 0, f"job {job} failed: {r.stderr}")
    out = open(f"{results}/slurm-{job}.out").read()
    check("2 ranks" in out and "status 0" in out, f"job output: {out[-2000:]}")
    check_results(f"{results}/job-{job}/results.h5", labels, runs=["raw"])
    with h5py.File(f"{results}/job-{job}/results.h5", "r") as f:
        check(f.attrs["ranks"] == 2, "the job ran on $SLURM_NTASKS = 2 ranks")
        command = f.attrs["command"]
        command = command.decode() if isinstance(command, bytes) else command
        check("--memory-budget 8" in command, f"the job's run was not streamed: {command}")

    # 2. Requeue in the middle: SIGTERM reaches the ranks, they checkpoint, the job comes back
    #    with SLURM_RESTART_COUNT=1, on one task instead of two, and resumes on 1 rank.
    epochs = 8
    job = submit(f"--model mlp --epochs {epochs} --quiet").stdout.strip().split(";")[0]
    wait_state(job, ("RUNNING",), 120)
    slurm_jobs.wait_checkpoint_epoch(f"{results}/job-{job}/checkpoint.h5", 2, 180)
    requeued_at = time.time()
    slurm_jobs.requeue_resized(env, ROOT, job, "NumTasks=1", "TasksPerNode=1")
    wait_state(job, ("COMPLETED",), 400)
    print(f"job {job}: completed {time.time() - requeued_at:.0f} s after the requeue")
    out = open(f"{results}/slurm-{job}.out").read()
    check("restart 1" in out and "--resume" in out, f"the job did not restart with --resume: {out[-3000:]}")
    # No --checkpoint-every: a resume point inside an epoch can only come from the checkpoint the
    # ranks wrote on SIGTERM. (Their "stopped by signal" line may be lost: mpirun, signalled too,
    # can exit before it forwards the ranks' last output.)
    m = re.search(r"resumed from \S+ at epoch (\d+), step (\d+)", out)
    check(m is not None and int(m.group(2)) > 1,  # "step 1" is an epoch boundary
          f"the ranks did not checkpoint on SIGTERM (no resume inside an epoch): {out[-3000:]}")
    check("resumed from" in out and "saved by 2 ranks, this run has 1" in out,
          f"the second run did not resume on 1 rank: {out[-3000:]}")
    path = f"{results}/job-{job}/results.h5"
    check_results(path, labels, runs=["raw"])
    with h5py.File(path, "r") as f:
        check(f.attrs["ranks"] == 1, f"the requeued job ran on {f.attrs['ranks']} ranks, not 1")
        history = f["runs/raw/history/epoch"][:]
        check(list(history) == list(range(1, epochs + 1)), f"history epochs {history}: gaps or repeats")
        check(f["runs/raw"].attrs["test_accuracy"] > 0.85, "the resumed job trained")
    print("ok")
finally:
    subprocess.run([f"{ROOT}/scripts/slurm-down.sh", state], capture_output=True, text=True, timeout=60)
