"""Large arrays through a Redis queue: out of band against in band.

One process puts a float64 array into a Redis queue and gets it back, as
the queue does it (its buffers out of band: sent as they are, joined by the
server, copied once on receipt) and as it did before (the array pickled
in band into one payload).  The two alternate, trial by trial.  Printed,
for each size: the median wall time of a put and get, and the median CPU
time this process spent on it; the server's own time is in the wall time.

It starts a redis-server of its own (Debian's package) on a free port.

Usage: python benchmarks/redis_arrays.py [--sizes 1 16 100] [--trials 7]
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time

import numpy as np

from interproc.backends.redis.client import Connection
from interproc.backends.redis.queues import Queue

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 100],
                        help="array sizes in MiB (default: 1 16 100)")
    parser.add_argument("--trials", type=int, default=7, help="trials per size and way (default: 7)")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        conn = Connection.from_url(f"redis://127.0.0.1:{port}/0")
        for _ in range(100):
            try:
                conn.client.ping()
                break
            except Exception:
                time.sleep(0.05)
        q = Queue(conn)
        print("| item | way | put + get | GB/s | client CPU |")
        print("| --- | --- | --- | --- | --- |")
        for size in args.sizes:
            a = np.ones(size * MIB // 8)
            ways = {
                "out of band": lambda: q.put(a),
                "in band": lambda: q._put_payloads([q._codec.dumps(a)], True, None, False),
            }
            times = {way: ([], []) for way in ways}
            for _ in range(args.trials):
                for way, put in ways.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    put()
                    got = q.get()
                    times[way][0].append(time.perf_counter() - wall)
                    times[way][1].append(time.process_time() - cpu)
                    del got
            for way, (wall, cpu) in times.items():
                w, c = statistics.median(wall), statistics.median(cpu)
                print(f"| {size} MiB | {way} | {w * 1000:.1f} ms | {size * MIB / w / 1e9:.2f} "
                      f"| {c * 1000:.1f} ms |")
        q._destroy()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
