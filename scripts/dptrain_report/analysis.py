"""Analysis: what the results and the data say, as numbers for the figures and REPORT.md. Class
counts and image shapes come from the arrays themselves."""
import numpy as np

GRID_ROWS, GRID_COLS = 6, 8     # 48 misclassified images
RECONSTRUCTION_KS = (10, 25, 50, 100, 200)


def class_means(images, labels, k):
    """Each class's mean training image ([K][H][W] or [K][H][W][C]); zeros for a class without images."""
    return np.stack([images[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(images.shape[1:])
                     for c in range(k)])


def confused_pairs(confusion, count=5):
    """Unordered class pairs by the number of mistakes in both directions."""
    pairs, k = [], len(confusion)
    for a in range(k):
        for b in range(a + 1, k):
            pairs.append((int(confusion[a, b] + confusion[b, a]), a, b))
    pairs.sort(reverse=True)
    return [(a, b, n) for n, a, b in pairs[:count] if n > 0]


def pick_misclassified(run, pairs, total=GRID_ROWS * GRID_COLS):
    """The most confident mistakes of each most-confused pair, then the most confident of the
    rest, shown most confident first."""
    index = run["misclassified/index"]
    true = run["misclassified/true_label"]
    pred = run["misclassified/predicted"]
    conf = run["misclassified/confidence"]
    order = np.argsort(-conf, kind="stable")
    chosen = []
    per_pair = max(1, total // (2 * len(pairs))) if pairs else 0
    for a, b, _ in pairs:
        in_pair = [k for k in order if {int(true[k]), int(pred[k])} == {a, b}]
        chosen.extend(in_pair[:per_pair])
    for k in order:
        if len(chosen) >= total:
            break
        if k not in chosen:
            chosen.append(k)
    chosen = sorted(chosen[:total], key=lambda k: -conf[k])
    return [(int(index[k]), int(true[k]), int(pred[k]), float(conf[k])) for k in chosen]


def thirds(side, names):
    """A side cut into three near-equal parts (28 pixels: 9, 10, 9), named."""
    cuts = [0, round(side / 3), round(2 * side / 3), side]
    return [(name, slice(cuts[i], cuts[i + 1])) for i, name in enumerate(names)]


def pair_analysis(a, b, class_means, run):
    regions = thirds(class_means.shape[1], ("top", "middle", "bottom"))
    sides = thirds(class_means.shape[2], ("left", "centre", "right"))
    diff = class_means[a] - class_means[b]
    magnitude = np.abs(diff)
    total = magnitude.sum()
    shares = {}
    for rname, rs in regions:
        for sname, ss in sides:
            shares[f"{rname} {sname}"] = magnitude[rs, ss].sum() / total if total else 0
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:2]
    brighter_a = float(diff[diff > 0].sum())
    brighter_b = float(-diff[diff < 0].sum())
    true = run["misclassified/true_label"]
    pred = run["misclassified/predicted"]
    conf = run["misclassified/confidence"]
    mistakes = {}
    for x, y in ((a, b), (b, a)):
        mask = (true == x) & (pred == y)
        c = conf[mask]
        mistakes[(x, y)] = (int(mask.sum()), float(c.mean()) if len(c) else 0.0,
                            float((c > 0.9).mean()) if len(c) else 0.0)
    return {"mean_abs_diff": float(magnitude.mean()), "regions": top,
            "brighter_a": brighter_a, "brighter_b": brighter_b, "mistakes": mistakes,
            "correlation": float(np.corrcoef(class_means[a].ravel(), class_means[b].ravel())[0, 1])}


def all_pair_median_diff(class_means):
    values = [np.abs(class_means[a] - class_means[b]).mean()
              for a in range(len(class_means)) for b in range(a + 1, len(class_means))]
    return float(np.median(values))


def samples_per_second(run):
    history_samples = run["history/samples_per_second"] * run["history/seconds"]
    seconds = run["attrs"]["train_seconds"]
    return float(history_samples.sum() / seconds) if seconds > 0 else 0.0


def variance_kept(run):
    if run["attrs"]["pca_components"] > 0:
        return float(run["pca/explained_variance_ratio"].sum())
    return 1.0


def macro_f1(run):
    return float(np.mean(run["f1"]))


def pca_runs_of(runs):
    return sorted((r for r in runs.values() if r["attrs"]["pca_components"] > 0),
                  key=lambda r: r["attrs"]["pca_components"])


def pca_study(runs, train_images, train_labels):
    """Per class and per PCA run's K: the share of the class's own variance (around the training
    mean) that K components lose, from the training images and the widest run's basis. None
    without a raw run and a PCA run to compare."""
    pca_runs = pca_runs_of(runs)
    raw = [r for r in runs.values() if r["attrs"]["pca_components"] == 0]
    if not pca_runs or not raw:
        return None
    widest = pca_runs[-1]
    centred = train_images.reshape(len(train_images), -1).astype(np.float32) / 255.0
    centred -= widest["pca/mean"].astype(np.float32)
    scores = centred @ widest["pca/components"].astype(np.float32).T
    energy = np.einsum("ij,ij->i", centred, centred)
    kept = np.cumsum(scores * scores, axis=1)
    lost, lost_all = {}, {}
    for r in pca_runs:
        k = r["attrs"]["pca_components"]
        lost[k] = np.array([1 - kept[train_labels == c, k - 1].sum() / energy[train_labels == c].sum()
                            if np.any(train_labels == c) else 0.0 for c in range(len(raw[0]["recall"]))])
        lost_all[k] = float(1 - kept[:, k - 1].sum() / energy.sum())
    return {"raw": max(raw, key=lambda r: r["attrs"]["test_accuracy"]), "runs": pca_runs, "lost": lost,
            "lost_all": lost_all, "widest": widest}


def confused_classes(pairs, limit=4):
    classes = []
    for a, b, _ in pairs:
        for c in (a, b):
            if c not in classes and len(classes) < limit:
                classes.append(c)
    return classes


def correlation(x, y):
    return float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 and np.std(y) > 0 else 0.0


def mean_difference_lost(study, class_means, a, b, k):
    """The share of the difference of two class means (in [0, 1] pixels) that K components lose."""
    basis = study["widest"]["pca/components"][:k]
    d = (class_means[a] - class_means[b]).reshape(-1) / 255.0
    energy = float(d @ d)
    return 1 - float(np.sum((basis @ d) ** 2)) / energy if energy > 0 else 0.0


def add_pair_study(study, class_means):
    """The raw run's most confused pair, and how much of its mean difference the smallest K loses."""
    k = study["runs"][0]["attrs"]["pca_components"]
    pairs = confused_pairs(study["raw"]["confusion"], count=1) or [(0, 1, 0)]
    a, b, _ = pairs[0]
    study["pair"] = (a, b)
    study["pair_lost"] = mean_difference_lost(study, class_means, a, b, k)
    study["median_pair_lost"] = float(np.median([mean_difference_lost(study, class_means, x, y, k)
                                                 for x in range(len(class_means))
                                                 for y in range(x + 1, len(class_means))]))


def our_entries(runs):
    entries = []
    for run in runs.values():
        k = run["attrs"]["pca_components"]
        inputs = f"PCA {k} components" if k else "standardised pixels"
        entries.append((run["attrs"]["test_accuracy"],
                        f"dptrain {run['attrs']['model']} ({run['attrs']['parameters']} parameters), run {run['name']}",
                        inputs, run["name"]))
    return entries


def where_it_ranks(accuracy, table3):
    """'above all 126 scikit-learn baselines; the best, SVC C=10 kernel=rbf, 0.897' and the like."""
    best = max(table3, key=lambda r: r["accuracy"])
    below = sum(r["accuracy"] > accuracy for r in table3)
    if below == 0:
        return (f"above all {len(table3)} scikit-learn baselines of the paper's Table 3; the best, "
                f"{best['classifier']} {best['parameters']}, {best['accuracy']:.3f}")
    return (f"below {below} of the {len(table3)} scikit-learn baselines of the paper's Table 3 (rank {below + 1}); "
            f"the best, {best['classifier']} {best['parameters']}, {best['accuracy']:.3f}")
