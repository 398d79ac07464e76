"""A run's settings are one command line: the results' `settings` attribute, pasted after dptrain with
a new --out, trains the same run again, bit for bit, including the flags that change the bits
(--threads, --shard-optimizer, --bucket-mb). Ranks started with different command lines (an MPMD
launch) are refused at start-up, naming the first flag that differs; --batch-per-rank cannot scale
the learning rate past --lr's own maximum."""
import shlex
import signal
import time

from common import *

_, data, labels = noisy_templates(11, 60, (1600, 300))
dir = temp_dir()


def parameter_hash(path):
    with h5py.File(path, "r") as f:
        return int(f["runs/raw"].attrs["parameter_hash"]), text_attr(f["runs/raw"].attrs, "settings")


first = f"{dir}/first.h5"
must_succeed(run(["train", "--data", data, "--model", "mlp:24,12", "--epochs", "2", "--quiet", "--no-augment",
                  "--lr", "0.003", "--shard-optimizer", "--threads", "1", "--out", first],
                 ranks=2))
check_results(first, labels, runs=["raw"])
hash_first, settings = parameter_hash(first)
print("settings:", settings)
words = shlex.split(settings)
check(words[0] == "train" and "--shard-optimizer" in words and words[words.index("--bucket-mb") + 1] == "0" and
      words[words.index("--threads") + 1] == "1" and words[words.index("--lr") + 1] == "0.003" and
      "--no-augment" in words and "--no-tta" in words, f"settings lack a flag: {settings!r}")
again = f"{dir}/again.h5"
must_succeed(run(words + ["--out", again, "--quiet"], ranks=2))
hash_again, settings_again = parameter_hash(again)
check(hash_again == hash_first and settings_again == settings,
      f"the settings line trained another run: {hash_again:016x} vs {hash_first:016x}")

# An MPMD launch whose second rank has another --lr, then another --epochs: refused before any work.
for flag, mine, theirs in (("--lr", "0.001", "0.01"), ("--epochs", "1", "2")):
    common = ["train", "--data", data, "--model", "mlp:16", "--quiet", "--no-augment", "--out", f"{dir}/mixed.h5"]
    command = [MPIEXEC, "-n", "1", DPTRAIN] + common + [flag, mine] + [":", "-n", "1", DPTRAIN] + common + [flag, theirs]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                                     **NO_KILL_WAIT))
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain:")]
    expected = f"rank 1 on {HOST}: started with other settings than rank 0: {flag} {theirs} here, {flag} {mine} on rank 0"
    check(result.returncode != 0 and len(errors) == 1 and expected in errors[0] and
          not os.path.exists(f"{dir}/mixed.h5"), f"MPMD {flag}: {result.returncode} {result.stderr!r}")

# --batch-per-rank 8192 with --lr 0.1 on 2 ranks would train at 12.8, past --lr's maximum of 10.
result = run(["train", "--data", data, "--model", "mlp:16", "--batch-per-rank", "8192", "--lr", "0.1",
              "--out", f"{dir}/scaled.h5"], ranks=2, env=NO_KILL_WAIT)
errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain:")]
check(result.returncode == 2 and len(errors) == 1 and "the learning rate grows to 12.8" in errors[0] and
      "beyond --lr's largest value 10" in errors[0], f"scaled lr: {result.returncode} {result.stderr!r}")
# Training that diverges is not a success: --lr 10 with Adam ends at chance with a loss in the
# thousands (a short run near a uniform guess's loss is not flagged). The results are written,
# marked diverged with the reason, a warning line says so, and the exit status is 4.
bad = f"{dir}/diverged.h5"
result = run(["train", "--data", data, "--model", "mlp:16", "--epochs", "1", "--no-augment", "--quiet",
              "--optimizer", "adam", "--lr", "10", "--out", bad], ranks=2)
warnings = [line for line in result.stderr.splitlines() if line.startswith("dptrain: warning: run raw diverged")]
check(result.returncode == 4 and len(warnings) == 1 and "is at chance" in warnings[0] and
      "more than twice a uniform guess's" in warnings[0],
      f"diverged run: exit {result.returncode}, {result.stderr!r}")
with h5py.File(bad, "r") as f:
    check(f["runs/raw"].attrs["diverged"] == 1 and "at chance" in text_attr(f["runs/raw"].attrs, "diverged_reason"),
          "the diverged run is not marked in its results")
with h5py.File(first, "r") as f:
    check(f["runs/raw"].attrs["diverged"] == 0, "a run that learned is marked diverged")
# eval of a checkpoint saved mid-epoch records what was trained: 1 epoch and the steps after it (it
# had recorded the 3 epochs the run set out to train).
mid = f"{dir}/mid.ckpt.h5"
died = run(["train", "--data", data, "--model", "mlp:16", "--epochs", "3", "--no-augment", "--quiet", "--batch", "100",
            "--checkpoint", mid, "--checkpoint-every", "5", "--checkpoint-sync", "--out", f"{dir}/died.h5"],
           env={"DPTRAIN_FAULT": "exit@0:2:8"})  # --checkpoint-sync: the step-5 file is on disk before the death
check(died.returncode != 0 and os.path.exists(mid), f"the run that dies mid-epoch: {died.stderr!r}")
with h5py.File(mid, "r") as f:
    position = (int(f.attrs["epoch"]), int(f.attrs["step"]))
check(position == (1, 5), f"checkpoint at epoch/step {position}, expected (1, 5)")
must_succeed(run(["eval", "--checkpoint", mid, "--data", data, "--out", f"{dir}/mid-eval.h5"]))
with h5py.File(f"{dir}/mid-eval.h5", "r") as f:
    g = f["runs/raw"]
    check(g.attrs["epochs"] == 1 and g.attrs["partial_epoch_steps"] == 5 and g["history/epoch"].shape == (1,),
          f"eval of a mid-epoch checkpoint: epochs {g.attrs['epochs']}, steps {g.attrs.get('partial_epoch_steps')}")
# compare stopped by SIGTERM: one line, and no word of --checkpoint, a flag compare does not have.
command = [MPIEXEC, "-n", "2", "--oversubscribe", DPTRAIN, "compare", "--pca", "0,20", "--data", data, "--model",
           "mlp:16", "--epochs", "100000", "--no-augment", "--out", f"{dir}/stopped.h5"]
p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                              OPENBLAS_NUM_THREADS="1"))
time.sleep(4)
# The ranks themselves get the signal (mpiexec, signalled, may end them before they speak).
ranks = subprocess.run(["pgrep", "-f", f"^{DPTRAIN} compare .*{dir}/stopped.h5"], capture_output=True,
                       text=True).stdout.split()
check(len(ranks) == 2, f"expected the 2 ranks of compare, found {ranks}")
for pid in ranks:
    os.kill(int(pid), signal.SIGTERM)
stdout, stderr = p.communicate(timeout=60)
stops = [line for line in stderr.splitlines() if line.startswith("dptrain: stopped by signal 15")]
check(p.returncode == 3 and len(stops) == 1 and stops[0].endswith("nothing saved") and "--checkpoint" not in stderr,
      f"compare stopped: {p.returncode} {stderr!r}")
print("ok")
