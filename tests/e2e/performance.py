"""The performance machinery: the --trace file (Chrome trace-event JSON of every rank's step
phases and layers), the profile lines, bucketed against fused gradient allreduce (the same
results to the bit on 2 ranks), and the BLAS thread count chosen per node."""
import json
import re
import subprocess

from common import *

dir = temp_dir()
STEPS = 235  # ceil(60000 / 256) per epoch: the augmented MLP steps 256 images by default
PHASES = ["stop check", "data", "forward", "backward", "allreduce wait", "optimizer"]

# --- trace and profile: 2 ranks, 2 epochs, checkpoints -----------------------------------------
trace = f"{dir}/trace.json"
result = must_succeed(run(["train", "--data", DATA, "--out", f"{dir}/r.h5", "--epochs", "2", "--model", "mlp",
                           "--checkpoint", f"{dir}/c.h5", "--trace", trace], ranks=2))
check(os.path.exists(trace) and not os.path.exists(trace + ".tmp"), "trace written through a temporary name")
with open(trace) as f:
    document = json.load(f)
events = document["traceEvents"]
check(document.get("displayTimeUnit") == "ms", "displayTimeUnit")
names = {(e["pid"], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"] == "process_name"}
check(names == {(0, "rank 0"), (1, "rank 1")}, f"one named process per rank, got {names}")
complete = [e for e in events if e["ph"] == "X"]
for e in complete:
    check(e["dur"] >= 0 and e["ts"] >= 0 and e["tid"] == 0, f"bad event {e}")
for rank in (0, 1):
    mine = [e for e in complete if e["pid"] == rank]
    count = lambda name: sum(1 for e in mine if e["name"] == name)
    for phase in PHASES:
        check(count(phase) == 2 * STEPS, f"rank {rank}: {count(phase)} '{phase}' events, expected {2 * STEPS}")
    check(count("evaluation") == 2 and count("checkpoint") == 2, f"rank {rank}: evaluation/checkpoint events")
    check(count("dense forward") == 3 * 2 * STEPS and count("dense backward") == 3 * 2 * STEPS,
          f"rank {rank}: one dense forward and backward event per dense layer and step")
    # Phases of a step follow each other in order; layers nest inside forward and backward.
    by_step = {}
    for e in mine:
        if e["cat"] in ("step", "layer"):
            by_step.setdefault((e["args"]["epoch"], e["args"]["step"]), []).append(e)
    check(len(by_step) == 2 * STEPS, f"rank {rank}: events of {len(by_step)} steps")
    for key in [(1, 1), (1, 200), (2, STEPS)]:
        step = by_step[key]
        phases = sorted((e for e in step if e["cat"] == "step"), key=lambda e: e["ts"])
        check([e["name"] for e in phases] == PHASES, f"rank {rank} step {key}: phases {[e['name'] for e in phases]}")
        for a, b in zip(phases, phases[1:]):
            check(a["ts"] + a["dur"] <= b["ts"] + 0.002, f"rank {rank} step {key}: {a['name']} overlaps {b['name']}")
        for layer in (e for e in step if e["cat"] == "layer"):
            parent = next(p for p in phases if p["name"] == layer["name"].split()[-1])
            check(parent["ts"] - 0.002 <= layer["ts"] and layer["ts"] + layer["dur"] <= parent["ts"] + parent["dur"] + 0.002,
                  f"rank {rank} step {key}: {layer['name']} outside {parent['name']}")
totals = document["otherData"]["ranks"]
check([t["rank"] for t in totals] == [0, 1], "otherData holds each rank's totals")
check(all(t["counts"]["optimizer"] == 2 * STEPS and t["dropped_events"] == 0 for t in totals), "totals")

line = next((l for l in result.stdout.splitlines() if l.startswith("profile (rank 0):")), None)
check(line is not None, "profile line printed")
shares = [float(x) for x in re.findall(r"(\d+\.\d)%", line.split(";")[0])]
check(len(shares) == len(PHASES) and abs(sum(shares) - 100) < 0.6, f"phase shares sum to 100: {line}")
check(re.search(r"matrix-product layers \(dense, conv\) \d+\.\d% of the step", line), line)
check(re.search(r"profile: 1\.01 MFLOP per training sample, \d+\.\d GFLOP/s over all ranks; evaluation "
                r"\d+\.\d s, checkpoints \d+\.\d s; peak memory \d+ MB per rank", result.stdout), result.stdout)
check(re.search(rf"trace of {len([e for e in complete if e['pid'] == 0])} events per rank \(rank 0\) written to ",
                result.stdout), "the trace line counts rank 0's events")

# --- bucketed and fused allreduce give the same run, to the bit, on 2 ranks --------------------
runs = {}
for bucket in ("0", "0.0001", "0.25"):
    out = f"{dir}/b{bucket}.h5"
    must_succeed(run(["train", "--data", DATA, "--out", out, "--model", "mlp", "--epochs", "1", "--bucket-mb",
                      bucket], ranks=2))
    with h5py.File(out, "r") as f:
        run_group = f["runs"][list(f["runs"])[0]]
        runs[bucket] = (run_group["predictions"][...], run_group["history"]["train_loss"][...])
for bucket in ("0.0001", "0.25"):
    check(np.array_equal(runs[bucket][0], runs["0"][0]) and np.array_equal(runs[bucket][1], runs["0"][1]),
          f"--bucket-mb {bucket} differs from the fused allreduce")

# --- BLAS threads: the node's cores shared among its ranks, unless told ------------------------
env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
cores = os.cpu_count()


def announced_threads(command):
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    check(out.returncode == 0, f"{command}: {out.stderr}")
    match = re.search(r"hosts? \((\d+) BLAS threads? each\)", out.stdout)
    check(match, f"no thread count in {out.stdout[:300]!r}")
    return int(match.group(1))


base = ["train", "--data", DATA, "--out", f"{dir}/t.h5", "--overwrite", "--model", "mlp", "--epochs", "1", "--quiet"]
two = announced_threads([MPIEXEC, "-n", "2", "--oversubscribe", "--bind-to", "none", DPTRAIN] + base)
check(two == max(1, cores // 2), f"2 ranks on {cores} cores: {two} threads each")
check(announced_threads([DPTRAIN] + base + ["--threads", "3"]) == 3, "--threads 3")
env["OPENBLAS_NUM_THREADS"] = "1"
check(announced_threads([DPTRAIN] + base) == 1, "OPENBLAS_NUM_THREADS=1 is followed")
print(f"ok: trace of {len(events)} events, bucketed = fused, thread counts")
