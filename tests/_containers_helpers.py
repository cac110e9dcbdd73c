"""Child-process targets and small helpers for the container tests
(SharedDict, SharedList, Namespace).

Targets live here, at module level, because spawn and forkserver pickle them
by reference.  Every blocking call in a child has a timeout, and a child
that sees something wrong exits with a code of its own (listed below), so a
bug shows up as a failed child rather than a hung test.
"""

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
import multiprocessing
import os
import random
import sys
import time

import _helpers
from _helpers import CHILD_TIMEOUT, digest

EXIT_TORN = 3
EXIT_WRONG = 4
EXIT_LOCK_TIMED_OUT = 5
EXIT_START_TIMED_OUT = 6
EXIT_NO_RUNTIME_ERROR = 7

EXIT_MEANINGS = {
    EXIT_TORN: "read a torn value",
    EXIT_WRONG: "read a wrong value",
    EXIT_LOCK_TIMED_OUT: "lock.acquire() timed out",
    EXIT_START_TIMED_OUT: "never got the start signal",
    EXIT_NO_RUNTIME_ERROR: "iteration did not raise RuntimeError",
}


def describe_exit(code):
    """A child's exit code in words, with the meanings above."""
    return _helpers.describe_exit(code, EXIT_MEANINGS)


# ------------------------------------------------------------ outcomes

