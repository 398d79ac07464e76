"""Reading and validating the inputs: the results file, the data file and the reference tables of
published results. Each is checked against its contract (docs/file-formats.md) before anything is
drawn; what is wrong is raised as a ReportError that names the file."""
import csv
import glob
import os
import re
import zlib
from dataclasses import dataclass

import h5py
import numpy as np

REFERENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
RUN_ATTRS = ["model", "pca_components", "epochs", "global_batch", "optimizer", "lr", "seed",
             "ranks", "parameters", "train_seconds", "test_accuracy", "test_loss"]
SEAL_MAGIC, SEAL_BYTES = b"dptrain-seal 1\n", 512
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ReportError(Exception):
    """An expected failure of the inputs: reported as one line naming the file and what is wrong."""


@dataclass(frozen=True)
class Data:
    """What the files say of the data: the class names in label order, the image shape (H, W, C)
    and the data set's name ("" when the files do not name it)."""
    names: tuple
    shape: tuple
    name: str

    @property
    def k(self):
        return len(self.names)

    @property
    def values(self):
        return self.shape[0] * self.shape[1] * self.shape[2]

    def text(self):
        return f"{self.shape[0]}x{self.shape[1]}x{self.shape[2]} images of {self.k} classes"


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


def member(group, name, path, where, dtype_kind, shape=None, ndim=None, nan=False):
    """A dataset's values, checked for presence, kind ('i' integer, 'f' real) and shape; nan: NaN
    is allowed (an epoch --eval-every did not evaluate), infinities still are not."""
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
    if dtype_kind == "f" and not np.all(np.isfinite(values) | (nan & np.isnan(values))):
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


def in_classes(values, k, path, where):
    if values.size and (values.min() < 0 or values.max() > k - 1):
        raise ReportError(f"{path}: {where} holds class numbers outside 0..{k - 1}")


def class_names(attrs, path):
    names = attrs["class_names"]
    names = [decode(n) for n in (names if getattr(names, "shape", ()) != () else [names])]
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ReportError(f"{path}: attribute class_names must hold at least 2 names")
    return tuple(names)


def results_description(path):
    """The data's description in the results file's attributes; None in a file written before
    dptrain wrote it (the data file then describes itself)."""
    check_input_file(path, "results file")
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if "class_names" not in attrs:
                return None
            shape = tuple(attribute(attrs, f"image_{d}", path, "the file", int, 1, None)
                          for d in ("height", "width", "channels"))
            name = decode(attrs["data_name"]) if "data_name" in attrs else ""
            return Data(class_names(attrs, path), shape, name if isinstance(name, str) else "")
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ReportError(f"{path}: damaged or not a dptrain results file ({e})")


def data_file_description(path):
    """The data file's own description: its class names, name and test images' shape."""
    check_input_file(path, "data file", " (give it with --data)")
    try:
        with h5py.File(path, "r") as f:
            if "class_names" not in f.attrs:
                raise ReportError(f"{path}: neither the results file nor this data file names the classes "
                                  f"(attribute class_names; docs/your-own-data.md)")
            check_hard_links(f, "test/images", path)
            if "test/images" not in f or not isinstance(f["test/images"], h5py.Dataset) or \
                    f["test/images"].ndim not in (3, 4):
                raise ReportError(f"{path}: missing dataset /test/images of [N][H][W] or [N][H][W][C]")
            shape = tuple(f["test/images"].shape[1:]) + ((1,) if f["test/images"].ndim == 3 else ())
            name = decode(f.attrs["name"]) if "name" in f.attrs else ""
            return Data(class_names(f.attrs, path), shape, name if isinstance(name, str) else "")
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ReportError(f"{path}: damaged or not a dptrain data file ({e})")


