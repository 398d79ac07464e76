"""Any image data set: three shapes other than Fashion-MNIST's, each through convert or h5py, train
(MLP and CNN), compare --pca, --deterministic on 1 and 3 ranks (bitwise equal), a stopped run
resumed exactly, eval and the report; one learnable set far above chance; and every refusal of a
data file that does not describe itself (docs/your-own-data.md)."""
import pathlib
import re
import shutil

from common import *

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPORT = ROOT / "scripts" / "report.py"
dir = temp_dir()
rng = np.random.default_rng(28)


def learnable(shape, classes, counts, noise):
    """Images of `shape` (H, W[, C]): each class a random template, each image its class's template
    plus uniform noise of +-noise."""
    templates = rng.integers(0, 256, size=(classes,) + shape)
    sets = []
    for n in counts:
        y = (np.arange(n) % classes).astype(np.uint8)
        rng.shuffle(y)
        x = np.clip(templates[y] + rng.integers(-noise, noise + 1, size=(n,) + shape), 0, 255).astype(np.uint8)
        sets.append((x, y))
    return sets


def write_h5(path, sets, names, mirror="no", **extra):
    with h5py.File(path, "w") as f:
        for group, (x, y) in zip(("train", "test"), sets):
            f[f"{group}/images"], f[f"{group}/labels"] = x, y
        if names is not None:
            f.attrs["class_names"] = names
        if mirror is not None:
            f.attrs["mirror_invariant"] = mirror
        for key, value in extra.items():
            f.attrs[key] = value


def results(path):
    with h5py.File(path, "r") as f:
        g = f["runs"][list(f["runs"].keys())[0]]
        return {"hash": int(g.attrs["parameter_hash"]), "accuracy": float(g.attrs["test_accuracy"]),
                "predictions": g["predictions"][()], "confusion": g["confusion"][()], "flip": int(g.attrs["flip"]),
                "names": [n.decode() if isinstance(n, bytes) else n for n in f.attrs["class_names"]],
                "shape": (int(f.attrs["image_height"]), int(f.attrs["image_width"]), int(f.attrs["image_channels"]))}


