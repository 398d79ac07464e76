"""Print scripts/bench.sh's table from the files of one benchmark run (argument: its folder)."""
import json
import os
import re
import sys

import h5py

work = sys.argv[1]
figures = {}
with open(f"{work}/figures.txt") as f:
    for line in f:
        key, value = line.split()
        figures[key] = value
peak = float(figures["sgemm_peak_gflops"])
STEP_PHASES = ["data", "forward", "backward", "allreduce wait", "optimizer", "stop check"]
PRODUCTS = ["dense forward", "dense backward", "conv forward", "conv backward"]


def run_figures(name):
    with h5py.File(f"{work}/{name}.h5", "r") as f:
        group = f["runs"][list(f["runs"])[0]]
        history = group["history"]
        seconds = history["seconds"][...]
        samples = (history["samples_per_second"][...] * seconds).sum()
        ranks = int(group.attrs["ranks"])
    log = open(f"{work}/{name}.log").read()
    mflop = float(re.search(r"profile: (\d+\.\d+) MFLOP per training sample", log).group(1))
    memory = int(re.search(r"peak memory (\d+) MB per rank", log).group(1))
    threads = int(re.search(r"hosts? \((\d+) BLAS threads? each\)", log).group(1))
    with open(f"{work}/{name}.json") as f:
        totals = json.load(f)["otherData"]["ranks"][0]
    phase = {p: totals["seconds"].get(p, 0.0) for p in STEP_PHASES}
    step_seconds = sum(phase.values())
    steps = totals["counts"]["optimizer"]
    rate = samples / seconds.sum()
    return {
        "rate": rate, "ranks": ranks, "threads": threads, "memory": memory,
        "step_ms": 1e3 * step_seconds / steps,
        "shares": {p: 100 * phase[p] / step_seconds for p in STEP_PHASES},
        "products": 100 * sum(totals["seconds"].get(p, 0.0) for p in PRODUCTS) / step_seconds,
        "wait_ms": 1e3 * phase["allreduce wait"] / steps,
        "gflops": rate * mflop * 1e-3,
        "cores": ranks * threads,
    }


print(f"\ndptrain benchmark ({os.uname().nodename}, {os.cpu_count()} cores; OpenBLAS kernels "
      f"{figures['openblas_core']}, single-core cblas_sgemm peak {peak:.1f} GFLOP/s at n={figures['sgemm_peak_size']}); "
      f"batch 128, Adam, dropout 0.1")
header = (f"{'model':5} {'ranks x threads':16} {'allreduce':9} {'samples/s':>10} {'ms/step':>8} {'data':>6} "
          f"{'fwd':>6} {'bwd':>6} {'wait':>6} {'optim':>6} {'GEMM':>6} {'GFLOP/s':>8} {'% peak':>7} {'MB/rank':>8}")
print(header)
print("-" * len(header))
results = {}
for model in ("mlp", "cnn"):
    for name, label, mode in ((f"{model}_1rank", "1 x 1", "-"), (f"{model}_2ranks", "2 x 1", "fused"),
                              (f"{model}_2ranks_bucketed", "2 x 1", "bucketed"),
                              (f"{model}_2ranks_weak", "2 x 1 weak", "fused"),
                              (f"{model}_2ranks_bf16", "2 x 1", "bf16"),
                              (f"{model}_2ranks_psgd", "2 x 1", "psgd:4"),
                              (f"{model}_2ranks_deterministic", "2 x 1", "exact"),
                              (f"{model}_2ranks_sharded", "2 x 1", "sharded"),
                              (f"{model}_1rank_2threads", "1 x 2", "-")):
        r = results[name] = run_figures(name)
        s = r["shares"]
        print(f"{model:5} {label:16} {mode:9} {r['rate']:10.0f} {r['step_ms']:8.3f} {s['data']:5.1f}% "
              f"{s['forward']:5.1f}% {s['backward']:5.1f}% {s['allreduce wait'] + s['stop check']:5.1f}% "
              f"{s['optimizer']:5.1f}% {r['products']:5.1f}% {r['gflops']:8.1f} "
              f"{100 * r['gflops'] / (peak * r['cores']):6.1f}% {r['memory']:8d}")
print("(weak = --batch-per-rank 128: a global batch of 256 on 2 ranks; psgd:4 = --compress powersgd:4; exact = --deterministic; sharded = --shard-optimizer; "
      "shares of rank 0's step time; wait = allreduce wait + the per-step stop check; GEMM = the dense and "
      "convolution layers, im2col included; % peak = of the sgemm peak times the cores used)")

