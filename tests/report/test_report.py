"""Unit tests of scripts/dptrain_report, one class per part (ctest runs each as unit_report_PART):
results (read and validate), analysis, figures, markdown, publish and cli."""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest
import zlib

import h5py
import numpy as np

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts")
sys.path.insert(0, SCRIPTS)

from dptrain_report import analysis, cli, figures, markdown, publish, results  # noqa: E402
from dptrain_report.results import Data, ReportError  # noqa: E402

FASHION = Data(("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"), (28, 28, 1), "Fashion-MNIST")


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def names(k):
    return tuple(f"class {c}" for c in range(k))


def run_of(confusion, pca=0):
    """A run dict as results.read_run makes it, from a confusion matrix."""
    k = len(confusion)
    true = np.repeat(np.arange(k), confusion.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(k), row) for row in confusion])
    wrong = np.nonzero(true != pred)[0]
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"name": "raw" if not pca else f"pca{pca}", "predictions": pred, "confusion": confusion,
            "support": confusion.sum(axis=1), "recall": recall, "precision": recall, "f1": recall,
            "misclassified/index": wrong, "misclassified/true_label": true[wrong],
            "misclassified/predicted": pred[wrong], "misclassified/confidence": np.linspace(0.5, 0.99, len(wrong)),
            "attrs": {"pca_components": pca, "test_accuracy": float(np.trace(confusion) / confusion.sum()),
                      "model": "mlp", "parameters": 10, "train_seconds": 1.0}}


