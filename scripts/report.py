#!/usr/bin/python3
"""Draw the report of a dptrain results file.

usage: scripts/report.py RESULTS.h5 [--data FILE] [--out DIR] [--run NAME]

Writes into DIR (default: RESULTS_report beside the results file). A new DIR appears whole (a
temporary folder renamed into place); an existing DIR is used only when it is empty or a report
folder of this script (it holds .dptrain-report, the list of the files a report wrote), and then
only those files are replaced, each atomically. Any other existing DIR is refused, untouched:
the report never removes or replaces what it did not write.
  misclassified.png  the most confident mistakes, covering the most confused class pairs
  confusion.png      the confusion matrix as an annotated heat map
  curves.png         loss and accuracy per epoch, one line per run
  pairs.png          mean images of the most confused class pairs and their difference
  pca.png            variance kept and accuracy against components, and the first components
                     (only when a run used PCA)
  pca_reconstruction.png  test images of the most confused classes and their reconstructions from
                     K = 10, 25, 50, 100, 200 components (with a raw and a PCA run)
  benchmarks.png     every published benchmark's accuracy (submitted ones and the paper's Table 3
                     scikit-learn baselines) with this report's runs marked
  REPORT.md          settings, accuracy, classification report, confusion matrix, the most
                     confused pairs with an analysis, best and worst classes, the raw-versus-PCA
                     table and the comparison with the published Fashion-MNIST benchmarks
The class names, the image shape and channels come from the results file (attributes class_names,
image_height, image_width, image_channels, data_name), or for a results file written before dptrain
wrote them, from the data file. Colour images are drawn in colour; beyond 20 classes the confusion
is shown as its most confused pairs; published results are compared from the tables in data/*.csv
whose header line '# data set: NAME' names the results' data set.
The code is the package dptrain_report beside this script (its __init__ lists the parts).
Needs Debian's python3-h5py, python3-numpy and python3-matplotlib (scripts/setup.sh).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dptrain_report.cli import main  # noqa: E402  (the package sits beside this script)

if __name__ == "__main__":
    main()
