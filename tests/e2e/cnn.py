"""The CNN end to end: one epoch of the default network on the real data on 2 ranks (results
contract, accuracy), and an augmented CNN with batch normalisation interrupted in the middle of
an epoch (a rank dies; with --erase and --augment-shift 1, so that those draws resume too) that resumes to bitwise the same state as an uninterrupted run; --tta
predictions that do not change when every test image is mirrored."""
import shutil

from common import *

dir = temp_dir()
with h5py.File(DATA, "r") as f:
    labels = f["test/labels"][:]
out = f"{dir}/cnn.h5"
result = must_succeed(run(["train", "--model", "cnn", "--epochs", "1", "--data", DATA, "--out", out,
                          "--checkpoint", f"{dir}/cnn.ckpt.h5"], ranks=2))
check_epoch_lines(result.stdout, 1)
check_results(out, labels, runs=["raw"])
with h5py.File(out, "r") as f:
    g = f["runs/raw"]
    print("cnn, 1 epoch, 2 ranks:", g.attrs["test_accuracy"], g["history/samples_per_second"][0], "samples/s")
    check(g.attrs["test_accuracy"] > 0.85, "one CNN epoch must reach 85%")
    check(g.attrs["model"] == "cnn" and g.attrs["parameters"] == 824554, "the cnn preset")
with h5py.File(f"{dir}/cnn.ckpt.h5", "r") as f:
    check(f.attrs["dropout"] == 0.1 and f.attrs["label_smoothing"] == 0 and f.attrs["tta"] == 0 and
          f.attrs["epochs"] == 1 and f.attrs["optimizer"] == "adam" and f.attrs["weight_decay"] == 1e-4,
          "the defaults of a cnn without --augment: dropout 0.1, no smoothing, no --tta, Adam, weight decay 1e-4")

# A small data set for the exact-resume check.
small, data, small_labels = noisy_templates(9, 60, (1200, 300))
base = ["train", "--model", "cnn:8,p,16,p,f32", "--augment", "--augment-shift", "1", "--erase", "0.5", "--epochs", "3",
        "--batch", "40",
        "--data", data, "--quiet"]
ref_ckpt, ref_out = f"{dir}/ref.ckpt.h5", f"{dir}/ref.h5"
must_succeed(run(base + ["--checkpoint", ref_ckpt, "--out", ref_out], ranks=2))
check_results(ref_out, small_labels, runs=["raw"])
ckpt, part = f"{dir}/part.ckpt.h5", f"{dir}/part.h5"
# --checkpoint-sync: the step-4 file is on disk before the death three steps later, which a background
# write might not have finished (docs/checkpoints.md)
died = run(base + ["--checkpoint", ckpt, "--checkpoint-every", "4", "--checkpoint-sync", "--out", part], ranks=2,
           env={"DPTRAIN_FAULT": "exit@1:2:7"})
check(died.returncode != 0, "the injected death must fail the run")
with h5py.File(ckpt, "r") as f:
    check((f.attrs["epoch"], f.attrs["step"]) == (1, 4), f"checkpoint at {f.attrs['epoch']}, {f.attrs['step']}")
    check(f["buffers"].shape == (2, 2 * (8 + 16)), "every rank's batch-norm statistics are saved")
must_succeed(run(base + ["--checkpoint", ckpt, "--resume", "--out", part], ranks=2))
with h5py.File(ref_ckpt, "r") as a, h5py.File(ckpt, "r") as b:
    check(a.attrs["optimizer"] == "nesterov" and "opt_second" not in a, "Nesterov's one state array")
    for key in ("params", "opt_first", "buffers"):
        check(np.array_equal(a[key][()], b[key][()]), f"{key} differ after the resume")
with h5py.File(ref_out, "r") as a, h5py.File(part, "r") as b:
    check(np.array_equal(a["runs/raw/predictions"][()], b["runs/raw/predictions"][()]), "predictions differ")
    check(np.array_equal(a["runs/raw/history/train_loss"][()], b["runs/raw/history/train_loss"][()]), "history differs")

