#!/usr/bin/python3
"""Draw the report of a dptrain results file.

usage: scripts/report.py RESULTS.h5 [--data FILE] [--out DIR] [--run NAME]

Writes into DIR (default: RESULTS_report beside the results file). A new DIR appears whole (a
temporary folder renamed into place); an existing DIR is used only when it is empty or a report
folder of this script (it holds .dptrain-report, the list of the files a report wrote), and then
only those files are replaced, each atomically. Any other existing DIR is refused, untouched:
the report never removes or replaces what it did not write.
  misclassified.png  the most confident mistakes, covering the most confused class pairs
  confusion.png      the confusion matrix as an annotated heat map
  curves.png         loss and accuracy per epoch, one line per run
  pairs.png          mean images of the most confused class pairs and their difference
  pca.png            variance kept and accuracy against components, and the first components
                     (only when a run used PCA)
  pca_reconstruction.png  test images of the most confused classes and their reconstructions from
                     K = 10, 25, 50, 100, 200 components (with a raw and a PCA run)
  benchmarks.png     every published benchmark's accuracy (submitted ones and the paper's Table 3
                     scikit-learn baselines) with this report's runs marked
  REPORT.md          settings, accuracy, classification report, confusion matrix, the most
                     confused pairs with an analysis, best and worst classes, the raw-versus-PCA
                     table and the comparison with the published Fashion-MNIST benchmarks
The class names, the image shape and channels come from the results file (attributes class_names,
image_height, image_width, image_channels, data_name; files written before dptrain wrote them are
Fashion-MNIST's). Colour images are drawn in colour; beyond 20 classes the confusion is shown as
its most confused pairs; the benchmark comparison appears only for Fashion-MNIST, the one data
set with a reference table here.
Needs Debian's python3-h5py, python3-numpy and python3-matplotlib (scripts/setup.sh).
"""
import argparse
import csv
import errno
import os
import re
import shutil
import sys
import tempfile
import zlib

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# What the results file says of its data, set once by read_results (describe_data): the class
# names, the image shape (H, W, C) and the data set's name ("" when unknown).
CLASS_NAMES = list(FASHION_NAMES)
K = len(CLASS_NAMES)
SHAPE = (28, 28, 1)
DATA_NAME = "Fashion-MNIST"
MATRIX_MAX = 20   # classes up to which the confusion is drawn as a matrix of numbers
RUN_ATTRS = ["model", "pca_components", "epochs", "global_batch", "optimizer", "lr", "seed",
             "ranks", "parameters", "train_seconds", "test_accuracy", "test_loss"]
BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "benchmarks.csv")
TABLE3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fashion-mnist-paper-table3.csv")
GRID_ROWS, GRID_COLS = 6, 8     # 48 misclassified images


class ReportError(Exception):
    pass


def fail(message):
    print(f"report: error: {message}", file=sys.stderr)
    sys.exit(1)


def import_libraries():
    global np, h5py, plt, MaxNLocator
    try:
        import numpy as np
        import h5py
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        fail(f"{e.name} is missing (run scripts/setup.sh to install python3-h5py, "
             f"python3-numpy and python3-matplotlib)")


# ---- reading and validating ---------------------------------------------------------------

def check_input_file(path, what, hint=""):
    """A regular, readable file: a FIFO or a device would block h5py's open or feed it garbage."""
    if not os.path.lexists(path):
        raise ReportError(f"{path}: no such {what}{hint}")
    if os.path.isdir(path):
        raise ReportError(f"{path}: is a folder, not a {what}")
    if not os.path.isfile(path):
        raise ReportError(f"{path}: is not a regular file (a {what} must be one)")
    if not os.access(path, os.R_OK):
        raise ReportError(f"{path}: cannot be read (permission denied)")
    check_seal(path)
    if not h5py.is_hdf5(path):
        raise ReportError(f"{path}: not an HDF5 file")


SEAL_MAGIC, SEAL_BYTES = b"dptrain-seal 1\n", 512
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_seal(path):
    """The seal dptrain writes in a file's first 512 bytes (src/seal.c: its length and the CRC-32 of
    the rest), checked before h5py parses anything: HDF5 can crash on damaged metadata. A file that
    starts with HDF5's own signature has no seal (written by h5py or another program)."""
    with open(path, "rb") as f:
        block = f.read(SEAL_BYTES)
        if block.startswith(HDF5_SIGNATURE):
            return
        if not block.startswith(SEAL_MAGIC):
            raise ReportError(f"{path}: not an HDF5 file (it starts neither with HDF5's signature nor with "
                              f"a dptrain seal)")
        match = re.match(rb"dptrain-seal 1\nsize (\d+)\ncrc32 ([0-9a-f]{8})\n", block)
        if len(block) < SEAL_BYTES or not match or block[match.end():].strip(b"\0"):
            raise ReportError(f"{path}: damaged: its dptrain seal (the first {SEAL_BYTES} bytes) was changed")
        crc, length = 0, SEAL_BYTES
        while chunk := f.read(4 << 20):
            crc, length = zlib.crc32(chunk, crc), length + len(chunk)
    if length != int(match.group(1)):
        raise ReportError(f"{path}: damaged: it has {length} bytes where dptrain wrote {int(match.group(1))} "
                          f"({'truncated' if length < int(match.group(1)) else 'extended'} after it was written)")
    if crc != int(match.group(2), 16):
        raise ReportError(f"{path}: damaged: its contents fail the CRC-32 of its seal (changed after dptrain "
                          f"wrote it)")


def refuse_link(link, name, path):
    """A member stored elsewhere: h5py follows soft links (/test pointing at /train) and external
    ones (into another file) silently, so the report would read other data than the file holds."""
    if link is not None and not isinstance(link, h5py.HardLink):
        kind = "a soft" if isinstance(link, h5py.SoftLink) else "an external"
        raise ReportError(f"{path}: /{name} is {kind} link; the report reads only what the file itself holds")


def check_tree(group, name, path):
    """Every member below GROUP is a hard link (h5py's visit() would pass over the others)."""
    for key in group:
        refuse_link(group.get(key, getlink=True), f"{name}/{key}", path)
        if isinstance(group[key], h5py.Group):
            check_tree(group[key], f"{name}/{key}", path)


def check_hard_links(f, name, path):
    """NAME and every group above it are stored in the file itself."""
    parts = name.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        part = "/".join(parts[:i])
        refuse_link(f.get(part, getlink=True), part, path)


def member(group, name, path, where, dtype_kind, shape=None, ndim=None):
    """A dataset's values, checked for presence, kind ('i' integer, 'f' real) and shape."""
    if name not in group or not isinstance(group[name], h5py.Dataset):
        raise ReportError(f"{path}: {where} lacks {name}")
    values = group[name][()]
    kinds = {"i": "iu", "f": "f"}[dtype_kind]
    if not isinstance(values, np.ndarray) or values.dtype.kind not in kinds:
        raise ReportError(f"{path}: {where}/{name} has type {getattr(values, 'dtype', type(values).__name__)}, "
                          f"expected {'integers' if dtype_kind == 'i' else 'real numbers'}")
    if ndim is not None and values.ndim != ndim:
        raise ReportError(f"{path}: {where}/{name} has {values.ndim} dimensions, expected {ndim}")
    if shape is not None and values.shape != shape:
        raise ReportError(f"{path}: {where}/{name} has shape {values.shape}, expected {shape}")
    if dtype_kind == "f" and not np.all(np.isfinite(values)):
        raise ReportError(f"{path}: {where}/{name} holds values that are not finite")
    return values


