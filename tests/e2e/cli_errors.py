"""Bad input: one clear error line, a non-zero exit, no output file, existing files untouched."""
import time

from common import *

dir = temp_dir()
existing = f"{dir}/existing.h5"
with open(existing, "wb") as f:
    f.write(b"precious")
not_hdf5 = f"{dir}/not.h5"
with open(not_hdf5, "wb") as f:
    f.write(b"this is not HDF5")
empty = f"{dir}/empty.h5"
open(empty, "wb").close()
out = f"{dir}/out.h5"
truncated = f"{dir}/truncated.h5"
with open(DATA, "rb") as f:
    head = f.read(4096)
with open(truncated, "wb") as f:
    f.write(head)
not_checkpoint = f"{dir}/results-like.h5"
with h5py.File(not_checkpoint, "w") as f:
    f.attrs["dptrain_version"] = "0.1.0"


def describe(f):
    """The attributes a data file describes itself with (docs/your-own-data.md)."""
    f.attrs["class_names"] = [str(k) for k in range(10)]
    f.attrs["mirror_invariant"] = "no"


def zero_data(path, train_shape, test_shape):
    """A data file of zeros with the given image shapes."""
    with h5py.File(path, "w") as f:
        for group, shape in (("train", train_shape), ("test", test_shape)):
            f[f"{group}/images"] = np.zeros(shape, np.uint8)
            f[f"{group}/labels"] = np.zeros(shape[0], np.uint8)
        describe(f)
    return path


bad_shape = zero_data(f"{dir}/badshape.h5", (10, 28, 27), (5, 28, 28))
# A filter this HDF5 lacks (h5py's lzf), and dimensions no machine holds (chunked, never written).
lzf, huge = f"{dir}/lzf.h5", f"{dir}/huge.h5"
with h5py.File(lzf, "w") as f, h5py.File(huge, "w") as g:
    for group in ("train", "test"):
        f.create_dataset(f"{group}/images", data=np.zeros((20, 28, 28), np.uint8), compression="lzf")
        f[f"{group}/labels"] = np.zeros(20, np.uint8)
        g.create_dataset(f"{group}/images", shape=(2**40, 28, 28), dtype=np.uint8, chunks=(1, 28, 28))
        g.create_dataset(f"{group}/labels", shape=(2**40,), dtype=np.uint8, chunks=(1024,))
    describe(f)
    describe(g)

# Outputs that alias each other or an input, however spelt; outputs that are not regular files;
# inputs that would block (FIFO) or are folders; files used as folders; names too long.
os.makedirs(f"{dir}/a/sub")
fifo = f"{dir}/fifo"
os.mkfifo(fifo)
source, fifo_source = f"{dir}/source", f"{dir}/fifo-source"   # real IDX copies; FIFOs in their place
os.makedirs(source)
os.makedirs(fifo_source)
for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"):
    with open(f"{IDX_SOURCE}/{name}.gz", "rb") as src, open(f"{source}/{name}.gz", "wb") as dst:
        dst.write(src.read())
    os.mkfifo(f"{fifo_source}/{name}")
source_bytes = open(f"{source}/train-labels-idx1-ubyte.gz", "rb").read()
empty_test = zero_data(f"{dir}/emptytest.h5", (10, 28, 28), (0, 28, 28))
long_out = f"{dir}/" + "n" * 250 + ".h5"

