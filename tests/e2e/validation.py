"""--validation N: the hold-out is reported every epoch and picks the final parameters; the
same hold-out is chosen whatever the number of ranks. A network with batch normalisation is
evaluated at the end (and by eval) as its best epoch was: that epoch's parameters with that
epoch's running statistics, giving that epoch's test figures to the bit; eval --on-validation
gives that epoch's validation figures to the bit, and refuses a run without a hold-out."""
from common import *

dir = temp_dir()
outs = {}
for ranks in (1, 2):
    out = f"{dir}/val{ranks}.h5"
    result = must_succeed(run(["train", "--data", DATA, "--out", out, "--model", "mlp", "--epochs", "3",
                               "--validation", "5000"], ranks=ranks))
    check("55000 training samples" in result.stdout, "validation rows leave the training set")
    check_epoch_lines(result.stdout, 3)
    check("  val " in epoch_lines(result.stdout)[0], "validation accuracy printed")
    outs[ranks] = out
with h5py.File(DATA, "r") as f:
    labels = f["test/labels"][:]
for ranks, out in outs.items():
    check_results(out, labels, runs=["raw"])
    with h5py.File(out, "r") as f:
        g = f["runs/raw"]
        val = g["history/val_accuracy"][:]
        check(val.shape == (3,) and np.all(val > 0.8), f"val_accuracy {val}")
        check(g["history/val_loss"].shape == (3,), "val_loss")
        check(g.attrs["best_epoch"] == int(np.argmax(val)) + 1, "best epoch is the best validation epoch")

# --eval-every 2 over 5 epochs evaluates epochs 2, 4 and 5 (the last always), leaves NaN for the
# others, and chooses the best among those; the parameters are those of a run that evaluates every
# epoch (evaluation changes nothing it trains).
every = {}
for k in (1, 2):
    out = f"{dir}/every{k}.h5"
    result = must_succeed(run(["train", "--data", DATA, "--out", out, "--model", "mlp:32", "--epochs", "5",
                               "--no-tta", "--validation", "5000", "--eval-every", str(k)], ranks=2))
    check_epoch_lines(result.stdout, 5)
    evaluated = [i + 1 for i, line in enumerate(epoch_lines(result.stdout)) if "  test " in line]
    check(evaluated == ([1, 2, 3, 4, 5] if k == 1 else [2, 4, 5]), f"--eval-every {k}: evaluated {evaluated}")
    check_results(out, labels, runs=["raw"])
    with h5py.File(out, "r") as f:
        g = f["runs/raw"]
        val, test = g["history/val_accuracy"][:], g["history/test_accuracy"][:]
        every[k] = (val, test, int(g.attrs["best_epoch"]), int(g.attrs["parameter_hash"]))
val1, test1, _, _ = every[1]
val2, test2, best2, _ = every[2]
check(np.array_equal(np.isnan(val2), [True, False, True, False, False]) and np.array_equal(np.isnan(test2), np.isnan(val2)),
      f"--eval-every 2: NaN where not evaluated, got {val2}")
check(np.array_equal(val2[[1, 3, 4]], val1[[1, 3, 4]]) and np.array_equal(test2[[1, 3, 4]], test1[[1, 3, 4]]),
      "the evaluated epochs' figures differ from a run that evaluates every epoch")
check(best2 == [2, 4, 5][int(np.argmax(val1[[1, 3, 4]]))], f"best epoch {best2} is not the best evaluated one")

# A small CNN on a small noisy set, whose validation accuracy peaks before the last epoch (a high
# constant learning rate): the final test accuracy and loss are the best epoch's, bit for bit,
# which they are not with the best parameters and the last epoch's batch-norm statistics.
_, data, _ = noisy_templates(5, 200, (1500, 400))
out, ckpt = f"{dir}/cnn.h5", f"{dir}/cnn.ckpt.h5"
must_succeed(run(["train", "--model", "cnn:4,p,f16", "--data", data, "--out", out, "--checkpoint", ckpt, "--epochs", "8",
                  "--validation", "500", "--batch", "50", "--lr", "0.03", "--schedule", "constant", "--quiet"], ranks=2))
