"""The command: scripts/report.py RESULTS.h5 [--data FILE] [--out DIR] [--run NAME].

Expected failures (bad inputs, a refused folder, a full disk) are raised where they happen as a
ReportError and printed as one line. Anything else is a bug of the report: its traceback is shown,
with where to report it, and the exit status is 1."""
import argparse
import os
import sys
import traceback

BUG_REPORT = ("report: this is a bug in scripts/report.py, not a problem with your files: please report it to "
              "the dptrain maintainers on the project's issue tracker, with the command line and the traceback "
              "above")


def fail(message):
    print(f"report: error: {message}", file=sys.stderr)
    sys.exit(1)


def check_libraries():
    try:
        import h5py  # noqa: F401
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        fail(f"{e.name} is missing (run scripts/setup.sh to install python3-h5py, "
             f"python3-numpy and python3-matplotlib)")


def parse(argv):
    parser = argparse.ArgumentParser(prog="report.py", description="Draw the report of a dptrain results file.")
    parser.add_argument("results", help="results file written by dptrain train, compare or eval")
    parser.add_argument("--data", default="data/fashion-mnist.h5", help="the data file (default %(default)s)")
    parser.add_argument("--out", help="output folder (default: RESULTS_report beside the results file)")
    parser.add_argument("--run", help="the run to analyse (default: the most accurate)")
    return parser.parse_args(argv)


def choose_run(runs, name):
    from .results import ReportError
    if name is None:
        return max(runs.values(), key=lambda r: r["attrs"]["test_accuracy"])
    if name not in runs:
        raise ReportError(f"--run {name}: the results hold {', '.join(runs)}")
    return runs[name]


def read_inputs(args):
    """The data's description, the results and the data file's arrays, all checked."""
    from . import results
    data = results.results_description(args.results) or results.data_file_description(args.data)
    meta, runs = results.read_results(args.results, data)
    main = choose_run(runs, args.run)
    arrays = results.read_data(args.data, len(main["predictions"]), data)
    return data, meta, runs, main, arrays


def build(args):
    from . import publish
    out = args.out or os.path.splitext(args.results)[0] + "_report"
    mode = publish.out_folder_mode(out)   # first: a refused folder costs no work
    data, meta, runs, main, arrays = read_inputs(args)
    report, class_means = analysis_of(data, meta, runs, main, arrays, args.data)
    publish.publish(out, mode, lambda folder: draw(folder, report, class_means, arrays),
                    [args.results, args.data])
    return out


def analysis_of(data, meta, runs, main, arrays, data_path):
    from . import analysis
    from .markdown import Report
    from .results import ReportError, read_references
    train_images, train_labels, test_images, test_labels = arrays
    if not (main["misclassified/true_label"] == test_labels[main["misclassified/index"]]).all():
        raise ReportError(f"{data_path}: test labels differ from the results' (made with another data file?)")
    class_means = analysis.class_means(train_images, train_labels, data.k)
    pairs = analysis.confused_pairs(main["confusion"])
    study = analysis.pca_study(runs, train_images, train_labels)
    if study:
        analysis.add_pair_study(study, class_means)
    report = Report(data, meta, runs, main, pairs, [analysis.pair_analysis(a, b, class_means, main) for a, b, _ in pairs],
                    analysis.all_pair_median_diff(class_means), analysis.pick_misclassified(main, pairs), study,
                    read_references(data))
    return report, class_means


def report_bug(kind, value, trace):
    """sys.excepthook: an exception nothing expected ends the report with its traceback (Python's
    exit status 1) and says where to report it."""
    traceback.print_exception(kind, value, trace)
    if not issubclass(kind, KeyboardInterrupt):
        print(BUG_REPORT, file=sys.stderr)


def draw(folder, report, class_means, arrays):
    """Every figure and REPORT.md into FOLDER."""
    from . import analysis, figures
    from .markdown import write_report
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    data, main, runs = report.data, report.main, report.runs
    _, _, test_images, test_labels = arrays
    figures.figure_misclassified(report.picks, test_images, data, path("misclassified.png"))
    figures.figure_confusion(main, data, path("confusion.png"))
    figures.figure_curves(runs, path("curves.png"))
    if "rank_timing" in main:
        figures.figure_ranks(main, path("ranks.png"))
    if report.pairs:
        figures.figure_pairs(report.pairs, class_means, data, path("pairs.png"))
    if any(r["attrs"]["pca_components"] > 0 for r in runs.values()):
        figures.figure_pca(runs, data, path("pca.png"))
    if report.references:
        figures.figure_benchmarks(runs, report.references, data, path("benchmarks.png"))
    if report.study:
        classes = analysis.confused_classes(report.pairs) or [0, 1]
        figures.figure_reconstruction(report.study, classes, (test_images, test_labels), data,
                                      path("pca_reconstruction.png"))
    write_report(path("REPORT.md"), report)


def main(argv=None):
    sys.excepthook = report_bug
    args = parse(sys.argv[1:] if argv is None else argv)
    check_libraries()
    from .results import ReportError
    try:
        out = build(args)
    except ReportError as e:
        fail(str(e))
    print(f"report written to {out}/REPORT.md")