cases = [
    (2, ["train", "--out", f"{dir}/a/r.h5", "--checkpoint", f"{dir}/a/./r.h5"], 1, "names the same file as --checkpoint"),
    (2, ["train", "--out", f"{dir}/a/r.h5", "--checkpoint", f"{dir}/a/sub/../r.h5"], 1, "names the same file as --checkpoint"),
    (2, ["train", "--out", f"{dir}/a/r.h5", "--trace", f"{dir}/a/./r.h5"], 1, "names the same file as --trace"),
    (2, ["train", "--checkpoint", f"{dir}/c.h5", "--trace", f"{dir}/a/../c.h5"], 1, "names the same file as --trace"),
    (2, ["train", "--checkpoint", f"{dir}/a/../existing.h5", "--resume", "--out", existing], 1, "names the same file as --checkpoint"),
    (1, ["eval", "--checkpoint", existing, "--out", f"{dir}/./existing.h5"], 1, "names the same file as --checkpoint"),
    (1, ["eval", "--checkpoint", existing, "--out", f"{dir}/a/../{os.path.basename(DATA)}", "--data", f"{dir}/{os.path.basename(DATA)}"], 1, "names the same file as --data"),
    (0, ["convert", "--source", source, "--out", f"{source}/train-labels-idx1-ubyte.gz"], 1, "names the IDX source"),
    (0, ["convert", "--source", source, "--out", f"{source}/../source/t10k-images-idx3-ubyte.gz"], 1, "names the IDX source"),
    (0, ["convert", "--source", existing], 1, "is not a folder"),
    (0, ["convert", "--source", fifo_source], 1, "is a named pipe (FIFO), not a regular file"),
    (2, ["train", "--checkpoint", "/dev/null"], 1, "--checkpoint /dev/null: is a character device, not a regular file"),
    (2, ["train", "--out", "/dev/null"], 1, "--out /dev/null: is a character device, not a regular file"),
    (2, ["train", "--trace", "/dev/null"], 1, "--trace /dev/null: is a character device, not a regular file"),
    (1, ["eval", "--checkpoint", existing, "--out", "/dev/null"], 1, "--out /dev/null: is a character device"),
    (0, ["convert", "--out", "/dev/null"], 1, "--out /dev/null: is a character device"),
    (2, ["train", "--out", fifo], 1, f"--out {fifo}: is a named pipe (FIFO)"),
    (2, ["train", "--data", fifo], 1, f"--data {fifo}: is a named pipe (FIFO), not a regular file"),
    (0, ["train", "--data", fifo], 1, f"--data {fifo}: is a named pipe (FIFO), not a regular file"),
    (1, ["eval", "--checkpoint", fifo], 1, f"--checkpoint {fifo}: is a named pipe (FIFO)"),
    (2, ["train", "--checkpoint", fifo, "--resume"], 1, f"--checkpoint {fifo}: is a named pipe (FIFO)"),
    (2, ["train", "--data", dir], 1, f"--data {dir}: is a folder, not a regular file"),
    (2, ["train", "--out", f"{existing}/r.h5"], 1, "existing.h5 is a file, not a folder"),
    (2, ["train", "--checkpoint", f"{existing}/sub/c.h5"], 1, "existing.h5 is a file, not a folder"),
    (2, ["train", "--out", long_out], 1, "the file name has 253 characters"),
    (2, ["train", "--data", empty_test], 1, "/test/images holds no images"),
    # (ranks, args, exit code, fragment of the one error line)
    (0, [], 2, "no command given"),
    (0, ["fly"], 2, "unknown command 'fly'"),
    (0, ["train", "--bogus"], 2, "--bogus: unknown flag"),
    (0, ["train", "--epochs", "0"], 2, "--epochs: 0 is out of range"),
    (0, ["train", "--epochs", "-3"], 2, "--epochs: -3 is out of range"),
    (0, ["train", "--epochs", "ten"], 2, "--epochs: expected a whole number, got 'ten'"),
    (0, ["train", "--batch", "0"], 2, "--batch: 0 is out of range"),
    (0, ["train", "--lr", "-1"], 2, "--lr: -1 is out of range"),
    (0, ["train", "--lr", "nan"], 2, "--lr: expected a number"),
    (2, ["train", "--pca", "785"], 1, "--pca 785: the images (28x28x1) have 784 values; give at most 784 components"),
    (0, ["train", "--pca", "0"], 2, "--pca: 0 is out of range 1..16777216"),
    (0, ["train", "--pca", "abc"], 2, "--pca: expected a whole number"),
    (0, ["train", "--pca", "-5"], 2, "--pca: -5 is out of range 1..16777216"),
    (0, ["compare", "--pca", "0,50", "--on-validation"], 2, "--on-validation: not a flag of 'compare'"),
    (0, ["train", "--model", "cnn", "--augment", "--no-tta", "--tta-shift", "1"], 2,
     "--tta-shift 1 needs --tta: the shifted views are test-time augmentation's"),
    (0, ["train", "--no-augment", "--tta-shift", "1"], 2, "--tta-shift 1 needs --tta"),
    (0, ["train", "--tta", "--tta-shift", "3"], 2, "--tta-shift: 3 is out of range 0..2"),
    (0, ["train", "--on-validation"], 2, "--on-validation: not a flag of 'train'"),
    (0, ["train", "--model", "cnn", "--augment-shift", "1"], 2,
     "--augment-shift 1 needs --augment: shifting is part of the training images' augmentation"),
    (0, ["train", "--augment", "--augment-shift", "5"], 2, "--augment-shift: 5 is out of range 0..4"),
    (2, ["compare", "--pca", "0,785", "--epochs", "1"], 1, "--pca 785: the images (28x28x1) have 784 values"),
    (0, ["train", "--dropout", "1"], 2, "--dropout: 1 is out of range"),
    (0, ["compare", "--pca", ""], 2, "--pca: empty list"),
    (0, ["compare", "--pca", "0,,50"], 2, "--pca: malformed list"),
    (0, ["compare", "--pca", "50,50"], 2, "--pca: 50 appears twice"),
    (0, ["compare"], 2, "--pca LIST is required"),
    (0, ["train", "--optimizer", "rmsprop"], 2, "--optimizer: unknown optimizer 'rmsprop'"),
    (0, ["train", "--epochs"], 2, "--epochs needs a value"),
    (0, ["convert", "--epochs", "3"], 2, "--epochs: not a flag of 'convert'"),
    (0, ["train", "stray"], 2, "unexpected argument 'stray'"),
    (2, ["train", "--model", "resnet"], 2, "--model: unknown model spec 'resnet'"),
    (0, ["train", "--model", "resnet"], 2, "--model: unknown model spec 'resnet'"),
    (0, ["train", "--model", "cnn", "--pca", "50"], 2, "a convolutional network needs the raw images, not principal components"),
    (0, ["compare", "--model", "cnn", "--pca", "0,50"], 2, "a convolutional network needs the raw images, not principal components"),
    (2, ["train", "--bogus"], 2, "--bogus: unknown flag"),
    (0, ["train", "--name", "a/b"], 2, "--name: 'a/b' has the character '/'"),
    (0, ["train", "--name", "."], 2, "--name: '.' is not a name"),
    (0, ["train", "--name", "x" * 64], 2, "has 64 characters (at most 63)"),
    (3, ["train", "--batch", "2"], 2, "--batch 2: the global batch must be at least the number of ranks (3)"),
    (2, ["train", "--data", f"{dir}/missing.h5"], 1, "missing.h5: No such file or directory; make the data file with 'dptrain convert'"),
    # A path of 3,000 characters: its middle gives way, the reason at the end is never cut.
    (2, ["train", "--data", f"{dir}/" + "d" * 200 + "/" + "e" * 2800 + ".h5"], 1,
     ".h5: No such file or directory; make the data file with 'dptrain convert'"),
    (0, ["train", "--stall-timeout", "0.2"], 2, "--stall-timeout 0.2: below 1 s"),
    (2, ["train", "--data", zero_data(f"{dir}/zeros.h5", (40, 28, 28), (10, 28, 28)), "--pca", "5"], 1,
     "PCA: the training images do not vary (every pixel is constant)"),
    (2, ["train", "--data", lzf], 1, "lzf.h5: /train/images is stored with HDF5 filter 32000 (lzf), which this HDF5 "
                                     "cannot decode"),
    (2, ["train", "--data", huge], 1, "huge.h5: /train/images: cannot allocate this rank's 549755813888 images"),
    (2, ["train", "--data", not_hdf5], 1, "not.h5: not an HDF5 file (it starts neither with HDF5's signature nor"),
    (2, ["train", "--data", empty], 1, "empty.h5: not an HDF5 file"),
    (2, ["train", "--out", "/nonexistent-folder/r.h5"], 1, "folder /nonexistent-folder does not exist"),
    (2, ["train", "--out", DATA], 1, f"--out {DATA}: names the same file as --data"),
    (2, ["train", "--validation", "60000"], 1, "holding out 60000 validation images leaves fewer training samples than ranks"),
    (0, ["convert", "--source", f"{dir}/nowhere"], 1, "nowhere: No such file or directory"),
    (2, ["train", "--data", truncated], 1, "truncated.h5: damaged: it has 4096 bytes where dptrain wrote"),
    (2, ["train", "--data", bad_shape], 1, "/train/images are 28x27x1, /test/images 28x28x1: both sets need one image shape"),
    (2, ["compare", "--pca", "0,50", "--data", bad_shape], 1, "both sets need one image shape"),
    (0, ["train", "--resume"], 2, "--resume needs --checkpoint FILE"),
    (0, ["train", "--checkpoint-every", "10"], 2, "--checkpoint-every needs --checkpoint FILE"),
    (0, ["train", "--checkpoint-every", "0", "--checkpoint", f"{dir}/c.h5"], 2, "--checkpoint-every: 0 is out of range"),
    (2, ["train", "--checkpoint", f"{dir}/absent.ckpt", "--resume"], 1, "absent.ckpt: No such file or directory"),
    (2, ["train", "--checkpoint", DATA], 1, "names the same file as --data"),
    (2, ["train", "--checkpoint", "/nonexistent-folder/c.h5"], 1, "--checkpoint /nonexistent-folder/c.h5: folder"),
    (0, ["eval"], 2, "eval: --checkpoint FILE is required"),
    (0, ["eval", "--epochs", "3", "--checkpoint", f"{dir}/c.h5"], 2, "--epochs: not a flag of 'eval'"),
    (1, ["eval", "--checkpoint", f"{dir}/absent.ckpt"], 1, "absent.ckpt: No such file or directory"),
    (1, ["eval", "--checkpoint", not_hdf5], 1, "not.h5: not an HDF5 file"),
    (1, ["eval", "--checkpoint", truncated], 1, "truncated.h5: damaged: it has 4096 bytes"),
    (1, ["eval", "--checkpoint", not_checkpoint], 1, "results-like.h5: has no dptrain seal (written by another program"),
    (0, ["convert", "--out", "/nonexistent-folder/d.h5"], 1, "folder /nonexistent-folder does not exist"),
    (0, ["train", "--bucket-mb", "-1"], 2, "--bucket-mb: -1 is out of range 0..1024"),
    (0, ["train", "--bucket-mb", "lots"], 2, "--bucket-mb: expected a number, got 'lots'"),
    (0, ["eval", "--bucket-mb", "1", "--checkpoint", f"{dir}/c.h5"], 2, "--bucket-mb: not a flag of 'eval'"),
    (0, ["train", "--threads", "0"], 2, "--threads: 0 is out of range 1..256"),
    (0, ["train", "--drift-check", "-1"], 2, "--drift-check: -1 is out of range"),
    (0, ["train", "--stall-timeout", "-5"], 2, "--stall-timeout: -5 is out of range"),
    (0, ["train", "--batch-per-rank", "64", "--batch", "256"], 2, "--batch-per-rank and --batch are exclusive"),
    (0, ["compare", "--pca", "0", "--batch-per-rank", "0"], 2, "--batch-per-rank: 0 is out of range"),
    (0, ["eval", "--stall-timeout", "soon"], 2, "--stall-timeout: expected a number, got 'soon'"),
    (0, ["train", "--trace"], 2, "--trace needs a value"),
    (2, ["train", "--trace", "/nonexistent-folder/t.json"], 1, "--trace /nonexistent-folder/t.json: folder /nonexistent-folder does not exist"),
    (2, ["train", "--trace", DATA], 1, "names the same file as --data"),
    (2, ["train", "--trace", out], 1, "names the same file as --trace"),
    (2, ["compare", "--pca", "0", "--trace", dir], 1, f"--trace {dir}: is a folder"),
]

