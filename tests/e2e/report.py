"""scripts/report.py on a results file from a real short comparison: every file appears, each
PNG decodes at its size, REPORT.md holds the stored accuracy; broken inputs give one error line."""
import shutil

import matplotlib
matplotlib.use("Agg")
import matplotlib.image

from common import *

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "report.py")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
SIZES = {"misclassified.png": (1350, 1600), "confusion.png": (850, 1000), "curves.png": (550, 1400),
         "pairs.png": (1250, 750), "pca.png": (800, 1500), "benchmarks.png": (800, 1200),
         "ranks.png": (500, 1400)}


def report(*args):
    return subprocess.run(["/usr/bin/python3", REPORT] + list(args), capture_output=True, text=True,
                          timeout=300)


dir = temp_dir()
results = f"{dir}/compare.h5"
must_succeed(run(["compare", "--pca", "0,20", "--data", DATA, "--out", results, "--model", "mlp", "--epochs", "2"],
                 ranks=2))
out = f"{dir}/report"
r = report(results, "--data", DATA, "--out", out)
check(r.returncode == 0, f"report failed: {r.stderr}")
for name, (height, width) in SIZES.items():
    image = matplotlib.image.imread(f"{out}/{name}")
    check(image.shape[:2] == (height, width), f"{name}: {image.shape[:2]}, expected {(height, width)}")
    check(image.std() > 0.01, f"{name} is blank")
text = open(f"{out}/REPORT.md").read()
with h5py.File(results, "r") as f:
    best = max(f["runs"].values(), key=lambda g: g.attrs["test_accuracy"])
    accuracy = best.attrs["test_accuracy"]
    wrong = len(best["misclassified/index"])
check(f"**Test accuracy: {100 * accuracy:.2f}%**" in text, "REPORT.md lacks the stored accuracy")
check(f"{wrong} misclassified" in text, "REPORT.md lacks the misclassified count")
for heading in ("## Classification report", "## Confusion matrix", "## The five most confused pairs",
                "## Best and worst classes", "## Where the ranks' time went", "## Raw pixels versus PCA",
                "## Beside the published"):
    check(heading in text, f"REPORT.md lacks {heading}")
check("← this run" in text and "MLP 256-128-100" in text and "0.8833" in text, "benchmark table")
# Reading the report on its own, and what PCA keeps (the comparison has a raw and a PCA-20 run).
check(text.index("How to read this report") < text.index("## Settings and accuracy"), "the preface comes first")
check("| all settings | `train --data " in text and " --epochs 2 --batch 256 --optimizer adam " in text and
      "| views averaged per test image | 18 |" in text, "the settings table shows every setting and the views")
check("## What PCA keeps" in text and "![reconstruction](pca_reconstruction.png)" in text, "what PCA keeps")
image = matplotlib.image.imread(f"{out}/pca_reconstruction.png")
check(image.shape[0] > 300 and image.std() > 0.01, "pca_reconstruction.png")
section = text[text.index("## What PCA keeps"):text.index("## Beside the published")]
rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| class")]
check(len(rows) == 11, f"one row per class and one for all classes, got {len(rows)}")
with h5py.File(results, "r") as f:
    raw_recall, pca_recall = f["runs/raw/recall"][()], f["runs/pca20/recall"][()]
for c, line in enumerate(rows[:10]):
    cells = [cell.strip() for cell in line.split("|")[1:-1]]
    check(abs(float(cells[1]) - raw_recall[c]) < 5e-4 and abs(float(cells[2]) - pca_recall[c]) < 5e-4,
          f"recalls of class {c}: {cells}")
    check(0 < float(cells[3].rstrip("%")) < 100, f"variance lost of class {c}: {cells}")
worst = int(np.argmax(raw_recall - pca_recall))
check(f"With 20 components the classes that lose most recall are {CLASS_NAMES[worst]}" in section,
      "the class that loses most is named first")
check("correlate at r = " in section and "over all 45 pairs" in section, "the numbers behind the explanation")

# The paper's Table 3: the best of each of its 13 families beside the runs, every row in the
# appendix, where each run ranks, and the source.
check("the best of each of its 13 classifier families" in text and "← this report" in text, "Table 3 table")
check("## Appendix: all 126 scikit-learn baselines of the paper's Table 3" in text, "Table 3 appendix")
appendix = text[text.index("## Appendix: all 126"):]
check(sum(1 for line in appendix.splitlines() if line.startswith("| ") and "classifier |" not in line) == 126,
      "the appendix must list all 126 rows")
