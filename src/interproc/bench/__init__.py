"""Benchmarks of interproc's Queue against multiprocessing, faster-fifo and hyperq,
and of its Pipe against multiprocessing and pyzmq.

``interproc bench`` and ``benchmarks/run.py`` both call `main`.  The cases
live in `cases`, one module per family (`throughput`, `latency`,
`resources`); `runner` owns processes, trials and medians; `adapters` gives
every queue, and every pipe, the same small surface; `report` and `machine`
write the results.
"""
from .command import main

__all__ = ["main"]
