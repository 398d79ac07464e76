"""Two ranks, two epochs of the default MLP on the real data: progress lines, report, and the full
results contract."""
from common import *

out = os.path.join(temp_dir(), "train.h5")
result = must_succeed(run(["train", "--data", DATA, "--out", out, "--epochs", "2"], ranks=2))
check_epoch_lines(result.stdout, 2)
check("precision    recall  f1-score   support" in result.stdout, "classification report")
check("Ankle boot" in result.stdout and "weighted avg" in result.stdout, "report rows")
check("confusion matrix" in result.stdout, "confusion matrix printed")
check(result.stderr.strip() == "", f"nothing on stderr, got {result.stderr!r}")
with h5py.File(DATA, "r") as f:
    labels = f["test/labels"][:]
check_results(out, labels, runs=["raw"])
with h5py.File(out, "r") as f:
    g = f["runs/raw"]
    check(g.attrs["ranks"] == 2 and f.attrs["ranks"] == 2, "ranks attribute")
    check(g.attrs["test_accuracy"] > 0.85, f"accuracy after 2 epochs {g.attrs['test_accuracy']}")
    loss = g["history/train_loss"][:]
    check(loss[1] < loss[0], f"training loss must fall: {loss}")
    check(g.attrs["parameters"] == 669706, "parameter count")  # mlp:512,512
    settings = text_attr(g.attrs, "settings")
    check(g.attrs["test_views"] == 18 and "--batch 256 --optimizer adam --lr 0.002 " in settings and
          "--label-smoothing 0.1 --dropout 0 " in settings and
          "--augment --flip yes --augment-shift 1 --erase 0 --tta --tta-shift 1 " in settings,
          f"the default MLP: flipped images (the data file allows it) moved by up to a pixel, 18 views; got {settings!r}")
print("ok")