with h5py.File(results, "r") as f:
    for name, g in f["runs"].items():
        acc = g.attrs["test_accuracy"]
        above = sum(1 for line in appendix.splitlines()[3:] if line.startswith("| ") and
                    float(line.split("|")[3]) > acc)
        expected = ("above all 126 scikit-learn baselines" if above == 0 else
                    f"below {above} of the 126 scikit-learn baselines of the paper's Table 3 (rank {above + 1})")
        check(f"- Run {name} ({acc:.4f}): {expected}" in text, f"rank of run {name}: expected {expected!r}")
check("the best, SVC C=10 kernel=rbf, 0.897" in text and "arXiv:1708.07747" in text, "Table 3 source and best")
check(text.count("| T-shirt/top / Shirt |") + text.count("| Pullover / Coat |") >= 1, "confused pairs")
# The default folder sits beside the results file.
r = report(results, "--data", DATA)
check(r.returncode == 0 and os.path.exists(f"{dir}/compare_report/REPORT.md"), "default output folder")

# Broken inputs: one error line, exit 1, no output folder.
not_hdf5 = f"{dir}/not.h5"
with open(not_hdf5, "w") as f:
    f.write("plain text")
broken = f"{dir}/broken.h5"
shutil.copy(results, broken)
with edit_h5(broken) as f:
    del f["runs/raw/confusion"]
empty = f"{dir}/empty.h5"
with h5py.File(empty, "w") as f:
    f.attrs["x"] = 1
cases = [
    ([not_hdf5, "--data", DATA], "not.h5: not an HDF5 file"),
    ([broken, "--data", DATA], "broken.h5: run raw lacks confusion"),
    ([empty, "--data", DATA], "empty.h5: no /runs group"),
    ([f"{dir}/absent.h5", "--data", DATA], "absent.h5: no such results file"),
    ([results, "--data", f"{dir}/absent-data.h5"], "absent-data.h5: no such data file"),
    ([results, "--data", DATA, "--run", "pca7"], "--run pca7: the results hold"),
]
fifo = f"{dir}/fifo"
os.mkfifo(fifo)


def damaged(name, change):
    path = f"{dir}/{name}.h5"
    shutil.copy(results, path)
    with edit_h5(path) as f:
        change(f)
    return path


def replace(f, name, values):
    del f[name]
    f[name] = values


truncated = f"{dir}/truncated.h5"
with open(results, "rb") as f:
    head = f.read(os.path.getsize(results) // 2)
with open(truncated, "wb") as f:
    f.write(head)
cases += [
    ([fifo, "--data", DATA], "fifo: is not a regular file"),
    ([results, "--data", fifo], "fifo: is not a regular file"),
    ([dir, "--data", DATA], "is a folder, not a results file"),
    ([truncated, "--data", DATA], "truncated.h5: damaged: it has"),
    ([damaged("index", lambda f: replace(f, "runs/raw/misclassified/index",
                                         np.full(len(f["runs/raw/misclassified/index"]), 10**6, np.int32))),
      "--data", DATA], "misclassified/index must rise strictly within 0..9999"),
    ([damaged("history", lambda f: replace(f, "runs/raw/history/train_loss", np.zeros(7))), "--data", DATA],
     "run raw history columns have lengths [2, 7]"),
    ([damaged("attr", lambda f: f["runs/raw"].attrs.__setitem__("epochs", "two")), "--data", DATA],
     "run raw attribute epochs is 'two', expected int"),
    ([damaged("accuracy", lambda f: f["runs/raw"].attrs.__setitem__("test_accuracy", 7.0)), "--data", DATA],
     "attribute test_accuracy = 7.0 is out of range"),
    ([damaged("labels", lambda f: replace(f, "runs/raw/predictions",
                                          np.full(len(f["runs/raw/predictions"]), 12, np.uint8))), "--data", DATA],
     "run raw/predictions holds class numbers outside 0..9"),
    ([damaged("shape", lambda f: replace(f, "runs/raw/confusion", np.zeros((3, 3), np.int32))), "--data", DATA],
     "run raw/confusion has shape (3, 3), expected (10, 10)"),
    ([damaged("holdout", lambda f: f["runs/raw"].attrs.__setitem__("evaluated_set", "validation")), "--data", DATA],
     "run raw was evaluated on its validation hold-out (eval --on-validation)"),
]
for args, fragment in cases:
    target = f"{dir}/bad-report"
    r = report(*args, "--out", target)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 1, f"{args}: exit {r.returncode}")
    check(len(lines) == 1 and fragment in lines[0] and lines[0].startswith("report: error:"),
          f"{args}: {r.stderr!r} lacks {fragment!r}")
    check(not os.path.exists(target), f"{args}: left an output folder")

