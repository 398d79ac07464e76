"""Accuracy guards on 2 ranks. Usage: target.py raw|pca50|small.
- raw: the default MLP (mlp:512,512 on flipped images moved by up to a pixel, 18 test views),
  shortened to 5 epochs (its cosine schedule with them), reaches 87.0%; the full 60-epoch
  default's figures are docs/results-log.md's (91.18% in 104 s on 2 cores, 12 times this guard's
  epochs);
- pca50: the same on 50 principal components, 86.8%;
- small: the benchmark MLP (`--model mlp`: 784-256-128-10) with the settings that were the default
  before (20 epochs, dropout 0.1, no label smoothing, no augmentation), 89.5% (90.22% measured).
  Its results stay in DPTRAIN_SMALL_MLP_RESULTS (the fixture small_mlp): e2e_compress and
  e2e_weak_scaling compare against that run, with the same settings, instead of training it
  again."""
from common import *


which = sys.argv[1]
out = os.path.join(temp_dir(), f"{which}.h5")
RAW_GOAL, PCA50_GOAL = 0.870, 0.868  # measured 87.88% and 87.40% (Cooperlake kernels), 2026-12-07
args = ["train", "--data", DATA, "--out", out, "--epochs", "5"]
goal, epochs = RAW_GOAL, 5
if which == "pca50":
    args += ["--pca", "50"]
    goal = PCA50_GOAL
if which == "small":  # kept for the tests that compare against it
    out = os.environ["DPTRAIN_SMALL_MLP_RESULTS"]
    if os.path.exists(out):
        os.remove(out)
    args = ["train", "--data", DATA, "--out", out] + SMALL_MLP
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