def read_history(g, path, where, run):
    lengths = set()
    for column in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds",
                   "samples_per_second", "val_loss", "val_accuracy"):
        if column.startswith("val_") and f"history/{column}" not in g:
            continue
        evaluation = column.startswith(("test_", "val_"))
        values = member(g, f"history/{column}", path, where, "f", ndim=1, nan=evaluation)
        if evaluation and len(values) and np.isnan(values[-1]):
            raise ReportError(f"{path}: {where}/history/{column} lacks the last epoch's value")
        lengths.add(len(values))
        run[f"history/{column}"] = values
    if len(lengths) != 1 or 0 in lengths:
        raise ReportError(f"{path}: {where} history columns have lengths {sorted(lengths)}, expected one "
                          f"length of at least 1")
    if not np.array_equal(run["history/epoch"], np.arange(1, len(run["history/epoch"]) + 1)):
        raise ReportError(f"{path}: {where}/history/epoch does not count 1, 2, 3, ...")


def read_rank_timing(g, path, where, run):
    """Each rank's compute and wait seconds in each epoch's steps (runs on 2 ranks or more; NaN for
    the epochs before a resume), and the ranks' hosts."""
    if "rank_timing" not in g:
        return
    epochs, ranks = len(run["history/epoch"]), run["attrs"]["ranks"]
    table = member(g, "rank_timing", path, where, "f", ndim=3, nan=True)
    if ranks < 2 or table.shape != (epochs, ranks, 2):
        raise ReportError(f"{path}: {where}/rank_timing has shape {table.shape}, expected ({epochs}, {ranks}, 2) "
                          f"for {epochs} epochs of {ranks} ranks")
    if np.any(table[np.isfinite(table)] < 0):
        raise ReportError(f"{path}: {where}/rank_timing holds negative seconds")
    hosts = g.attrs.get("rank_hosts")
    if hosts is None or np.ndim(hosts) != 1 or len(hosts) != ranks:
        raise ReportError(f"{path}: {where} lacks the attribute rank_hosts of {ranks} host names")
    run["rank_timing"], run["rank_hosts"] = table, [str(decode(h)) for h in hosts]


def read_mistakes(g, path, where, run, k):
    n = len(run["predictions"])
    index = member(g, "misclassified/index", path, where, "i", ndim=1)
    m = len(index)
    for name, kind in (("true_label", "i"), ("predicted", "i"), ("confidence", "f")):
        run[f"misclassified/{name}"] = member(g, f"misclassified/{name}", path, where, kind, shape=(m,))
    if m and (index.min() < 0 or index.max() >= n or np.any(np.diff(index) <= 0)):
        raise ReportError(f"{path}: {where}/misclassified/index must rise strictly within 0..{n - 1}")
    in_classes(run["misclassified/true_label"], k, path, f"{where}/misclassified/true_label")
    if m and not np.array_equal(run["misclassified/predicted"], run["predictions"][index]):
        raise ReportError(f"{path}: {where}/misclassified/predicted disagrees with {where}/predictions")
    if np.any(run["misclassified/true_label"] == run["misclassified/predicted"]):
        raise ReportError(f"{path}: {where}/misclassified lists images whose prediction was right")
    conf = run["misclassified/confidence"]
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ReportError(f"{path}: {where}/misclassified/confidence holds values outside 0..1")
    run["misclassified/index"] = index