# The report never removes or replaces what it did not write.
foreign = f"{dir}/foreign"
os.makedirs(foreign)
with open(f"{foreign}/notes.txt", "w") as f:
    f.write("precious")
os.symlink(results, f"{dir}/results-link")
for target, where in ((foreign, dir), (".", foreign), (f"{dir}/results-link", dir), (results, dir)):
    r = subprocess.run(["/usr/bin/python3", REPORT, results, "--data", DATA, "--out", target], capture_output=True,
                       text=True, timeout=300, cwd=where)
    check(r.returncode == 1 and r.stderr.startswith("report: error:") and len(r.stderr.splitlines()) == 1,
          f"--out {target} in {where}: {r.returncode} {r.stderr!r}")
check(sorted(os.listdir(foreign)) == ["notes.txt"] and open(f"{foreign}/notes.txt").read() == "precious",
      "a refused folder was touched")
check(h5py.is_hdf5(results), "the results file was touched")
check(not [n for n in os.listdir(dir) if ".tmp." in n], "a staging folder was left behind")
# An existing report folder of its own: the report's files are replaced, other files stay, and a
# file the earlier report wrote but this one does not (pca.png: a run without PCA) goes.
with open(f"{out}/mine.txt", "w") as f:
    f.write("keep")
raw_only = f"{dir}/raw-only.h5"
must_succeed(run(["train", "--data", DATA, "--out", raw_only, "--model", "mlp", "--epochs", "1", "--quiet"], ranks=2))
r = report(raw_only, "--data", DATA, "--out", out)
check(r.returncode == 0, f"report into its own folder: {r.stderr}")
check(open(f"{out}/mine.txt").read() == "keep", "a file the report did not write was removed")
check(not os.path.exists(f"{out}/pca.png"), "a stale report file was kept")
with h5py.File(raw_only, "r") as f:
    raw_accuracy = f["runs/raw"].attrs["test_accuracy"]
check(f"**Test accuracy: {100 * raw_accuracy:.2f}%**" in open(f"{out}/REPORT.md").read() and
      "## Raw pixels versus PCA" not in open(f"{out}/REPORT.md").read(), "the new report replaced the old one")
# An empty existing folder is fine.
os.makedirs(f"{dir}/empty-out")
check(report(results, "--data", DATA, "--out", f"{dir}/empty-out").returncode == 0, "report into an empty folder")

# A run without mistakes: the report says so instead of analysing mistakes that do not exist.
perfect = f"{dir}/perfect.h5"
shutil.copy(raw_only, perfect)
with h5py.File(DATA, "r") as d, edit_h5(perfect) as f:
    g = f["runs/raw"]
    labels = d["test/labels"][()]
    replace(f, "runs/raw/predictions", labels)
    for name, dtype in (("index", np.int32), ("true_label", np.uint8), ("predicted", np.uint8),
                        ("confidence", np.float32)):
        replace(f, f"runs/raw/misclassified/{name}", np.zeros(0, dtype))
    replace(f, "runs/raw/confusion", np.diag(np.bincount(labels, minlength=10)).astype(np.int32))
    for name in ("precision", "recall", "f1"):
        replace(f, f"runs/raw/{name}", np.ones(10))
    g.attrs["test_accuracy"] = 1.0
r = report(perfect, "--data", DATA, "--out", f"{dir}/perfect-report")
check(r.returncode == 0, f"perfect run: {r.stderr}")
text = open(f"{dir}/perfect-report/REPORT.md").read()
check("0 misclassified" in text and "No pair of classes was confused" in text and
      "every test image was classified correctly" in text and "most confident mistakes" not in text,
      "the report of a perfect run")
print("ok")
