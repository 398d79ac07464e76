"""--validation N: the hold-out is reported every epoch and picks the final parameters; the
same hold-out is chosen whatever the number of ranks."""
from common import *

dir = temp_dir()
outs = {}
for ranks in (1, 2):
    out = f"{dir}/val{ranks}.h5"
    result = must_succeed(run(["train", "--data", DATA, "--out", out, "--epochs", "3",
                               "--validation", "5000"], ranks=ranks))
    check("55000 training samples" in result.stdout, "validation rows leave the training set")
    check_epoch_lines(result.stdout, 3)
    check("  val " in epoch_lines(result.stdout)[0], "validation accuracy printed")
    outs[ranks] = out
with h5py.File(DATA, "r") as f:
    labels = f["test/labels"][:]
for ranks, out in outs.items():
    check_results(out, labels, runs=["raw"])
    with h5py.File(out, "r") as f:
        g = f["runs/raw"]
        val = g["history/val_accuracy"][:]
        check(val.shape == (3,) and np.all(val > 0.8), f"val_accuracy {val}")
        check(g["history/val_loss"].shape == (3,), "val_loss")
        check(g.attrs["best_epoch"] == int(np.argmax(val)) + 1, "best epoch is the best validation epoch")
print("ok")
