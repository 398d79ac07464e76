"""The accuracy targets on 2 ranks. Usage: target.py raw|pca50|small.
- raw: the default MLP (mlp:512,256, 30 epochs) on raw pixels reaches 90% (90.58% measured with
  the Haswell kernels; other kernels round differently);
- pca50: the same on 50 principal components, 88.5% (89.27% measured);
- small: the benchmark MLP (`--model mlp`: 784-256-128-10) with the settings that were the default
  before (20 epochs, dropout 0.1, no label smoothing), 89.5% (90.22% measured). Its results stay in
  DPTRAIN_SMALL_MLP_RESULTS (the fixture small_mlp): e2e_compress and e2e_weak_scaling compare
  against that run, with the same settings, instead of training it again."""
from common import *

SMALL = ["--model", "mlp", "--epochs", "20", "--dropout", "0.1", "--label-smoothing", "0"]

which = sys.argv[1]
out = os.path.join(temp_dir(), f"{which}.h5")
args = ["train", "--data", DATA, "--out", out]
goal, epochs = 0.90, 30
if which == "pca50":
    args += ["--pca", "50"]
    goal = 0.885
if which == "small":  # kept for the tests that compare against it
    out = os.environ["DPTRAIN_SMALL_MLP_RESULTS"]
    if os.path.exists(out):
        os.remove(out)
    args = ["train", "--data", DATA, "--out", out] + SMALL
    goal, epochs = 0.895, 20
result = must_succeed(run(args, ranks=2))
check_epoch_lines(result.stdout, epochs)
with h5py.File(out, "r") as f:
    g = f["runs"][list(f["runs"])[0]]
    acc = g.attrs["test_accuracy"]
    print(f"{which}: test accuracy {acc:.4f} after {g.attrs['epochs']} epochs, "
          f"{g.attrs['train_seconds']:.1f} s of training")
check(acc >= goal, f"{which}: {acc:.4f} is below the target {goal}")
print("ok")