class TestResults(unittest.TestCase):
    def test_data_description(self):
        colour = Data(names(100), (32, 32, 3), "")
        self.assertEqual((colour.k, colour.values, colour.text()), (100, 3072, "32x32x3 images of 100 classes"))

    def test_descriptions_from_the_files(self):
        with tempfile.TemporaryDirectory() as d:
            old, new, data = (os.path.join(d, n) for n in ("old.h5", "new.h5", "data.h5"))
            with h5py.File(old, "w") as f:
                f.attrs["ranks"] = 2
            with h5py.File(new, "w") as f:
                f.attrs["class_names"] = ["a", "b", "c"]
                f.attrs.update(image_height=9, image_width=13, image_channels=2, data_name="odd")
            with h5py.File(data, "w") as f:
                f.attrs["class_names"] = ["x", "y"]
                f["test/images"] = np.zeros((4, 5, 6, 3), np.uint8)
            self.assertIsNone(results.results_description(old))   # older results: the data file says
            self.assertEqual(results.results_description(new), Data(("a", "b", "c"), (9, 13, 2), "odd"))
            self.assertEqual(results.data_file_description(data), Data(("x", "y"), (5, 6, 3), ""))
            with self.assertRaisesRegex(ReportError, "names the classes"):
                results.data_file_description(old)

    def test_history_of_epochs_not_evaluated(self):
        columns = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "samples_per_second")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.h5")
            for test, fine in (([np.nan, .8, .9], True), ([.8, .9, np.nan], False), ([.8, np.inf, .9], False)):
                with h5py.File(path, "w") as f:
                    for column in columns:
                        f[f"history/{column}"] = np.array(test if column.startswith("test_") else [1.0, 2.0, 3.0])
                with h5py.File(path, "r") as f:
                    run = {}
                    if fine:   # --eval-every: NaN where an epoch was not evaluated, the last always is
                        results.read_history(f, path, "runs/raw", run)
                        self.assertTrue(np.isnan(run["history/test_accuracy"][0]))
                    else:
                        with self.assertRaisesRegex(ReportError, "last epoch|not finite"):
                            results.read_history(f, path, "runs/raw", run)

    def test_rank_timing(self):
        table = np.array([[[1.0, 0.5], [2.0, 0.1]], [[1.1, 0.4], [2.1, 0.0]], [[np.nan, np.nan], [np.nan, np.nan]]])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.h5")
            for value, hosts, error in ((table, ["a", "b"], None), (table[:2], ["a", "b"], "expected \\(3, 2, 2\\)"),
                                        (-table, ["a", "b"], "negative"), (table, ["a"], "rank_hosts"),
                                        (np.inf * table, ["a", "b"], "not finite")):
                with h5py.File(path, "w") as f:
                    f["rank_timing"] = value
                    f.attrs["rank_hosts"] = hosts
                with h5py.File(path, "r") as f:
                    run = {"history/epoch": np.arange(1.0, 4.0), "attrs": {"ranks": 2}}
                    if error is None:   # NaN: the epochs before a resume
                        results.read_rank_timing(f, path, "run raw", run)
                        self.assertEqual((run["rank_timing"].shape, run["rank_hosts"]), ((3, 2, 2), ["a", "b"]))
                    else:
                        with self.assertRaisesRegex(ReportError, error):
                            results.read_rank_timing(f, path, "run raw", run)
            run = {}
            with h5py.File(path, "w") as f:
                results.read_rank_timing(f, path, "run raw", run)   # one rank: no table, nothing read
            self.assertEqual(run, {})

    def test_seal(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.h5")
            with h5py.File(path, "w", userblock_size=512) as f:
                f.attrs["x"] = 1
            with open(path, "rb") as f:
                body = f.read()[512:]
            header = b"dptrain-seal 1\nsize %d\ncrc32 %08x\n" % (512 + len(body), zlib.crc32(body))
            write(path, header + bytes(512 - len(header)) + body)
            results.check_seal(path)
            write(path, b"x", "ab")
            with self.assertRaisesRegex(ReportError, "extended after it was written"):
                results.check_seal(path)
            write(path, header + bytes(512 - len(header)) + body[:-1] + b"\1")
            with self.assertRaisesRegex(ReportError, "fail the CRC-32"):
                results.check_seal(path)

    def test_reference_tables_by_the_data_set_they_name(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "a.csv"), "w") as f:
                f.write("# data set: Fashion-MNIST\n# From a paper.\nclassifier,parameters,fashion_test_accuracy\n"
                        "SVC,C=10,0.897\n")
            with open(os.path.join(d, "b.csv"), "w") as f:
                f.write("# data set: Fashion-MNIST\nclassifier,submitter,fashion_test_accuracy\nMLP,me,0.88\n")
            found = results.read_references(FASHION, d)
            self.assertEqual(sorted(found), ["baselines", "submitted"])
            self.assertEqual((found["baselines"]["rows"][0]["accuracy"], found["baselines"]["source"]),
                             (0.897, "From a paper."))
            self.assertEqual(results.read_references(Data(names(2), (9, 13, 1), "odd"), d), {})
            self.assertEqual(results.read_references(Data(names(2), (9, 13, 1), ""), d), {})
            with open(os.path.join(d, "c.csv"), "w") as f:
                f.write("classifier,fashion_test_accuracy\nx,0.5\n")
            with self.assertRaisesRegex(ReportError, "data set: NAME"):
                results.read_references(FASHION, d)

    def test_the_repository_tables(self):
        found = results.read_references(FASHION)
        self.assertEqual(len(found["baselines"]["rows"]), 126)
        self.assertEqual(len(found["submitted"]["rows"]), 37)


class TestAnalysis(unittest.TestCase):
    def test_confused_pairs_both_directions(self):
        confusion = np.array([[50, 3, 0], [4, 40, 1], [0, 5, 30]])
        self.assertEqual(analysis.confused_pairs(confusion), [(0, 1, 7), (1, 2, 6)])
        self.assertEqual(analysis.confused_pairs(np.diag([5, 5])), [])

    def test_class_means_and_thirds(self):
        images = np.array([np.full((3, 4), 10), np.full((3, 4), 30), np.full((3, 4), 7)], np.uint8)
        means = analysis.class_means(images, np.array([0, 0, 2]), 3)
        self.assertEqual(means.shape, (3, 3, 4))
        np.testing.assert_array_equal(means[:, 0, 0], [20, 0, 7])
        self.assertEqual([s for _, s in analysis.thirds(28, "abc")], [slice(0, 9), slice(9, 19), slice(19, 28)])

    def test_pair_analysis_finds_the_region(self):
        means = np.zeros((2, 9, 9))
        means[0, 0:3, 6:9] = 100   # class 0 brighter in the top right
        an = analysis.pair_analysis(0, 1, means, run_of(np.array([[3, 1], [2, 4]])))
        self.assertEqual(an["regions"][0][0], "top right")
        self.assertAlmostEqual(an["regions"][0][1], 1.0)
        self.assertEqual((an["mistakes"][(0, 1)][0], an["mistakes"][(1, 0)][0]), (1, 2))

    def test_picks_cover_the_pairs_most_confident_first(self):
        run = run_of(np.array([[10, 20, 0], [5, 10, 0], [0, 1, 10]]))
        picks = analysis.pick_misclassified(run, analysis.confused_pairs(run["confusion"]), total=6)
        self.assertEqual(len(picks), 6)
        confidences = [p[3] for p in picks]
        self.assertEqual(confidences, sorted(confidences, reverse=True))
        self.assertIn((2, 1), {(p[1], p[2]) for p in picks})   # the second pair is shown too

    def test_where_it_ranks(self):
        table = [{"accuracy": 0.9, "classifier": "SVC", "parameters": "C=10"}, {"accuracy": 0.8,
                                                                                 "classifier": "MLP", "parameters": ""}]
        self.assertTrue(analysis.where_it_ranks(0.95, table).startswith("above all 2"))
        self.assertTrue(analysis.where_it_ranks(0.85, table).startswith("below 1 of the 2"))


