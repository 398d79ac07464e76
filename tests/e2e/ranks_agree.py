"""Short trainings on 1, 2 and 3 ranks (the benchmark MLP, augmented as MLPs are by default) reach
comparable accuracy."""
from common import *

dir = temp_dir()
accuracy = {}
for ranks in (1, 2, 3):
    out = os.path.join(dir, f"r{ranks}.h5")
    must_succeed(run(["train", "--data", DATA, "--out", out, "--model", "mlp", "--epochs", "2", "--quiet"], ranks=ranks))
    with h5py.File(out, "r") as f:
        accuracy[ranks] = f["runs/raw"].attrs["test_accuracy"]
print("test accuracy by rank count:", accuracy)
values = list(accuracy.values())
check(min(values) > 0.83, "every rank count must train")  # 2 augmented epochs: 84.7-84.9% measured
check(max(values) - min(values) < 0.015, "rank counts must agree within 1.5 points")
print("ok")
