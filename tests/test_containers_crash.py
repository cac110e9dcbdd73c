"""Crash safety of SharedDict and SharedList: writers SIGKILLed at random
points, hundreds of times.  After each kill another process must be able to
lock and read everything at once; every value must be one that was written
whole (values carry a checksum and name their key), the length must match
the keys, and a single operation (set, update, slice assignment...) must
have happened entirely or not at all.

Fork only: these tests start hundreds of processes and spawn would spend the
time budget on interpreter start-up instead of on kills.  Every random choice
comes from one seed that is printed with each failure.
"""

import collections
import multiprocessing
import random
import signal
import time

import pytest

from interproc import SharedDict, SharedList

import _containers_helpers as ch
from _helpers import KillDelay, kill_and_reap, more_rounds, new_seed, read_lines, start

FORK = multiprocessing.get_context("fork")
JOIN_TIMEOUT = 30
# How long taking the lock may take after a kill: the dead holder must be
# found out promptly, not after a long timeout.
LOCK_TIMEOUT = 5.0
PROMPT = 1.0
MiB = 1024 * 1024

pytestmark = [
    pytest.mark.timeout(120),
    # A writer killed inside an operation may leave its lock to be taken
    # over; that is what these tests do on purpose.
    pytest.mark.filterwarnings("ignore::interproc.OwnerDiedWarning"),
]


def locked(obj, ctx, read):
    """read(obj) under obj.lock, which must be had promptly."""
    t0 = time.monotonic()
    assert obj.lock.acquire(timeout=LOCK_TIMEOUT), f"{ctx}: lock not had within {LOCK_TIMEOUT}s"
    waited = time.monotonic() - t0
    try:
        return read(obj), waited
    finally:
        obj.lock.release()


def kill_writers_at_random(rng, writers, kills, spawn, after_kill):
    """Kill ``kills`` times a writer picked at random from ``writers``, after
    a random pause of up to 20 ms, each time putting ``spawn()`` in its slot
    and then calling ``after_kill(round)``; kill the rest at the end.

    Returns how many writers were started in all, and the (round, exit code)
    of each writer found to have died by itself instead of by the kill.
    """
    started = len(writers)
    unexpected = []
    try:
        for r in range(kills):
            time.sleep(rng.uniform(0, 0.02))
            slot = rng.randrange(len(writers))
            code = kill_and_reap(writers[slot])
            if code != -signal.SIGKILL:
                unexpected.append((r, code))
            writers[slot] = spawn()
            started += 1
            after_kill(r)
    finally:
        for w in writers:
            kill_and_reap(w)
    return started, unexpected


def snapshot_dict(d):
    return d.copy(), list(d), len(d), list(d.items())


def check_dict(d, ctx, writer_tags):
    (snap, keys, n, items), waited = locked(d, ctx, snapshot_dict)
    assert n == len(snap) == len(keys) == len(items), f"{ctx}: len {n}, {len(snap)} copied, {len(keys)} iterated"
    assert keys == list(snap), f"{ctx}: iteration and copy() disagree"
    groups = collections.defaultdict(set)
    for (k, v), (k2, v2) in zip(snap.items(), items):
        assert k == k2 and v == v2, f"{ctx}: items() and copy() disagree at {k!r}"
        assert type(k) is tuple, f"{ctx}: foreign key {k!r:.100}"
        if k[0] in ("s", "g", "held"):
            try:
                seq = ch.check_value(k, v)
            except AssertionError as exc:
                raise AssertionError(f"{ctx}: {exc}") from None
            if isinstance(seq[0], int):
                writer_tags.add(seq[0])
            if k[0] == "g":
                groups[k[1]].add(seq)
        elif k[0] == "n":
            assert type(v) is int and v > 0, f"{ctx}: counter {k!r} = {v!r}"
        else:
            raise AssertionError(f"{ctx}: unexpected key {k!r:.100}")
    torn = {g: seqs for g, seqs in groups.items() if len(seqs) > 1}
    assert not torn, f"{ctx}: groups written by one update() hold values of several: {torn}"
    # Lookups find what iteration found (outside the lock: the writers may
    # have moved on, so only a present key's value is checked).
    rng = random.Random(len(snap))
    for k in rng.sample(keys, min(20, len(keys))):
        v = d.get(k)
        if v is not None and k[0] != "n":
            ch.check_value(k, v)
    return waited


