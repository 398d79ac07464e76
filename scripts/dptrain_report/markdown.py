"""REPORT.md: the analysed run's settings, scores and mistakes, the comparison of every run, and
the published results on the same data set, each section a function of one Report."""
import os
from dataclasses import dataclass, field

import numpy as np

from .analysis import correlation, macro_f1, our_entries, samples_per_second, variance_kept, where_it_ranks
from .figures import MATRIX_MAX


def pca_study_section(study, names):
    """Which classes lose most under PCA, and how much of their own variance PCA drops."""
    raw, runs = study["raw"], study["runs"]
    ks = [r["attrs"]["pca_components"] for r in runs]
    smallest = ks[0]
    header = "| class | raw recall | " + " | ".join(f"recall K={k}" for k in ks) + " | " + \
             " | ".join(f"variance lost K={k}" for k in ks) + " |"
    lines = ["The recall of each class with raw pixels and with each PCA run, and the share of each class's "
             "own variance (its training images around the training mean) that K components lose:\n",
             header, "|---|" + "---:|" * (1 + 2 * len(ks))]
    drop_order = np.argsort(-(raw["recall"] - runs[0]["recall"]), kind="stable")
    shown = range(len(names)) if len(names) <= MATRIX_MAX else sorted(drop_order[:MATRIX_MAX])
    if len(names) > MATRIX_MAX:
        lines[0] = lines[0].replace("The recall of each class", f"The {MATRIX_MAX} of the {len(names)} classes that lose most "
                                    f"recall with {ks[0]} components: their recall")
    for c in shown:
        lines.append(f"| {names[c]} | {raw['recall'][c]:.3f} | "
                     + " | ".join(f"{r['recall'][c]:.3f}" for r in runs) + " | "
                     + " | ".join(f"{100 * study['lost'][k][c]:.1f}%" for k in ks) + " |")
    lines.append("| all classes | | " + " | " * len(ks) + " | ".join(f"{100 * study['lost_all'][k]:.1f}%" for k in ks)
                 + " |")
    first = runs[0]
    drop = raw["recall"] - first["recall"]
    order = np.argsort(-drop)
    lost = study["lost"][smallest]
    r_var, r_err = correlation(lost, drop), correlation(1 - raw["recall"], drop)
    worst = ", ".join(f"{names[c]} ({raw['recall'][c]:.3f} → {first['recall'][c]:.3f}, "
                      f"{-100 * drop[c]:+.1f} points; {100 * lost[c]:.1f}% of its variance lost)" for c in order[:3])
    kept_least = ", ".join(f"{names[c]} {100 * lost[c]:.1f}%" for c in np.argsort(-lost)[:3])
    a, b = study["pair"]
    pair_lost, median_lost = study["pair_lost"], study["median_pair_lost"]
    lines.append("")
    lines.append(
        f"With {smallest} components the classes that lose most recall are {worst}. The classes whose own "
        f"variance {smallest} components keep least are {kept_least}, against {100 * study['lost_all'][smallest]:.1f}% "
        f"over all classes; over the {len(names)} classes the variance lost and the recall lost correlate at r = {r_var:.2f}"
        + (" — weakly: how much of a class's variance PCA drops does not explain what the class loses. "
           if abs(r_var) < 0.5 else ". ")
        + f"The recall lost correlates at r = {r_err:.2f} with how often the class was already mistaken with raw "
        f"pixels (1 − raw recall)" + (": PCA costs most where classes were close to begin with. " if r_err >= 0.5
                                      else ". ")
        + f"For the most confused pair, {names[a]} / {names[b]}, {smallest} components lose "
        f"{100 * pair_lost:.1f}% of the difference between their mean training images, against a median of "
        f"{100 * median_lost:.1f}% over all {len(names) * (len(names) - 1) // 2} pairs"
        + (": what separates these two is more of what PCA drops than for a typical pair." if pair_lost > median_lost
           else ": their mean images stay apart; what PCA drops is finer than the mean difference."))
    return "\n".join(lines)