print()
for model in ("mlp", "cnn"):
    one, fused, bucketed = results[f"{model}_1rank"], results[f"{model}_2ranks"], results[f"{model}_2ranks_bucketed"]
    threads = results[f"{model}_1rank_2threads"]
    hidden = 100 * (1 - bucketed["wait_ms"] / fused["wait_ms"]) if fused["wait_ms"] > 0 else 0.0
    weak, bf16, psgd = results[f"{model}_2ranks_weak"], results[f"{model}_2ranks_bf16"], results[f"{model}_2ranks_psgd"]
    exact, sharded = results[f"{model}_2ranks_deterministic"], results[f"{model}_2ranks_sharded"]
    print(f"{model}: 2 ranks / 1 rank {fused['rate'] / one['rate']:.2f}x (bucketed allreduce "
          f"{bucketed['rate'] / one['rate']:.2f}x, bf16 {bf16['rate'] / one['rate']:.2f}x, "
          f"powersgd:4 {psgd['rate'] / one['rate']:.2f}x, "
          f"sharded optimizer {sharded['rate'] / one['rate']:.2f}x, "
          f"weak scaling {weak['rate'] / one['rate']:.2f}x); "
          f"deterministic step / default step on 2 ranks {exact['step_ms'] / fused['step_ms']:.2f}x; "
          f"1 rank x 2 threads / 1 rank {threads['rate'] / one['rate']:.2f}x; "
          f"allreduce wait per step {fused['wait_ms']:.3f} ms fused, {bucketed['wait_ms']:.3f} ms bucketed "
          f"({hidden:.0f}% of it hidden behind backward)")


def layer_split(name):
    """Milliseconds per step of each layer kind, forward and backward, on rank 0 (from --trace)."""
    with open(f"{work}/{name}.json") as f:
        totals = json.load(f)["otherData"]["ranks"][0]
    steps = totals["counts"]["optimizer"]
    return {k: 1e3 * v / steps for k, v in totals["seconds"].items()
            if k.endswith((" forward", " backward"))}


split = layer_split("cnn_1rank")
step_ms = results["cnn_1rank"]["step_ms"]
print(f"\ncnn, 1 rank x 1: the step's {step_ms:.1f} ms by layer (ms per step, share of the step; "
      "bn+relu = batch normalisation with its ReLU, +pool with the pooling after it: one layer each):")
for kind, ms in sorted(split.items(), key=lambda item: -item[1]):
    print(f"  {kind:24} {ms:7.2f} ms {100 * ms / step_ms:5.1f}%")
print(f"  {'the rest (data, update)':24} {step_ms - sum(split.values()):7.2f} ms "
      f"{100 * (step_ms - sum(split.values())) / step_ms:5.1f}%")
pca_log = open(f"{work}/pca.log").read()
fit = re.search(r"fit (\d+\.\d+) s", pca_log).group(1)
print(f"convert {float(figures['convert_seconds']):.2f} s; PCA fit (50 components, 2 ranks) {fit} s")

if "t1_torch_version" in figures:
    print(f"\nPyTorch {figures['t1_torch_version']} on the same networks, data, batch 128 and AdamW "
          f"(threads: PyTorch's pool + OpenBLAS's; of the two splits of 2, the faster):")
    for model in ("mlp", "cnn"):
        for threads in (1, 2):
            tags = ["t1"] if threads == 1 else ["t2a", "t2b"]
            tag = max(tags, key=lambda t: float(figures[f"{t}_torch_{model}_samples_per_second"]))
            theirs = float(figures[f"{tag}_torch_{model}_samples_per_second"])
            split = figures[f"{tag}_torch_{model}_threads"]
            ours = results[f"{model}_1rank" if threads == 1 else f"{model}_1rank_2threads"]["rate"]
            line = (f"  {model} {threads} thread{'s' if threads > 1 else ' '}: PyTorch ({split}) {theirs:8.0f} samples/s, "
                    f"dptrain 1 rank x {threads} {ours:8.0f} ({ours / theirs:.2f}x)")
            if threads == 2:
                two = results[f"{model}_2ranks"]["rate"]
                line += f", dptrain 2 ranks x 1 {two:8.0f} ({two / theirs:.2f}x)"
            print(line)
else:
    print("\nPyTorch: not installed (Debian's python3-torch), no comparison")
