"""--deterministic: the same bits on any number of ranks, and across a resume at another rank count.

1. On a small data set, the MLP (dropout, a validation hold-out), a CNN with --augment (the
   default's layers, narrower: convolutions, batch normalisation, pooling, a dense layer;
   augmentation, TTA) and the MLP on PCA inputs each train on 1, 2, 3, 4 and 6
   ranks: the parameter hash, every history column, the predictions and confidences are bitwise
   those of 1 rank. A default run on 2 ranks differs from 1 rank (so the comparison can fail).
2. On the real data: 4 ranks stopped by SIGTERM in the middle of epoch 2, resumed on 2 ranks,
   end bitwise equal to 1 rank uninterrupted (parameters, optimizer state, histories, predictions);
   `eval` of the checkpoint on 3 ranks gives the same predictions and loss.
3. What --deterministic refuses: bf16 compression, --batch-per-rank, more ranks than shards, a
   checkpoint of the other mode."""
import signal
import time

from common import *

work = temp_dir()
ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"}

# A small data set: 1,500 training images (12 shards of 125), 450 test images (chunks 200, 200, 50).
rng = np.random.default_rng(11)
templates = rng.integers(0, 256, size=(10, 28, 28))


def make(n):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    noise = rng.integers(-120, 121, size=(n, 28, 28))
    return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels


for name, n in (("train", 1500), ("t10k", 450)):
    images, labels = make(n)
    write_idx(f"{work}/{name}-images-idx3-ubyte", images)
    write_idx(f"{work}/{name}-labels-idx1-ubyte", labels)
small = f"{work}/small.h5"
must_succeed(run(["convert", "--source", work, "--out", small]))

COLUMNS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss", "val_accuracy")


def fingerprint(path, name):
    with h5py.File(path, "r") as f:
        g = f["runs"][name]
        history = {c: g["history"][c][()] for c in COLUMNS if c in g["history"]}
        return {"hash": int(g.attrs["parameter_hash"]), "history": history,
                "predictions": g["predictions"][()], "confidence": g["misclassified/confidence"][()],
                "accuracy": g.attrs["test_accuracy"]}


def same(a, b):
    return (a["hash"] == b["hash"] and np.array_equal(a["predictions"], b["predictions"])
            and np.array_equal(a["confidence"], b["confidence"])
            and all(np.array_equal(a["history"][c], b["history"][c]) for c in a["history"]))


CONFIGS = {
    "mlp": (["--validation", "150", "--batch", "64", "--dropout", "0.1"], "raw"),
    "cnn-augment": (["--model", "cnn:16,p,32,p,f64", "--augment", "--batch", "64"], "raw"),
    "pca": (["--pca", "20", "--batch", "64"], "pca20"),
}
for config, (flags, run_name) in CONFIGS.items():
    reference = None
    for ranks in (1, 2, 3, 4, 6):
        out = f"{work}/{config}-{ranks}.h5"
        result = must_succeed(run(["train", "--data", small, "--out", out, "--epochs", "2", "--deterministic"]
                                  + flags, ranks=ranks))
        check("deterministic: 12 virtual shards" in result.stdout, f"{config}: the run line: {result.stdout[:400]}")
        got = fingerprint(out, run_name)
        if reference is None:
            reference = got
            print(f"{config}: 1 rank, hash {got['hash']:016x}, test accuracy {100 * got['accuracy']:.2f}%")
            continue
        check(same(reference, got), f"{config}: {ranks} ranks differ from 1 rank (hash {got['hash']:016x} vs "
                                    f"{reference['hash']:016x})")
        print(f"{config}: {ranks} ranks bitwise equal to 1 rank")

# The comparison can fail: the default mode on 2 ranks is not the 1-rank run.
for ranks in (1, 2):
    must_succeed(run(["train", "--data", small, "--out", f"{work}/default-{ranks}.h5", "--epochs", "2", "--batch",
                      "64"], ranks=ranks))
check(not same(fingerprint(f"{work}/default-1.h5", "raw"), fingerprint(f"{work}/default-2.h5", "raw")),
      "default mode: 2 ranks gave 1 rank's bits; the test could not tell")


