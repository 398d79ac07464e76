"""Shared helpers for the end-to-end tests: run the real dptrain binary (under mpiexec when
asked), and check a results file against the contract in docs/file-formats.md."""
import gzip
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from contextlib import contextmanager

import h5py
import numpy as np

DPTRAIN = os.environ["DPTRAIN"]
DATA = os.environ.get("DPTRAIN_DATA", "")
# The benchmark MLP with round 1's settings: e2e_target_small trains it once (the fixture small_mlp)
# and e2e_compress and e2e_weak_scaling compare their runs against that one, so all three need these.
SMALL_MLP = ["--model", "mlp", "--epochs", "20", "--dropout", "0.1", "--label-smoothing", "0", "--no-augment"]
MPIEXEC = os.environ.get("MPIEXEC", "mpiexec")
IDX_SOURCE = "/usr/share/datasets/fashion-mnist"
HOST = os.uname().nodename  # how an error names this machine's ranks ("rank 1 on HOST: ...")


# For tests of refusals only: mpirun ends a job with a rank that exited non-zero by sending the
# others SIGTERM and waiting odls_base_sigkill_timeout (1 s) before SIGKILL, which made every
# refused 2-rank launch take 1.5-2 s instead of 0.4 s. Not for tests of stop signals.
NO_KILL_WAIT = {"OMPI_MCA_odls_base_sigkill_timeout": "0"}


SEAL_MAGIC = b"dptrain-seal 1\n"


def reseal(path):
    """Recompute the seal (src/seal.c) of a dptrain file that a test changed on purpose, as a user who
    edits a file and fixes its checksums would: the deeper checks behind the seal are then what object."""
    with open(path, "r+b") as f:
        data = f.read()
        if not data.startswith(SEAL_MAGIC):
            return
        header = b"%ssize %d\ncrc32 %08x\n" % (SEAL_MAGIC, len(data), zlib.crc32(data[512:]))
        f.seek(0)
        f.write(header + bytes(512 - len(header)))


@contextmanager
def edit_h5(path):
    """h5py.File(path, "r+"), resealed when closed."""
    with h5py.File(path, "r+") as f:
        yield f
    reseal(path)


def run(args, ranks=0, timeout=900, env=None):
    """Run dptrain; ranks=0 runs it directly, otherwise under mpiexec -n ranks."""
    command = [DPTRAIN] + list(args)
    if ranks:
        command = [MPIEXEC, "-n", str(ranks), "--oversubscribe"] + command
    full_env = dict(os.environ)
    full_env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                     "OPENBLAS_NUM_THREADS": "1"})
    if env:
        full_env.update(env)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)
    return result


def must_succeed(result):
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stdout.write(result.stderr)
        fail(f"dptrain exited {result.returncode}")
    return result


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def temp_dir():
    return tempfile.mkdtemp(prefix="dptrain-e2e-")


EPOCH_LINE = re.compile(
    r"^epoch +(\d+)/(\d+)  loss \d+\.\d{4}  train \d+\.\d\d%(  val \d+\.\d\d%)?(  test \d+\.\d\d%)?  "
    r"\d+\.\d s  \d+ samples/s$")


def epoch_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("epoch")]


def check_epoch_lines(stdout, epochs):
    lines = epoch_lines(stdout)
    check(len(lines) == epochs, f"expected {epochs} epoch lines, got {len(lines)}")
    for line in lines:
        check(EPOCH_LINE.match(line), f"epoch line does not match the contract: {line!r}")


