"""Data larger than memory (--memory-budget, docs/training.md): on a generated data set whose
shard is several times the budget, each rank's peak memory stays within the budget plus what the
same model takes on a tiny data set, where holding the shard does not; the streamed run trains as
well as the held one, repeats itself bit for bit, resumes from a checkpoint inside an epoch bit for
bit, and identifies the data file as a held run does (a held run's checkpoint resumes streamed);
and every refusal is one line: a chunked array, a budget too small, --pca, --deterministic."""
from common import *

dir = temp_dir()
rng = np.random.default_rng(5)
SHAPE, CLASSES, TRAIN, TEST = (32, 32, 3), 10, 24000, 1000  # 73.7 MB of training images: 36.9 MB a rank
BUDGET = 8
FLAGS = ["--model", "mlp:64", "--epochs", "2", "--batch", "128", "--no-augment", "--no-tta", "--eval-every", "1"]
PEAK = re.compile(r"peak memory (\d+) MB per rank")


def write_data(path, train, chunked=False):
    """Learnable images: each class a random template plus noise, written a slice at a time."""
    templates = rng.integers(0, 256, size=(CLASSES,) + SHAPE, dtype=np.int16)
    with h5py.File(path, "w") as f:
        for group, n in (("train", train), ("test", TEST)):
            images = f.create_dataset(f"{group}/images", (n,) + SHAPE, np.uint8,
                                      chunks=(64,) + SHAPE if chunked else None)
            labels = (np.arange(n) % CLASSES).astype(np.uint8)
            rng.shuffle(labels)
            for lo in range(0, n, 4000):
                y = labels[lo:lo + 4000]
                noise = rng.integers(-250, 251, size=(len(y),) + SHAPE, dtype=np.int16)
                images[lo:lo + len(y)] = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
            f[f"{group}/labels"] = labels
        f.attrs["class_names"] = [f"class{k}" for k in range(CLASSES)]
        f.attrs["mirror_invariant"] = "no"


def train(data, tag, extra=(), env=None):
    out = f"{dir}/{tag}-results.h5"
    r = must_succeed(run(["train", "--data", data, "--out", out] + FLAGS + list(extra), ranks=2, env=env))
    m = PEAK.search(r.stdout)  # the profile line; none when a finished checkpoint is only evaluated
    check(m is not None or "nothing to train" in r.stdout, f"{tag}: no peak memory in the profile line: {r.stdout[-800:]}")
    with h5py.File(out, "r") as f:
        g = f["runs/raw"]
        figures = {"peak": int(m.group(1)) if m else None, "hash": int(g.attrs["parameter_hash"]),
                   "accuracy": float(g.attrs["test_accuracy"]), "stdout": r.stdout}
    print(f"{tag}: peak {figures['peak']} MB per rank, test accuracy {figures['accuracy']:.4f}")
    return figures


def refused(args, fragment):
    r = run(["train"] + args, ranks=2, timeout=120, env=NO_KILL_WAIT)
    errors = [line for line in r.stderr.splitlines() if line.startswith("dptrain: error")]
    check(r.returncode != 0 and len(errors) == 1 and fragment in errors[0],
          f"{' '.join(args)}: expected one error with {fragment!r}, got exit {r.returncode}: {r.stderr[-1500:]}")
    print(f"refused: {errors[0]}")


big, tiny, chunked = f"{dir}/big.h5", f"{dir}/tiny.h5", f"{dir}/chunked.h5"
write_data(big, TRAIN)
write_data(tiny, 600)

# 1. Memory: the model alone (tiny data), the shard held, the shard streamed.
model = train(tiny, "tiny")
held = train(big, "held", ["--checkpoint", f"{dir}/held.ck"])
streamed = train(big, "streamed", ["--memory-budget", str(BUDGET)])
check(held["peak"] >= model["peak"] + 30, f"holding a 36.9 MB shard took only {held['peak'] - model['peak']} MB "
      "more than the tiny data set: the measure does not see the data")
check(streamed["peak"] <= model["peak"] + BUDGET + 3,
      f"streamed through {BUDGET} MB, a rank peaked at {streamed['peak']} MB, the model alone at {model['peak']} MB")
check("streamed from the file" in streamed["stdout"], "the run line does not say the data are streamed")

# 2. It trains as the held run does, and repeats itself.
check(held["accuracy"] > 0.9 and streamed["accuracy"] > held["accuracy"] - 0.02,
      f"streamed {streamed['accuracy']:.4f} against held {held['accuracy']:.4f}")
again = train(big, "again", ["--memory-budget", str(BUDGET)])
check(again["hash"] == streamed["hash"], "two streamed runs with one seed ended with different parameters")

# 3. A resume inside an epoch continues the stream exactly.
ck = f"{dir}/streamed.ck"
r = run(["train", "--data", big, "--out", f"{dir}/killed.h5", "--memory-budget", str(BUDGET), "--checkpoint", ck,
         "--checkpoint-every", "40", "--checkpoint-sync"] + FLAGS, ranks=2,
        env=dict(NO_KILL_WAIT, DPTRAIN_FAULT="exit@1:2:70"))
check(r.returncode != 0, "the run with a rank killed in epoch 2 succeeded")
resumed = train(big, "resumed", ["--memory-budget", str(BUDGET), "--checkpoint", ck, "--resume"])
check("resumed from" in resumed["stdout"] and "at epoch 2, step 41" in resumed["stdout"],
      f"not resumed inside epoch 2: {resumed['stdout'][:1500]}")
check(resumed["hash"] == streamed["hash"], "the resumed streamed run ended with other parameters than the run never stopped")

# 4. The streamed pass identifies the file as the held read does: the held run's finished
#    checkpoint is accepted by a streamed run, which evaluates it to the same figures.
finished = train(big, "finished", ["--memory-budget", str(BUDGET), "--checkpoint", f"{dir}/held.ck", "--resume"])
check("nothing to train" in finished["stdout"] and finished["hash"] == held["hash"] and
      finished["accuracy"] == held["accuracy"], "a held run's checkpoint, evaluated streamed, gave other figures")

# 5. Refusals.
write_data(chunked, 2000, chunked=True)
refused(["--data", chunked, "--memory-budget", "8"] + FLAGS, f"{chunked}: /train/images is stored in chunks")
refused(["--data", big, "--memory-budget", "1", "--batch", "1024"] + FLAGS[:2] + ["--epochs", "1"],
        "--memory-budget 1: too small for this data")
refused(["--data", big, "--memory-budget", "8", "--pca", "50"], "--memory-budget cannot be combined with --pca")
refused(["--data", big, "--memory-budget", "8", "--deterministic"],
        "--memory-budget cannot be combined with --deterministic")
print("ok")
