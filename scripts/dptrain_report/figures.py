"""Figures: the PNG files of the report, each drawn from the analysis and the data's description
(class names, image shape and channels)."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .analysis import GRID_COLS, GRID_ROWS, RECONSTRUCTION_KS, our_entries, variance_kept  # noqa: E402

MATRIX_MAX = 20   # classes up to which the confusion is drawn as a matrix of numbers


def save(fig, path):
    fig.savefig(path, dpi=100)
    plt.close(fig)


def show(ax, image, shape, limit=None):
    """An image as the data hold it: grey levels for one channel, colour for 3 (RGB) or 4 (RGBA);
    other channel counts as the mean of their channels. Pixel values 0..255, or diverging values
    around 0 up to +-limit (differences, principal components)."""
    image = np.asarray(image, dtype=np.float32).reshape(shape)
    if limit is not None:
        ax.imshow(image.mean(axis=2), cmap="RdBu_r", vmin=-limit, vmax=limit)
    elif shape[2] in (3, 4):
        ax.imshow(np.clip(image / 255.0, 0, 1))
    else:
        ax.imshow(image.mean(axis=2), cmap="gray_r", vmin=0, vmax=255)


def figure_misclassified(picks, test_images, data, path):
    fig, axes = plt.subplots(GRID_ROWS, GRID_COLS, figsize=(16, 13.5))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (index, true, pred, conf) in zip(axes.ravel(), picks):
        show(ax, test_images[index], data.shape)
        ax.set_title(f"{data.names[true]} → {data.names[pred]}\n({conf:.3f})  #{index}", fontsize=8)
    if picks:
        fig.suptitle("Misclassified test images, most confident first: true → predicted (confidence)")
    else:
        fig.suptitle("No test image was misclassified")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, hspace=0.45, wspace=0.05)
    save(fig, path)


def figure_confusion(run, data, path):
    confusion, k = run["confusion"], data.k
    fig, ax = plt.subplots(figsize=(10, 8.5))
    image = ax.imshow(np.log1p(confusion), cmap="Blues")
    if k <= MATRIX_MAX:   # numbers in the cells, names on the axes
        for r in range(k):
            for c in range(k):
                value = confusion[r, c]
                ax.text(c, r, str(value), ha="center", va="center", fontsize=8,
                        color="white" if np.log1p(value) > 0.6 * np.log1p(confusion.max()) else "black")
        ax.set_xticks(range(k), data.names, rotation=45, ha="right")
        ax.set_yticks(range(k), data.names)
    else:                 # a heat map of class numbers: the names and counts of its worst cells are in REPORT.md
        ticks = range(0, k, max(1, k // 10))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix, run {run['name']} (test accuracy "
                 f"{100 * run['attrs']['test_accuracy']:.2f}%; colour: log scale)")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.17, top=0.94)
    save(fig, path)


def evaluated(epochs, values):
    """The epochs that were evaluated (--eval-every leaves NaN for the others) and their values."""
    keep = ~np.isnan(values)
    return epochs[keep], values[keep]


def figure_curves(runs, path):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 5.5))
    for i, run in enumerate(runs.values()):
        colour = f"C{i % 10}"
        epochs = run["history/epoch"]
        ax_loss.plot(epochs, run["history/train_loss"], color=colour, label=f"{run['name']} train")
        ax_loss.plot(*evaluated(epochs, run["history/test_loss"]), color=colour, linestyle="--",
                     label=f"{run['name']} test")
        ax_acc.plot(epochs, 100 * run["history/train_accuracy"], color=colour, label=f"{run['name']} train")
        ax_acc.plot(*evaluated(epochs, 100 * run["history/test_accuracy"]), color=colour, linestyle="--",
                    label=f"{run['name']} test")
        if "history/val_accuracy" in run:
            ax_acc.plot(*evaluated(epochs, 100 * run["history/val_accuracy"]), color=colour, linestyle=":",
                        label=f"{run['name']} validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.92, wspace=0.2)
    save(fig, path)


def figure_ranks(run, path):
    """Where each rank's time in the steps went: its compute per epoch, and compute and waits over
    the run (a straggler computes more and waits less; the others wait for it)."""
    table, hosts = run["rank_timing"], run["rank_hosts"]
    epochs, ranks = run["history/epoch"], table.shape[1]
    fig, (ax_epochs, ax_ranks) = plt.subplots(1, 2, figsize=(14, 5))
    for r in range(ranks):
        ax_epochs.plot(*evaluated(epochs, table[:, r, 0]), marker=".", color=f"C{r % 10}",
                       label=f"rank {r} ({hosts[r]})" if r < 12 else None)
    ax_epochs.set(xlabel="epoch", ylabel="seconds of compute in the epoch's steps", title="Compute per epoch")
    ax_epochs.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_epochs.legend(fontsize=7)
    compute, wait = np.nansum(table[:, :, 0], axis=0), np.nansum(table[:, :, 1], axis=0)
    ax_ranks.bar(range(ranks), compute, color="C0", label="compute")
    ax_ranks.bar(range(ranks), wait, bottom=compute, color="C1", label="waiting for the others")
    ax_ranks.set(xlabel="rank", ylabel="seconds in the steps", title=f"Run {run['name']}: each rank's steps")
    ax_ranks.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_ranks.legend(fontsize=7)
    for ax in (ax_epochs, ax_ranks):
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.11, top=0.92, wspace=0.2)
    save(fig, path)


def figure_pairs(pairs, class_means, data, path):
    fig, axes = plt.subplots(len(pairs), 3, figsize=(7.5, 2.5 * len(pairs)), squeeze=False)
    for row, (a, b, n) in enumerate(pairs):
        diff = class_means[a] - class_means[b]
        limit = max(np.abs(diff).max(), 1)
        show(axes[row, 0], class_means[a], data.shape)
        axes[row, 0].set_title(f"mean {data.names[a]}", fontsize=9)
        show(axes[row, 1], class_means[b], data.shape)
        axes[row, 1].set_title(f"mean {data.names[b]}", fontsize=9)
        show(axes[row, 2], diff, data.shape, limit)
        axes[row, 2].set_title(f"difference ({n} mistakes)", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("Most confused pairs: class means (training set) and their difference\n"
                 "(red: brighter in the first class, blue: in the second)", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, hspace=0.35)
    save(fig, path)


def figure_reconstruction(study, classes, test, data, path):
    """One test image of each given class and its reconstruction from K components; test holds the
    test images and labels."""
    test_images, test_labels = test
    widest = study["widest"]
    kmax = widest["attrs"]["pca_components"]
    ks = [k for k in RECONSTRUCTION_KS if k <= kmax]
    mean, basis = widest["pca/mean"], widest["pca/components"]
    fig, axes = plt.subplots(len(classes), len(ks) + 1, figsize=(1.9 * (len(ks) + 1), 2.1 * len(classes)),
                             squeeze=False)
    for row, c in enumerate(classes):
        image = test_images[np.nonzero(test_labels == c)[0][0]].reshape(-1) / 255.0
        z = (image - mean) @ basis.T
        views = [("original", image)] + [(f"K = {k}", mean + z[:k] @ basis[:k]) for k in ks]
        for col, (title, view) in enumerate(views):
            ax = axes[row, col]
            show(ax, 255 * np.clip(view, 0, 1), data.shape)
            ax.set_title(f"{data.names[c]}: {title}" if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.suptitle("Test images of the most confused classes, and what K principal components keep of them", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, hspace=0.3, wspace=0.05)
    save(fig, path)


def figure_pca(runs, data, path):
    pca_runs = [r for r in runs.values() if r["attrs"]["pca_components"] > 0]
    widest = max(pca_runs, key=lambda r: r["attrs"]["pca_components"])
    ratios = widest["pca/explained_variance_ratio"]
    fig = plt.figure(figsize=(15, 8))
    grid = fig.add_gridspec(2, 8)
    ax_var = fig.add_subplot(grid[0, 0:4])
    ks = np.arange(1, len(ratios) + 1)
    ax_var.plot(ks, 100 * np.cumsum(ratios), color="C0")
    for r in pca_runs:
        k = r["attrs"]["pca_components"]
        ax_var.scatter([k], [100 * variance_kept(r)], color="C1", zorder=3)
        ax_var.annotate(f"K={k}", (k, 100 * variance_kept(r)), textcoords="offset points",
                        xytext=(-6, 6), ha="right")
    ax_var.set(xlabel="components K", ylabel="variance kept (%)", title="Share of variance kept")
    ax_var.grid(alpha=0.3)
    ax_acc = fig.add_subplot(grid[0, 4:8])
    points = sorted((r["attrs"]["pca_components"], 100 * r["attrs"]["test_accuracy"]) for r in pca_runs)
    ax_acc.plot([p[0] for p in points], [p[1] for p in points], marker="o", label="PCA inputs")
    for r in runs.values():
        if r["attrs"]["pca_components"] == 0:
            ax_acc.axhline(100 * r["attrs"]["test_accuracy"], color="C3", linestyle="--",
                           label=f"raw pixels ({r['name']})")
    ax_acc.margins(y=0.15)
    ax_acc.set(xlabel="components K", ylabel="test accuracy (%)", title="Test accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    components = widest["pca/components"]
    for i in range(min(8, len(components))):
        ax = fig.add_subplot(grid[1, i])
        image = components[i].reshape(data.shape)
        show(ax, image, data.shape, max(np.abs(image.mean(axis=2)).max(), 1e-12))
        ax.set_title(f"PC{i + 1} ({100 * ratios[i]:.1f}%)", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"PCA of the training set (components from run {widest['name']})")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.03, top=0.9, hspace=0.3, wspace=0.6)
    save(fig, path)


def strip(ax, groups, ours, spread, labelled):
    """One row of points per benchmark source; this report's runs as red lines."""
    for y, (label, values, colour) in enumerate(groups):
        ax.scatter(values, y + spread[y], s=14, color=colour, alpha=0.7, label=f"{label} ({len(values)})")
    previous = None
    for acc, _, _, name in ours:
        ax.axvline(acc, color="C3", linewidth=1.2)
        if labelled:   # a label left of its line, or right of it when the run before is too close
            right = previous is not None and acc - previous < 0.002
            ax.annotate(f"{name} {acc:.4f}", (acc, 1.55), color="C3", fontsize=8, rotation=90,
                        ha="left" if right else "right", va="top", xytext=(2 if right else -2, 0),
                        textcoords="offset points")
        previous = acc
    ax.set_yticks(range(len(groups)), [g[0] for g in groups])
    ax.set_ylim(-0.6, 1.6)
    ax.grid(alpha=0.3, axis="x")


