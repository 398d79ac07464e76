"""Checkpoint integrity: damage anywhere in a checkpoint (its arrays or its attributes) is refused
with one line naming what is damaged; a checkpoint whose scalars were changed and re-signed is
refused by the range checks against the run; a resume on other data is refused; a stop signal
sent to one rank is reported as that signal; resuming a finished run says so and writes its
results. Every refusal leaves the checkpoint and any existing output untouched."""
import shutil
import signal
import struct
import time
import zlib

from common import *

dir = temp_dir()
BASE = ["train", "--data", DATA, "--epochs", "2", "--quiet", "--model", "mlp:32"]
ckpt, out = f"{dir}/c.h5", f"{dir}/r.h5"
must_succeed(run(BASE + ["--checkpoint", ckpt, "--out", out], ranks=2))

# The attribute table of src/checkpoint.c, in its order: (name, kind) with kind s(tring),
# i(nteger, stored as int64), d(ouble) or f(loat, stored as double, held as float).
FIELDS = [("model", "s"), ("optimizer", "s"), ("schedule", "s"), ("name", "s"), ("compress", "s"),
          ("pca_components", "i"), ("global_batch", "i"), ("ranks", "i"), ("units", "i"),
          ("deterministic", "i"), ("memory_budget", "i"), ("epochs", "i"),
          ("validation", "i"), ("augment", "i"), ("augment_shift", "i"), ("tta", "i"), ("tta_shift", "i"), ("flip", "i"), ("seed", "i"), ("epoch", "i"),
          ("step", "i"), ("opt_step", "i"), ("best_epoch", "i"), ("param_count", "i"),
          ("buffer_count", "i"), ("powersgd_q_count", "i"), ("lr", "d"), ("momentum", "d"), ("weight_decay", "d"), ("warmup", "d"),
          ("dropout", "d"), ("label_smoothing", "d"), ("erase", "d"), ("train_seconds", "d"), ("epoch_seconds", "d"),
          ("best_val", "d"), ("data_image_height", "i"), ("data_image_width", "i"), ("data_image_channels", "i"),
          ("data_classes", "i"), ("data_train_samples", "i"),
          ("data_test_samples", "i"), ("data_crc32_train_images", "i"), ("data_crc32_train_labels", "i"),
          ("data_crc32_test_images", "i"), ("data_crc32_test_labels", "i")]


def resign(f):
    """Recompute attributes_crc32 as dptrain does, so that only the range checks can object."""
    crc = 0
    for name, kind in FIELDS:
        value = f.attrs[name]
        if kind == "s":
            packed = (value if isinstance(value, str) else value.decode()).encode() + b"\0"
        elif kind == "i":
            packed = struct.pack("<q", int(value))
        else:
            packed = struct.pack("<d", float(np.float32(value)) if kind == "f" else float(value))
        crc = zlib.crc32(packed, zlib.crc32(name.encode() + b"\0", crc))
    f.attrs["attributes_crc32"] = np.int64(crc)


def variant(name, change, sign=False):
    path = f"{dir}/{name}.h5"
    shutil.copy(ckpt, path)
    with edit_h5(path) as f:
        change(f)
        if sign:
            resign(f)
    return path


def flip_bytes(dataset):
    def change(f):
        values = f[dataset][()]
        raw = values.view(np.uint8).reshape(-1)
        raw[1000:1064] ^= 0xFF
        f[dataset][...] = values
    return change


def zero_stream(name):
    """A unit's random stream set to the all-zero state, its checksum recomputed: only the state's
    own check can object (the resume had spun at 100% CPU, deaf to SIGTERM)."""
    def change(f):
        values = f[name][()]
        values[0] = 0
        f[name][...] = values
        f.attrs[f"crc32_{name}"] = np.int64(zlib.crc32(values.astype("<u8").tobytes()))
    return change


def set_norm(name, value, sign):
    """A channel's input normalisation changed; its checksum recomputed when sign is set."""
    def change(f):
        values = f[name][()]
        values[0] = value
        f[name][...] = values
        if sign:
            f.attrs[f"crc32_{name}"] = np.int64(zlib.crc32(values.astype("<f4").tobytes()))
    return change


def set_attr(name, value):
    def change(f):
        f.attrs[name] = value
    return change


