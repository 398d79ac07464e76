"""A user's files are never lost to a run: an existing checkpoint, results or trace is refused without
--overwrite (a checkpoint with a hint to --resume); two runs on one output cannot both run (the second
names the first's pid and host); a replaced file keeps its mode, a new one follows the umask; a
temporary file left by a killed writer is removed by the next run, and said; convert never writes over
a candidate IDX source; links inside a data file are refused; the report never takes a folder it did
not write. Each refusal is one line, exit non-zero, and leaves every file as it was."""
import shutil
import stat
import time

from common import *

folder, data, labels = noisy_templates(7, 40, (1200, 300))
dir = temp_dir()
TINY = ["train", "--data", data, "--model", "mlp:16", "--no-augment", "--quiet"]
REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "report.py")


def refused(args, fragment, ranks=0, before=None):
    """One error line holding fragment, a non-zero exit, and the files in `before` unchanged."""
    before = {path: open(path, "rb").read() for path in (before or [])}
    result = run(args, ranks=ranks, timeout=120, env=NO_KILL_WAIT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dptrain:")]
    check(result.returncode != 0 and len(errors) == 1 and fragment in errors[0],
          f"{args}: expected one error with {fragment!r}, got exit {result.returncode}: {result.stderr!r}")
    for path, content in before.items():
        check(open(path, "rb").read() == content, f"{path} was changed by a refused run")
    return errors[0]


# An unfinished run's checkpoint: a 3-epoch run whose rank dies in epoch 2 (the fault hook).
ckpt, out = f"{dir}/run.ckpt.h5", f"{dir}/run.h5"
# --checkpoint-sync: the death comes right after epoch 1's checkpoint, which a background write might
# not have finished (docs/checkpoints.md); this test needs that checkpoint on disk.
died = run(TINY + ["--epochs", "3", "--checkpoint", ckpt, "--checkpoint-sync", "--out", f"{dir}/died.h5"],
           env={"DPTRAIN_FAULT": "exit@0:2"})
check(died.returncode != 0 and os.path.exists(ckpt) and not os.path.exists(f"{dir}/died.h5"), "the unfinished run")
refused(TINY + ["--epochs", "3", "--checkpoint", ckpt, "--out", f"{dir}/new.h5"],
        "already holds a run's checkpoint: add --resume to continue it", before=[ckpt])
check(not os.path.exists(f"{dir}/new.h5"), "a refused run wrote results")
must_succeed(run(TINY + ["--epochs", "3", "--checkpoint", ckpt, "--resume", "--out", out]))
# The same for --out and --trace, which hold the previous run's results.
refused(TINY + ["--epochs", "1", "--out", out], f"--out {out}: already exists (a previous run's output)",
        before=[out])
trace = f"{dir}/trace.json"
with open(trace, "w") as f:
    f.write("{}")
refused(TINY + ["--epochs", "1", "--out", f"{dir}/t.h5", "--trace", trace], "--trace", before=[trace])
refused(["eval", "--checkpoint", ckpt, "--data", data, "--out", out], "already exists", before=[out, ckpt])
# --overwrite replaces them.
must_succeed(run(TINY + ["--epochs", "1", "--checkpoint", ckpt, "--out", out, "--overwrite"]))

# A replaced file keeps its mode; a new file's mode comes from the umask.
os.chmod(out, 0o600)
must_succeed(run(TINY + ["--epochs", "1", "--out", out, "--overwrite"]))
check(stat.S_IMODE(os.stat(out).st_mode) == 0o600, f"mode after replace: {oct(os.stat(out).st_mode)}")
# ... and its owner (the suite runs as root, which may give a file to another user).
if os.geteuid() == 0:
    os.chown(out, 65534, 65534)
    must_succeed(run(TINY + ["--epochs", "1", "--out", out, "--overwrite"]))
    check((os.stat(out).st_uid, os.stat(out).st_gid) == (65534, 65534), f"owner after replace: {os.stat(out)}")
for mask, mode in ((0o077, 0o600), (0o022, 0o644)):
    old = os.umask(mask)
    try:
        path = f"{dir}/umask{mask:o}.h5"
        must_succeed(run(TINY + ["--epochs", "1", "--out", path]))
    finally:
        os.umask(old)
    check(stat.S_IMODE(os.stat(path).st_mode) == mode, f"umask {mask:o}: mode {oct(os.stat(path).st_mode)}")

# Two runs on one output at once: the second is refused, naming the first's pid and host, and the
# first finishes; the lock file goes with it.
shared = f"{dir}/shared.h5"
first = subprocess.Popen([DPTRAIN] + TINY + ["--epochs", "30", "--model", "mlp:256,256", "--out", shared],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
deadline = time.time() + 30
while not os.path.exists(shared + ".lock") and time.time() < deadline:
    time.sleep(0.05)
line = refused(TINY + ["--epochs", "1", "--out", shared], f"another run is writing it (pid {first.pid} on {HOST}")
first.terminate()
first.communicate(timeout=60)
check(not os.path.exists(shared + ".lock"), "the lock file outlived its run")
print(line)

# A temporary file left by a writer that is gone is removed and said; one of a live process stays.
dead_pid = 4194304 + 7   # above Linux's largest pid: no such process
stale, live = f"{out}.tmp.{HOST}.{dead_pid}", f"{out}.tmp.{HOST}.{os.getpid()}"
for path in (stale, live):
    with open(path, "wb") as f:
        f.write(b"x" * 1000)
result = must_succeed(run(TINY + ["--epochs", "1", "--out", out, "--overwrite"]))
check(not os.path.exists(stale) and f"removed {stale}, a temporary file left by process {dead_pid}" in result.stdout,
      f"stale temporary: {result.stdout!r}")
check(os.path.exists(live), "a live process's temporary file was removed")
os.remove(live)

# convert never writes over a candidate source: the plain name beside a .gz, or the .gz itself.
for name in ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte"):
    sources = sorted(os.path.join(folder, n) for n in os.listdir(folder) if "idx" in n)
    refused(["convert", "--source", folder, "--out", f"{folder}/{name}"], "names the IDX source", before=sources)
    check(sorted(os.path.join(folder, n) for n in os.listdir(folder) if "idx" in n) == sources, "sources changed")

# Links inside a data file: /test pointing at /train, or /train in another file, are refused by
# dptrain and by the report.
linked = {}
for kind in ("soft", "external"):
    path = f"{dir}/{kind}.h5"
    with h5py.File(data, "r") as src, h5py.File(path, "w") as f:
        src.copy("train", f)
        f.attrs["class_names"] = src.attrs["class_names"]
        f["test"] = h5py.SoftLink("/train") if kind == "soft" else h5py.ExternalLink(data, "/test")
    linked[kind] = path
    refused(["train", "--data", path, "--model", "mlp:16", "--epochs", "1", "--out", f"{dir}/l.h5"],
            f"/test is a{'n' if kind == 'external' else ''} {kind} link")
    result = subprocess.run(["/usr/bin/python3", REPORT, out, "--data", path, "--out", f"{dir}/l_report"],
                            capture_output=True, text=True)
    check(result.returncode == 1 and f"/test is a" in result.stderr and "link" in result.stderr,
          f"report on {kind} links: {result.stderr!r}")

# The report never takes a folder it did not write: a user's own REPORT.md and pca.png stay.
mine = f"{dir}/my-folder"
os.makedirs(mine)
for name in ("REPORT.md", "pca.png"):
    with open(f"{mine}/{name}", "w") as f:
        f.write("my own notes\n")
result = subprocess.run(["/usr/bin/python3", REPORT, out, "--data", data, "--out", mine], capture_output=True,
                        text=True)
check(result.returncode == 1 and "is not a report folder" in result.stderr, f"foreign folder: {result.stderr!r}")
check(sorted(os.listdir(mine)) == ["REPORT.md", "pca.png"] and
      all(open(f"{mine}/{n}").read() == "my own notes\n" for n in ("REPORT.md", "pca.png")), "the user's files changed")
print("ok")
