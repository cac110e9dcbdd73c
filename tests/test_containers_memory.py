"""A SharedDict is held once, in shared memory, however many processes read
it: one million small entries read in full by four processes cost about one
copy in total (summed PSS), not four.

The dict is built by a child that then exits and read by spawned children
that open it by name, so that nobody else maps it and each reader's PSS
counts exactly its share of the pages.
"""

import multiprocessing
import os

import pytest

import interproc

import _containers_helpers as ch
import _helpers

N = 1_000_000
CHUNK = 50_000
READERS = 4
TIMEOUT = 120


def available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(available_bytes() < 2 * 1024**3, reason="needs about 2 GiB of free memory"),
    pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs /proc/<pid>/smaps_rollup"),
]


def run_readers(ctx, name, n):
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [ctx.Process(target=ch.read_every_entry, args=(name, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=TIMEOUT) for _ in procs]
    finally:
        for p in procs:
            p.join(TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(10)
    assert [p.exitcode for p in procs] == [0] * n, [ch.describe_exit(p.exitcode) for p in procs]
    return results


@_helpers.needs_plain_allocator
def test_readers_share_one_copy(unique_name):
    name = unique_name()
    fork = multiprocessing.get_context("fork")
    builder = fork.Process(target=ch.build_big_dict, args=(name, N, CHUNK))
    builder.start()
    builder.join(TIMEOUT * 2)
    if builder.is_alive():
        builder.kill()
        builder.join(10)
    assert builder.exitcode == 0, ch.describe_exit(builder.exitcode)
    segment = os.stat(f"/dev/shm/interproc.{name}").st_size

    expected = ch.expected_total(N)
    spawn = multiprocessing.get_context("spawn")
    (single,) = run_readers(spawn, name, 1)
    many = run_readers(spawn, name, READERS)
    for pid, n, count, total, before, after in [single, *many]:
        assert n == count == N, f"reader {pid}: len {n}, iterated {count}"
        assert total == expected, f"reader {pid}: read wrong values"

    one = single[5] - single[4]
    together = sum(after - before for *_, before, after in many)
    print(f"segment {segment / 2**20:.1f} MiB; PSS increase: one reader alone {one / 1024:.1f} MiB, "
          f"{READERS} readers together {together / 1024:.1f} MiB "
          f"({[round((a - b) / 1024, 1) for *_, b, a in many]})")
    assert one > 0
    assert together < 1.6 * one, (
        f"{READERS} readers cost {together / 1024:.1f} MiB of PSS in total, "
        f"one alone {one / 1024:.1f} MiB: they do not share one copy"
    )
    interproc.unlink(name)
