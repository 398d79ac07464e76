"""Fuzzing the files dptrain reads: hundreds of single-byte changes and truncations of a checkpoint,
a data file and a results file, each read in a child process with a time limit. Every mutant must
end in exactly one error line and exit 1: no signal death (HDF5 1.10 segfaulted in H5Aread on one
changed metadata byte of a checkpoint), no hang, no output written. The seal (src/seal.c) is what
makes this hold: without it HDF5 parses the damaged metadata."""
import random
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from common import *

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from dptrain_report import results as report  # noqa: E402  (report.py's reader, run in forked children)

dir = temp_dir()
rng = random.Random(27)
_, data, _ = noisy_templates(5, 40, (600, 200))
ckpt, results = f"{dir}/ckpt.h5", f"{dir}/results.h5"
must_succeed(run(["train", "--data", data, "--model", "mlp:16", "--epochs", "1", "--no-augment", "--quiet",
                  "--checkpoint", ckpt, "--out", results]))


def mutants(path, count, truncations):
    """count single-byte changes (half of them in the first 8 KiB, where HDF5 keeps most of its
    metadata) and `truncations` cut lengths, each written to a file of its own."""
    original = open(path, "rb").read()
    out = []
    for i in range(count):
        limit = min(len(original), 8192) if i % 2 == 0 else len(original)
        position = rng.randrange(limit)
        changed = bytearray(original)
        changed[position] = (changed[position] + rng.randrange(1, 256)) % 256
        out.append((f"byte {position} = {changed[position]:#04x}", bytes(changed)))
    for _ in range(truncations):
        length = rng.randrange(len(original))
        out.append((f"truncated to {length} bytes", original[:length]))
    for n, (label, content) in enumerate(out):
        mutant = f"{path[:-3]}-m{n}.h5"
        with open(mutant, "wb") as f:
            f.write(content)
        out[n] = (label, mutant)
    return out


def check_refused(label, returncode, stderr, wrote, launcher=False):
    """Under mpiexec its own banner follows dptrain's line; alone, stderr is that line and nothing else."""
    errors = stderr.strip().splitlines()
    if launcher:
        errors = [line for line in errors if line.startswith("dptrain:")]
    check(returncode == 1, f"{label}: exit {returncode} (a negative exit is a signal): {stderr!r}")
    check(len(errors) == 1 and errors[0].startswith(("dptrain: error: ", "report: error: ")),
          f"{label}: not one error line: {stderr!r}")
    check(not wrote, f"{label}: wrote output")


def dptrain_case(args, out, label):
    try:
        result = run(args + ["--out", out], timeout=60)
    except subprocess.TimeoutExpired:
        fail(f"{label}: still running after 60 s (a hang)")
    check_refused(label, result.returncode, result.stderr, os.path.exists(out))


def fuzz_dptrain(kind, path, count, truncations, args_for):
    cases = mutants(path, count, truncations)
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(dptrain_case, args_for(mutant), f"{mutant}.out.h5", f"{kind} {label}")
                for label, mutant in cases]
        for job in jobs:
            job.result()
    print(f"{kind}: {len(cases)} mutants refused in one line each")


def fuzz_report(path, count, truncations):
    """report.read_results on each mutant in a forked child (the parent sees a signal death)."""
    for label, mutant in mutants(path, count, truncations):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.dup2(write_end, 2)
            signal.alarm(30)
            try:
                described = report.results_description(mutant) or report.data_file_description(data)
                report.read_results(mutant, described)
                os._exit(0)
            except report.ReportError as e:
                print(f"report: error: {e}", file=sys.stderr, flush=True)
                os._exit(1)
            except BaseException as e:   # anything else is a failure of the test
                print(f"unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                os._exit(2)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            stderr = f.read()
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        check_refused(f"results {label}", code, stderr, False)
    print(f"results: {count + truncations} mutants refused in one line each")


fuzz_report(results, 150, 30)
fuzz_dptrain("checkpoint", ckpt, 100, 20,
             lambda m: ["eval", "--checkpoint", m, "--data", data])
fuzz_dptrain("data", data, 60, 20,
             lambda m: ["eval", "--checkpoint", ckpt, "--data", m])
# A resume on 2 ranks reads the checkpoint too: a few mutants through that path.
for label, mutant in mutants(ckpt, 4, 2):
    out = f"{mutant}.out.h5"
    result = run(["train", "--data", data, "--model", "mlp:16", "--epochs", "2", "--no-augment", "--quiet",
                  "--checkpoint", mutant, "--resume", "--out", out], ranks=2, timeout=60, env=NO_KILL_WAIT)
    check_refused(f"resume {label}", result.returncode, result.stderr, os.path.exists(out), launcher=True)
print("ok")
