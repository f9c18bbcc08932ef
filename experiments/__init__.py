"""Sweeps that reproduce the paper's ablations (arXiv 1709.01507, Tables 10-16), and their report.

A sweep file (`reduction_ratio.py`, `squeeze.py`, ...) names a base config and
a list of overrides; `python -m experiments.sweep FILE --root=DIR` runs it on
the paper's setting or, with `--dataset`, on CIFAR or the embedded digits, and
`python -m experiments.report DIR` writes the tables and plots beside the
paper's numbers (`paper.py`).
"""
