"""Reporting of a finished run: tables, figures, performance and the machine-readable summary.

Input is the long record format that the evaluation rules write (:mod:`tina.evaluate.records`),
one CSV per experiment (``results/<run>/eval/<experiment>.csv``) with one row per (method,
setting, task, sample). The modules: :mod:`~tina.report.style` (labels, orders, colours),
:mod:`~tina.report.tables` (reading records, per-experiment tables),
:mod:`~tina.report.figures` (one figure per experiment), :mod:`~tina.report.performance`
(Snakemake benchmarks) and :mod:`~tina.report.summary` (``summary.json`` and ``results.md``).
Compute jobs never import this package.
"""
