"""--max-time MINUTES: training ends after the epoch during which the budget runs out, on every rank
at the same epoch, with the checkpoint and results written as for a finished run and ended_by
max-time in the results; a resume from that checkpoint continues to --epochs, bit for bit as if
never stopped; each run of compare has its own budget."""
import h5py

from common import *

dir = temp_dir()
with h5py.File(DATA, "r") as f:
    test_labels = f["test/labels"][:]
# One epoch of this network takes over half a second here, and a budget of 0.001 minutes is 0.06 s:
# every run below runs out of time during its first epoch, whatever the machine.
base = ["--data", DATA, "--model", "mlp:64", "--epochs", "3", "--no-tta"]
BUDGET = "0.001"


def run_attrs(path, name="raw"):
    with h5py.File(path, "r") as f:
        g = f["runs"][name]
        return text_attr(g.attrs, "ended_by"), int(g.attrs["epochs_trained"]), int(g.attrs["parameter_hash"])


# The budget ends training after epoch 1 of 3; results and checkpoint are whole.
out = must_succeed(run(["train"] + base + ["--max-time", BUDGET, "--checkpoint", f"{dir}/c.h5",
                                           "--out", f"{dir}/budget.h5"], ranks=2))
check(f"--max-time {BUDGET}: the time budget ran out during epoch 1 of 3; training ends here" in out.stdout,
      f"no budget line: {out.stdout[:600]!r}")
check(len(epoch_lines(out.stdout)) == 1, f"{len(epoch_lines(out.stdout))} epochs trained, expected 1")
check("1 of 3 epochs (--max-time ended training)" in out.stdout, "the summary does not say the budget ended it")
check_results(f"{dir}/budget.h5", test_labels, runs=["raw"])
check(run_attrs(f"{dir}/budget.h5")[:2] == ("max-time", 1), f"budget run: {run_attrs(f'{dir}/budget.h5')}")
with h5py.File(f"{dir}/c.h5", "r") as f:
    check(int(f.attrs["epoch"]) == 1, f"checkpoint after epoch {int(f.attrs['epoch'])}, expected 1")

# Resumed without a budget it trains epochs 2 and 3, and ends where an unbudgeted run ends, bit for bit.
must_succeed(run(["train"] + base + ["--checkpoint", f"{dir}/c.h5", "--resume", "--out", f"{dir}/resumed.h5"],
                 ranks=2))
must_succeed(run(["train"] + base + ["--out", f"{dir}/whole.h5"], ranks=2))
resumed, whole = run_attrs(f"{dir}/resumed.h5"), run_attrs(f"{dir}/whole.h5")
check(resumed[:2] == ("epochs", 3) and whole[:2] == ("epochs", 3), f"resumed {resumed}, whole {whole}")
check(resumed[2] == whole[2], "a resume from the budget's checkpoint differs from a run never stopped")

# compare: each run has its own budget, so both end after their first epoch.
must_succeed(run(["compare"] + base + ["--pca", "0,20", "--max-time", BUDGET, "--out", f"{dir}/compare.h5"], ranks=2))
check_results(f"{dir}/compare.h5", test_labels, runs=["raw", "pca20"])
for name in ("raw", "pca20"):
    check(run_attrs(f"{dir}/compare.h5", name)[:2] == ("max-time", 1), f"compare {name}: {run_attrs(f'{dir}/compare.h5', name)}")

# A budget that is not a number of minutes is refused before any work.
for bad in ("-1", "soon", "1e9"):
    refused = run(["train"] + base + ["--max-time", bad, "--out", f"{dir}/bad.h5"])
    check(refused.returncode == 2 and "--max-time" in refused.stderr and not os.path.exists(f"{dir}/bad.h5"),
          f"--max-time {bad}: exit {refused.returncode}, {refused.stderr!r}")
print("ok: the budget ends training after its epoch, results and checkpoint whole, resume exact, compare per run")