def figure_benchmarks(runs, references, data, path):
    """Every published accuracy, one row per reference table, this report's runs marked; below,
    the same around the runs, with their names."""
    labels = {"submitted": "submitted benchmarks", "baselines": "paper's Table 3 (scikit-learn)"}
    groups = [(labels[kind], [r["accuracy"] for r in references[kind]["rows"]], f"C{2 * i}")
              for i, kind in enumerate(sorted(references, reverse=True))]
    rng = np.random.default_rng(0)   # a fixed vertical spread, so that equal accuracies stay visible
    spread = [rng.uniform(-0.25, 0.25, len(g[1])) for g in groups]
    ours = sorted(our_entries(runs))
    fig, (full, zoom) = plt.subplots(2, 1, figsize=(12, 8))
    strip(full, groups, ours, spread, False)
    full.set_title(f"This report's runs (red lines) among the published {data.name} benchmarks")
    full.legend(loc="lower left", fontsize=8)
    strip(zoom, groups, ours, spread, True)
    low = min(acc for acc, _, _, _ in ours) - 0.015
    high = max([acc for acc, _, _, _ in ours] + [a for g in groups for a in g[1]]) + 0.005
    zoom.set_xlim(low, high)
    zoom.set_xlabel(f"{data.name} test accuracy")
    zoom.set_title(f"The same from {low:.3f} up", fontsize=10)
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.08, top=0.94, hspace=0.3)
    save(fig, path)
