"""A data set of another size (1,000 training and 500 test images, plain and gzip files mixed)
converts, loads on 3 ranks and trains; the results file holds 500 predictions."""
from common import *

dir = temp_dir()
rng = np.random.default_rng(3)
templates = rng.integers(0, 256, size=(10, 28, 28))


def make(n):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    noise = rng.integers(-40, 41, size=(n, 28, 28))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


train_images, train_labels = make(1000)
test_images, test_labels = make(500)
write_idx(f"{dir}/train-images-idx3-ubyte.gz", train_images)
write_idx(f"{dir}/train-labels-idx1-ubyte", train_labels)
write_idx(f"{dir}/t10k-images-idx3-ubyte", test_images)
write_idx(f"{dir}/t10k-labels-idx1-ubyte.gz", test_labels)
data = f"{dir}/small.h5"
must_succeed(run(["convert", "--source", dir, "--out", data]))
with h5py.File(data, "r") as f:
    check(np.array_equal(f["train/images"][:], train_images), "train images")
    check(np.array_equal(f["test/labels"][:], test_labels), "test labels")
out = f"{dir}/results.h5"
result = must_succeed(run(["train", "--data", data, "--out", out, "--epochs", "4", "--batch", "50"], ranks=3))
check("1000 training samples" in result.stdout, "all 1000 samples are used")
check_results(out, test_labels, runs=["raw"])
with h5py.File(out, "r") as f:
    acc = f["runs/raw"].attrs["test_accuracy"]
check(acc > 0.9, f"separable synthetic classes must be learnt, got {acc}")
print("ok")
