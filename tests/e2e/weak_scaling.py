"""Weak scaling (--batch-per-rank): the benchmark MLP (784-256-128-10; 20 epochs, dropout 0.1, no
label smoothing: the settings that were the default) with 128 images per rank on 2 and 4 ranks
(global batches 256 and 512, learning rates 0.002 and 0.004 by the linear rule) reaches a test
accuracy within 0.5 points of global batch 128 on 2 ranks (e2e_target_small's run), and the
results file records the global batch and the learning rate actually used."""
from common import *

work = temp_dir()


def figures(out):
    with h5py.File(out, "r") as f:
        g = f["runs/raw"]
        return g.attrs["test_accuracy"], g.attrs["global_batch"], g.attrs["lr"]


def train(ranks, extra):
    out = f"{work}/r{ranks}{'w' if extra else ''}.h5"
    result = must_succeed(run(["train", "--data", DATA, "--out", out, "--quiet"] + SMALL_MLP + extra, ranks=ranks))
    return (result.stdout,) + figures(out)


default_acc, batch, lr = figures(os.environ["DPTRAIN_SMALL_MLP_RESULTS"])  # e2e_target_small's run
with h5py.File(os.environ["DPTRAIN_SMALL_MLP_RESULTS"], "r") as f:
    check(batch == 128 and lr == 1e-3 and f.attrs["ranks"] == 2, "the default run: 2 ranks, batch 128, lr 0.001")
print(f"batch 128 on 2 ranks: {100 * default_acc:.2f}%")
for ranks in (2, 4):
    stdout, acc, batch, lr = train(ranks, ["--batch-per-rank", "128"])
    check(batch == 128 * ranks and abs(lr - 1e-3 * ranks) < 1e-12, f"{ranks} ranks: batch {batch}, lr {lr}")
    check(f"weak scaling: 128 per rank x {ranks} ranks; learning rate {0.001 * ranks:g} = 0.001 x {128 * ranks} / 128"
          in stdout, f"the weak-scaling line: {stdout[:500]}")
    print(f"--batch-per-rank 128 on {ranks} ranks (global batch {batch}, lr {lr:g}): {100 * acc:.2f}%")
    check(abs(acc - default_acc) <= 0.005, f"{ranks} ranks: {acc:.4f} is more than 0.5 points from {default_acc:.4f}")
print("ok")