def refused(args, fragment, ranks=2):
    result = run(args, ranks=ranks, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error")]
    check(result.returncode != 0, f"{' '.join(args)} was accepted")
    check(len(errors) == 1 and fragment in errors[0], f"expected one error with {fragment!r}, got {result.stderr!r}")
    return errors[0]


def exercise(tag, data, shape, names, cnn, test_labels):
    """Everything a data set goes through: MLP and CNN training, compare, deterministic runs on 1 and
    3 ranks, an exact resume, eval and the report."""
    out = lambda name: f"{dir}/{tag}-{name}"
    K = len(names)
    mlp = ["train", "--data", data, "--model", "mlp:64", "--batch", "50", "--quiet"]
    # the MLP, augmented (shifts; flips where the file allows them) and evaluated over the views
    result = must_succeed(run(mlp + ["--epochs", "3", "--out", out("mlp.h5"), "--checkpoint", out("mlp.ckpt")],
                              ranks=2))
    h, w, c = shape
    check(f"{h}x{w}x{c} images (HxWxC) of {K} classes" in result.stdout, f"{tag}: the run line names the shape")
    r = results(out("mlp.h5"))
    check(r["shape"] == shape and r["names"] == names, f"{tag}: results carry the shape and class names")
    check(r["confusion"].shape == (K, K), f"{tag}: a {K}x{K} confusion")
    check_results(out("mlp.h5"), test_labels, runs=["raw"])
    # the CNN over C channels on an H x W image
    must_succeed(run(["train", "--data", data, "--model", cnn, "--augment", "--epochs", "1", "--batch", "50",
                      "--quiet", "--out", out("cnn.h5")], ranks=2))
    check_results(out("cnn.h5"), test_labels, runs=["raw"])
    # PCA on D = H*W*C inputs
    must_succeed(run(["compare", "--data", data, "--pca", "0,10", "--model", "mlp:32", "--epochs", "1", "--quiet",
                      "--out", out("compare.h5")], ranks=2))
    with h5py.File(out("compare.h5"), "r") as f:
        check(f["runs/pca10/pca/components"].shape == (10, h * w * c), f"{tag}: PCA over {h * w * c} values")
    refused(["train", "--data", data, "--pca", str(h * w * c + 1), "--out", out("toomany.h5")],
            f"--pca {h * w * c + 1}: the images ({h}x{w}x{c}) have {h * w * c} values")
    # --deterministic: the same bits on 1 and 3 ranks
    det = mlp + ["--deterministic", "--epochs", "2"]
    must_succeed(run(det + ["--out", out("det1.h5")], ranks=1))
    must_succeed(run(det + ["--out", out("det3.h5")], ranks=3))
    a, b = results(out("det1.h5")), results(out("det3.h5"))
    check(a["hash"] == b["hash"] and np.array_equal(a["predictions"], b["predictions"]),
          f"{tag}: deterministic runs on 1 and 3 ranks differ")
    # a run stopped mid-epoch and resumed goes on exactly
    base = mlp + ["--epochs", "2", "--batch", "40"]
    must_succeed(run(base + ["--out", out("ref.h5"), "--checkpoint", out("ref.ckpt")], ranks=2))
    died = run(base + ["--out", out("part.h5"), "--checkpoint", out("part.ckpt"), "--checkpoint-every", "2"], ranks=2,
               env={"DPTRAIN_FAULT": "exit@1:2:3"})
    check(died.returncode != 0, f"{tag}: the injected death must fail the run")
    must_succeed(run(base + ["--out", out("part.h5"), "--checkpoint", out("part.ckpt"), "--resume"], ranks=2))
    check(results(out("ref.h5"))["hash"] == results(out("part.h5"))["hash"], f"{tag}: the resumed run differs")
    # eval gives the run's own figures back
    must_succeed(run(["eval", "--checkpoint", out("mlp.ckpt"), "--data", data, "--out", out("eval.h5")], ranks=2))
    e = results(out("eval.h5"))
    check(e["accuracy"] == r["accuracy"] and np.array_equal(e["predictions"], r["predictions"]),
          f"{tag}: eval differs from the run")
    # the report draws it
    report = subprocess.run(["/usr/bin/python3", str(REPORT), out("mlp.h5"), "--data", data, "--out",
                             out("report")], capture_output=True, text=True, timeout=300)
    check(report.returncode == 0, f"{tag}: report.py failed: {report.stdout}{report.stderr}")
    text = open(out("report") + "/REPORT.md").read()
    check(names[int(np.argmax(np.bincount(test_labels, minlength=K)))] in text or K > 20,
          f"{tag}: the report names the classes")
    return r


# 1. Colour, 32x32x3 and 100 classes, written with h5py; learnable: far above chance (1%).
colour = f"{dir}/colour.h5"
sets = learnable((32, 32, 3), 100, (3000, 500), 60)
names = [f"thing {k}" for k in range(100)]
write_h5(colour, sets, names, mirror="yes", source="generated by tests/e2e/datasets.py")
r = exercise("colour", colour, (32, 32, 3), names, "cnn:8,p,16,p,f32", sets[1][1])
check(r["accuracy"] > 0.5, f"a learnable 100-class set must be learnt far above chance (1%), got {r['accuracy']}")
check(r["flip"] == 1, "mirror_invariant yes: flips used")

# 2. Odd sides, 9x13x1 and 2 classes, written with h5py, no mirroring.
odd = f"{dir}/odd.h5"
sets = learnable((9, 13), 2, (800, 200), 90)
write_h5(odd, sets, ["left", "right"])
r = exercise("odd", odd, (9, 13, 1), ["left", "right"], "cnn:16,p,32,f128", sets[1][1])
check(r["flip"] == 0, "mirror_invariant no: no flips")

# 3. An MNIST-format IDX set (28x28x1), written by this test and converted with names.
idx = temp_dir()
sets = learnable((28, 28), 10, (1000, 300), 80)
for prefix, (x, y) in zip(("train", "t10k"), sets):
    write_idx(f"{idx}/{prefix}-images-idx3-ubyte.gz", x)
    write_idx(f"{idx}/{prefix}-labels-idx1-ubyte", y)
digits = f"{dir}/digits.h5"
digit_names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
must_succeed(run(["convert", "--source", idx, "--out", digits, "--class-names", ",".join(digit_names),
                  "--mirror-invariant", "no"]))
with h5py.File(digits, "r") as f:
    check(np.array_equal(f["train/images"][()], sets[0][0]) and text_attr(f.attrs, "mirror_invariant") == "no",
          "convert copies the IDX arrays and the answers given")
exercise("digits", digits, (28, 28, 1), digit_names, "cnn", sets[1][1])
# --flip yes overrides the file for one run, and the run line says so
result = must_succeed(run(["train", "--data", digits, "--model", "mlp:16", "--epochs", "1", "--flip", "yes",
                           "--out", f"{dir}/flip.h5"], ranks=1))
check("mirror images used (--flip)" in result.stdout and results(f"{dir}/flip.h5")["flip"] == 1, "--flip yes")
# a checkpoint is refused on data of another shape, naming both
refused(["eval", "--checkpoint", f"{dir}/digits-mlp.ckpt", "--data", odd, "--out", f"{dir}/wrong.h5"],
        "was trained on 28x28x1 images of 10 classes; " + odd + " holds 9x13x1 images of 2 classes")
refused(["train", "--data", odd, "--model", "mlp:64", "--batch", "50", "--epochs", "3", "--checkpoint",
         f"{dir}/digits-mlp.ckpt", "--resume", "--out", f"{dir}/wrong2.h5"], "was trained on 28x28x1 images")

# 4. The example of docs/your-own-data.md, run as written, trains.
doc = (ROOT / "docs" / "your-own-data.md").read_text()
example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
subprocess.run(["/usr/bin/python3", "-c", example], cwd=dir, check=True, timeout=120)
must_succeed(run(["train", "--data", f"{dir}/my-data.h5", "--model", "mlp:16", "--epochs", "1", "--quiet",
                  "--out", f"{dir}/doc.h5"], ranks=2))

# 5. Every refusal of a data file that does not describe itself: one line naming the file.
small = learnable((6, 5, 2), 3, (20, 10), 10)
cases = [
    ("label.h5", lambda p: write_h5(p, [small[0], (small[1][0], np.full(10, 3, np.uint8))], ["a", "b", "c"]),
     "/test/labels[0] = 3, but class_names names 3 classes (labels 0..2)"),
    ("oneclass.h5", lambda p: write_h5(p, small, ["a"]), "class_names holds 1 name; a classifier needs at least 2"),
    ("shapes.h5", lambda p: write_h5(p, [small[0], (small[1][0][:, :5, :4], small[1][1])], ["a", "b", "c"]),
     "/train/images are 6x5x2, /test/images 5x4x2: both sets need one image shape"),
    ("channels.h5", lambda p: write_h5(p, [small[0], (small[1][0][..., 0], small[1][1])], ["a", "b", "c"]),
     "/train/images have 2 channels, /test/images 1"),
    ("zero.h5", lambda p: write_h5(p, [(np.zeros((20, 6, 0), np.uint8), small[0][1]), small[1]], ["a", "b", "c"]),
     "a side or the channels are 0"),
    ("names.h5", lambda p: write_h5(p, small, None),
     "lacks the attribute class_names, which gives the classes (K names; every label below K): add it (h5py: "
     "f.attrs[\"class_names\"]"),
    ("mirror.h5", lambda p: write_h5(p, small, ["a", "b", "c"], mirror=None),
     "lacks the attribute mirror_invariant"),
    ("mirror2.h5", lambda p: write_h5(p, small, ["a", "b", "c"], mirror="maybe"),
     "attribute mirror_invariant must be \"yes\" or \"no\""),
]
for name, make, fragment in cases:
    path = f"{dir}/{name}"
    make(path)
    line = refused(["train", "--data", path, "--out", f"{dir}/{name}.out.h5"], fragment)
    check(path in line, f"{name}: the message names the file: {line}")
    check(not os.path.exists(f"{dir}/{name}.out.h5"), f"{name}: no output")
# absurd dimensions: a side beyond the limit, declared without storing it (allocation overflow)
with h5py.File(f"{dir}/huge.h5", "w") as f:
    for group in ("train", "test"):
        f.create_dataset(f"{group}/images", shape=(4, 100000, 8), dtype=np.uint8, chunks=(1, 1000, 8))
        f.create_dataset(f"{group}/labels", data=np.zeros(4, np.uint8))
    f.attrs["class_names"], f.attrs["mirror_invariant"] = ["a", "b"], "no"
refused(["train", "--data", f"{dir}/huge.h5", "--out", f"{dir}/huge.out.h5"],
        "has images of 100000x8x1, more than dptrain takes (sides up to 16384")
shutil.rmtree(dir, ignore_errors=True)
shutil.rmtree(idx, ignore_errors=True)
print("ok")
