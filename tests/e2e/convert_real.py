"""Fixture: convert the real Fashion-MNIST IDX files and check every byte of the result."""
import os

from common import *

out = DATA
os.makedirs(os.path.dirname(out), exist_ok=True)
must_succeed(run(["convert", "--source", IDX_SOURCE, "--out", out]))
with h5py.File(out, "r") as f:
    for group, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(f"{IDX_SOURCE}/{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(f"{IDX_SOURCE}/{prefix}-labels-idx1-ubyte.gz")
        check(f[group]["images"].dtype == np.uint8, "images are uint8")
        check(np.array_equal(f[group]["images"][:], images), f"/{group}/images differ from the IDX file")
        check(np.array_equal(f[group]["labels"][:], labels), f"/{group}/labels differ from the IDX file")
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["class_names"]]
    check(names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10, "class names")
print("ok: converted data equals the IDX files byte for byte")
