"""The report of a dptrain results file, as a package behind scripts/report.py:

  results   read and validate the results file, the data file and the reference tables
  analysis  the numbers: confused pairs, mistakes shown, class means, what PCA keeps, rankings
  figures   the PNG files
  markdown  REPORT.md, one function per section
  publish   the report folder appears whole, and nothing it did not write is touched
  cli       the command and its errors
"""