# 2. Stopped on 4 ranks mid-epoch, resumed on 2, equal to 1 rank uninterrupted.
def launch(args, ranks):
    env = dict(os.environ, **ENV)
    return subprocess.Popen([MPIEXEC, "-n", str(ranks), "--oversubscribe", DPTRAIN] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


BASE = ["train", "--data", DATA, "--model", "mlp", "--epochs", "2", "--quiet", "--deterministic"]
ref_ckpt, ref_out = f"{work}/ref.ckpt.h5", f"{work}/ref.h5"
must_succeed(run(BASE + ["--checkpoint", ref_ckpt, "--out", ref_out], ranks=1))
ckpt, out = f"{work}/stopped.ckpt.h5", f"{work}/resumed.h5"
p = launch(BASE + ["--checkpoint", ckpt, "--out", out], 4)
deadline = time.time() + 120
while time.time() < deadline:
    check(p.poll() is None, "the 4-rank run ended before it could be stopped")
    try:
        with h5py.File(ckpt, "r") as f:
            if f.attrs["epoch"] >= 1:
                break
    except (OSError, KeyError):
        pass
    time.sleep(0.05)
time.sleep(0.3)
pids = subprocess.run(["pgrep", "-f", f"^{DPTRAIN} .*stopped.ckpt.h5"], capture_output=True, text=True).stdout.split()
check(len(pids) == 4, f"expected 4 ranks, found {pids}")
for pid in pids:
    os.kill(int(pid), signal.SIGTERM)
stdout, stderr = p.communicate(timeout=60)
check(p.returncode == 3, f"SIGTERM: exit {p.returncode}: {stderr}")
with h5py.File(ckpt, "r") as f:
    epoch, step = int(f.attrs["epoch"]), int(f.attrs["step"])
    check(f.attrs["units"] == 12 and f.attrs["ranks"] == 4, "the checkpoint's rows are the 12 shards, saved by 4")
print(f"4 ranks stopped at epoch {epoch + 1}, step {step + 1}")
check(epoch == 1 and step > 0, "the stop must fall inside epoch 2")
result = must_succeed(run(BASE + ["--checkpoint", ckpt, "--resume", "--out", out], ranks=2))
with h5py.File(ref_ckpt, "r") as a, h5py.File(ckpt, "r") as b:
    for key in ("params", "opt_first", "opt_second", "buffers"):
        check(np.array_equal(a[key][()], b[key][()]), f"resume on 2 ranks: {key} differ from 1 rank's")
    check(np.array_equal(a["history"][:, :7], b["history"][:, :7]), "resume on 2 ranks: histories differ")
check(same(fingerprint(ref_out, "raw"), fingerprint(out, "raw")), "resume on 2 ranks: results differ from 1 rank's")
print("4 ranks stopped mid-epoch, resumed on 2: bitwise the uninterrupted 1-rank run")
evaluated = f"{work}/eval.h5"
must_succeed(run(["eval", "--checkpoint", ckpt, "--data", DATA, "--out", evaluated], ranks=3))
with h5py.File(evaluated, "r") as a, h5py.File(ref_out, "r") as b:
    check(np.array_equal(a["runs/raw/predictions"][()], b["runs/raw/predictions"][()]) and
          a["runs/raw"].attrs["test_loss"] == b["runs/raw"].attrs["test_loss"],
          "eval of the checkpoint on 3 ranks must give the run's predictions and loss")

# 3. Refusals, each one line and a usage exit.
for flags, ranks, expect in (
        (["--compress", "bf16"], 1, "--deterministic cannot be combined with --compress bf16"),
        (["--batch-per-rank", "64"], 1, "--deterministic cannot be combined with --batch-per-rank"),
        ([], 13, "--deterministic: 13 ranks, but a deterministic run takes at most 12")):
    result = run(["train", "--data", small, "--out", f"{work}/refused.h5", "--deterministic"] + flags, ranks=ranks)
    check(result.returncode == 2 and expect in result.stderr, f"{flags} on {ranks}: {result.returncode} "
                                                               f"{result.stderr[-600:]}")
    check(not os.path.exists(f"{work}/refused.h5"), "a refused run must not write results")
result = run(["train", "--data", DATA, "--model", "mlp", "--epochs", "2", "--quiet", "--checkpoint", ckpt, "--resume",
              "--out", f"{work}/refused.h5"], ranks=1)
check(result.returncode != 0 and "was saved with --deterministic on, this run has --deterministic off"
      in result.stderr, f"a deterministic checkpoint resumed without the flag: {result.stderr[-400:]}")
print("ok")