with h5py.File(out, "r") as f:
    g = f["runs/raw"]
    best, history = int(g.attrs["best_epoch"]), g["history"]
    print("cnn: best epoch", best, "validation", history["val_accuracy"][:], "test", history["test_accuracy"][:])
    check(best < 8, f"the best epoch is the last ({best}): the check below would prove nothing")
    check(g.attrs["test_accuracy"] == history["test_accuracy"][best - 1] and
          g.attrs["test_loss"] == history["test_loss"][best - 1],
          f"final test {g.attrs['test_accuracy']}, {g.attrs['test_loss']}; epoch {best}'s "
          f"{history['test_accuracy'][best - 1]}, {history['test_loss'][best - 1]}")
    final = (g.attrs["test_accuracy"], g.attrs["test_loss"])
must_succeed(run(["eval", "--checkpoint", ckpt, "--data", data, "--out", f"{dir}/eval.h5"], ranks=2))
with h5py.File(f"{dir}/eval.h5", "r") as f:
    g = f["runs/raw"]
    check((g.attrs["test_accuracy"], g.attrs["test_loss"]) == final, "eval does not evaluate the best epoch's network")
    check(g.attrs["evaluated_set"] == "test", f"evaluated_set {g.attrs['evaluated_set']}")
with h5py.File(out, "r") as f:
    history = f["runs/raw/history"]
    val = (history["val_accuracy"][best - 1], history["val_loss"][best - 1])
for ranks in (1, 2):  # the same hold-out whatever the rank count
    held = f"{dir}/held{ranks}.h5"
    result = must_succeed(run(["eval", "--checkpoint", ckpt, "--data", data, "--out", held, "--on-validation"],
                              ranks=ranks))
    check("validation accuracy" in result.stdout, "the summary does not say it evaluated the hold-out")
    with h5py.File(held, "r") as f:
        g = f["runs/raw"]
        got = (g.attrs["test_accuracy"], g.attrs["test_loss"])
        print(f"eval --on-validation on {ranks} rank(s): {got}; epoch {best}'s validation {val}")
        check(got == val and g.attrs["evaluated_set"] == "validation" and g["predictions"].shape == (500,),
              f"eval --on-validation gave {got} on {g['predictions'].shape}, not epoch {best}'s {val}")
# The same images in another order: the hold-out drawn from them would be other images, so the
# checkpoint's data identity refuses it (it had reported an accuracy on the wrong images, exit 0).
shuffled = f"{dir}/shuffled.h5"
with h5py.File(data, "r") as src, h5py.File(shuffled, "w") as f:
    order = np.random.default_rng(1).permutation(len(src["train/labels"]))
    for group in ("train", "test"):
        pick = order if group == "train" else slice(None)
        f[f"{group}/images"] = src[f"{group}/images"][()][pick]
        f[f"{group}/labels"] = src[f"{group}/labels"][()][pick]
    for name, value in src.attrs.items():
        f.attrs[name] = value
refused = run(["eval", "--checkpoint", ckpt, "--data", shuffled, "--out", f"{dir}/refused.h5", "--on-validation"],
              ranks=2, env=NO_KILL_WAIT)
errors = [line for line in refused.stderr.splitlines() if line.startswith("dptrain: error:")]
check(refused.returncode != 0 and len(errors) == 1 and "--on-validation: " in errors[0] and
      "was trained on other data: the training images of" in errors[0] and
      "evaluate its hold-out with the data file the run began with" in errors[0] and
      not os.path.exists(f"{dir}/refused.h5"), f"eval --on-validation on shuffled data: {refused.stderr!r}")
plain = f"{dir}/plain.ckpt.h5"
must_succeed(run(["train", "--model", "cnn:4,p,f16", "--data", data, "--out", f"{dir}/plain.h5", "--checkpoint", plain,
                  "--epochs", "1", "--quiet"], ranks=2))
refused = run(["eval", "--checkpoint", plain, "--data", data, "--out", f"{dir}/refused.h5", "--on-validation"], ranks=2)
errors = [line for line in refused.stderr.splitlines() if line.startswith("dptrain: error:")]
check(refused.returncode != 0 and len(errors) == 1 and "--on-validation: the run in" in errors[0] and
      "held out no images" in errors[0] and not os.path.exists(f"{dir}/refused.h5"),
      f"eval --on-validation without a hold-out: exit {refused.returncode}, {refused.stderr!r}")
print("ok")