def plain(obj):
    """A plain-Python image of ``obj``: containers become dicts and lists,
    views and iterators become lists and sets become sorted lists of reprs
    (their order depends on the hash seed of the process), so that shared
    and plain results can be compared with repr, which also tells 1, 1.0
    and True apart."""
    import interproc

    if isinstance(obj, interproc.SharedDict):
        return {k: plain(v) for k, v in obj.copy().items()}
    if isinstance(obj, interproc.SharedList):
        return [plain(v) for v in obj.copy()]
    if isinstance(obj, interproc.Namespace):
        return ("Namespace", repr(obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", sorted(repr(v) for v in obj))
    if isinstance(obj, (Iterator, KeysView, ValuesView, ItemsView)):
        return [plain(v) for v in obj]
    if type(obj) is dict:
        return {k: plain(v) for k, v in obj.items()}
    if type(obj) is list:
        return [plain(v) for v in obj]
    return obj


def outcome(fn, *args):
    """("ok", repr of the plain result) or ("raise", exception type name,
    args of a KeyError/IndexError/ValueError)."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared with what dict/list do
        detail = exc.args if isinstance(exc, KeyError) else ()
        return ("raise", type(exc).__name__, repr(detail))
    return ("ok", repr(plain(result)))


# A script is a list of (op, *args); ops are method names, or one of the
# pseudo-ops below for syntax that is not a plain method call.
def _iadd(obj, other):
    obj += other
    return obj


def _imul(obj, n):
    obj *= n
    return obj


def _ior(obj, other):
    obj |= other
    return obj


PSEUDO_OPS = {
    "len": len,
    "str": str,
    "repr": repr,
    "list": list,
    "contains": lambda obj, x: x in obj,
    "eq": lambda obj, x: obj == x,
    "iadd": _iadd,
    "imul": _imul,
    "ior": _ior,
    "getattr": getattr,
    "setattr": setattr,
    "delattr": delattr,
    "keys": lambda obj: list(obj.keys()),
    "values": lambda obj: list(obj.values()),
    "items": lambda obj: list(obj.items()),
    "sort_reverse": lambda obj: obj.sort(reverse=True),
}


def apply_op(obj, op, *args):
    if op in PSEUDO_OPS:
        return PSEUDO_OPS[op](obj, *args)
    return getattr(obj, op)(*args)


def run_script(obj, script):
    return [outcome(apply_op, obj, *step) for step in script]


def run_script_to_queue(obj, script, out):
    out.put(run_script(obj, script), timeout=CHILD_TIMEOUT)


def run_script_from_queue(inbox, script, out):
    obj = inbox.get(timeout=CHILD_TIMEOUT)
    out.put(run_script(obj, script), timeout=CHILD_TIMEOUT)


def run_script_pool(obj, script):
    return run_script(obj, script)


# ------------------------------------------------- checksummed values

def checked_value(key, seq, payload):
    """A value that says which key and which write it belongs to."""
    return ("v", key, seq, digest((key, seq), payload), payload)


def check_value(key, value):
    """The seq of a value made by checked_value for ``key``, or raise
    AssertionError when it is torn or belongs to another key."""
    assert type(value) is tuple and len(value) == 5 and value[0] == "v", f"torn value {value!r:.200}"
    _, vkey, seq, dg, payload = value
    assert vkey == key, f"value of {vkey!r} found under {key!r}"
    assert isinstance(payload, bytes) and digest((vkey, seq), payload) == dg, f"torn value for {key!r}"
    return seq


def checked_item(block, index, size, payload):
    """An element of a block of a SharedList: blocks are written whole by
    one operation, so a list that is never torn is a run of whole blocks."""
    return ("b", block, index, size, digest((block, index, size), payload), payload)


def parse_blocks(items):
    """The (block, size, start) runs of a list of checked_items, or raise
    AssertionError when an element is torn or a block is incomplete."""
    blocks = []
    pos = 0
    while pos < len(items):
        first = items[pos]
        assert type(first) is tuple and len(first) == 6 and first[0] == "b", f"torn element {first!r:.200}"
        _, block, index, size, _, _ = first
        assert index == 0, f"element {pos} starts block {block} at index {index}"
        for i in range(size):
            assert pos + i < len(items), f"block {block} cut short at the end: {i} of {size}"
            item = items[pos + i]
            assert type(item) is tuple and len(item) == 6 and item[0] == "b", f"torn element {item!r:.200}"
            _, b, idx, sz, dg, payload = item
            assert (b, idx, sz) == (block, i, size), (
                f"element {pos + i}: expected block {block} {i}/{size}, found {b} {idx}/{sz}"
            )
            assert isinstance(payload, bytes) and digest((b, idx, sz), payload) == dg, f"torn element {pos + i}"
        blocks.append((block, size, pos))
        pos += size
    return blocks


# ------------------------------------------------------------ small children

def _wait(event):
    if not event.wait(CHILD_TIMEOUT):
        sys.exit(EXIT_START_TIMED_OUT)


def increment_many(d, key, n, go):
    _wait(go)
    for _ in range(n):
        d.increment(key)
        d.increment(("per", os.getpid()))


def locked_read_modify_write(obj, key, n, go):
    """``obj[key] = obj[key] + 1`` under obj.lock, n times; loses updates
    unless the lock excludes every other process."""
    _wait(go)
    for i in range(n):
        if not obj.lock.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_LOCK_TIMED_OUT)
        try:
            v = obj[key]
            if i % 7 == 0:
                os.sched_yield()
            obj[key] = v + 1
        finally:
            obj.lock.release()


def locked_compound_dict(d, n, go):
    """Keep d['a'] + d['b'] == 0 and len(d['log']) == d['a'] under the lock."""
    _wait(go)
    for _ in range(n):
        with d.lock:
            a, b = d["a"], d["b"]
            os.sched_yield()
            d["a"] = a + 1
            d["b"] = b - 1
            d["log"] = d["log"] + [os.getpid()]


def append_many(lst, tag, n, go):
    _wait(go)
    for i in range(n):
        lst.append((tag, i))


def set_many(d, tag, n, go):
    _wait(go)
    for i in range(n):
        d[(tag, i)] = i


def setdefault_race(d, tag, out, go):
    _wait(go)
    got = [d.setdefault(("race", i), tag) for i in range(200)]
    out.put((tag, got), timeout=CHILD_TIMEOUT)


def mutate_on_request(d, requests, acks):
    """Apply the parent's requests one by one and acknowledge each; stop at None."""
    while True:
        req = requests.get(timeout=CHILD_TIMEOUT)
        if req is None:
            return
        apply_op(d, *req)
        acks.put(req, timeout=CHILD_TIMEOUT)


def use_nested(d):
    """Write through containers the parent stored in d and kept no handle on."""
    d["l"].append("child")
    d["l"].extend([1, 2])
    d["d"]["child"] = os.getpid()
    d["d"].increment("n")
    d["ns"].who = "child"
    d["l2"]["inner"].append("deep")


def make_nested_and_exit(d):
    """Store containers made here in d, and exit: they must outlive us."""
    import interproc

    d["from_child_list"] = interproc.SharedList(["made", "in", "child"])
    d["from_child_dict"] = interproc.SharedDict({"k": "v"})
    d["from_child_ns"] = interproc.Namespace(x=1)


def open_by_name_and_use(name, out):
    """Not handed the object: open it by name, check, write, report."""
    import interproc

    d = interproc.SharedDict(name=name, create=False)
    other = interproc.attach(name)
    report = {
        "type": type(other).__name__,
        # (a frozenset's repr depends on the hash seed)
        "items": repr([(k, v) for k, v in d.items() if not isinstance(k, frozenset)]),
        "frozen": d[frozenset({"x", "y", "z"})],
        "tuple": d[("a", 1.0)],
        "float": d[2.0],
    }
    d["from_unrelated"] = os.getpid()
    other.increment("counter", 5)
    out.put(report, timeout=CHILD_TIMEOUT)
    d.close()
    other.close()


def send_new_dict_back(outer, ack):
    import interproc

    d = interproc.SharedDict({"made": "by child"})
    outer.put(d, timeout=CHILD_TIMEOUT)
    ack.get(timeout=CHILD_TIMEOUT)
    d["seen"] = True


def pool_increment(d, i):
    d.increment("pool")
    d[("pool", i)] = os.getpid()
    return i


def pool_append(lst, i):
    lst.append(i)
    return os.getpid()


# ------------------------------------------------ property-test server

def op_server(conn):
    """Receive (container, None) to switch to a container, (op, args) to
    apply one, None to stop; answer each op with its outcome."""
    obj = None
    while True:
        if not conn.poll(CHILD_TIMEOUT):
            return
        msg = conn.recv()
        if msg is None:
            return
        kind, payload = msg
        if kind == "use":
            obj = payload
            conn.send(("ok", None))
        elif kind == "drop":
            obj = None
            conn.send(("ok", None))
        else:
            conn.send(outcome(apply_op, obj, *payload))


# ------------------------------------------------------ crash-test children

# Group g always has GROUP_SIZES[g % 4] keys when written.
GROUP_SIZES = (8, 64, 300, 900)


def dict_writer(d, seed, n_single, n_groups):
    """Change d for ever with every kind of update: single values that are
    big or small in turn, update() of a whole group of keys (growing the
    table), deletions (shrinking it), setdefault/pop/popitem and, rarely,
    clear().  Every value is checksummed and names its key; a group is
    only ever written whole, by one update() with one seq, and deleted key
    by key, so the keys of a group that are present always share one seq.
    Several writers may run side by side."""
    rng = random.Random(seed)
    tag = seed
    seq = 0
    while True:
        seq += 1
        r = rng.random()
        if r < 0.35:
            k = ("s", rng.randrange(n_single))
            big = rng.random() < 0.5
            size = rng.randint(20_000, 400_000) if big else rng.randint(0, 64)
            d[k] = checked_value(k, (tag, seq), rng.randbytes(size))
        elif r < 0.55:
            g = rng.randrange(n_groups)
            m = GROUP_SIZES[g % len(GROUP_SIZES)]
            s = (tag, seq)
            d.update({("g", g, i): checked_value(("g", g, i), s, rng.randbytes(rng.randint(0, 40)))
                      for i in range(m)})
        elif r < 0.70:
            # Delete part of a group, one key at a time (shrinks the table).
            g = rng.randrange(n_groups)
            m = GROUP_SIZES[g % len(GROUP_SIZES)]
            for i in rng.sample(range(m), rng.randint(1, m)):
                d.pop(("g", g, i), None)
        elif r < 0.80:
            k = ("s", rng.randrange(n_single))
            d.setdefault(k, checked_value(k, (tag, seq), rng.randbytes(rng.randint(0, 2000))))
        elif r < 0.88:
            try:
                del d[("s", rng.randrange(n_single))]
            except KeyError:
                pass
        elif r < 0.96:
            try:
                d.popitem()
            except KeyError:
                pass
        elif r < 0.98:
            d.increment(("n", rng.randrange(4)))
        else:
            d.clear()


def list_writer(lst, seed, max_len):
    """Change lst for ever with appends, inserts, extends and slice
    assignments and deletions, always of whole blocks (see checked_item).
    The block boundaries are read under the lock, so writers may run side
    by side; each change is one list operation."""
    rng = random.Random(seed)
    block = seed << 32
    while True:
        block += 1

        def make(size):
            return [checked_item(block, i, size, rng.randbytes(rng.choice((0, 8, 100, 2000))))
                    for i in range(size)]

        with lst.lock:
            bounds = [start for _, _, start in parse_blocks(lst.copy())] + [len(lst)]
            r = rng.random()
            if len(lst) > max_len and r < 0.5:
                a, b = sorted(rng.sample(bounds, 2))
                del lst[a:b]
            elif r < 0.2:
                lst.append(make(1)[0])
            elif r < 0.35:
                lst.insert(rng.choice(bounds), make(1)[0])
            elif r < 0.55:
                lst.extend(make(rng.randint(1, 40)))
            elif r < 0.75:
                a, b = sorted((rng.choice(bounds), rng.choice(bounds)))
                lst[a:b] = make(rng.randint(1, 60))
            elif r < 0.85:
                a, b = sorted((rng.choice(bounds), rng.choice(bounds)))
                del lst[a:b]
            elif r < 0.93:
                lst += make(rng.randint(1, 10))
            else:
                if len(bounds) > 1 and bounds[-2] == len(lst) - 1:
                    lst.pop()
        # The lock is held for a whole read-parse-write here; without a
        # pause the writers would pass it to each other and starve the
        # checker, which this test is not about.
        time.sleep(0.0005)


def increment_and_log(d, key, log_path):
    """Increment for ever; log each increment after it returned."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        d.increment(key)
        os.write(fd, b"1\n")


def hold_lock_and_scribble(d, ready, seed):
    """Take d.lock, say so, and keep changing d under it until killed."""
    rng = random.Random(seed)
    with d.lock:
        ready.set()
        i = 0
        while True:
            i += 1
            k = ("held", rng.randrange(50))
            d[k] = checked_value(k, (seed, i), rng.randbytes(rng.randint(0, 3000)))


def check_dict_in_child(d, n_single):
    """Lock, read and verify everything in another process; then write."""
    if not d.lock.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_LOCK_TIMED_OUT)
    try:
        for k, v in d.copy().items():
            if k[0] in ("s", "g", "held"):
                try:
                    check_value(k, v)
                except AssertionError:
                    sys.exit(EXIT_TORN)
        k = ("s", n_single - 1)
        d[k] = checked_value(k, ("checker", os.getpid()), b"checker")
    finally:
        d.lock.release()


# ----------------------------------------------------------- memory test

def pss_kib(pid="self"):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss line in smaps_rollup")


def build_big_dict(name, n, chunk):
    import interproc

    d = interproc.SharedDict(name=name, create=True)
    for start in range(0, n, chunk):
        d.update({i: (i % 1000 if i % 2 else str(i % 100_000)) for i in range(start, min(n, start + chunk))})
    d.close()


def read_every_entry(name, barrier, out):
    """Open by name, measure PSS, touch every entry, measure again while
    every other reader still has it mapped, report the increase."""
    import interproc

    d = interproc.SharedDict(name=name, create=False)
    n = len(d)
    barrier.wait(CHILD_TIMEOUT * 4)
    before = pss_kib()
    total = 0
    count = 0
    for k, v in d.items():
        total += k + (v if type(v) is int else len(v))
        count += 1
    barrier.wait(CHILD_TIMEOUT * 4)
    after = pss_kib()
    barrier.wait(CHILD_TIMEOUT * 4)
    out.put((os.getpid(), n, count, total, before, after), timeout=CHILD_TIMEOUT)
    d.close()


def expected_total(n):
    return sum(k + (k % 1000 if k % 2 else len(str(k % 100_000))) for k in range(n))


FORK = multiprocessing.get_context("fork")


def make_named_nested_and_exit(d, list_name, dict_name):
    import interproc

    d["named_list"] = interproc.SharedList(["named", "in", "child"], name=list_name)
    d["named_dict"] = interproc.SharedDict({"k": "v"}, name=dict_name)


def apply_then_exit(obj, op, *args):
    """One operation on arguments prepared by the parent (fork: no copying)."""
    apply_op(obj, op, *args)
