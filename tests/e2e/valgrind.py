"""valgrind memcheck on a one-epoch, one-rank training (on a small data set the test writes):
no error of any kind, leaks included, may have a frame in dptrain's own code. Open MPI's own
exit-time leaks (34 on Debian 12) are outside it and are counted, not failed."""
import shutil
import xml.etree.ElementTree as ET

from common import *

if not shutil.which("valgrind"):
    fail("valgrind is not installed (scripts/setup.sh installs it)")
dir = temp_dir()
rng = np.random.default_rng(5)
for prefix, n in (("train", 600), ("t10k", 200)):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    write_idx(f"{dir}/{prefix}-images-idx3-ubyte.gz", images)
    write_idx(f"{dir}/{prefix}-labels-idx1-ubyte.gz", labels)
data = f"{dir}/small.h5"
xml = f"{dir}/memcheck.xml"
must_succeed(run(["convert", "--source", dir, "--out", data]))
command = ["valgrind", "--tool=memcheck", "--leak-check=full", "--xml=yes", f"--xml-file={xml}",
           DPTRAIN, "train", "--data", data, "--out", f"{dir}/r.h5", "--model", "mlp", "--epochs", "1", "--batch", "50",
           "--pca", "20", "--validation", "100", "--checkpoint", f"{dir}/c.h5", "--quiet"]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
# valgrind 3.19 cannot decode AVX-512: on such a CPU OpenBLAS must use its AVX2 kernels (dptrain
# itself is compiled without AVX-512).
if "avx512f" in open("/proc/cpuinfo").read():
    env["OPENBLAS_CORETYPE"] = "Haswell"
result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
check(result.returncode == 0, f"training under valgrind failed: {result.stderr[-2000:]}")
errors = ET.parse(xml).getroot().findall("error")


def responsible_object(frames):
    """The first frame outside libc and valgrind's allocator: who made the bad access or the
    leaked allocation. Frames of plugins unloaded before exit have no object and are skipped."""
    for f in frames:
        obj = f.findtext("obj")
        if not obj or "vgpreload" in obj or os.path.basename(obj).startswith(("libc.so", "ld-linux")):
            continue
        return os.path.realpath(obj)
    return None


binary = os.path.realpath(DPTRAIN)
ours = []
for e in errors:
    frames = e.find("stack").findall("frame") if e.find("stack") is not None else []
    if responsible_object(frames) == binary:
        ours.append(e)
        print("error in dptrain:", e.findtext("kind"), e.findtext("what") or e.find("xwhat").findtext("text"))
        for f in frames[:8]:
            print("   ", f.findtext("fn"), f.findtext("file"), f.findtext("line"))
kinds = sorted({e.findtext("kind") for e in errors})
print(f"valgrind: {len(errors)} reports in all ({', '.join(kinds) or 'none'}), {len(ours)} in dptrain's code")
check(not ours, "valgrind found errors in dptrain's own code")
print("ok")