class TestFigures(unittest.TestCase):
    def test_show_grey_and_colour(self):
        fig, ax = figures.plt.subplots()
        figures.show(ax, np.zeros(12), (3, 4, 1))
        figures.show(ax, np.full(36, 255), (3, 4, 3))
        self.assertEqual([i.get_array().shape for i in ax.get_images()], [(3, 4), (3, 4, 3)])
        figures.plt.close(fig)

    def test_curves_skip_the_epochs_not_evaluated(self):
        nan = float("nan")
        run = {"name": "raw", "history/epoch": np.arange(1.0, 5.0), "history/train_loss": np.array([1.0, .8, .7, .6]),
               "history/train_accuracy": np.array([.6, .7, .8, .85]), "history/test_loss": np.array([nan, .7, nan, .5]),
               "history/test_accuracy": np.array([nan, .75, nan, .86]), "history/val_accuracy": np.array([nan, .7, nan, .8])}
        self.assertEqual([list(v) for v in figures.evaluated(run["history/epoch"], run["history/test_accuracy"])],
                         [[2.0, 4.0], [.75, .86]])
        with tempfile.TemporaryDirectory() as d:
            figures.figure_curves({"raw": run}, os.path.join(d, "curves.png"))
            with open(os.path.join(d, "curves.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_ranks_figure(self):
        run = {"name": "raw", "history/epoch": np.arange(1.0, 3.0), "rank_hosts": ["node1", "node2"],
               "rank_timing": np.array([[[1.0, 0.9], [2.0, 0.1]], [[1.0, 1.0], [2.0, 0.0]]])}
        with tempfile.TemporaryDirectory() as d:
            figures.figure_ranks(run, os.path.join(d, "ranks.png"))
            with open(os.path.join(d, "ranks.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_figures_of_many_classes_and_colour(self):
        data = Data(names(30), (5, 7, 3), "")
        run = run_of(np.eye(30, dtype=int) * 3 + 1)
        with tempfile.TemporaryDirectory() as d:
            figures.figure_confusion(run, data, os.path.join(d, "c.png"))
            means = np.random.default_rng(0).uniform(0, 255, (30, 5, 7, 3))
            figures.figure_pairs(analysis.confused_pairs(run["confusion"], 2), means, data, os.path.join(d, "p.png"))
            for name in ("c.png", "p.png"):
                with open(os.path.join(d, name), "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class TestMarkdown(unittest.TestCase):
    def test_confusion_matrix_or_its_worst_cells(self):
        small = markdown.markdown_confusion(np.array([[5, 1], [2, 7]]), ("a", "b"))
        self.assertEqual(small.splitlines()[0], "| true \\ predicted | a | b |")
        self.assertIn("| **b** | 2 | **7** |", small)
        confusion = np.eye(25, dtype=int) * 9
        confusion[3, 4] = 6
        big = markdown.markdown_confusion(confusion, names(25))
        self.assertIn("25 classes: the 20 most frequent confusions", big)
        self.assertIn("| class 3 | class 4 | 6 |", big)

    def test_classification_report_names_every_class(self):
        run = run_of(np.array([[8, 2], [1, 9]]))
        text = markdown.classification_report(run, ("left", "right"))
        self.assertIn("left", text)
        self.assertIn("right", text)
        self.assertIn("20", text.splitlines()[-1])   # the support of all

    def test_ranks_section_marks_the_slow_rank(self):
        run = run_of(np.array([[8, 2], [1, 9]]))
        report = markdown.Report(Data(("a", "b"), (9, 13, 1), "odd"), {}, {"raw": run}, run, [], [], 0.0, [])
        self.assertEqual(markdown.ranks_section(report), [])   # one rank: no section
        run["rank_hosts"] = ["node1", "node2", "node3"]
        run["rank_timing"] = np.array([[[1.0, 1.0], [1.2, 0.8], [3.0, 0.0]]])
        text = "\n".join(markdown.ranks_section(report))
        self.assertIn("| 2 | node3 | 3.00 | 0.00 | 2.73 **slow** |", text)
        self.assertIn("| 0 | node1 | 1.00 | 1.00 | 0.48 |", text)

    def test_no_references_says_so(self):
        run = run_of(np.array([[8, 2], [1, 9]]))
        report = markdown.Report(Data(("a", "b"), (9, 13, 1), "odd"), {}, {"raw": run}, run, [], [], 0.0, [])
        text = "\n".join(markdown.references_section(report))
        self.assertIn("No table of published results is known for this data set (odd, 9x13x1 images of 2", text)


class TestPublish(unittest.TestCase):
    def test_refuses_a_foreign_folder_untouched(self):
        with tempfile.TemporaryDirectory() as d:
            write(os.path.join(d, "REPORT.md"), "mine", "w")
            with self.assertRaisesRegex(ReportError, "is not a report folder"):
                publish.out_folder_mode(d)
            with open(os.path.join(d, "REPORT.md")) as f:
                self.assertEqual(f.read(), "mine")

    def test_new_then_merge_drops_stale_files(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "rep")
            publish.publish(out, publish.out_folder_mode(out), lambda f: [open(os.path.join(f, n), "w").close()
                                                                         for n in ("a.png", "b.png")], [])
            write(os.path.join(out, "notes.txt"), "user's", "w")
            publish.publish(out, publish.out_folder_mode(out), lambda f: open(os.path.join(f, "a.png"), "w").close(), [])
            self.assertEqual(sorted(os.listdir(out)), [publish.MARKER, "a.png", "notes.txt"])

    def test_a_failed_draw_leaves_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "rep")

            def draw(folder):
                open(os.path.join(folder, "a.png"), "w").close()
                raise OSError(28, "No space left on device")
            with self.assertRaisesRegex(ReportError, r"no space left on .* \(nothing was changed there\)"):
                publish.publish(out, "new", draw, [])
            self.assertEqual(os.listdir(d), [])


class TestCli(unittest.TestCase):
    def call(self, code):
        return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {SCRIPTS!r})\n" + code],
                              capture_output=True, text=True)

    def test_expected_failure_is_one_line(self):
        r = self.call("from dptrain_report import cli\ncli.main(['/nonexistent.h5'])")
        self.assertEqual((r.returncode, r.stderr), (1, "report: error: /nonexistent.h5: no such results file\n"))

    def test_a_bug_shows_its_traceback_and_where_to_report(self):
        r = self.call("from dptrain_report import cli\n"
                      "def build(args): return 1 / 0\n"
                      "cli.build = build\ncli.main(['x.h5'])")
        self.assertEqual(r.returncode, 1)
        self.assertIn("Traceback (most recent call last)", r.stderr)
        self.assertIn("ZeroDivisionError", r.stderr)
        self.assertIn("this is a bug in scripts/report.py", r.stderr)
        self.assertIn("issue tracker", r.stderr)

    def test_choose_run(self):
        runs = {"raw": {"attrs": {"test_accuracy": 0.8}}, "pca50": {"attrs": {"test_accuracy": 0.9}}}
        self.assertIs(cli.choose_run(runs, None), runs["pca50"])
        with self.assertRaisesRegex(ReportError, "--run x: the results hold raw, pca50"):
            cli.choose_run(runs, "x")
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            cli.parse([])


if __name__ == "__main__":
    unittest.main()
