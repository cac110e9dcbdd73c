"""Resident memory of a stream of large arrays through interproc.Queue:
while it runs, and once it has stopped.

A producer process puts float64 arrays of --size MiB into a named
Queue(maxsize=4); the consumer (this process) gets them.  Printed, as a
Markdown table for benchmarks/RESULTS.md:

- the queue's shared memory resident (its /dev/shm file's allocated
  blocks), and the consumer's and producer's RSS, sampled while the stream
  runs (the largest seen);
- the same once the stream has stopped and the consumer has waited on the
  empty queue for --idle seconds (the queue gives idle regions back after
  a second, and the consumer its kept receive buffer).

Usage: python benchmarks/array_memory.py [--size 100] [--items 60] [--idle 3]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import time

import numpy as np

import interproc

MIB = 1 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def produce(name: str, size: int, items: int) -> None:
    q = interproc.Queue(name=name, create=False)
    a = np.arange(size // 8, dtype=np.float64)
    for _ in range(items):
        q.put(a)
    time.sleep(3600)  # stays alive, idle, until the parent ends it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="array size in MiB (default 100)")
    parser.add_argument("--items", type=int, default=60, help="arrays streamed (default 60)")
    parser.add_argument("--idle", type=float, default=3.0,
                        help="seconds the consumer then waits on the empty queue (default 3)")
    args = parser.parse_args()
    size = args.size * MIB
    name = f"array-memory-{os.getpid()}"
    q = interproc.Queue(maxsize=4, name=name, create=True)
    path = f"/dev/shm/interproc.{name}"
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=produce, args=(name, size, args.items))
    p.start()
    try:
        peak = {"queue": 0, "consumer": 0, "producer": 0}
        start = time.perf_counter()
        for i in range(args.items):
            x = q.get(timeout=60)
            if i >= 4:  # past the first lap
                peak["queue"] = max(peak["queue"], os.stat(path).st_blocks * 512)
                peak["consumer"] = max(peak["consumer"], rss(os.getpid()))
                peak["producer"] = max(peak["producer"], rss(p.pid))
        elapsed = time.perf_counter() - start
        del x
        try:
            q.get(timeout=args.idle)
        except queue.Empty:
            pass
        after = {"queue": os.stat(path).st_blocks * 512, "consumer": rss(os.getpid()),
                 "producer": rss(p.pid)}
    finally:
        p.kill()
        p.join()
        q.close()
        interproc.unlink(name)
    print(f"- command: `python benchmarks/array_memory.py --size {args.size} --items {args.items} "
          f"--idle {args.idle:g}`; {args.items} arrays in {elapsed:.2f} s "
          f"({args.items * size / elapsed / 1e9:.2f} GB/s, first lap included)")
    print()
    print("| what | during the stream (largest seen) | after it, consumer waiting "
          f"{args.idle:g} s |")
    print("| --- | --- | --- |")
    labels = {"queue": "queue's shared memory (its file's blocks)",
              "consumer": "consumer RSS", "producer": "producer RSS (holds its array)"}
    for key, label in labels.items():
        print(f"| {label} | {peak[key] / MIB:,.0f} MiB | {after[key] / MIB:,.0f} MiB |")


if __name__ == "__main__":
    main()
