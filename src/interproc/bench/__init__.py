"""Benchmarks of interproc's Queue against multiprocessing, faster-fifo and hyperq,
of its Pipe against multiprocessing and pyzmq, of its synchronization
primitives against multiprocessing's, of its SharedDict and SharedList
against multiprocessing's Manager proxies and UltraDict, of its Redis
backend's queue and dict against hand-written redis-py, and of its Queue and
Pipe moving large numpy arrays (the transfer curve).

``interproc bench`` and ``benchmarks/run.py`` both call `main`.  The cases
are listed in `cases`; their trials live in one module per family
(`throughput`, `latency`, `resources`, `sync`, `containers`, `redis`,
`arrays`); `runner` owns processes, trials and medians; `adapters` gives
every queue, and every pipe, the same small surface (`containers` registers
its own dicts and lists there); `report` and `machine` write the results,
`plot` the transfer curve.
"""
from .command import main

__all__ = ["main"]