for ranks, args, code, fragment in cases:
    full = list(args)
    if args and args[0] in ("train", "compare", "eval") and "--data" not in args:
        full += ["--data", DATA]
    if args and args[0] in ("train", "compare", "convert", "eval") and "--out" not in args:
        full += ["--out", out]
    started = time.time()
    result = run(full, ranks=ranks, timeout=60, env=NO_KILL_WAIT)
    if time.time() - started > 5:
        print(f"slow ({time.time() - started:.0f} s): {full}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain: error:")]
    where = f"dptrain {' '.join(full)} (ranks {ranks})"
    check(result.returncode != 0, f"{where}: exit 0")
    if ranks == 0:
        check(result.returncode == code, f"{where}: exit {result.returncode}, expected {code}")
    check(len(errors) == 1, f"{where}: expected one error line, got {result.stderr!r}")
    check(not any(noise in result.stderr for noise in ("HDF5-DIAG", "ADIO", "MPI-IO", "Traceback", "Signal")),
          f"{where}: library noise or a crash in {result.stderr!r}")
    check(fragment in errors[0], f"{where}: {errors[0]!r} lacks {fragment!r}")
    check(not os.path.exists(out), f"{where}: left an output file")
    check(open(existing, "rb").read() == b"precious", "an existing file was touched")
    leftovers = [n for n in os.listdir(dir) if ".tmp." in n]
    check(not leftovers, f"{where}: left temporary files {leftovers}")

import stat
check(stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is no longer a device")
check(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced")
check(open(f"{source}/train-labels-idx1-ubyte.gz", "rb").read() == source_bytes, "convert overwrote its source")
check(not os.path.exists(long_out), "long output name")
# Command-line errors and --help appear once, not once per rank.
result = run(["train", "--help"], ranks=2)
check(result.returncode == 0 and result.stdout.count("usage: dptrain train") == 1, "--help printed once")
# An existing results file survives a failed run that names it.
result = run(["train", "--data", not_hdf5, "--out", existing], ranks=2, env=NO_KILL_WAIT)
check(result.returncode != 0 and open(existing, "rb").read() == b"precious", "existing output intact")
# --help and --version work and exit 0.
for args in (["--help"], ["train", "--help"], ["--version"]):
    result = run(args)
    check(result.returncode == 0 and result.stdout, f"dptrain {' '.join(args)}")
print(f"ok: {len(cases)} bad inputs")
