"""Benchmarks of interproc's Queue against multiprocessing, faster-fifo and hyperq.

``interproc bench`` and ``benchmarks/run.py`` both call `main`.  The cases
live in `cases`, one module per family (`throughput`, `latency`,
`resources`); `runner` owns processes, trials and medians; `adapters` gives
every queue the same small surface; `report` and `machine` write the results.
"""
from .command import main

__all__ = ["main"]