def read_idx(path):
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        raw = f.read()
    ndims = raw[3]
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    return np.frombuffer(raw[4 + 4 * ndims:], dtype=np.uint8).reshape(dims)


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with (gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")) as f:
        f.write(header + array.tobytes())


def noisy_templates(seed, noise, counts):
    """A small data set in a new folder: 10 random template images, each sample its class's
    template plus uniform noise of +-noise; `counts` training and test images. Converted;
    returns (folder, data file, test labels)."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))
    folder = temp_dir()
    for prefix, n in zip(("train", "t10k"), counts):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        x = np.clip(templates[y] + rng.integers(-noise, noise + 1, size=(n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(f"{folder}/{prefix}-images-idx3-ubyte.gz", x)
        write_idx(f"{folder}/{prefix}-labels-idx1-ubyte.gz", y)
    data = f"{folder}/small.h5"
    must_succeed(run(["convert", "--source", folder, "--out", data, "--mirror-invariant", "yes"]))
    with h5py.File(data, "r") as f:
        labels = f["test/labels"][:]
    return folder, data, labels


def text_attr(attrs, name):
    """A string attribute, whether h5py hands it over as bytes or str."""
    value = attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def check_results(path, test_labels, runs=None):
    """Every dataset and attribute of the results contract, with shapes, types and consistency."""
    n_test = len(test_labels)
    with h5py.File(path, "r") as f:
        for attr in ("dptrain_version", "created", "ranks", "hosts", "command", "class_names", "image_height",
                     "image_width", "image_channels", "mirror_invariant"):
            check(attr in f.attrs, f"missing root attribute {attr}")
        K = len(f.attrs["class_names"])
        D = int(f.attrs["image_height"]) * int(f.attrs["image_width"]) * int(f.attrs["image_channels"])
        names = list(f["runs"].keys())
        if runs is not None:
            check(sorted(names) == sorted(runs), f"runs {names}, expected {runs}")
        for name in names:
            g = f["runs"][name]
            for attr in ("model", "pca_components", "epochs", "global_batch", "optimizer", "lr",
                         "seed", "ranks", "parameters", "parameter_hash", "train_seconds", "test_accuracy",
                         "test_loss", "test_views", "settings", "diverged", "ended_by", "epochs_trained"):
                check(attr in g.attrs, f"{name}: missing attribute {attr}")
            check(int(g.attrs["test_views"]) in (1, 2, 9, 18, 25, 50), f"{name}: test_views {g.attrs['test_views']}")
            settings = text_attr(g.attrs, "settings")
            check(settings.startswith("train --data ") and f" --seed {int(g.attrs['seed'])} " in settings and
                  f" --model {text_attr(g.attrs, 'model')} " in settings, f"{name}: settings {settings!r}")
            epochs = int(g.attrs["epochs_trained"])
            ended_by = text_attr(g.attrs, "ended_by")
            check(ended_by == "epochs" and epochs == int(g.attrs["epochs"]) or
                  ended_by == "max-time" and 1 <= epochs < int(g.attrs["epochs"]),
                  f"{name}: ended_by {ended_by} after {epochs} of {int(g.attrs['epochs'])} epochs")
            history = g["history"]
            for column in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                           "seconds", "samples_per_second"):
                check(history[column].shape == (epochs,), f"{name}: history/{column} shape")
                check(history[column].dtype == np.float64, f"{name}: history/{column} type")
            check(list(history["epoch"][:]) == list(range(1, epochs + 1)), f"{name}: epochs")
            acc = history["test_accuracy"][:]
            evaluated = ~np.isnan(acc)  # --eval-every leaves NaN; the last epoch is always evaluated
            check(evaluated[-1] and np.all((acc[evaluated] >= 0) & (acc[evaluated] <= 1)),
                  f"{name}: accuracies must be fractions, the last epoch's among them")
            confusion = g["confusion"][:]
            check(confusion.shape == (K, K) and g["confusion"].dtype == np.int32, "confusion")
            check(confusion.sum() == n_test, f"{name}: confusion sums to {confusion.sum()}")
            for key in ("precision", "recall", "f1"):
                check(g[key].shape == (K,) and g[key].dtype == np.float64, f"{name}: {key}")
            check(g["support"].dtype == np.int32, "support type")
            check(np.array_equal(g["support"][:], np.bincount(test_labels, minlength=K)),
                  f"{name}: support must count the test labels")
            predictions = g["predictions"][:]
            check(predictions.shape == (n_test,) and g["predictions"].dtype == np.uint8,
                  "predictions")
            wrong = np.nonzero(predictions != test_labels)[0]
            m = g["misclassified"]
            check(np.array_equal(m["index"][:], wrong), f"{name}: misclassified != predictions != labels")
            check(m["index"].dtype == np.int32, "misclassified/index type")
            check(np.array_equal(m["true_label"][:], test_labels[wrong]), "misclassified/true_label")
            check(np.array_equal(m["predicted"][:], predictions[wrong]), "misclassified/predicted")
            conf = m["confidence"][:]
            check(m["confidence"].dtype == np.float32 and np.all((conf >= 1 / K - 1e-6) & (conf <= 1)),
                  "misclassified/confidence must be probabilities of the predicted class")
            accuracy = 1 - len(wrong) / n_test
            check(abs(accuracy - g.attrs["test_accuracy"]) < 1e-9,
                  f"{name}: test_accuracy {g.attrs['test_accuracy']} vs predictions {accuracy}")
            check(np.trace(confusion) == n_test - len(wrong), "confusion diagonal")
            k = int(g.attrs["pca_components"])
            if k > 0:
                p = g["pca"]
                check(p["mean"].shape == (D,), "pca/mean")
                check(p["components"].shape == (k, D), "pca/components")
                check(p["explained_variance"].shape == (k,), "pca/explained_variance")
                ratio = p["explained_variance_ratio"][:]
                check(ratio.shape == (k,) and np.all(np.diff(ratio) <= 1e-12), "pca ratios must fall")
                basis = p["components"][:].astype(np.float64)
                check(np.allclose(basis @ basis.T, np.eye(k), atol=1e-4), "pca components orthonormal")
            else:
                check("pca" not in g, f"{name}: a raw run has no pca group")
    return names