def read_run(name, g, path, data):
    where = f"run {name}"
    run = {"name": name, "attrs": {}}
    limits = {"pca_components": (int, 0, data.values), "epochs": (int, 1, None), "global_batch": (int, 1, None),
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
    read_rank_timing(g, path, where, run)
    run["predictions"] = member(g, "predictions", path, where, "i", ndim=1)
    n = len(run["predictions"])
    if n == 0:
        raise ReportError(f"{path}: {where} has no predictions")
    in_classes(run["predictions"], data.k, path, f"{where}/predictions")
    run["confusion"] = member(g, "confusion", path, where, "i", shape=(data.k, data.k))
    run["support"] = member(g, "support", path, where, "i", shape=(data.k,))
    if run["confusion"].min() < 0 or run["confusion"].sum() != n or run["support"].sum() != n:
        raise ReportError(f"{path}: {where} confusion and support must count the {n} predictions")
    for metric in ("precision", "recall", "f1"):
        run[metric] = member(g, metric, path, where, "f", shape=(data.k,))
        if run[metric].min() < 0 or run[metric].max() > 1:
            raise ReportError(f"{path}: {where}/{metric} holds values outside 0..1")
    read_mistakes(g, path, where, run, data.k)
    if run["attrs"]["pca_components"] > 0:
        k = run["attrs"]["pca_components"]
        if "pca" not in g:
            raise ReportError(f"{path}: {where} used PCA but lacks the pca group")
        run["pca/mean"] = member(g, "pca/mean", path, where, "f", shape=(data.values,))
        run["pca/components"] = member(g, "pca/components", path, where, "f", shape=(k, data.values))
        run["pca/explained_variance_ratio"] = member(g, "pca/explained_variance_ratio", path, where, "f",
                                                     shape=(k,))
    return run


def read_results(path, data):
    """The file's attributes and its runs, each checked against the data's description."""
    try:
        with h5py.File(path, "r") as f:
            check_hard_links(f, "runs", path)
            if isinstance(f.get("runs"), h5py.Group):
                check_tree(f["runs"], "runs", path)
            if "runs" not in f or not isinstance(f["runs"], h5py.Group) or len(f["runs"]) == 0:
                raise ReportError(f"{path}: no /runs group (not a dptrain results file)")
            meta = {k: decode(v) for k, v in f.attrs.items() if k != "class_names"}
            runs = {name: read_run(name, g, path, data) for name, g in f["runs"].items()}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ReportError(f"{path}: damaged or not a dptrain results file ({e})")
    return meta, runs


def decode(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def read_data(path, n_test, data):
    """The training and test images and labels, checked against the results' description."""
    check_input_file(path, "data file", " (give it with --data)")
    try:
        with h5py.File(path, "r") as f:
            arrays = {}
            image = data.shape if data.shape[2] > 1 else data.shape[:2]
            for name, shape in (("train/images", image), ("train/labels", ()),
                                ("test/images", image), ("test/labels", ())):
                check_hard_links(f, name, path)
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise ReportError(f"{path}: missing dataset /{name}")
                values = f[name][()]
                if values.dtype == np.uint8 and values.shape[1:] == data.shape and data.shape[2] == 1:
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
        in_classes(arrays[f"{group}/labels"], data.k, path, f"/{group}/labels")
    if len(arrays["test/labels"]) != n_test:
        raise ReportError(f"{path}: {len(arrays['test/labels'])} test images, but the results hold "
                          f"{n_test} predictions (made with another data file?)")
    return arrays["train/images"], arrays["train/labels"], arrays["test/images"], arrays["test/labels"]


def read_table(path):
    """A reference table: its '#' header lines (one of them 'data set: NAME') and its CSV rows, each
    with a float 'accuracy' from the column fashion_test_accuracy or test_accuracy."""
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    header = [line.lstrip("# ").strip() for line in lines if line.startswith("#")]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    try:
        for row in rows:
            row["accuracy"] = float(row.get("test_accuracy") or row["fashion_test_accuracy"])
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: a row has no test accuracy ({e})")
    named = [h.split(":", 1)[1].strip() for h in header if h.lower().startswith("data set:")]
    if len(named) != 1:
        raise ReportError(f"{path}: needs one header line '# data set: NAME'")
    return {"path": path, "data_set": named[0], "rows": rows,
            "source": " ".join(h for h in header if not h.lower().startswith("data set:"))}


def read_references(data, folder=REFERENCES):
    """The tables of published results on the data set the files name, from data/*.csv: the
    submitted benchmarks (rows with a submitter) and the paper's baselines (rows with parameters).
    An empty dict when no table names this data set."""
    tables = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        table = read_table(path)
        if data.name and table["data_set"] == data.name:
            kind = "submitted" if table["rows"] and "submitter" in table["rows"][0] else "baselines"
            tables[kind] = table
    return tables