def attribute(attrs, name, path, where, kind, low=None, high=None):
    """An attribute, checked for presence, type (str, int or float) and range."""
    if name not in attrs:
        raise ReportError(f"{path}: {where} lacks the attribute {name}")
    value = decode(attrs[name])
    ok = {str: isinstance(value, str),
          int: isinstance(value, (int, np.integer)) and not isinstance(value, bool),
          float: isinstance(value, (int, float, np.integer, np.floating))}[kind]
    if not ok:
        raise ReportError(f"{path}: {where} attribute {name} is {value!r}, expected {kind.__name__}")
    if kind is not str:
        value = kind(value)
        if (low is not None and not value >= low) or (high is not None and not value <= high) or \
                (kind is float and not np.isfinite(value)):
            raise ReportError(f"{path}: {where} attribute {name} = {value} is out of range")
    return value


def in_classes(values, path, where):
    if values.size and (values.min() < 0 or values.max() > K - 1):
        raise ReportError(f"{path}: {where} holds class numbers outside 0..{K - 1}")


def describe_data(attrs, path):
    """The data's description from the results file's attributes (describe the module's CLASS_NAMES,
    K, SHAPE and DATA_NAME); a file from before dptrain wrote them is Fashion-MNIST's."""
    global CLASS_NAMES, K, SHAPE, DATA_NAME
    if "class_names" not in attrs:
        CLASS_NAMES, SHAPE, DATA_NAME = list(FASHION_NAMES), (28, 28, 1), "Fashion-MNIST"
    else:
        names = attrs["class_names"]
        CLASS_NAMES = [decode(n) for n in (names if getattr(names, "shape", ()) != () else [names])]
        SHAPE = tuple(attribute(attrs, f"image_{d}", path, "the file", int, 1, None)
                      for d in ("height", "width", "channels"))
        DATA_NAME = decode(attrs["data_name"]) if "data_name" in attrs else ""
        if len(CLASS_NAMES) < 2 or not all(isinstance(n, str) for n in CLASS_NAMES):
            raise ReportError(f"{path}: attribute class_names must hold at least 2 names")
    K = len(CLASS_NAMES)


def values_per_image():
    return SHAPE[0] * SHAPE[1] * SHAPE[2]


def read_history(g, path, where, run):
    lengths = set()
    for column in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds",
                   "samples_per_second", "val_loss", "val_accuracy"):
        if column.startswith("val_") and f"history/{column}" not in g:
            continue
        values = member(g, f"history/{column}", path, where, "f", ndim=1)
        lengths.add(len(values))
        run[f"history/{column}"] = values
    if len(lengths) != 1 or 0 in lengths:
        raise ReportError(f"{path}: {where} history columns have lengths {sorted(lengths)}, expected one "
                          f"length of at least 1")
    if not np.array_equal(run["history/epoch"], np.arange(1, len(run["history/epoch"]) + 1)):
        raise ReportError(f"{path}: {where}/history/epoch does not count 1, 2, 3, ...")


def read_mistakes(g, path, where, run):
    n = len(run["predictions"])
    index = member(g, "misclassified/index", path, where, "i", ndim=1)
    m = len(index)
    for name, kind in (("true_label", "i"), ("predicted", "i"), ("confidence", "f")):
        run[f"misclassified/{name}"] = member(g, f"misclassified/{name}", path, where, kind, shape=(m,))
    if m and (index.min() < 0 or index.max() >= n or np.any(np.diff(index) <= 0)):
        raise ReportError(f"{path}: {where}/misclassified/index must rise strictly within 0..{n - 1}")
    in_classes(run["misclassified/true_label"], path, f"{where}/misclassified/true_label")
    if m and not np.array_equal(run["misclassified/predicted"], run["predictions"][index]):
        raise ReportError(f"{path}: {where}/misclassified/predicted disagrees with {where}/predictions")
    if np.any(run["misclassified/true_label"] == run["misclassified/predicted"]):
        raise ReportError(f"{path}: {where}/misclassified lists images whose prediction was right")
    conf = run["misclassified/confidence"]
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ReportError(f"{path}: {where}/misclassified/confidence holds values outside 0..1")
    run["misclassified/index"] = index


def read_run(name, g, path):
    where = f"run {name}"
    run = {"name": name, "attrs": {}}
    limits = {"pca_components": (int, 0, values_per_image()), "epochs": (int, 1, None), "global_batch": (int, 1, None),
              "lr": (float, 0, None), "seed": (int, None, None), "ranks": (int, 1, None),
              "parameters": (int, 1, None), "train_seconds": (float, 0, None),
              "test_accuracy": (float, 0, 1), "test_loss": (float, 0, None)}
    for attr in RUN_ATTRS:
        kind, low, high = limits.get(attr, (str, None, None))
        run["attrs"][attr] = attribute(g.attrs, attr, path, where, kind, low, high)
    # best_epoch only with --validation; settings and test_views absent from older files
    for attr, kind, low in (("best_epoch", int, 0), ("settings", str, None), ("test_views", int, 1)):
        if attr in g.attrs:
            run["attrs"][attr] = attribute(g.attrs, attr, path, where, kind, low, None)
    # eval --on-validation writes the hold-out's figures in the test fields: its predictions are
    # of training images, which the report would draw as the test images of the same numbers.
    if "evaluated_set" in g.attrs and attribute(g.attrs, "evaluated_set", path, where, str) != "test":
        raise ReportError(f"{path}: {where} was evaluated on its validation hold-out (eval --on-validation); "
                          "the report draws test-set results only")
    read_history(g, path, where, run)
    run["predictions"] = member(g, "predictions", path, where, "i", ndim=1)
    n = len(run["predictions"])
    if n == 0:
        raise ReportError(f"{path}: {where} has no predictions")
    in_classes(run["predictions"], path, f"{where}/predictions")
    run["confusion"] = member(g, "confusion", path, where, "i", shape=(K, K))
    run["support"] = member(g, "support", path, where, "i", shape=(K,))
    if run["confusion"].min() < 0 or run["confusion"].sum() != n or run["support"].sum() != n:
        raise ReportError(f"{path}: {where} confusion and support must count the {n} predictions")
    for metric in ("precision", "recall", "f1"):
        run[metric] = member(g, metric, path, where, "f", shape=(K,))
        if run[metric].min() < 0 or run[metric].max() > 1:
            raise ReportError(f"{path}: {where}/{metric} holds values outside 0..1")
    read_mistakes(g, path, where, run)
    if run["attrs"]["pca_components"] > 0:
        k = run["attrs"]["pca_components"]
        if "pca" not in g:
            raise ReportError(f"{path}: {where} used PCA but lacks the pca group")
        run["pca/mean"] = member(g, "pca/mean", path, where, "f", shape=(values_per_image(),))
        run["pca/components"] = member(g, "pca/components", path, where, "f", shape=(k, values_per_image()))
        run["pca/explained_variance_ratio"] = member(g, "pca/explained_variance_ratio", path, where, "f",
                                                     shape=(k,))
    return run


