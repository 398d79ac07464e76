"""OpenBLAS's kernel set (src/kernels.c): the run line and the results file name it and who chose it;
where OpenBLAS fell back to a generic set on a CPU with AVX2 and FMA and OPENBLAS_CORETYPE is unset,
dptrain starts itself again with the Haswell kernels and says so in one line; OPENBLAS_CORETYPE set
by the user is kept. No CPU here makes OpenBLAS fall back, so DPTRAIN_TEST_OPENBLAS_CORE stands in for
the set it chose."""
import subprocess

import h5py

from common import *

dir = temp_dir()
with open("/proc/cpuinfo") as f:
    flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
fast_cpu = "avx2" in flags and "fma" in flags
base = ["train", "--data", DATA, "--model", "mlp:16", "--epochs", "1", "--no-tta", "--overwrite"]
ANNOUNCE = "OpenBLAS chose its generic Prescott kernels on this CPU, which has AVX2 and FMA: starting again with " \
           "OPENBLAS_CORETYPE=Haswell"


def kernels_run(name, ranks, unset=(), **variables):
    """One short run with these environment variables set and those in `unset` removed: its stdout
    and the results file's blas_kernels attribute."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"})
    env.update(variables)
    command = [DPTRAIN] + base + ["--out", f"{dir}/{name}.h5"]
    if ranks:
        command = [MPIEXEC, "-n", str(ranks), "--oversubscribe"] + command
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    check(out.returncode == 0, f"{name}: exit {out.returncode}: {out.stdout[-500:]} {out.stderr[-500:]}")
    with h5py.File(f"{dir}/{name}.h5", "r") as f:
        attribute = text_attr(f.attrs, "blas_kernels")
    line = next((l for l in out.stdout.splitlines() if l.startswith("kernels: OpenBLAS ")), None)
    check(line is not None, f"{name}: no kernels line in {out.stdout[:400]!r}")
    check(line == "kernels: OpenBLAS " + attribute, f"{name}: the run line {line!r} and the results {attribute!r} differ")
    return out.stdout, attribute




# As OpenBLAS chose, with nothing set: the set is named as OpenBLAS's choice and nothing restarts.
stdout, attribute = kernels_run("plain", 2, unset=("OPENBLAS_CORETYPE", "DPTRAIN_TEST_OPENBLAS_CORE"))
check(attribute.endswith("(chosen by OpenBLAS)"), f"plain run: {attribute!r}")
check("starting again" not in stdout, "a fast kernel set was replaced")

# A generic set on this CPU: started again with Haswell's, announced once for the job (not once per rank).
for ranks in (2, 0):
    stdout, attribute = kernels_run(f"generic{ranks}", ranks, unset=("OPENBLAS_CORETYPE",),
                                    DPTRAIN_TEST_OPENBLAS_CORE="Prescott")
    if fast_cpu:
        check(stdout.count(ANNOUNCE) == 1, f"{ranks} ranks: the new start announced {stdout.count(ANNOUNCE)} times")
        check(attribute == "Haswell (OPENBLAS_CORETYPE=Haswell set by dptrain: OpenBLAS had chosen its generic "
              "Prescott kernels)", f"{ranks} ranks: {attribute!r}")
    else:
        check("starting again" not in stdout and "lacks AVX2 or FMA" in attribute, attribute)

# OPENBLAS_CORETYPE set by the user is kept, even a generic set on a CPU that could do better.
stdout, attribute = kernels_run("user", 2, OPENBLAS_CORETYPE="Prescott", DPTRAIN_TEST_OPENBLAS_CORE="Prescott")
check("starting again" not in stdout, "OPENBLAS_CORETYPE set by the user was replaced")
check(attribute.startswith("Prescott (OPENBLAS_CORETYPE=Prescott, kept as set"), f"user's choice: {attribute!r}")
if fast_cpu:
    check("could run the faster Haswell kernels" in attribute, f"user's generic choice without a hint: {attribute!r}")
print(f"ok: kernels named, a generic set replaced ({'AVX2+FMA' if fast_cpu else 'no AVX2/FMA'}), the user's kept")