# --tta averages the logits of each image's views: with --tta-shift 0 the image and its mirror
# image, so mirroring the whole test set must leave its predictions and confidences bitwise
# unchanged; without --tta they change. The default final predictions (--tta-shift 1) average 18
# views, the 9 one-pixel placements of both: mirroring the test set gives the same views, added in
# another order (equal to rounding). A CNN trained with --augment uses --tta and --tta-shift 1 by
# default, and eval follows the checkpoint's settings.
mirrored = f"{small}/mirrored.h5"
shutil.copy(data, mirrored)
with edit_h5(mirrored) as f:
    f["test/images"][...] = f["test/images"][()][:, :, ::-1]
views = {}
for name, path, extra in (("tta", data, ["--tta"]), ("tta_mirrored", mirrored, ["--tta"]),
                          ("two", data, ["--tta-shift", "0"]), ("two_mirrored", mirrored, ["--tta-shift", "0"]),
                          ("plain", data, ["--no-tta"]), ("plain_mirrored", mirrored, ["--no-tta"]),
                          ("default", data, [])):
    must_succeed(run(["eval", "--checkpoint", ref_ckpt, "--data", path, "--out", f"{dir}/{name}.h5"] + extra))
    with h5py.File(f"{dir}/{name}.h5", "r") as f:
        views[name] = (f["runs/raw/predictions"][()], f["runs/raw/misclassified/confidence"][()],
                       f["runs/raw"].attrs["test_accuracy"], f["runs/raw"].attrs["test_views"])
check(np.array_equal(views["two"][0], views["two_mirrored"][0]) and
      np.array_equal(views["two"][1], views["two_mirrored"][1]),
      "--tta --tta-shift 0 depends on the orientation of the images")
moved = np.abs(views["tta"][1] - views["tta_mirrored"][1]).max()
flipped = int((views["tta"][0] != views["tta_mirrored"][0]).sum())
check(moved < 1e-5 and flipped <= 1, f"--tta's 18 views depend on orientation: confidence by {moved}, {flipped} predictions")
check(not np.array_equal(views["plain"][1], views["plain_mirrored"][1]), "mirroring changed nothing without --tta")
check(not np.array_equal(views["two"][1], views["plain"][1]), "--tta changed nothing")
check(views["tta"][1].shape != views["two"][1].shape or np.abs(views["tta"][1] - views["two"][1]).max() > 1e-3,
      "--tta-shift 1 changed nothing")
check(np.array_equal(views["default"][1], views["tta"][1]), "eval did not follow the checkpoint's --tta")
check([views[k][3] for k in ("tta", "two", "plain", "default")] == [18, 2, 1, 18],
      f"test_views {[views[k][3] for k in ('tta', 'two', 'plain', 'default')]}, expected 18, 2, 1, 18")
with h5py.File(ref_ckpt, "r") as f:
    check(f.attrs["augment_shift"] == 1, "--augment-shift 1 is not in the checkpoint")
    check(f.attrs["tta"] == 1 and f.attrs["tta_shift"] == 1 and f.attrs["dropout"] == 0.1 and f.attrs["label_smoothing"] == 0 and
          f.attrs["optimizer"] == "nesterov" and f.attrs["lr"] == 0.05 and f.attrs["weight_decay"] == 5e-4,
          "the defaults of a cnn with --augment: --tta with 18 views, dropout 0.1, no label smoothing, Nesterov at 0.05, "
          f"weight decay 5e-4: {dict(f.attrs)}")
check(views["tta"][2] == np.mean(views["tta"][0] == small_labels), "--tta accuracy disagrees with its predictions")
print("--tta on mirrored test images: confidence within", moved, ";", flipped, "predictions changed")
# The default epochs: 60 for a CNN with --augment (with --tta), 20 without (small network, small set).
for extra, epochs, tta in ((["--augment"], 60, 1), ([], 20, 0)):
    ckpt = f"{small}/defaults-{epochs}.h5"
    must_succeed(run(["train", "--model", "cnn:4,p,f8", "--data", data, "--out", f"{small}/defaults-{epochs}.out.h5", "--quiet",
                      "--batch", "400", "--checkpoint", ckpt] + extra, ranks=2))
    with h5py.File(ckpt, "r") as f:
        check(f.attrs["epochs"] == epochs and f.attrs["epoch"] == epochs and f.attrs["tta"] == tta and
              f.attrs["augment_shift"] == 2 * tta,
              f"default epochs {f.attrs['epochs']}, tta {f.attrs['tta']}, shift {f.attrs['augment_shift']} for cnn {extra}")

print("ok")