def classification_report(run, names):
    lines = [f"{'':>14} {'precision':>10} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    total = int(run["support"].sum())
    for c in range(len(names)):
        lines.append(f"{names[c]:>14} {run['precision'][c]:>10.2f} {run['recall'][c]:>9.2f} "
                     f"{run['f1'][c]:>9.2f} {int(run['support'][c]):>9}")
    weights = run["support"] / total
    lines += ["",
              f"{'accuracy':>14} {'':>10} {'':>9} {run['attrs']['test_accuracy']:>9.2f} {total:>9}",
              f"{'macro avg':>14} {np.mean(run['precision']):>10.2f} {np.mean(run['recall']):>9.2f} "
              f"{np.mean(run['f1']):>9.2f} {total:>9}",
              f"{'weighted avg':>14} {np.sum(run['precision'] * weights):>10.2f} "
              f"{np.sum(run['recall'] * weights):>9.2f} {np.sum(run['f1'] * weights):>9.2f} {total:>9}"]
    return "\n".join(lines)


def markdown_confusion(confusion, names):
    if len(names) > MATRIX_MAX:   # a K x K table of numbers is unreadable: its largest cells off the diagonal
        cells = sorted(((int(confusion[t, p]), t, p) for t in range(len(names)) for p in range(len(names)) if t != p), reverse=True)
        rows = [f"| {names[t]} | {names[p]} | {n} |" for n, t, p in cells[:20] if n > 0]
        return (f"{len(names)} classes: the 20 most frequent confusions (true class, predicted class, test images) in "
                "place of the matrix, whose heat map is the picture above.\n\n"
                "| true | predicted | images |\n|---|---|---:|\n" + "\n".join(rows or ["| none | | 0 |"]))
    header = "| true \\ predicted | " + " | ".join(names) + " |"
    rule = "|---|" + "---:|" * len(names)
    rows = [f"| **{names[r]}** | " + " | ".join(
        f"**{v}**" if r == c else str(v) for c, v in enumerate(confusion[r])) + " |" for r in range(len(names))]
    return "\n".join([header, rule] + rows)


def table3_section(runs, baselines):
    """The best row of each classifier family beside this report's runs, and where each run ranks."""
    table3 = baselines["rows"]
    families = {}
    for row in table3:
        if row["classifier"] not in families or row["accuracy"] > families[row["classifier"]]["accuracy"]:
            families[row["classifier"]] = row
    entries = [(r["accuracy"], r["classifier"], r["parameters"], r["mnist_test_accuracy"], False)
               for r in families.values()]
    entries += [(acc, name, inputs, "", True) for acc, name, inputs, _ in our_entries(runs)]
    entries.sort(key=lambda e: -e[0])
    lines = ["| rank | classifier | parameters | Fashion test accuracy | MNIST test accuracy |",
             "|---:|---|---|---:|---:|"]
    for i, (acc, name, params, mnist, ours) in enumerate(entries, 1):
        if ours:
            lines.append(f"| **{i}** | **{name} ← this report** | **{params}** | **{acc:.4f}** | |")
        else:
            lines.append(f"| {i} | {name} | {params} | {acc:.3f} | {float(mnist):.3f} |")
    ranking = "\n".join(f"- Run {name} ({acc:.4f}): {where_it_ranks(acc, table3)}."
                        for acc, _, _, name in sorted(our_entries(runs), key=lambda e: -e[0]))
    return ("The scikit-learn baselines of the Fashion-MNIST paper, the best of each of its "
            f"{len(families)} classifier families (all {len(table3)} rows are in the appendix):\n\n"
            + "\n".join(lines) + "\n\n" + ranking + f"\n\nSource: {baselines['source']} (file "
            f"`data/{os.path.basename(baselines['path'])}` in this repository).")


def table3_appendix(baselines):
    table3 = baselines["rows"]
    lines = [f"## Appendix: all {len(table3)} scikit-learn baselines of the paper's Table 3\n",
             "| classifier | parameters | Fashion test accuracy | MNIST test accuracy |", "|---|---|---:|---:|"]
    for row in sorted(table3, key=lambda r: -r["accuracy"]):
        lines.append(f"| {row['classifier']} | {row['parameters']} | {row['accuracy']:.3f} | "
                     f"{float(row['mnist_test_accuracy']):.3f} |")
    return "\n".join(lines) + "\n"


def benchmark_section(runs, submitted):
    rows = submitted["rows"]
    entries = [(r["accuracy"], f"{r['classifier']}", r["preprocessing"], r["submitter"], False) for r in rows]
    for acc, name, inputs, _ in our_entries(runs):
        entries.append((acc, name, inputs, "this run", True))
    entries.sort(key=lambda e: -e[0])
    lines = ["| rank | classifier | preprocessing | Fashion test accuracy | submitter |",
             "|---:|---|---|---:|---|"]
    for i, (acc, name, prep, who, ours) in enumerate(entries, 1):
        prep = prep.replace("|", "/")
        if ours:
            lines.append(f"| **{i}** | **{name} ← this run** | **{prep}** | **{acc:.4f}** | **{who}** |")
        else:
            lines.append(f"| {i} | {name} | {prep} | {acc:.4f} | {who} |")
    sources = sorted({r["source"] for r in rows})
    text = "The benchmarks submitted to the data set's authors:\n\n" + "\n".join(lines)
    text += ("\n\nSource of every figure above except this run's: "
             + "; ".join(sources) + f" (file `data/{os.path.basename(submitted['path'])}` in this repository, copied "
             "with each row's submitter; the dataset authors note they have not verified the "
             "submitted benchmarks).")
    return text


@dataclass
class Report:
    """Everything REPORT.md says: the data's description, the results file's attributes and runs,
    the analysed run (main) and what the analysis found of it."""
    data: object
    meta: dict
    runs: dict
    main: dict
    pairs: list
    analyses: list
    median_diff: float
    picks: list
    study: object = None
    references: dict = field(default_factory=dict)


def intro_section(r):
    meta, main, out = r.meta, r.main, []
    out.append(f"# dptrain report: run {main['name']}\n")
    out.append(f"Results file written by dptrain {meta.get('dptrain_version', '?')} on "
               f"{meta.get('created', '?')} with `{meta.get('command', '?')}`.\n")
    out.append("How to read this report: the first sections describe the analysed run (the most accurate, "
               "unless `--run` chose another): its settings, accuracy and per-class scores, the confusion "
               "matrix (rows are true classes), the pairs of classes it confuses most with what in the data "
               "makes them alike, and pictures of the test images it got wrong. The later sections compare every "
               "run in the results file: training curves, raw pixels against PCA and what PCA keeps, and the "
               f"published benchmarks with their sources. Accuracies are fractions of the {len(main['predictions'])} test images; "
               "every figure is computed from the results file and the data file named here.\n")
    return out


def settings_section(r):
    a, main, out = r.main["attrs"], r.main, []
    out.append("## Settings and accuracy\n")
    out.append("| setting | value |\n|---|---|")
    for key in ("model", "pca_components", "epochs", "global_batch", "optimizer", "lr", "seed",
                "ranks", "parameters"):
        out.append(f"| {key} | {a[key]} |")
    if "settings" in a:  # every setting, defaults included (results files from 2026-12-04 on)
        out.append(f"| all settings | `{a['settings']}` |")
    if "test_views" in a:
        out.append(f"| views averaged per test image | {a['test_views']} |")
    out.append(f"| training time | {a['train_seconds']:.1f} s ({samples_per_second(main):.0f} samples/s) |")
    if "best_epoch" in a:
        out.append(f"| parameters kept | epoch {a['best_epoch']} (best validation accuracy) |")
    out.append("")
    out.append(f"**Test accuracy: {100 * a['test_accuracy']:.2f}%** (test loss {a['test_loss']:.4f}, "
               f"{len(main['predictions'])} test images, {len(main['misclassified/index'])} misclassified).\n")
    return out


def classes_section(r):
    main, f1, out = r.main, r.main["f1"], []
    order = np.argsort(-f1)
    out.append("## Classification report\n")
    out.append("```\n" + classification_report(main, r.data.names) + "\n```\n")
    out.append("## Confusion matrix\n")
    out.append("Rows: true class; columns: predicted class. ![confusion](confusion.png)\n")
    out.append(markdown_confusion(main["confusion"], r.data.names) + "\n")
    out.append("## Best and worst classes\n")
    listed = lambda classes: ", ".join((f"**{r.data.names[c]}** (F1 {f1[c]:.3f})" if i == 0 else
                                        f"{r.data.names[c]} ({f1[c]:.3f})") for i, c in enumerate(classes))
    few = min(3, r.data.k // 2)   # with two classes, one best and one worst
    out.append(f"Best: {listed(order[:few])}. Worst: {listed(order[::-1][:few])}.\n")
    return out


def pairs_section(r):
    pairs, analyses, median_diff, out = r.pairs, r.analyses, r.median_diff, []
    heading = "The five most confused pairs" if len(pairs) == 5 else f"The {len(pairs)} confused pairs"
    out.append(f"## {heading}\n")
    if not pairs:
        out.append("No pair of classes was confused: every test image was classified correctly.\n")
    if pairs:
        out.append("| pair | mistakes | A → B | B → A | mean confidence of the mistakes | "
                   "mean \\|difference\\| of class means | correlation of class means |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
    for (x, y, n), an in zip(pairs, analyses):
        ab, ba = an["mistakes"][(x, y)], an["mistakes"][(y, x)]
        weighted = (ab[0] * ab[1] + ba[0] * ba[1]) / max(ab[0] + ba[0], 1)
        out.append(f"| {r.data.names[x]} / {r.data.names[y]} | {n} | {ab[0]} | {ba[0]} | {weighted:.2f} | "
                   f"{an['mean_abs_diff']:.1f} | {an['correlation']:.3f} |")
    out.append("")
    if pairs:
        out.append(f"Why they are confused, from the data (class means over the training set, pixel "
                   f"values 0–255; the median mean |difference| over all {r.data.k * (r.data.k - 1) // 2} class pairs is "
                   f"{median_diff:.1f}). ![pairs](pairs.png)\n")
    for (x, y, n), an in zip(pairs, analyses):
        ab, ba = an["mistakes"][(x, y)], an["mistakes"][(y, x)]
        regions = " and ".join(f"{name} ({100 * share:.0f}%)" for name, share in an["regions"])
        closer = "closer than" if an["mean_abs_diff"] < median_diff else "not closer than"
        out.append(f"- **{r.data.names[x]} / {r.data.names[y]}** ({n} mistakes): their mean images "
                   f"differ by {an['mean_abs_diff']:.1f} per pixel on average, {closer} the typical "
                   f"pair, and correlate at {an['correlation']:.3f}. Most of the difference lies in "
                   f"the {regions} of the 3×3 grid of the image. {r.data.names[x]} is brighter by "
                   f"{an['brighter_a']:.0f} summed grey levels where it is brighter, "
                   f"{r.data.names[y]} by {an['brighter_b']:.0f}. The network called {ab[0]} "
                   f"{r.data.names[x]} images {r.data.names[y]} (mean confidence {ab[1]:.2f}, "
                   f"{100 * ab[2]:.0f}% above 0.9) and {ba[0]} the other way (mean confidence "
                   f"{ba[1]:.2f}, {100 * ba[2]:.0f}% above 0.9).")
    out.append("")
    return out


def mistakes_section(r):
    picks, out = r.picks, []
    out.append("## Misclassified images\n")
    if picks:
        out.append(f"{len(picks)} misclassified test images, the most confident mistakes of the most "
                   f"confused pairs and then the most confident of the rest, shown most confident "
                   f"first. ![misclassified](misclassified.png)\n")
    else:
        out.append("None: every test image was classified correctly.\n")
    out.append("## Training curves\n\n![curves](curves.png)\n")
    return out


def ranks_section(r):
    """Each rank's compute and waits over the main run's steps; a rank at 1.5x the median of the
    others' compute over the whole run is marked (the trainer's ratio, which it applies epoch by epoch)."""
    run = r.main
    if "rank_timing" not in run:
        return []
    table, hosts = run["rank_timing"], run["rank_hosts"]
    compute, wait = np.nansum(table[:, :, 0], axis=0), np.nansum(table[:, :, 1], axis=0)
    out = ["## Where the ranks' time went\n",
           f"Seconds of run {run['name']}'s steps: each rank's own work (data, forward, backward, optimizer) and "
           "its waits for the others (the gradient allreduce, the stop check). ![ranks](ranks.png)\n",
           "| rank | host | compute s | waiting s | compute / median of the others |", "|---:|---|---:|---:|---:|"]
    for rank in range(len(hosts)):
        others = np.delete(compute, rank)
        ratio = compute[rank] / np.median(others) if np.median(others) > 0 else float("nan")
        mark = " **slow**" if ratio >= 1.5 else ""
        out.append(f"| {rank} | {hosts[rank]} | {compute[rank]:.2f} | {wait[rank]:.2f} | {ratio:.2f}{mark} |")
    out.append("")
    return out


def comparison_section(r):
    runs, study, values, names, out = r.runs, r.study, r.data.values, r.data.names, []
    if len(runs) > 1 or any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
        out.append("## Raw pixels versus PCA\n")
        out.append("| run | input | components | variance kept | parameters | test accuracy | "
                   "macro F1 | training s | samples/s |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(runs.values(), key=lambda r: (r["attrs"]["pca_components"] or 10**6)):
            k = r["attrs"]["pca_components"]
            out.append(f"| {r['name']} | {'PCA' if k else 'raw'} | {k or values} | "
                       f"{100 * variance_kept(r):.2f}% | {r['attrs']['parameters']} | "
                       f"{100 * r['attrs']['test_accuracy']:.2f}% | {macro_f1(r):.4f} | "
                       f"{r['attrs']['train_seconds']:.1f} | {samples_per_second(r):.0f} |")
        out.append("")
        if any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
            out.append("![pca](pca.png)\n")
        if study:
            out.append("## What PCA keeps\n")
            out.append("![reconstruction](pca_reconstruction.png)\n")
            out.append(pca_study_section(study, names) + "\n")
    return out


def references_section(r):
    out = []
    if not r.references:
        out.append("## Published benchmarks\n")
        out.append(f"No table of published results is known for this data set ({r.data.name or 'unnamed'}, "
                   f"{r.data.text()}): `data/` holds tables for the data sets their header names, so no "
                   "comparison is drawn.\n")
        return out
    out.append(f"## Beside the published {r.data.name} benchmarks\n")
    out.append("![benchmarks](benchmarks.png)\n")
    if "baselines" in r.references:
        out.append(table3_section(r.runs, r.references["baselines"]) + "\n")
    if "submitted" in r.references:
        out.append(benchmark_section(r.runs, r.references["submitted"]) + "\n")
    if "baselines" in r.references:
        out.append(table3_appendix(r.references["baselines"]))
    return out


SECTIONS = (intro_section, settings_section, classes_section, pairs_section, mistakes_section, ranks_section,
            comparison_section, references_section)


def write_report(path, report):
    with open(path, "w") as f:
        f.write("\n".join(line for section in SECTIONS for line in section(report)))
