"""--shard-optimizer (ZeRO stage 1): a reduce-scatter of the gradient, each rank's optimizer on its
slice, an allgather of the parameters.

1. The MLP on 2 and 3 ranks trains as well as without it (test accuracy within 0.5 points after
   2 epochs), the run line says so, and every rank holds the same parameters (the drift guard
   checks every 20 steps).
2. A rank that dies mid-epoch: the last checkpoint (the slices of the optimizer state gathered
   whole) resumes to bitwise the uninterrupted sharded run; the same checkpoint also resumes on 3
   ranks and without sharding.
3. A NaN on one rank's slice ends every rank with the line naming it; the combinations that cannot
   work are refused with one line."""
import shutil

from common import *

work = temp_dir()
BASE = ["train", "--data", DATA, "--model", "mlp", "--quiet", "--drift-check", "20"]


def accuracy(path):
    with h5py.File(path, "r") as f:
        return f["runs/raw"].attrs["test_accuracy"]


for ranks in (2, 3):
    plain, sharded = f"{work}/plain{ranks}.h5", f"{work}/sharded{ranks}.h5"
    must_succeed(run(BASE + ["--epochs", "2", "--out", plain], ranks=ranks))
    result = must_succeed(run(BASE + ["--epochs", "2", "--shard-optimizer", "--out", sharded], ranks=ranks))
    check(f"optimizer sharded: each rank updates {100 / ranks:.1f}% of the parameters" in result.stdout,
          f"the run line: {result.stdout[:600]}")
    a, b = accuracy(plain), accuracy(sharded)
    print(f"{ranks} ranks: {100 * a:.2f}% replicated, {100 * b:.2f}% sharded")
    check(abs(a - b) <= 0.005, f"{ranks} ranks: sharded {b:.4f} against {a:.4f}")

# 2. An interruption and its resume.
ref_ckpt, ref_out = f"{work}/ref.ckpt.h5", f"{work}/ref.h5"
must_succeed(run(BASE + ["--epochs", "2", "--shard-optimizer", "--checkpoint", ref_ckpt, "--out", ref_out], ranks=2))
ckpt, out = f"{work}/cut.ckpt.h5", f"{work}/cut.h5"
result = run(BASE + ["--epochs", "2", "--shard-optimizer", "--checkpoint", ckpt, "--checkpoint-every", "100",
                     "--out", out], ranks=2, env={"DPTRAIN_FAULT": "exit@1:2:150"})
check(result.returncode != 0 and not os.path.exists(out), f"the rank that died: exit {result.returncode}")
with h5py.File(ckpt, "r") as f:
    check(f.attrs["epoch"] == 1 and f.attrs["step"] == 100, "the checkpoint of epoch 2, step 100")
saved = f"{work}/saved.ckpt.h5"
shutil.copy(ckpt, saved)
must_succeed(run(BASE + ["--epochs", "2", "--shard-optimizer", "--checkpoint", ckpt, "--resume", "--out", out],
                 ranks=2))
with h5py.File(ref_ckpt, "r") as a, h5py.File(ckpt, "r") as b:
    for key in ("params", "opt_first", "opt_second"):
        check(np.array_equal(a[key][()], b[key][()]), f"sharded resume: {key} differ from the uninterrupted run")
with h5py.File(ref_out, "r") as a, h5py.File(out, "r") as b:
    check(np.array_equal(a["runs/raw/predictions"][()], b["runs/raw/predictions"][()]), "sharded resume: predictions")
print("sharded: a rank died at epoch 2 step 150; the step-100 checkpoint resumed to the same bits")
for ranks, flags in ((3, ["--shard-optimizer"]), (2, [])):
    again = f"{work}/again{ranks}{len(flags)}.ckpt.h5"
    shutil.copy(saved, again)
    result = must_succeed(run(BASE + ["--epochs", "2", "--checkpoint", again, "--resume", "--out",
                                      f"{work}/again{ranks}{len(flags)}.h5"] + flags, ranks=ranks))
    # 2 augmented epochs (an MLP's default): 84.7-84.9% measured
    check(accuracy(f"{work}/again{ranks}{len(flags)}.h5") > 0.83, "the resumed run trains on")
print("the same checkpoint resumed on 3 ranks sharded and on 2 replicated")

# 3. A NaN, and the refusals.
result = run(BASE + ["--epochs", "1", "--shard-optimizer", "--out", f"{work}/nan.h5"], ranks=2,
             env={"DPTRAIN_FAULT": "nan@1:1:5"})
errors = [l for l in result.stderr.splitlines() if l.startswith("dptrain: error:")]
check(result.returncode == 1 and len(errors) == 1 and "rank 1: the loss became NaN or Inf at epoch 1, step 5" in errors[0],
      f"a NaN with --shard-optimizer: {result.returncode} {result.stderr[-600:]}")
for flags, named in ((["--bucket-mb", "1"], "--bucket-mb"), (["--compress", "bf16"], "--compress bf16"),
                     (["--deterministic"], "--deterministic")):
    result = run(BASE + ["--shard-optimizer", "--out", f"{work}/refused.h5"] + flags, ranks=1)
    check(result.returncode == 2 and f"cannot be combined with {named}" in result.stderr and
          not os.path.exists(f"{work}/refused.h5"), f"{flags}: {result.returncode} {result.stderr[-300:]}")
print("ok")
