"""--compress bf16: the gradient on the wire as bfloat16 with error feedback. The default MLP's 20
epochs on 2 ranks within 0.2 points of float32; half the bytes per step, said on the run line;
buckets giving the same bits as the fused allreduce on 2 ranks; a resume from a mid-epoch
checkpoint bitwise equal to the uninterrupted run (the residuals are in the checkpoint); a resume
with another --compress refused; the same checkpoint resumed on 1 rank to the end."""
import shutil

from common import *

work = temp_dir()
BASE = ["train", "--data", DATA, "--quiet"]


def results(path):
    with h5py.File(path, "r") as f:
        g = f["runs/raw"]
        return g.attrs["test_accuracy"], g.attrs["parameter_hash"], g["predictions"][:]


# accuracy and bytes
plain, packed = os.environ["DPTRAIN_DEFAULT_RESULTS"], f"{work}/bf16.h5"  # the default run, float32 (e2e_target_raw)
r = must_succeed(run(BASE + ["--out", packed, "--compress", "bf16"], ranks=2))
check("gradient allreduce: 0.47 MB per step from each rank (bfloat16 with error feedback)" in r.stdout, r.stdout[:600])
acc_none, acc_bf16 = results(plain)[0], results(packed)[0]
print(f"20 epochs on 2 ranks: float32 {100 * acc_none:.2f}%, bf16 {100 * acc_bf16:.2f}%")
check(abs(acc_bf16 - acc_none) <= 0.002, f"bf16 {acc_bf16:.4f} is more than 0.2 points from {acc_none:.4f}")

# buckets = fused, bitwise, on 2 ranks
short = BASE + ["--epochs", "2", "--compress", "bf16"]
must_succeed(run(short + ["--out", f"{work}/fused.h5"], ranks=2))
must_succeed(run(short + ["--out", f"{work}/buckets.h5", "--bucket-mb", "0.1"], ranks=2))
a, b = results(f"{work}/fused.h5"), results(f"{work}/buckets.h5")
check(a[1] == b[1] and np.array_equal(a[2], b[2]), "bucketed bf16 differs from fused bf16 on 2 ranks")

# exact resume: a rank dies in epoch 2 after the step-100 checkpoint
reference = f"{work}/ref.h5"
must_succeed(run(short + ["--out", reference, "--epochs", "3"], ranks=2))
ckpt = f"{work}/c.h5"
died = run(short + ["--out", f"{work}/never.h5", "--epochs", "3", "--checkpoint", ckpt, "--checkpoint-every", "100"],
           ranks=2, env={"DPTRAIN_FAULT": "exit@1:2:150"})
check(died.returncode != 0, "the run with a dying rank must fail")
with h5py.File(ckpt, "r") as f:
    check(f.attrs["compress"] in ("bf16", b"bf16") and f["residual"].shape[0] == 2 and
          np.abs(f["residual"][:]).max() > 0, "the checkpoint holds both ranks' residuals")
shutil.copy(ckpt, f"{work}/c1.h5")
refused = run(short + ["--out", f"{work}/x.h5", "--epochs", "3", "--checkpoint", ckpt, "--resume", "--compress",
                       "none"], ranks=2)
check(refused.returncode == 1 and "saved with --compress bf16, this run has --compress none" in refused.stderr,
      refused.stderr)
resumed = f"{work}/resumed.h5"
must_succeed(run(short + ["--out", resumed, "--epochs", "3", "--checkpoint", ckpt, "--resume"], ranks=2))
a, b = results(reference), results(resumed)
check(a[1] == b[1] and np.array_equal(a[2], b[2]), "the bf16 resume is not bitwise the uninterrupted run")
print("bf16: a mid-epoch resume is bitwise the uninterrupted run")
r = must_succeed(run(short + ["--out", f"{work}/one.h5", "--epochs", "3", "--checkpoint", f"{work}/c1.h5", "--resume"],
                     ranks=1))
check("saved by 2 ranks, this run has 1" in r.stdout and results(f"{work}/one.h5")[0] > 0.85, r.stdout[:600])
print("ok")