# The unchanged checkpoint re-signed by the helper still loads: the helper matches dptrain.
same = variant("resigned", lambda f: None, sign=True)
must_succeed(run(["eval", "--checkpoint", same, "--data", DATA, "--out", f"{dir}/e.h5"], ranks=1))

cases = [
    (variant("flip_opt", flip_bytes("opt_first")), "opt_first fails its checksum"),
    (variant("flip_params", flip_bytes("params")), "params fails its checksum"),
    (variant("flip_history", lambda f: f["history"].__setitem__((0, 1), 5.0)), "history fails its checksum"),
    (variant("step", set_attr("step", 10**12)), "its attributes fail their checksum"),
    (variant("nan_norm", set_norm("norm_std", float("nan"), False)), "norm_std fails its checksum"),
    (variant("no_crc", lambda f: f.attrs.__delitem__("crc32_params")), "no attribute crc32_params"),
    (variant("step_signed", set_attr("step", 10**12), sign=True), "but an epoch has 235 steps"),  # 60000 / 256
    (variant("opt_step_signed", set_attr("opt_step", 5), sign=True), "5 optimizer steps at epoch 3, step 1 (expected 470)"),  # 2 x 235
    (variant("nan_signed", set_norm("norm_std", float("nan"), True)), "channel 0: mean"),
    (variant("zero_signed", set_norm("norm_std", 0.0, True)), "standard deviation 0"),
    (variant("channels_signed", set_attr("data_image_channels", 0), sign=True), "image shape 28x28x0"),
    (variant("classes_signed", set_attr("data_classes", 1), sign=True), "classes = 1"),
    (variant("epoch_signed", set_attr("epoch", 7), sign=True), "epoch 7 of 2"),
    (variant("ranks_signed", set_attr("ranks", 0), sign=True), "ranks = 0"),
    (variant("units_signed", set_attr("deterministic", 2), sign=True), "units = 2, deterministic = 2"),
    (variant("budget_signed", set_attr("memory_budget", -8), sign=True), "memory_budget = -8"),
    (variant("tta_shift_signed", set_attr("tta_shift", 3), sign=True), "tta_shift 3"),
    (variant("augment_shift_signed", set_attr("augment_shift", 5), sign=True), "augment_shift 5"),
    (variant("zero_rng_augment", zero_stream("rng_augment")), "random stream has the all-zero state"),
    (variant("zero_rng_dropout", zero_stream("rng_dropout")), "random stream has the all-zero state"),
    (variant("old_format", set_attr("format_version", 2)), "checkpoint format version 2, this dptrain reads version 11"),
]
for path, fragment in cases:
    before = open(path, "rb").read()
    for label, args, ranks in (
            ("resume", BASE + ["--checkpoint", path, "--resume", "--out", f"{dir}/bad-eval.h5"], 2),
            ("eval", ["eval", "--checkpoint", path, "--data", DATA, "--out", f"{dir}/bad-eval.h5"], 1)):
        if label == "eval" and "steps" in fragment:
            continue   # eval does not continue the run: its position does not matter to it
        result = run(args, ranks=ranks, timeout=60, env=NO_KILL_WAIT)
        errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
        print(f"{os.path.basename(path)} {label}: exit {result.returncode}: {errors}")
        check(result.returncode != 0, f"{path} {label}: exit 0")
        check(len(errors) == 1 and fragment in errors[0], f"{path} {label}: {result.stderr!r} lacks {fragment!r}")
        check(not os.path.exists(f"{dir}/bad-eval.h5"), f"{path} {label}: wrote results")
    check(open(path, "rb").read() == before, f"{path}: the refused checkpoint was changed")
with h5py.File(out, "r") as f:
    check(f["runs/raw/history/epoch"].shape == (2,), "the existing results were touched")

# A resume on other data: all-zero images with the same labels, then a file with fewer images.
zeros, fewer = f"{dir}/zeros.h5", f"{dir}/fewer.h5"
with h5py.File(DATA, "r") as f, h5py.File(zeros, "w") as z, h5py.File(fewer, "w") as w:
    for group in ("train", "test"):
        z[f"{group}/images"] = np.zeros_like(f[f"{group}/images"][()])
        z[f"{group}/labels"] = f[f"{group}/labels"][()]
        w[f"{group}/images"] = f[f"{group}/images"][:5000]
        w[f"{group}/labels"] = f[f"{group}/labels"][:5000]
    for copy in (z, w):
        for key, value in f.attrs.items():
            copy.attrs[key] = value