def read_results(path):
    check_input_file(path, "results file")
    try:
        with h5py.File(path, "r") as f:
            check_hard_links(f, "runs", path)
            if isinstance(f.get("runs"), h5py.Group):
                check_tree(f["runs"], "runs", path)
            if "runs" not in f or not isinstance(f["runs"], h5py.Group) or len(f["runs"]) == 0:
                raise ReportError(f"{path}: no /runs group (not a dptrain results file)")
            meta = {k: decode(v) for k, v in f.attrs.items() if k != "class_names"}
            describe_data(f.attrs, path)
            runs = {name: read_run(name, g, path) for name, g in f["runs"].items()}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ReportError(f"{path}: damaged or not a dptrain results file ({e})")
    return meta, runs


def decode(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def read_data(path, n_test):
    check_input_file(path, "data file", " (give it with --data)")
    try:
        with h5py.File(path, "r") as f:
            arrays = {}
            image = SHAPE if SHAPE[2] > 1 else SHAPE[:2]
            for name, shape in (("train/images", image), ("train/labels", ()),
                                ("test/images", image), ("test/labels", ())):
                check_hard_links(f, name, path)
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise ReportError(f"{path}: missing dataset /{name}")
                values = f[name][()]
                if values.dtype == np.uint8 and values.shape[1:] == SHAPE and SHAPE[2] == 1:
                    values = values[..., 0]   # [N][H][W][1] is stored one-channel images
                if values.dtype != np.uint8 or values.shape[1:] != shape:
                    raise ReportError(f"{path}: /{name} has type {values.dtype} and shape {values.shape}, "
                                      f"expected uint8 [N]{''.join(f'[{d}]' for d in shape)} (the results' "
                                      f"images; made with another data file?)")
                arrays[name] = values
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ReportError(f"{path}: damaged or not a dptrain data file ({e})")
    for group in ("train", "test"):
        if len(arrays[f"{group}/labels"]) != len(arrays[f"{group}/images"]):
            raise ReportError(f"{path}: /{group} has {len(arrays[f'{group}/images'])} images and "
                              f"{len(arrays[f'{group}/labels'])} labels")
        in_classes(arrays[f"{group}/labels"], path, f"/{group}/labels")
    if len(arrays["test/labels"]) != n_test:
        raise ReportError(f"{path}: {len(arrays['test/labels'])} test images, but the results hold "
                          f"{n_test} predictions (made with another data file?)")
    return arrays["train/images"], arrays["train/labels"], arrays["test/images"], arrays["test/labels"]


# ---- analysis -----------------------------------------------------------------------------

def confused_pairs(confusion, count=5):
    """Unordered class pairs by the number of mistakes in both directions."""
    pairs = []
    for a in range(K):
        for b in range(a + 1, K):
            pairs.append((int(confusion[a, b] + confusion[b, a]), a, b))
    pairs.sort(reverse=True)
    return [(a, b, n) for n, a, b in pairs[:count] if n > 0]


def pick_misclassified(run, pairs, total=GRID_ROWS * GRID_COLS):
    """The most confident mistakes of each most-confused pair, then the most confident of the
    rest, shown most confident first."""
    index = run["misclassified/index"]
    true = run["misclassified/true_label"]
    pred = run["misclassified/predicted"]
    conf = run["misclassified/confidence"]
    order = np.argsort(-conf, kind="stable")
    chosen = []
    per_pair = max(1, total // (2 * len(pairs))) if pairs else 0
    for a, b, _ in pairs:
        in_pair = [k for k in order if {int(true[k]), int(pred[k])} == {a, b}]
        chosen.extend(in_pair[:per_pair])
    for k in order:
        if len(chosen) >= total:
            break
        if k not in chosen:
            chosen.append(k)
    chosen = sorted(chosen[:total], key=lambda k: -conf[k])
    return [(int(index[k]), int(true[k]), int(pred[k]), float(conf[k])) for k in chosen]


def thirds(side, names):
    """A side cut into three near-equal parts (28 pixels: 9, 10, 9), named."""
    cuts = [0, round(side / 3), round(2 * side / 3), side]
    return [(name, slice(cuts[i], cuts[i + 1])) for i, name in enumerate(names)]


def pair_analysis(a, b, class_means, run):
    regions = thirds(SHAPE[0], ("top", "middle", "bottom"))
    sides = thirds(SHAPE[1], ("left", "centre", "right"))
    diff = class_means[a] - class_means[b]
    magnitude = np.abs(diff)
    total = magnitude.sum()
    shares = {}
    for rname, rs in regions:
        for sname, ss in sides:
            shares[f"{rname} {sname}"] = magnitude[rs, ss].sum() / total if total else 0
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:2]
    brighter_a = float(diff[diff > 0].sum())
    brighter_b = float(-diff[diff < 0].sum())
    true = run["misclassified/true_label"]
    pred = run["misclassified/predicted"]
    conf = run["misclassified/confidence"]
    mistakes = {}
    for x, y in ((a, b), (b, a)):
        mask = (true == x) & (pred == y)
        c = conf[mask]
        mistakes[(x, y)] = (int(mask.sum()), float(c.mean()) if len(c) else 0.0,
                            float((c > 0.9).mean()) if len(c) else 0.0)
    return {"mean_abs_diff": float(magnitude.mean()), "regions": top,
            "brighter_a": brighter_a, "brighter_b": brighter_b, "mistakes": mistakes,
            "correlation": float(np.corrcoef(class_means[a].ravel(), class_means[b].ravel())[0, 1])}


def all_pair_median_diff(class_means):
    values = [np.abs(class_means[a] - class_means[b]).mean()
              for a in range(K) for b in range(a + 1, K)]
    return float(np.median(values))


def samples_per_second(run):
    history_samples = run["history/samples_per_second"] * run["history/seconds"]
    seconds = run["attrs"]["train_seconds"]
    return float(history_samples.sum() / seconds) if seconds > 0 else 0.0


def variance_kept(run):
    if run["attrs"]["pca_components"] > 0:
        return float(run["pca/explained_variance_ratio"].sum())
    return 1.0


def macro_f1(run):
    return float(np.mean(run["f1"]))


# ---- figures ------------------------------------------------------------------------------

def save(fig, path):
    fig.savefig(path, dpi=100)
    plt.close(fig)


def show(ax, image, limit=None):
    """An image as the data hold it: grey levels for one channel, colour for 3 (RGB) or 4 (RGBA);
    other channel counts as the mean of their channels. Pixel values 0..255, or diverging values
    around 0 up to +-limit (differences, principal components)."""
    image = np.asarray(image, dtype=np.float32).reshape(SHAPE)
    if limit is not None:
        ax.imshow(image.mean(axis=2), cmap="RdBu_r", vmin=-limit, vmax=limit)
    elif SHAPE[2] in (3, 4):
        ax.imshow(np.clip(image / 255.0, 0, 1))
    else:
        ax.imshow(image.mean(axis=2), cmap="gray_r", vmin=0, vmax=255)


def figure_misclassified(picks, test_images, path):
    fig, axes = plt.subplots(GRID_ROWS, GRID_COLS, figsize=(16, 13.5))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (index, true, pred, conf) in zip(axes.ravel(), picks):
        show(ax, test_images[index])
        ax.set_title(f"{CLASS_NAMES[true]} → {CLASS_NAMES[pred]}\n({conf:.3f})  #{index}", fontsize=8)
    if picks:
        fig.suptitle("Misclassified test images, most confident first: true → predicted (confidence)")
    else:
        fig.suptitle("No test image was misclassified")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, hspace=0.45, wspace=0.05)
    save(fig, path)


