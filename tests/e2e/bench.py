"""scripts/bench.sh end to end on a small data set (its figures are not checked: benchmarks print
figures, tests do not time): every run it makes succeeds and the table has every row and line,
with positive rates, shares that add up, and the PyTorch lines when python3-torch is there."""
import re
import subprocess

from common import *

dir = temp_dir()
rng = np.random.default_rng(5)
labels = rng.integers(0, 10, 3000).astype(np.uint8)
images = (rng.random((3000, 28, 28)) * 255 * (labels[:, None, None] / 9.0)).astype(np.uint8)
write_idx(f"{dir}/train-images-idx3-ubyte", images[:2500])
write_idx(f"{dir}/train-labels-idx1-ubyte", labels[:2500])
write_idx(f"{dir}/t10k-images-idx3-ubyte", images[2500:])
write_idx(f"{dir}/t10k-labels-idx1-ubyte", labels[2500:])

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
env = dict(os.environ, BENCH_SOURCE=dir, BENCH_MLP_EPOCHS="2", BENCH_CNN_EPOCHS="1")
result = subprocess.run(["bash", f"{root}/scripts/bench.sh", os.path.dirname(DPTRAIN)], capture_output=True,
                        text=True, env=env, timeout=900)
if result.returncode != 0:
    print(result.stdout, result.stderr)
    fail(f"bench.sh exited {result.returncode}")
out = result.stdout
check(re.search(r"OpenBLAS kernels \S+, single-core cblas_sgemm peak \d+\.\d GFLOP/s", out), out[:400])
rows = [l for l in out.splitlines() if re.match(r"^(mlp|cnn) +[12] x [12] ", l)]
check(len(rows) == 18, f"18 rows, got {len(rows)}:\n{out}")
check(len([r for r in rows if r.split()[4] == "bf16"]) == 2, f"the bf16 rows:\n{out}")
check(len([r for r in rows if r.split()[4] == "psgd:4"]) == 2, f"the powersgd rows:\n{out}")
check(len([r for r in rows if r.split()[4] == "exact"]) == 2, f"the --deterministic rows:\n{out}")
check(len([r for r in rows if r.split()[4] == "sharded"]) == 2, f"the --shard-optimizer rows:\n{out}")
for row in rows:
    fields = row.replace(" weak", "").split()
    rate = float(fields[5])
    shares = [float(x.rstrip("%")) for x in fields[7:12]]
    check(rate > 0 and abs(sum(shares) - 100) < 1.0, f"row {row!r}: rate or shares")
for model in ("mlp", "cnn"):
    check(re.search(rf"^{model}: 2 ranks / 1 rank \d+\.\d\dx \(bucketed allreduce \d+\.\d\dx, bf16 \d+\.\d\dx, "
                    rf"powersgd:4 \d+\.\d\dx, "
                    rf"sharded optimizer \d+\.\d\dx, "
                    rf"weak scaling \d+\.\d\dx\); deterministic step / default step on 2 ranks \d+\.\d\dx; "
                    rf"1 rank x 2 threads",
                    out, re.M), f"{model} summary line")
# the CNN's step by layer: the fused blocks and the convolutions are there, and the lines add up
split = re.search(r"^cnn, 1 rank x 1: the step's (\d+\.\d) ms by layer.*?\n((?:  .*\n)+)", out, re.M)
check(split, f"the CNN's per-layer split:\n{out}")
kinds = {l[:26].strip(): float(l[26:].split()[0]) for l in split.group(2).splitlines()}
for kind in ("conv forward", "conv backward", "bn+relu+pool forward", "bn+relu+pool backward", "dense forward"):
    check(kinds.get(kind, 0) > 0, f"per-layer split has no {kind}:\n{split.group(0)}")
check(abs(sum(kinds.values()) - float(split.group(1))) < 0.05 + 0.01 * float(split.group(1)),
      f"per-layer split does not add up to the step:\n{split.group(0)}")
check(re.search(r"^convert \d+\.\d\d s; PCA fit \(50 components, 2 ranks\) \d+\.\d\d s", out, re.M), "times line")
has_torch = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode == 0
check(("PyTorch 1" in out) == has_torch and ("not installed" in out) != has_torch, "PyTorch part")
check(not [n for n in os.listdir("/tmp") if n.startswith("dptrain-bench-") and
           os.path.getmtime(f"/tmp/{n}") > os.path.getmtime(f"{dir}/t10k-labels-idx1-ubyte")],
      "bench.sh left its work folder")

# scripts/time-to-accuracy.sh on the same small set: every figure it promises is printed.
must_succeed(run(["convert", "--source", dir, "--out", f"{dir}/small.h5"]))
env = dict(os.environ, BUILD=os.path.dirname(DPTRAIN), DATA=f"{dir}/small.h5")
result = subprocess.run(["bash", f"{root}/scripts/time-to-accuracy.sh", "--model", "mlp:16", "--epochs", "2"],
                        capture_output=True, text=True, env=env, timeout=300)
out = result.stdout
check(result.returncode == 0, f"time-to-accuracy.sh exited {result.returncode}: {out} {result.stderr}")
for pattern in (r"^flags: --model mlp:16 --epochs 2; 2 ranks on ", r"^kernels: OpenBLAS \S+ \(",
                r"^sgemm peak P: \d+\.\d+ GFLOP/s before, \d+\.\d+ after",
                r"^test accuracy \d+\.\d\d%; wall \d+\.\d s; at P = 100: \d+\.\d s \(wall x \d+\.\d / 100\)",
                r"^profile \(rank 0\): ", r"^profile: .* GFLOP/s over all ranks"):
    check(re.search(pattern, out, re.M), f"time-to-accuracy.sh lacks {pattern!r}:\n{out}")
check(not [n for n in os.listdir("/tmp") if n.startswith("dptrain-tta-") and
           os.path.getmtime(f"/tmp/{n}") > os.path.getmtime(f"{dir}/small.h5")], "time-to-accuracy.sh left its folder")
print("ok: bench.sh table and time-to-accuracy.sh on a small data set")
