"""Checkpoints, exact resume, stop signals, a killed rank, injected faults on one rank, and
resume refusing a different configuration. Every launch has a timeout: a hang fails the test."""
import shutil
import signal
import time

from common import *

dir = temp_dir()
ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"}
BASE = ["train", "--data", DATA, "--model", "mlp", "--epochs", "3", "--quiet"]
with h5py.File(DATA, "r") as f:
    test_labels = f["test/labels"][:]


def launch(args, ranks, extra_env=None):
    env = dict(os.environ, **ENV, **(extra_env or {}))
    command = [MPIEXEC, "-n", str(ranks), "--oversubscribe", DPTRAIN] + args
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(path, process, epoch, timeout=120):
    """Block until the checkpoint holds `epoch` finished epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        check(process.poll() is None, "the run ended before it could be interrupted")
        if os.path.exists(path):
            try:
                with h5py.File(path, "r") as f:
                    if f.attrs["epoch"] >= epoch:
                        return
            except OSError:
                pass
        time.sleep(0.05)
    fail(f"no checkpoint with epoch {epoch} within {timeout} s")


def dptrain_pids(marker):
    out = subprocess.run(["pgrep", "-f", f"^{DPTRAIN} .*{marker}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def same_final_state(ckpt_a, ckpt_b, results_a, results_b, what):
    with h5py.File(ckpt_a, "r") as a, h5py.File(ckpt_b, "r") as b:
        for key in ("params", "opt_first", "opt_second"):
            check(np.array_equal(a[key][()], b[key][()]), f"{what}: {key} differ")
        check(np.array_equal(a["history"][:, :7], b["history"][:, :7]), f"{what}: histories differ")
        check(a.attrs["epoch"] == b.attrs["epoch"] == 3, f"{what}: not finished")
    with h5py.File(results_a, "r") as a, h5py.File(results_b, "r") as b:
        ra, rb = a["runs/raw"], b["runs/raw"]
        check(np.array_equal(ra["predictions"][()], rb["predictions"][()]), f"{what}: predictions differ")
        check(ra.attrs["test_accuracy"] == rb.attrs["test_accuracy"], f"{what}: accuracy differs")
        for column in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            check(np.array_equal(ra["history"][column][()], rb["history"][column][()]),
                  f"{what}: history/{column} differs (gaps or repeats?)")


# 1. The reference: an uninterrupted run on 2 ranks, with checkpoints.
ref_ckpt, ref_out = f"{dir}/ref.ckpt.h5", f"{dir}/ref.h5"
must_succeed(run(BASE + ["--checkpoint", ref_ckpt, "--out", ref_out], ranks=2))
check_results(ref_out, test_labels, runs=["raw"])

# 2. SIGUSR1 to mpirun in epoch 2 (forwarded to every rank): a checkpoint at the next step
#    boundary, exit code 3; the resume ends bitwise where the reference ended.
ckpt, out = f"{dir}/usr1.ckpt.h5", f"{dir}/usr1.h5"
p = launch(BASE + ["--checkpoint", ckpt, "--out", out], 2)
wait_for_checkpoint(ckpt, p, 1)
time.sleep(0.2)
p.send_signal(signal.SIGUSR1)
stdout, stderr = p.communicate(timeout=60)
check(p.returncode == 3, f"SIGUSR1: exit {p.returncode}, expected 3: {stderr}")
check("stopped by signal 10" in stderr and "checkpoint written to" in stderr, f"SIGUSR1 message: {stderr}")
check(not os.path.exists(out), "a stopped run must not write results")
with h5py.File(ckpt, "r") as f:
    print("stopped at epoch", f.attrs["epoch"] + 1, "step", f.attrs["step"] + 1)
    check(f.attrs["epoch"] < 3, "the stop came too late to test anything")
result = must_succeed(run(BASE + ["--checkpoint", ckpt, "--resume", "--out", out], ranks=2))
check("resumed from" in result.stdout, "resume announced")
same_final_state(ref_ckpt, ckpt, ref_out, out, "SIGUSR1 + resume")

# 3. SIGTERM sent to the ranks themselves (as Slurm does): the same.
ckpt, out = f"{dir}/term.ckpt.h5", f"{dir}/term.h5"
p = launch(BASE + ["--checkpoint", ckpt, "--out", out], 2)
wait_for_checkpoint(ckpt, p, 1)
for pid in dptrain_pids("term.ckpt.h5"):
    os.kill(pid, signal.SIGTERM)
stdout, stderr = p.communicate(timeout=60)
check(p.returncode == 3, f"SIGTERM: exit {p.returncode}: {stderr}")
must_succeed(run(BASE + ["--checkpoint", ckpt, "--resume", "--out", out], ranks=2))
same_final_state(ref_ckpt, ckpt, ref_out, out, "SIGTERM + resume")

# 4. SIGKILL of one rank in the middle of an epoch, with --checkpoint-every: mpiexec ends non-zero
#    within 30 s, the last checkpoint is intact and mid-epoch, and the resume completes exactly.
ckpt, out = f"{dir}/kill.ckpt.h5", f"{dir}/kill.h5"
p = launch(BASE + ["--checkpoint", ckpt, "--checkpoint-every", "100", "--out", out], 2)
wait_for_checkpoint(ckpt, p, 1)
time.sleep(0.3)
victims = dptrain_pids("kill.ckpt.h5")
check(len(victims) == 2, f"expected 2 ranks, found {victims}")
killed_at = time.time()
os.kill(victims[1], signal.SIGKILL)
p.communicate(timeout=60)
elapsed = time.time() - killed_at
print(f"mpiexec returned {p.returncode} {elapsed:.1f} s after SIGKILL")
check(p.returncode != 0 and elapsed < 30, "mpiexec must fail within 30 s of a killed rank")
check(not [n for n in os.listdir(dir) if ".tmp." in n], "a temporary checkpoint was left behind")
with h5py.File(ckpt, "r") as f:
    print("last checkpoint: epoch", f.attrs["epoch"], "step", f.attrs["step"])
must_succeed(run(["eval", "--checkpoint", ckpt, "--data", DATA, "--out", f"{dir}/kill-eval.h5"], ranks=1))
must_succeed(run(BASE + ["--checkpoint", ckpt, "--resume", "--out", out], ranks=2))
same_final_state(ref_ckpt, ckpt, ref_out, out, "SIGKILL + resume")

# 5. eval of the finished checkpoint reproduces the run's test accuracy.
eval_out = f"{dir}/eval.h5"
result = must_succeed(run(["eval", "--checkpoint", ref_ckpt, "--data", DATA, "--out", eval_out], ranks=2))
check_results(eval_out, test_labels, runs=["raw"])
with h5py.File(eval_out, "r") as a, h5py.File(ref_out, "r") as b:
    check(np.array_equal(a["runs/raw/predictions"][()], b["runs/raw/predictions"][()]), "eval predictions")

# 6. A checkpoint whose configuration differs is refused, naming the difference.
for args, ranks, fragment in (
        (["--batch", "128"], 2, "saved with --batch 256, this run has --batch 128"),
        (["--pca", "50"], 2, "saved with --pca 0, this run has --pca 50"),
        (["--model", "mlp:64"], 2, "saved with --model mlp, this run has --model mlp:64")):
    result = run(BASE + ["--checkpoint", ref_ckpt, "--resume", "--out", f"{dir}/x.h5"] + args, ranks=ranks)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
    check(result.returncode == 1 and len(errors) == 1 and fragment in errors[0],
          f"mismatch {args}: {result.stderr!r}")

# 6b. An elastic resume: 4 ranks lose one in the middle of epoch 2 (the checkpoint of step 100
#     survives); the same checkpoint resumes on 2, 1 and 3 ranks, each to the end with every epoch
#     once, saying what differs, and with the epoch's loss where an uninterrupted run has it.
ckpt = f"{dir}/elastic.ckpt.h5"
result = run(BASE + ["--checkpoint", ckpt, "--checkpoint-every", "100", "--out", f"{dir}/never.h5"], ranks=4,
             env={"DPTRAIN_FAULT": "exit@3:2:150"})
check(result.returncode != 0, "the 4-rank run lost a rank and must fail")
with h5py.File(ckpt, "r") as f:
    check((f.attrs["epoch"], f.attrs["step"], f.attrs["ranks"]) == (1, 100, 4),
          f"checkpoint at {f.attrs['epoch']}, {f.attrs['step']} by {f.attrs['ranks']} ranks")
with h5py.File(ref_out, "r") as f:
    ref_loss = f["runs/raw/history/train_loss"][:]
for ranks in (2, 1, 3):
    copy, out = f"{dir}/elastic{ranks}.ckpt.h5", f"{dir}/elastic{ranks}.h5"
    shutil.copy(ckpt, copy)
    result = must_succeed(run(BASE + ["--checkpoint", copy, "--resume", "--out", out], ranks=ranks))
    check("resumed from" in result.stdout and f"saved by 4 ranks, this run has {ranks}: the rest of this epoch "
          "takes a new data order" in result.stdout, f"elastic resume on {ranks}: {result.stdout[:600]}")
    check_results(out, test_labels, runs=["raw"])
    with h5py.File(out, "r") as f:
        run_group = f["runs/raw"]
        check(list(run_group["history/epoch"][:]) == [1, 2, 3] and f.attrs["ranks"] == ranks,
              f"elastic resume on {ranks}: history {list(run_group['history/epoch'][:])}")
        loss = run_group["history/train_loss"][:]
        check(np.all(np.abs(loss - ref_loss) < 0.03 * ref_loss) and run_group.attrs["test_accuracy"] > 0.85,
              f"elastic resume on {ranks}: losses {loss} against {ref_loss}")
    print(f"elastic resume on {ranks} ranks of a 4-rank checkpoint: completed, losses {np.round(loss, 4)}")

# 7. Injected faults on one rank, under 2 and 3 ranks: one line naming the rank and the cause,
#    every rank ends non-zero within seconds, and the last good checkpoint survives.
for ranks in (2, 3):
    last = ranks - 1
    cases = [
        (f"nan@{last}:2:7", f"rank {last}: the loss became NaN or Inf at epoch 2, step 7"),
        (f"alloc@{last}", f"rank {last} on {HOST}: cannot allocate the model (injected allocation failure)"),
        ("io@0:2", f"rank 0 on {HOST}: "),
        (f"exit@{last}:1:20", None),
    ]
    for fault, fragment in cases:
        ckpt = f"{dir}/fault{ranks}.ckpt.h5"
        if os.path.exists(ckpt):
            os.remove(ckpt)
        start = time.time()
        result = run(BASE + ["--checkpoint", ckpt, "--out", f"{dir}/fault.h5"], ranks=ranks,
                     timeout=120, env={"DPTRAIN_FAULT": fault})
        elapsed = time.time() - start
        errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
        print(f"{ranks} ranks, DPTRAIN_FAULT={fault}: exit {result.returncode} after {elapsed:.1f} s; {errors}")
        check(result.returncode != 0, f"{fault}: exit 0")
        check(elapsed < 60, f"{fault}: took {elapsed:.0f} s")
        check(not os.path.exists(f"{dir}/fault.h5"), f"{fault}: wrote results")
        if fragment is not None:
            check(len(errors) == 1 and fragment in errors[0], f"{fault}: {result.stderr!r}")
        if fault.startswith("io"):
            check("injected I/O failure" in errors[0], f"{fault}: {errors}")
            with h5py.File(ckpt, "r") as f:
                check(f.attrs["epoch"] == 1, "the epoch-1 checkpoint must survive a failed write")
print("ok")