@pytest.mark.timeout(150)
def test_dict_writers_killed_at_random():
    seed = new_seed()
    rng = random.Random(seed)
    ctx0 = f"seed={seed}"
    n_single, n_groups, n_writers, kills = 20, 8, 2, 200
    d = SharedDict()

    def spawn():
        return start(FORK, ch.dict_writer, d, rng.getrandbits(31), n_single, n_groups)

    tags_seen = set()
    waits = []

    def check(r):
        waits.append(check_dict(d, f"{ctx0} round {r}", tags_seen))
        if r % 25 == 24:
            # another process locks, reads and writes too
            checker = start(FORK, ch.check_dict_in_child, d, n_single)
            checker.join(JOIN_TIMEOUT)
            assert checker.exitcode == 0, f"{ctx0} round {r}: checker {ch.describe_exit(checker.exitcode)}"

    writers = [spawn() for _ in range(n_writers)]
    t0 = time.monotonic()
    started, unexpected = kill_writers_at_random(rng, writers, kills, spawn, check)
    elapsed = time.monotonic() - t0
    assert not unexpected, f"{ctx0}: writers died by themselves: {unexpected}"
    check_dict(d, f"{ctx0} final", tags_seen)
    print(f"{ctx0}: {kills} kills in {elapsed:.1f}s; {len(tags_seen)} of {started} writers seen; "
          f"slowest lock {max(waits):.3f}s; {len(d)} keys at the end")
    assert max(waits) < PROMPT * 2, f"{ctx0}: taking the lock took up to {max(waits):.2f}s"
    # A dict wedged by the first kill would pass every check vacuously.
    assert len(tags_seen) >= started // 4, f"{ctx0}: only {len(tags_seen)} of {started} writers wrote anything"
    # Still fully usable.
    d.clear()
    d.update({("g", 0, i): ch.checked_value(("g", 0, i), "end", b"") for i in range(1000)})
    assert len(d) == 1000
    d.clear()
    assert len(d) == 0 and list(d) == []


def check_list(lst, ctx):
    (items, n, iterated), waited = locked(lst, ctx, lambda x: (x.copy(), len(x), list(iter(x))))
    assert n == len(items) == len(iterated), f"{ctx}: len {n}, {len(items)} copied, {len(iterated)} iterated"
    assert items == iterated, f"{ctx}: iteration and copy() disagree"
    try:
        blocks = ch.parse_blocks(items)
    except AssertionError as exc:
        raise AssertionError(f"{ctx}: {exc}") from None
    return blocks, waited


@pytest.mark.timeout(150)
def test_list_writers_killed_at_random():
    seed = new_seed()
    rng = random.Random(seed)
    ctx0 = f"seed={seed}"
    n_writers, kills, max_len = 2, 150, 300
    lst = SharedList()

    def spawn():
        return start(FORK, ch.list_writer, lst, rng.getrandbits(31), max_len)

    writers_seen = set()
    waits = []

    def check(r):
        blocks, waited = check_list(lst, f"{ctx0} round {r}")
        waits.append(waited)
        writers_seen.update(block >> 32 for block, _, _ in blocks)

    writers = [spawn() for _ in range(n_writers)]
    t0 = time.monotonic()
    started, unexpected = kill_writers_at_random(rng, writers, kills, spawn, check)
    elapsed = time.monotonic() - t0
    assert not unexpected, f"{ctx0}: writers died by themselves: {unexpected}"
    blocks, _ = check_list(lst, f"{ctx0} final")
    print(f"{ctx0}: {kills} kills in {elapsed:.1f}s; {len(writers_seen)} of {started} writers seen; "
          f"slowest lock {max(waits):.3f}s; {len(lst)} elements in {len(blocks)} blocks at the end")
    assert max(waits) < PROMPT * 2, f"{ctx0}: taking the lock took up to {max(waits):.2f}s"
    assert len(writers_seen) >= 10, f"{ctx0}: only {len(writers_seen)} of {started} writers wrote anything"
    lst[:] = [1, 2, 3]
    lst.append(4)
    assert lst == [1, 2, 3, 4]


def test_increments_killed_at_random(tmp_path):
    """Increments whose call returned are never lost, and at most one per
    killed writer is in flight."""
    seed = new_seed()
    rng = random.Random(seed)
    d = SharedDict()
    kills = 100
    logs = []

    def spawn():
        path = str(tmp_path / f"w{len(logs)}.log")
        logs.append(path)
        return start(FORK, ch.increment_and_log, d, "k", path)

    writers = [spawn(), spawn()]
    try:
        for r in range(kills):
            time.sleep(rng.uniform(0, 0.01))
            slot = rng.randrange(2)
            assert kill_and_reap(writers[slot]) == -signal.SIGKILL
            writers[slot] = spawn()
    finally:
        for w in writers:
            kill_and_reap(w)
    logged = sum(len(read_lines(p)) for p in logs)
    final = d.get("k", 0)
    print(f"seed={seed}: {logged} increments logged, value {final}, {kills + 2} writers killed")
    assert logged <= final <= logged + kills + 2, f"seed={seed}: {logged} logged, value {final}"
    assert logged > 100, f"seed={seed}: only {logged} increments went through"
    assert d.increment("k") == final + 1


