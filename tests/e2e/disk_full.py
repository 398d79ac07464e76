"""Full and read-only disks, on small tmpfs mounts: a checkpoint that no longer fits ends every
rank with one line ("no space left on FOLDER while writing FILE"), no crash, no temporary file, the
previous checkpoint intact and resumable; results that cannot be written after training say how to
write them from the checkpoint, and that works; a read-only output folder is refused before any
training; convert and report.py into a full disk fail cleanly. Skipped (exit 77) where tmpfs
cannot be mounted. Every mount is removed, also when the test fails."""
import atexit
import shutil

from common import *

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "report.py")
dir = temp_dir()
mounts = []


def mount(name, size_kb, options=""):
    path = f"{dir}/{name}"
    os.makedirs(path, exist_ok=True)
    opts = f"size={size_kb}k" + (f",{options}" if options else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"SKIP: cannot mount tmpfs here ({result.stderr.strip()})")
        sys.exit(77)
    mounts.append(path)
    return path


@atexit.register
def unmount_all():
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", path], capture_output=True)
    shutil.rmtree(dir, ignore_errors=True)


def fill(path, leave_kb):
    """Fill the mount until about leave_kb KiB are free."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize - leave_kb * 1024
    if free > 0:
        with open(f"{path}/filler", "wb") as f:
            f.write(b"\0" * free)


def one_error(result, where):
    errors = [line for line in result.stderr.splitlines() if line.startswith(("dptrain: error:", "report: error:"))]
    check(result.returncode != 0, f"{where}: exit 0")
    check(len(errors) == 1, f"{where}: expected one error line: {result.stderr!r}")
    check(not any(s in result.stderr for s in ("Segmentation", "Signal", "Traceback", "HDF5-DIAG")),
          f"{where}: crash or library noise: {result.stderr!r}")
    return errors[0]


def no_temporaries(path):
    left = [n for n in os.listdir(path) if ".tmp." in n]
    check(not left, f"temporary files left in {path}: {left}")


BASE = ["train", "--data", DATA, "--quiet", "--model", "mlp:32"]

# 1. A checkpoint that fits once but not twice (the new one is written beside the old one).
probe = f"{dir}/probe.h5"
must_succeed(run(BASE + ["--epochs", "1", "--checkpoint", probe, "--out", f"{dir}/probe-r.h5"], ranks=2))
size_kb = os.path.getsize(probe) // 1024
disk = mount("ckpt", size_kb * 3 // 2)
ckpt, out = f"{disk}/c.h5", f"{dir}/r.h5"
result = run(BASE + ["--epochs", "3", "--checkpoint", ckpt, "--out", out], ranks=2, timeout=120)
line = one_error(result, "checkpoint on a full disk")
check(f"no space left on {disk} while writing {ckpt}" in line, line)
check(not os.path.exists(out), "results written after a failed checkpoint")
no_temporaries(disk)
with h5py.File(ckpt, "r") as f:
    check(f.attrs["epoch"] == 1, "the epoch-1 checkpoint must survive")
subprocess.run(["mount", "-o", "remount,size=4m", disk], check=True)
result = must_succeed(run(BASE + ["--epochs", "3", "--checkpoint", ckpt, "--resume", "--out", out], ranks=2))
with h5py.File(out, "r") as f:
    check(list(f["runs/raw/history/epoch"][()]) == [1, 2, 3], "resume after a full disk")
print(f"checkpoint ({size_kb} KiB) on a {size_kb * 3 // 2} KiB disk: {line}")

# 2. Results that cannot be written after training: the checkpoint keeps the run, and the
#    command the message gives writes the results from it.
full = mount("results", 512)
fill(full, 8)
ckpt2, out2 = f"{dir}/c2.h5", f"{full}/r.h5"
result = run(BASE + ["--epochs", "1", "--checkpoint", ckpt2, "--out", out2], ranks=2, timeout=120)
line = one_error(result, "results on a full disk")
check(f"no space left on {full} while writing {out2}" in line, line)
check(f"write the results from it with 'dptrain eval --checkpoint {ckpt2} --out FILE'" in line, line)
check(not os.path.exists(out2), "partial results")
no_temporaries(full)
must_succeed(run(["eval", "--checkpoint", ckpt2, "--data", DATA, "--out", f"{dir}/from-ckpt.h5"], ranks=2))
with h5py.File(DATA, "r") as f:
    check_results(f"{dir}/from-ckpt.h5", f["test/labels"][()], runs=["raw"])

# 3. A read-only output folder is refused before any training.
readonly = mount("readonly", 64, "ro")
for args in (BASE + ["--epochs", "1", "--out", f"{readonly}/r.h5"],
             BASE + ["--epochs", "1", "--checkpoint", f"{readonly}/c.h5", "--out", f"{dir}/r3.h5"]):
    result = run(args, ranks=2, timeout=60)
    line = one_error(result, "read-only folder")
    check(f"cannot create files in folder {readonly}: Read-only file system" in line, line)
    check("run raw" not in result.stdout, "training started before the output check")

# 4. convert and the report into a full disk.
result = run(["convert", "--out", f"{full}/data.h5"], timeout=60)
line = one_error(result, "convert on a full disk")
check(f"no space left on {full} while writing {full}/data.h5" in line, line)
no_temporaries(full)
result = subprocess.run(["/usr/bin/python3", REPORT, f"{dir}/from-ckpt.h5", "--data", DATA, "--out", f"{full}/report"],
                        capture_output=True, text=True, timeout=300)
line = one_error(result, "report on a full disk")
# The folder that is full is named, not the input results file (which it had blamed).
check(f"no space left on {full} while writing the report" in line and "from-ckpt.h5" not in line, line)
check(sorted(os.listdir(full)) == ["filler"], f"the report left {os.listdir(full)}")
print("ok")