def figure_confusion(run, path):
    confusion = run["confusion"]
    fig, ax = plt.subplots(figsize=(10, 8.5))
    image = ax.imshow(np.log1p(confusion), cmap="Blues")
    if K <= MATRIX_MAX:   # numbers in the cells, names on the axes
        for r in range(K):
            for c in range(K):
                value = confusion[r, c]
                ax.text(c, r, str(value), ha="center", va="center", fontsize=8,
                        color="white" if np.log1p(value) > 0.6 * np.log1p(confusion.max()) else "black")
        ax.set_xticks(range(K), CLASS_NAMES, rotation=45, ha="right")
        ax.set_yticks(range(K), CLASS_NAMES)
    else:                 # a heat map of class numbers: the names and counts of its worst cells are in REPORT.md
        ticks = range(0, K, max(1, K // 10))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix, run {run['name']} (test accuracy "
                 f"{100 * run['attrs']['test_accuracy']:.2f}%; colour: log scale)")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.17, top=0.94)
    save(fig, path)


def figure_curves(runs, path):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 5.5))
    for i, run in enumerate(runs.values()):
        colour = f"C{i % 10}"
        epochs = run["history/epoch"]
        ax_loss.plot(epochs, run["history/train_loss"], color=colour, label=f"{run['name']} train")
        ax_loss.plot(epochs, run["history/test_loss"], color=colour, linestyle="--",
                     label=f"{run['name']} test")
        ax_acc.plot(epochs, 100 * run["history/train_accuracy"], color=colour, label=f"{run['name']} train")
        ax_acc.plot(epochs, 100 * run["history/test_accuracy"], color=colour, linestyle="--",
                    label=f"{run['name']} test")
        if "history/val_accuracy" in run:
            ax_acc.plot(epochs, 100 * run["history/val_accuracy"], color=colour, linestyle=":",
                        label=f"{run['name']} validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.92, wspace=0.2)
    save(fig, path)


def figure_pairs(pairs, class_means, path):
    fig, axes = plt.subplots(len(pairs), 3, figsize=(7.5, 2.5 * len(pairs)), squeeze=False)
    for row, (a, b, n) in enumerate(pairs):
        diff = class_means[a] - class_means[b]
        limit = max(np.abs(diff).max(), 1)
        show(axes[row, 0], class_means[a])
        axes[row, 0].set_title(f"mean {CLASS_NAMES[a]}", fontsize=9)
        show(axes[row, 1], class_means[b])
        axes[row, 1].set_title(f"mean {CLASS_NAMES[b]}", fontsize=9)
        show(axes[row, 2], diff, limit)
        axes[row, 2].set_title(f"difference ({n} mistakes)", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("Most confused pairs: class means (training set) and their difference\n"
                 "(red: brighter in the first class, blue: in the second)", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, hspace=0.35)
    save(fig, path)


RECONSTRUCTION_KS = (10, 25, 50, 100, 200)


def pca_runs_of(runs):
    return sorted((r for r in runs.values() if r["attrs"]["pca_components"] > 0),
                  key=lambda r: r["attrs"]["pca_components"])


def pca_study(runs, train_images, train_labels):
    """Per class and per PCA run's K: the share of the class's own variance (around the training
    mean) that K components lose, from the training images and the widest run's basis. None
    without a raw run and a PCA run to compare."""
    pca_runs = pca_runs_of(runs)
    raw = [r for r in runs.values() if r["attrs"]["pca_components"] == 0]
    if not pca_runs or not raw:
        return None
    widest = pca_runs[-1]
    centred = train_images.reshape(len(train_images), -1).astype(np.float32) / 255.0
    centred -= widest["pca/mean"].astype(np.float32)
    scores = centred @ widest["pca/components"].astype(np.float32).T
    energy = np.einsum("ij,ij->i", centred, centred)
    kept = np.cumsum(scores * scores, axis=1)
    lost, lost_all = {}, {}
    for r in pca_runs:
        k = r["attrs"]["pca_components"]
        lost[k] = np.array([1 - kept[train_labels == c, k - 1].sum() / energy[train_labels == c].sum()
                            if np.any(train_labels == c) else 0.0 for c in range(K)])
        lost_all[k] = float(1 - kept[:, k - 1].sum() / energy.sum())
    return {"raw": max(raw, key=lambda r: r["attrs"]["test_accuracy"]), "runs": pca_runs, "lost": lost,
            "lost_all": lost_all, "widest": widest}


def figure_reconstruction(study, classes, test_images, test_labels, path):
    """One test image of each given class and its reconstruction from K components."""
    widest = study["widest"]
    kmax = widest["attrs"]["pca_components"]
    ks = [k for k in RECONSTRUCTION_KS if k <= kmax]
    mean, basis = widest["pca/mean"], widest["pca/components"]
    fig, axes = plt.subplots(len(classes), len(ks) + 1, figsize=(1.9 * (len(ks) + 1), 2.1 * len(classes)),
                             squeeze=False)
    for row, c in enumerate(classes):
        image = test_images[np.nonzero(test_labels == c)[0][0]].reshape(-1) / 255.0
        z = (image - mean) @ basis.T
        views = [("original", image)] + [(f"K = {k}", mean + z[:k] @ basis[:k]) for k in ks]
        for col, (title, view) in enumerate(views):
            ax = axes[row, col]
            show(ax, 255 * np.clip(view, 0, 1))
            ax.set_title(f"{CLASS_NAMES[c]}: {title}" if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.suptitle("Test images of the most confused classes, and what K principal components keep of them", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, hspace=0.3, wspace=0.05)
    save(fig, path)


def confused_classes(pairs, limit=4):
    classes = []
    for a, b, _ in pairs:
        for c in (a, b):
            if c not in classes and len(classes) < limit:
                classes.append(c)
    return classes


def pca_study_section(study):
    """Which classes lose most under PCA, and how much of their own variance PCA drops."""
    raw, runs = study["raw"], study["runs"]
    ks = [r["attrs"]["pca_components"] for r in runs]
    smallest = ks[0]
    header = "| class | raw recall | " + " | ".join(f"recall K={k}" for k in ks) + " | " + \
             " | ".join(f"variance lost K={k}" for k in ks) + " |"
    lines = ["The recall of each class with raw pixels and with each PCA run, and the share of each class's "
             "own variance (its training images around the training mean) that K components lose:\n",
             header, "|---|" + "---:|" * (1 + 2 * len(ks))]
    drop_order = np.argsort(-(raw["recall"] - runs[0]["recall"]), kind="stable")
    shown = range(K) if K <= MATRIX_MAX else sorted(drop_order[:MATRIX_MAX])
    if K > MATRIX_MAX:
        lines[0] = lines[0].replace("The recall of each class", f"The {MATRIX_MAX} of the {K} classes that lose most "
                                    f"recall with {ks[0]} components: their recall")
    for c in shown:
        lines.append(f"| {CLASS_NAMES[c]} | {raw['recall'][c]:.3f} | "
                     + " | ".join(f"{r['recall'][c]:.3f}" for r in runs) + " | "
                     + " | ".join(f"{100 * study['lost'][k][c]:.1f}%" for k in ks) + " |")
    lines.append("| all classes | | " + " | " * len(ks) + " | ".join(f"{100 * study['lost_all'][k]:.1f}%" for k in ks)
                 + " |")
    first = runs[0]
    drop = raw["recall"] - first["recall"]
    order = np.argsort(-drop)
    lost = study["lost"][smallest]
    r_var, r_err = correlation(lost, drop), correlation(1 - raw["recall"], drop)
    worst = ", ".join(f"{CLASS_NAMES[c]} ({raw['recall'][c]:.3f} → {first['recall'][c]:.3f}, "
                      f"{-100 * drop[c]:+.1f} points; {100 * lost[c]:.1f}% of its variance lost)" for c in order[:3])
    kept_least = ", ".join(f"{CLASS_NAMES[c]} {100 * lost[c]:.1f}%" for c in np.argsort(-lost)[:3])
    a, b = study["pair"]
    pair_lost, median_lost = study["pair_lost"], study["median_pair_lost"]
    lines.append("")
    lines.append(
        f"With {smallest} components the classes that lose most recall are {worst}. The classes whose own "
        f"variance {smallest} components keep least are {kept_least}, against {100 * study['lost_all'][smallest]:.1f}% "
        f"over all classes; over the {K} classes the variance lost and the recall lost correlate at r = {r_var:.2f}"
        + (" — weakly: how much of a class's variance PCA drops does not explain what the class loses. "
           if abs(r_var) < 0.5 else ". ")
        + f"The recall lost correlates at r = {r_err:.2f} with how often the class was already mistaken with raw "
        f"pixels (1 − raw recall)" + (": PCA costs most where classes were close to begin with. " if r_err >= 0.5
                                      else ". ")
        + f"For the most confused pair, {CLASS_NAMES[a]} / {CLASS_NAMES[b]}, {smallest} components lose "
        f"{100 * pair_lost:.1f}% of the difference between their mean training images, against a median of "
        f"{100 * median_lost:.1f}% over all {K * (K - 1) // 2} pairs"
        + (": what separates these two is more of what PCA drops than for a typical pair." if pair_lost > median_lost
           else ": their mean images stay apart; what PCA drops is finer than the mean difference."))
    return "\n".join(lines)


def correlation(x, y):
    return float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 and np.std(y) > 0 else 0.0


def mean_difference_lost(study, class_means, a, b, k):
    """The share of the difference of two class means (in [0, 1] pixels) that K components lose."""
    basis = study["widest"]["pca/components"][:k]
    d = (class_means[a] - class_means[b]).reshape(-1) / 255.0
    energy = float(d @ d)
    return 1 - float(np.sum((basis @ d) ** 2)) / energy if energy > 0 else 0.0


def add_pair_study(study, class_means):
    """The raw run's most confused pair, and how much of its mean difference the smallest K loses."""
    k = study["runs"][0]["attrs"]["pca_components"]
    pairs = confused_pairs(study["raw"]["confusion"], count=1) or [(0, 1, 0)]
    a, b, _ = pairs[0]
    study["pair"] = (a, b)
    study["pair_lost"] = mean_difference_lost(study, class_means, a, b, k)
    study["median_pair_lost"] = float(np.median([mean_difference_lost(study, class_means, x, y, k)
                                                 for x in range(K) for y in range(x + 1, K)]))


def figure_pca(runs, path):
    pca_runs = [r for r in runs.values() if r["attrs"]["pca_components"] > 0]
    widest = max(pca_runs, key=lambda r: r["attrs"]["pca_components"])
    ratios = widest["pca/explained_variance_ratio"]
    fig = plt.figure(figsize=(15, 8))
    grid = fig.add_gridspec(2, 8)
    ax_var = fig.add_subplot(grid[0, 0:4])
    ks = np.arange(1, len(ratios) + 1)
    ax_var.plot(ks, 100 * np.cumsum(ratios), color="C0")
    for r in pca_runs:
        k = r["attrs"]["pca_components"]
        ax_var.scatter([k], [100 * variance_kept(r)], color="C1", zorder=3)
        ax_var.annotate(f"K={k}", (k, 100 * variance_kept(r)), textcoords="offset points",
                        xytext=(-6, 6), ha="right")
    ax_var.set(xlabel="components K", ylabel="variance kept (%)", title="Share of variance kept")
    ax_var.grid(alpha=0.3)
    ax_acc = fig.add_subplot(grid[0, 4:8])
    points = sorted((r["attrs"]["pca_components"], 100 * r["attrs"]["test_accuracy"]) for r in pca_runs)
    ax_acc.plot([p[0] for p in points], [p[1] for p in points], marker="o", label="PCA inputs")
    for r in runs.values():
        if r["attrs"]["pca_components"] == 0:
            ax_acc.axhline(100 * r["attrs"]["test_accuracy"], color="C3", linestyle="--",
                           label=f"raw pixels ({r['name']})")
    ax_acc.margins(y=0.15)
    ax_acc.set(xlabel="components K", ylabel="test accuracy (%)", title="Test accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    components = widest["pca/components"]
    for i in range(min(8, len(components))):
        ax = fig.add_subplot(grid[1, i])
        image = components[i].reshape(SHAPE)
        show(ax, image, max(np.abs(image.mean(axis=2)).max(), 1e-12))
        ax.set_title(f"PC{i + 1} ({100 * ratios[i]:.1f}%)", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"PCA of the training set (components from run {widest['name']})")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.03, top=0.9, hspace=0.3, wspace=0.6)
    save(fig, path)


# ---- REPORT.md ----------------------------------------------------------------------------

def classification_report(run):
    lines = [f"{'':>14} {'precision':>10} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    total = int(run["support"].sum())
    for c in range(K):
        lines.append(f"{CLASS_NAMES[c]:>14} {run['precision'][c]:>10.2f} {run['recall'][c]:>9.2f} "
                     f"{run['f1'][c]:>9.2f} {int(run['support'][c]):>9}")
    weights = run["support"] / total
    lines += ["",
              f"{'accuracy':>14} {'':>10} {'':>9} {run['attrs']['test_accuracy']:>9.2f} {total:>9}",
              f"{'macro avg':>14} {np.mean(run['precision']):>10.2f} {np.mean(run['recall']):>9.2f} "
              f"{np.mean(run['f1']):>9.2f} {total:>9}",
              f"{'weighted avg':>14} {np.sum(run['precision'] * weights):>10.2f} "
              f"{np.sum(run['recall'] * weights):>9.2f} {np.sum(run['f1'] * weights):>9.2f} {total:>9}"]
    return "\n".join(lines)


def markdown_confusion(confusion):
    if K > MATRIX_MAX:   # a K x K table of numbers is unreadable: its largest cells off the diagonal
        cells = sorted(((int(confusion[t, p]), t, p) for t in range(K) for p in range(K) if t != p), reverse=True)
        rows = [f"| {CLASS_NAMES[t]} | {CLASS_NAMES[p]} | {n} |" for n, t, p in cells[:20] if n > 0]
        return (f"{K} classes: the 20 most frequent confusions (true class, predicted class, test images) in "
                "place of the matrix, whose heat map is the picture above.\n\n"
                "| true | predicted | images |\n|---|---|---:|\n" + "\n".join(rows or ["| none | | 0 |"]))
    header = "| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |"
    rule = "|---|" + "---:|" * K
    rows = [f"| **{CLASS_NAMES[r]}** | " + " | ".join(
        f"**{v}**" if r == c else str(v) for c, v in enumerate(confusion[r])) + " |" for r in range(K)]
    return "\n".join([header, rule] + rows)


def read_benchmarks():
    if not os.path.exists(BENCHMARKS):
        raise ReportError(f"{BENCHMARKS}: the benchmark table is missing")
    with open(BENCHMARKS, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["accuracy"] = float(row["fashion_test_accuracy"])
    return rows


def read_table3():
    """The paper's Table 3 (scikit-learn baselines) and its source, from the header comments."""
    if not os.path.exists(TABLE3):
        raise ReportError(f"{TABLE3}: the paper's Table 3 is missing")
    with open(TABLE3, newline="") as f:
        lines = f.read().splitlines()
    source = " ".join(line.lstrip("# ").strip() for line in lines if line.startswith("#"))
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    for row in rows:
        row["accuracy"] = float(row["fashion_test_accuracy"])
    return rows, source


def our_entries(runs):
    entries = []
    for run in runs.values():
        k = run["attrs"]["pca_components"]
        inputs = f"PCA {k} components" if k else "standardised pixels"
        entries.append((run["attrs"]["test_accuracy"],
                        f"dptrain {run['attrs']['model']} ({run['attrs']['parameters']} parameters), run {run['name']}",
                        inputs, run["name"]))
    return entries


def where_it_ranks(accuracy, table3):
    """'above all 126 scikit-learn baselines; the best, SVC C=10 kernel=rbf, 0.897' and the like."""
    best = max(table3, key=lambda r: r["accuracy"])
    below = sum(r["accuracy"] > accuracy for r in table3)
    if below == 0:
        return (f"above all {len(table3)} scikit-learn baselines of the paper's Table 3; the best, "
                f"{best['classifier']} {best['parameters']}, {best['accuracy']:.3f}")
    return (f"below {below} of the {len(table3)} scikit-learn baselines of the paper's Table 3 (rank {below + 1}); "
            f"the best, {best['classifier']} {best['parameters']}, {best['accuracy']:.3f}")


def table3_section(runs, table3, source):
    """The best row of each classifier family beside this report's runs, and where each run ranks."""
    families = {}
    for row in table3:
        if row["classifier"] not in families or row["accuracy"] > families[row["classifier"]]["accuracy"]:
            families[row["classifier"]] = row
    entries = [(r["accuracy"], r["classifier"], r["parameters"], r["mnist_test_accuracy"], False)
               for r in families.values()]
    entries += [(acc, name, inputs, "", True) for acc, name, inputs, _ in our_entries(runs)]
    entries.sort(key=lambda e: -e[0])
    lines = ["| rank | classifier | parameters | Fashion test accuracy | MNIST test accuracy |",
             "|---:|---|---|---:|---:|"]
    for i, (acc, name, params, mnist, ours) in enumerate(entries, 1):
        if ours:
            lines.append(f"| **{i}** | **{name} ← this report** | **{params}** | **{acc:.4f}** | |")
        else:
            lines.append(f"| {i} | {name} | {params} | {acc:.3f} | {float(mnist):.3f} |")
    ranking = "\n".join(f"- Run {name} ({acc:.4f}): {where_it_ranks(acc, table3)}."
                        for acc, _, _, name in sorted(our_entries(runs), key=lambda e: -e[0]))
    return ("The scikit-learn baselines of the Fashion-MNIST paper, the best of each of its "
            f"{len(families)} classifier families (all {len(table3)} rows are in the appendix):\n\n"
            + "\n".join(lines) + "\n\n" + ranking + f"\n\nSource: {source} (file "
            "`data/fashion-mnist-paper-table3.csv` in this repository).")


def table3_appendix(table3):
    lines = [f"## Appendix: all {len(table3)} scikit-learn baselines of the paper's Table 3\n",
             "| classifier | parameters | Fashion test accuracy | MNIST test accuracy |", "|---|---|---:|---:|"]
    for row in sorted(table3, key=lambda r: -r["accuracy"]):
        lines.append(f"| {row['classifier']} | {row['parameters']} | {row['accuracy']:.3f} | "
                     f"{float(row['mnist_test_accuracy']):.3f} |")
    return "\n".join(lines) + "\n"


def benchmark_section(runs, main):
    rows = read_benchmarks()
    entries = [(r["accuracy"], f"{r['classifier']}", r["preprocessing"], r["submitter"], False) for r in rows]
    for acc, name, inputs, _ in our_entries(runs):
        entries.append((acc, name, inputs, "this run", True))
    entries.sort(key=lambda e: -e[0])
    lines = ["| rank | classifier | preprocessing | Fashion test accuracy | submitter |",
             "|---:|---|---|---:|---|"]
    for i, (acc, name, prep, who, ours) in enumerate(entries, 1):
        prep = prep.replace("|", "/")
        if ours:
            lines.append(f"| **{i}** | **{name} ← this run** | **{prep}** | **{acc:.4f}** | **{who}** |")
        else:
            lines.append(f"| {i} | {name} | {prep} | {acc:.4f} | {who} |")
    sources = sorted({r["source"] for r in rows})
    text = "The benchmarks submitted to the data set's authors:\n\n" + "\n".join(lines)
    text += ("\n\nSource of every figure above except this run's: "
             + "; ".join(sources) + " (file `data/benchmarks.csv` in this repository, copied "
             "with each row's submitter; the dataset authors note they have not verified the "
             "submitted benchmarks).")
    return text


def strip(ax, groups, ours, spread, labelled):
    """One row of points per benchmark source; this report's runs as red lines."""
    for y, (label, values, colour) in enumerate(groups):
        ax.scatter(values, y + spread[y], s=14, color=colour, alpha=0.7, label=f"{label} ({len(values)})")
    previous = None
    for acc, _, _, name in ours:
        ax.axvline(acc, color="C3", linewidth=1.2)
        if labelled:   # a label left of its line, or right of it when the run before is too close
            right = previous is not None and acc - previous < 0.002
            ax.annotate(f"{name} {acc:.4f}", (acc, 1.55), color="C3", fontsize=8, rotation=90,
                        ha="left" if right else "right", va="top", xytext=(2 if right else -2, 0),
                        textcoords="offset points")
        previous = acc
    ax.set_yticks([0, 1], [g[0] for g in groups])
    ax.set_ylim(-0.6, 1.6)
    ax.grid(alpha=0.3, axis="x")


def figure_benchmarks(runs, path):
    """Every benchmark's accuracy, one row per source, this report's runs marked; below, the
    same around the runs, with their names."""
    submitted = read_benchmarks()
    table3, _ = read_table3()
    groups = [("submitted benchmarks", [r["accuracy"] for r in submitted], "C0"),
              ("paper's Table 3 (scikit-learn)", [r["accuracy"] for r in table3], "C2")]
    rng = np.random.default_rng(0)   # a fixed vertical spread, so that equal accuracies stay visible
    spread = [rng.uniform(-0.25, 0.25, len(g[1])) for g in groups]
    ours = sorted(our_entries(runs))
    fig, (full, zoom) = plt.subplots(2, 1, figsize=(12, 8))
    strip(full, groups, ours, spread, False)
    full.set_title("This report's runs (red lines) among the published Fashion-MNIST benchmarks")
    full.legend(loc="lower left", fontsize=8)
    strip(zoom, groups, ours, spread, True)
    low = min(acc for acc, _, _, _ in ours) - 0.015
    high = max([acc for acc, _, _, _ in ours] + groups[0][1] + groups[1][1]) + 0.005
    zoom.set_xlim(low, high)
    zoom.set_xlabel("Fashion-MNIST test accuracy")
    zoom.set_title(f"The same from {low:.3f} up", fontsize=10)
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.08, top=0.94, hspace=0.3)
    save(fig, path)


def write_report(path, meta, runs, main, pairs, analyses, median_diff, picks, study=None):
    a = main["attrs"]
    f1 = main["f1"]
    order = np.argsort(-f1)
    out = []
    out.append(f"# dptrain report: run {main['name']}\n")
    out.append(f"Results file written by dptrain {meta.get('dptrain_version', '?')} on "
               f"{meta.get('created', '?')} with `{meta.get('command', '?')}`.\n")
    out.append("How to read this report: the first sections describe the analysed run (the most accurate, "
               "unless `--run` chose another): its settings, accuracy and per-class scores, the confusion "
               "matrix (rows are true classes), the pairs of classes it confuses most with what in the data "
               "makes them alike, and pictures of the test images it got wrong. The later sections compare every "
               "run in the results file: training curves, raw pixels against PCA and what PCA keeps, and the "
               f"published benchmarks with their sources. Accuracies are fractions of the {len(main['predictions'])} test images; "
               "every figure is computed from the results file and the data file named here.\n")
    out.append("## Settings and accuracy\n")
    out.append("| setting | value |\n|---|---|")
    for key in ("model", "pca_components", "epochs", "global_batch", "optimizer", "lr", "seed",
                "ranks", "parameters"):
        out.append(f"| {key} | {a[key]} |")
    if "settings" in a:  # every setting, defaults included (results files from 2026-12-04 on)
        out.append(f"| all settings | `{a['settings']}` |")
    if "test_views" in a:
        out.append(f"| views averaged per test image | {a['test_views']} |")
    out.append(f"| training time | {a['train_seconds']:.1f} s ({samples_per_second(main):.0f} samples/s) |")
    if "best_epoch" in a:
        out.append(f"| parameters kept | epoch {a['best_epoch']} (best validation accuracy) |")
    out.append("")
    out.append(f"**Test accuracy: {100 * a['test_accuracy']:.2f}%** (test loss {a['test_loss']:.4f}, "
               f"{len(main['predictions'])} test images, {len(main['misclassified/index'])} misclassified).\n")
    out.append("## Classification report\n")
    out.append("```\n" + classification_report(main) + "\n```\n")
    out.append("## Confusion matrix\n")
    out.append("Rows: true class; columns: predicted class. ![confusion](confusion.png)\n")
    out.append(markdown_confusion(main["confusion"]) + "\n")
    out.append("## Best and worst classes\n")
    listed = lambda classes: ", ".join((f"**{CLASS_NAMES[c]}** (F1 {f1[c]:.3f})" if i == 0 else
                                        f"{CLASS_NAMES[c]} ({f1[c]:.3f})") for i, c in enumerate(classes))
    few = min(3, K // 2)   # with two classes, one best and one worst
    out.append(f"Best: {listed(order[:few])}. Worst: {listed(order[::-1][:few])}.\n")
    heading = "The five most confused pairs" if len(pairs) == 5 else f"The {len(pairs)} confused pairs"
    out.append(f"## {heading}\n")
    if not pairs:
        out.append("No pair of classes was confused: every test image was classified correctly.\n")
    if pairs:
        out.append("| pair | mistakes | A → B | B → A | mean confidence of the mistakes | "
                   "mean \\|difference\\| of class means | correlation of class means |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
    for (x, y, n), an in zip(pairs, analyses):
        ab, ba = an["mistakes"][(x, y)], an["mistakes"][(y, x)]
        weighted = (ab[0] * ab[1] + ba[0] * ba[1]) / max(ab[0] + ba[0], 1)
        out.append(f"| {CLASS_NAMES[x]} / {CLASS_NAMES[y]} | {n} | {ab[0]} | {ba[0]} | {weighted:.2f} | "
                   f"{an['mean_abs_diff']:.1f} | {an['correlation']:.3f} |")
    out.append("")
    if pairs:
        out.append(f"Why they are confused, from the data (class means over the training set, pixel "
                   f"values 0–255; the median mean |difference| over all {K * (K - 1) // 2} class pairs is "
                   f"{median_diff:.1f}). ![pairs](pairs.png)\n")
    for (x, y, n), an in zip(pairs, analyses):
        ab, ba = an["mistakes"][(x, y)], an["mistakes"][(y, x)]
        regions = " and ".join(f"{name} ({100 * share:.0f}%)" for name, share in an["regions"])
        closer = "closer than" if an["mean_abs_diff"] < median_diff else "not closer than"
        out.append(f"- **{CLASS_NAMES[x]} / {CLASS_NAMES[y]}** ({n} mistakes): their mean images "
                   f"differ by {an['mean_abs_diff']:.1f} per pixel on average, {closer} the typical "
                   f"pair, and correlate at {an['correlation']:.3f}. Most of the difference lies in "
                   f"the {regions} of the 3×3 grid of the image. {CLASS_NAMES[x]} is brighter by "
                   f"{an['brighter_a']:.0f} summed grey levels where it is brighter, "
                   f"{CLASS_NAMES[y]} by {an['brighter_b']:.0f}. The network called {ab[0]} "
                   f"{CLASS_NAMES[x]} images {CLASS_NAMES[y]} (mean confidence {ab[1]:.2f}, "
                   f"{100 * ab[2]:.0f}% above 0.9) and {ba[0]} the other way (mean confidence "
                   f"{ba[1]:.2f}, {100 * ba[2]:.0f}% above 0.9).")
    out.append("")
    out.append("## Misclassified images\n")
    if picks:
        out.append(f"{len(picks)} misclassified test images, the most confident mistakes of the most "
                   f"confused pairs and then the most confident of the rest, shown most confident "
                   f"first. ![misclassified](misclassified.png)\n")
    else:
        out.append("None: every test image was classified correctly.\n")
    out.append("## Training curves\n\n![curves](curves.png)\n")
    if len(runs) > 1 or any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
        out.append("## Raw pixels versus PCA\n")
        out.append("| run | input | components | variance kept | parameters | test accuracy | "
                   "macro F1 | training s | samples/s |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(runs.values(), key=lambda r: (r["attrs"]["pca_components"] or 10**6)):
            k = r["attrs"]["pca_components"]
            out.append(f"| {r['name']} | {'PCA' if k else 'raw'} | {k or values_per_image()} | "
                       f"{100 * variance_kept(r):.2f}% | {r['attrs']['parameters']} | "
                       f"{100 * r['attrs']['test_accuracy']:.2f}% | {macro_f1(r):.4f} | "
                       f"{r['attrs']['train_seconds']:.1f} | {samples_per_second(r):.0f} |")
        out.append("")
        if any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
            out.append("![pca](pca.png)\n")
        if study:
            out.append("## What PCA keeps\n")
            out.append("![reconstruction](pca_reconstruction.png)\n")
            out.append(pca_study_section(study) + "\n")
    if DATA_NAME != "Fashion-MNIST":
        out.append("## Published benchmarks\n")
        out.append(f"No table of published results is known for this data set ({DATA_NAME or 'unnamed'}, "
                   f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} images of {K} classes): this repository holds one for "
                   "Fashion-MNIST only, so no comparison is drawn.\n")
    else:
        out.append("## Beside the published Fashion-MNIST benchmarks\n")
        table3, table3_source = read_table3()
        out.append("![benchmarks](benchmarks.png)\n")
        out.append(table3_section(runs, table3, table3_source) + "\n")
        out.append(benchmark_section(runs, main) + "\n")
        out.append(table3_appendix(table3))
    with open(path, "w") as f:
        f.write("\n".join(out))


# ---- main ---------------------------------------------------------------------------------

MARKER = ".dptrain-report"   # in every report folder: the names of the files the report wrote


def out_folder_mode(out):
    """'new' when OUT does not exist; 'merge' when it is a report folder of ours (or empty).
    Anything else is refused: the report never removes or replaces what it did not write."""
    if os.path.islink(out):
        raise ReportError(f"--out {out}: is a symbolic link (give the folder itself)")
    if not os.path.lexists(out):
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise ReportError(f"--out {out}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReportError(f"--out {out}: folder {parent} is not writable")
        return "new"
    if not os.path.isdir(out):
        raise ReportError(f"--out {out}: exists and is not a folder")
    entries = os.listdir(out)
    # Only the marker makes a folder ours: a user's own REPORT.md or pca.png in a folder without it
    # are theirs, whatever their names.
    if entries and MARKER not in entries:
        raise ReportError(f"--out {out}: the folder exists and is not a report folder (it holds {len(entries)} "
                          f"{'entry' if len(entries) == 1 else 'entries'} and no {MARKER}): give a new or empty folder; nothing in {out} was touched")
    return "merge"


def previous_files(out):
    try:
        with open(os.path.join(out, MARKER)) as f:
            return [line.strip() for line in f if line.strip() and "/" not in line and line.strip() != MARKER]
    except FileNotFoundError:
        return []


def merge_into(staging, out, inputs):
    """Move the staged files into an existing report folder, one atomic rename each, after checking
    that none would replace a folder, a link, a device, or an input; then drop the files an earlier
    report wrote that this one did not."""
    names = sorted(os.listdir(staging))
    for name in names:
        target = os.path.join(out, name)
        if os.path.lexists(target) and (os.path.islink(target) or not os.path.isfile(target)):
            raise ReportError(f"--out {out}: {name} there is not a regular file; nothing was changed")
        for path in inputs:
            if os.path.exists(target) and os.path.samefile(target, path):
                raise ReportError(f"--out {out}: {name} there is the input {path}; nothing was changed")
    stale = [n for n in previous_files(out) if n not in names]
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    for name in stale:
        target = os.path.join(out, name)
        if os.path.isfile(target) and not os.path.islink(target) and \
                not any(os.path.exists(p) and os.path.samefile(target, p) for p in inputs):
            os.remove(target)
    os.rmdir(staging)


def build(args):
    out = args.out or os.path.splitext(args.results)[0] + "_report"
    mode = out_folder_mode(out)   # first: a refused folder costs no work
    meta, runs = read_results(args.results)
    if args.run:
        if args.run not in runs:
            raise ReportError(f"--run {args.run}: the results hold {', '.join(runs)}")
        main = runs[args.run]
    else:
        main = max(runs.values(), key=lambda r: r["attrs"]["test_accuracy"])
    train_images, train_labels, test_images, test_labels = read_data(args.data, len(main["predictions"]))
    index = main["misclassified/index"]
    if not np.array_equal(main["misclassified/true_label"], test_labels[index]):
        raise ReportError(f"{args.data}: test labels differ from the results' (made with another data file?)")
    class_means = np.stack([train_images[train_labels == c].mean(axis=0) if np.any(train_labels == c)
                            else np.zeros(test_images.shape[1:]) for c in range(K)])
    pairs = confused_pairs(main["confusion"])
    analyses = [pair_analysis(a, b, class_means, main) for a, b, _ in pairs]
    picks = pick_misclassified(main, pairs)

    parent = os.path.dirname(os.path.abspath(out))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp.", dir=parent)
    try:
        figure_misclassified(picks, test_images, os.path.join(staging, "misclassified.png"))
        figure_confusion(main, os.path.join(staging, "confusion.png"))
        figure_curves(runs, os.path.join(staging, "curves.png"))
        if pairs:
            figure_pairs(pairs, class_means, os.path.join(staging, "pairs.png"))
        if any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
            figure_pca(runs, os.path.join(staging, "pca.png"))
        if DATA_NAME == "Fashion-MNIST":
            figure_benchmarks(runs, os.path.join(staging, "benchmarks.png"))
        study = pca_study(runs, train_images, train_labels)
        if study:
            add_pair_study(study, class_means)
            classes = confused_classes(pairs) or [0, 1]
            figure_reconstruction(study, classes, test_images, test_labels,
                                  os.path.join(staging, "pca_reconstruction.png"))
        write_report(os.path.join(staging, "REPORT.md"), meta, runs, main, pairs, analyses,
                     all_pair_median_diff(class_means), picks, study)
        with open(os.path.join(staging, MARKER), "w") as f:
            f.write("".join(name + "\n" for name in sorted(os.listdir(staging)) if name != MARKER))
        if mode == "new":
            os.rename(staging, out)   # fails, touching nothing, if a non-empty OUT appeared meanwhile
        else:
            merge_into(staging, out, [args.results, args.data])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)   # only the folder this run made
        raise
    return out


def main():
    parser = argparse.ArgumentParser(description="Draw the report of a dptrain results file.")
    parser.add_argument("results", help="results file written by dptrain train or compare")
    parser.add_argument("--data", default="data/fashion-mnist.h5", help="the data file (default %(default)s)")
    parser.add_argument("--out", help="output folder (default: RESULTS_report beside the results file)")
    parser.add_argument("--run", help="the run to analyse (default: the most accurate)")
    args = parser.parse_args()
    import_libraries()
    try:
        out = build(args)
    except ReportError as e:
        fail(str(e))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            out = args.out or os.path.splitext(args.results)[0] + "_report"
            fail(f"no space left on {os.path.dirname(os.path.abspath(out))} while writing the report "
                 f"{out} (nothing was changed there)")
        fail(f"{e.filename or args.results}: {e.strerror or e}")
    except Exception as e:   # a bug of this script: still one line, never a traceback
        fail(f"{args.results}: cannot draw the report ({type(e).__name__}: {e})")
    print(f"report written to {out}/REPORT.md")


if __name__ == "__main__":
    main()