def test_lock_holders_killed():
    """A process killed while holding d.lock (in the middle of a compound
    update) does not block anyone; each single write it made is whole."""
    seed = new_seed()
    rng = random.Random(seed)
    d = SharedDict()
    waits = []
    for r in range(60):
        ready = FORK.Event()
        p = start(FORK, ch.hold_lock_and_scribble, d, ready, rng.getrandbits(31))
        assert ready.wait(JOIN_TIMEOUT), f"seed={seed} round {r}: the holder never started"
        time.sleep(rng.uniform(0, 0.005))
        assert kill_and_reap(p) == -signal.SIGKILL
        _, waited = locked(d, f"seed={seed} round {r}", lambda x: None)
        waits.append(waited)
        for k, v in d.items():
            ch.check_value(k, v)
        assert len(d) == len(list(d))
    print(f"seed={seed}: slowest takeover {max(waits):.3f}s; {len(d)} keys")
    assert max(waits) < PROMPT, f"seed={seed}: taking over the lock took up to {max(waits):.2f}s"
    d["after"] = 1
    assert d["after"] == 1


def _span(target, *args):
    t0 = time.monotonic()
    p = start(FORK, target, *args)
    p.join(JOIN_TIMEOUT)
    assert p.exitcode == 0
    return time.monotonic() - t0


@pytest.mark.timeout(150)
def test_big_operations_killed_midway():
    """One big set (20 MiB), one big update (20 000 keys) or one big slice
    assignment, killed at a random point of its run: old or new, never a mix."""
    seed = new_seed()
    rng = random.Random(seed)
    d = SharedDict()
    lst = SharedList()
    size, n_keys, n_items = 20 * MiB, 20_000, 20_000
    key = ("big",)

    def prepare(what, r):
        """The operation's arguments, made here so that the child spends
        its short life in the operation itself."""
        if what == "set":
            return d, "__setitem__", key, ch.checked_value(key, r, random.Random(r).randbytes(size))
        if what == "update":
            return d, "update", {("u", i): ch.checked_value(("u", i), r, b"") for i in range(n_keys)}
        return lst, "__setitem__", slice(None), [ch.checked_item(r, i, n_items, b"x" * (i % 7))
                                                for i in range(n_items)]

    spans = {what: _span(ch.apply_then_exit, *prepare(what, -1)) for what in ("set", "update", "slice")}
    outcomes = collections.Counter()
    cur = {"set": -1, "update": -1, "slice": -1}
    delays = {what: KillDelay(rng, span) for what, span in spans.items()}
    r = interrupted = 0
    while more_rounds(r, 45, interrupted, 10):
        what = ("set", "update", "slice")[r % 3]
        target, args = ch.apply_then_exit, prepare(what, r)
        p = start(FORK, target, *args)
        delays[what].sleep()
        code = kill_and_reap(p)
        assert code in (0, -signal.SIGKILL), f"seed={seed} round {r}: exit code {code}"
        delays[what].outcome(code == 0)
        interrupted += code != 0
        ctx = f"seed={seed} round {r} ({what})"
        if what == "set":
            (v, n), _ = locked(d, ctx, lambda x: (x[key], len(x)))
            seq = ch.check_value(key, v)
        elif what == "update":
            (snap, n), _ = locked(d, ctx, lambda x: (x.copy(), len(x)))
            assert n == len(snap) == n_keys + 1, f"{ctx}: {n} keys"
            seqs = {ch.check_value(k, v) for k, v in snap.items() if k != key}
            assert len(seqs) == 1, f"{ctx}: update() torn: values of {sorted(seqs)}"
            (seq,) = seqs
        else:
            (items, n), _ = locked(lst, ctx, lambda x: (x.copy(), len(x)))
            assert n == len(items) == n_items, f"{ctx}: {n} elements"
            blocks = ch.parse_blocks(items)
            assert len(blocks) == 1, f"{ctx}: slice assignment torn: {len(blocks)} blocks"
            seq = blocks[0][0]
        if code == 0:
            assert seq == r, f"{ctx}: a completed operation is not visible"
        else:
            assert seq in (cur[what], r), f"{ctx}: found write {seq}, expected {cur[what]} or {r}"
        outcomes[(what, code == 0, seq == r)] += 1
        cur[what] = seq
        r += 1
    print(f"seed={seed} spans {spans} outcomes (op, completed, new): {dict(outcomes)}")
    assert interrupted >= 10, f"seed={seed}: only {interrupted} of {r} operations were interrupted"
    d[key] = "small"
    assert d[key] == "small"
