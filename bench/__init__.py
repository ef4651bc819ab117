"""Benchmarks: fallbackbus against the raw clients, measured side by side in the same run.

``python -m bench`` (``make bench``) runs every figure and prints one table of ratios; see
:mod:`bench.cli`. Absolute figures on a shared machine move from run to run, so every figure is
compared with a baseline written with the raw clients and measured in the same run.
"""