for data, fragment in ((zeros, "trained on other data: the training images of"), (fewer, "has 5000 and 5000")):
    args = ["train", "--data", data, "--epochs", "2", "--quiet", "--model", "mlp:32", "--checkpoint", ckpt,
            "--resume", "--out", f"{dir}/other.h5"]
    result = run(args, ranks=2, timeout=60, env=NO_KILL_WAIT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
    check(result.returncode != 0 and len(errors) == 1 and "trained on" in errors[0] and fragment in errors[0],
          f"resume on {data}: {result.stderr!r}")
    check(not os.path.exists(f"{dir}/other.h5"), "a refused resume wrote results")

# Resuming the finished run says so, trains nothing, and writes the same results.
result = must_succeed(run(BASE + ["--checkpoint", ckpt, "--resume", "--out", f"{dir}/again.h5"], ranks=2))
check("holds the finished run (2 of 2 epochs): nothing to train" in result.stdout, result.stdout)
check(not epoch_lines(result.stdout) and "resumed from" not in result.stdout, "a finished run trained again")
with h5py.File(out, "r") as a, h5py.File(f"{dir}/again.h5", "r") as b:
    check(np.array_equal(a["runs/raw/predictions"][()], b["runs/raw/predictions"][()]), "finished run's predictions")

# The parameter hash: printed, stored, the same for the same run, different for another seed.
hashes = []
for seed, name in ((1, "h1"), (1, "h2"), (2, "h3")):
    result = must_succeed(run(["train", "--data", DATA, "--epochs", "1", "--quiet", "--model", "mlp:32", "--seed",
                               str(seed), "--out", f"{dir}/{name}.h5"], ranks=2))
    printed = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("parameter hash ")]
    with h5py.File(f"{dir}/{name}.h5", "r") as f:
        stored = int(f["runs/raw"].attrs["parameter_hash"])
    check(len(printed) == 1 and int(printed[0], 16) == stored, f"hash printed {printed}, stored {stored:016x}")
    hashes.append(stored)
check(hashes[0] == hashes[1] and hashes[0] != hashes[2], f"parameter hashes {hashes}")

# The drift guard: one flipped bit on one rank is found at the next check and named; with the
# guard off the same fault goes unseen (so it is the guard that finds it).
for ranks in (2, 3):
    start = time.time()
    result = run(["train", "--data", DATA, "--epochs", "2", "--quiet", "--model", "mlp:32", "--drift-check", "10",
                  "--out", f"{dir}/drift.h5"], ranks=ranks, timeout=60, env={"DPTRAIN_FAULT": "flip@1:1:15"})
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
    check(result.returncode != 0 and len(errors) == 1, f"drift on {ranks} ranks: {result.stderr!r}")
    check("rank 1: its parameters diverged from the other ranks' by epoch 1, step 20" in errors[0], errors[0])
    check(not os.path.exists(f"{dir}/drift.h5") and time.time() - start < 60, "drift: results or too slow")
result = run(["train", "--data", DATA, "--epochs", "1", "--quiet", "--model", "mlp:32", "--drift-check", "0",
              "--out", f"{dir}/drift.h5"], ranks=2, timeout=60, env={"DPTRAIN_FAULT": "flip@1:1:15"})
check(result.returncode == 0, f"with the guard off the run completes: {result.stderr!r}")

# SIGTERM to one rank only: every rank stops at the same step and the message names the signal.
stop_ckpt = f"{dir}/stop.h5"
command = [MPIEXEC, "-n", "2", "--oversubscribe", DPTRAIN, "train", "--data", DATA, "--epochs", "20", "--quiet",
           "--checkpoint", stop_ckpt, "--out", f"{dir}/stopped.h5"]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
deadline = time.time() + 60
while not os.path.exists(stop_ckpt) and time.time() < deadline and p.poll() is None:
    time.sleep(0.05)
pids = subprocess.run(["pgrep", "-f", f"^{DPTRAIN} .*stop.h5"], capture_output=True, text=True).stdout.split()
check(len(pids) == 2, f"expected 2 ranks, found {pids}")
os.kill(int(sorted(pids, key=int)[-1]), signal.SIGTERM)
stdout, stderr = p.communicate(timeout=60)
check(p.returncode == 3 and "stopped by signal 15" in stderr, f"SIGTERM to one rank: {p.returncode} {stderr!r}")
print("ok")
