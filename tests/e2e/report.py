"""scripts/report.py on a results file from a real short comparison: every file appears, each
PNG decodes at its size, REPORT.md holds the stored accuracy; broken inputs give one error line."""
import shutil

import matplotlib
matplotlib.use("Agg")
import matplotlib.image

from common import *

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "report.py")
SIZES = {"misclassified.png": (1350, 1600), "confusion.png": (850, 1000), "curves.png": (550, 1400),
         "pairs.png": (1250, 750), "pca.png": (800, 1500)}


def report(*args):
    return subprocess.run(["/usr/bin/python3", REPORT] + list(args), capture_output=True, text=True,
                          timeout=300)


dir = temp_dir()
results = f"{dir}/compare.h5"
must_succeed(run(["compare", "--pca", "0,20", "--data", DATA, "--out", results, "--epochs", "2"], ranks=2))
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
                "## Best and worst classes", "## Raw pixels versus PCA", "## Beside the published"):
    check(heading in text, f"REPORT.md lacks {heading}")
check("← this run" in text and "MLP 256-128-100" in text and "0.8833" in text, "benchmark table")
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
with h5py.File(broken, "a") as f:
    del f["runs/raw/confusion"]
empty = f"{dir}/empty.h5"
with h5py.File(empty, "w") as f:
    f.attrs["x"] = 1
cases = [
    ([not_hdf5, "--data", DATA], "not.h5: not an HDF5 file"),
    ([broken, "--data", DATA], "broken.h5: run raw lacks confusion"),
    ([empty, "--data", DATA], "empty.h5: no /runs group"),
    ([f"{dir}/absent.h5", "--data", DATA], "absent.h5: no such file"),
    ([results, "--data", f"{dir}/absent-data.h5"], "absent-data.h5: no such data file"),
    ([results, "--data", DATA, "--run", "pca7"], "--run pca7: the results hold"),
]
for args, fragment in cases:
    target = f"{dir}/bad-report"
    r = report(*args, "--out", target)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 1, f"{args}: exit {r.returncode}")
    check(len(lines) == 1 and fragment in lines[0] and lines[0].startswith("report: error:"),
          f"{args}: {r.stderr!r} lacks {fragment!r}")
    check(not os.path.exists(target), f"{args}: left an output folder")
print("ok")
