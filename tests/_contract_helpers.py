"""Child-process bodies for the backend contract tests (importable by
spawn and forkserver children)."""

from _helpers import TIMEOUT, join_ok


def run_all(procs):
    """Start ``procs``, then wait for them with join_ok (every one exits 0)."""
    for p in procs:
        p.start()
    join_ok(*procs)


def increment_many(d, key, n):
    for _ in range(n):
        d.increment(key)


def locked_add(d, n):
    for _ in range(n):
        with d.lock:
            d["total"] = d["total"] + 1


def seed_f(d, lst):
    d[1] = "1"
    d["2"] = 2
    lst.append(1)


def append_to_inner(d, value):
    d["inner"].append(value)


def append_many(lst, i, n):
    for j in range(n):
        lst.append(i * 1000 + j)


def set_attr(ns, name, value):
    setattr(ns, name, value)


def produce(q, i, n):
    for j in range(n):
        q.put(i * 1000 + j)


def consume_and_ack(q, n):
    for _ in range(n):
        q.get(timeout=TIMEOUT)
        q.task_done()


def lock_guarded_add(lock, d, n):
    for _ in range(n):
        with lock:
            d["n"] = d["n"] + 1


def wait_event(ev, out):
    out.put(ev.wait(TIMEOUT))


def wait_condition(cond, out):
    with cond:
        out.put("waiting")
        out.put(cond.wait(TIMEOUT))


def barrier_rounds(b, rounds):
    for _ in range(rounds):
        b.wait(timeout=TIMEOUT)


def bump_value_and_array(v, a, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
        with a.get_lock():
            a[0] += 1.0


# ------------------------------------------- Python 3.13-3.15 manager additions

def set_ops_in_child(s):
    """What CPython 3.14's manager tests do to a set proxy in a child, and
    what they check of the results there."""
    s.update(["a", "b", "c"])
    assert len(s) == 3 and "a" in s and "d" not in s
    assert s | {"d"} == {"a", "b", "c", "d"} and {"d"} | s == {"a", "b", "c", "d"}
    assert type(s | {"d"}) is set and type({"d"} | s) is set
    assert {"a", "b", "d"} - s == {"d"} and s - {"a", "b"} == {"c"}
    assert {"b", "c", "d"} ^ s == {"a", "d"} and s ^ {"b", "c", "d"} == {"a", "d"}
    assert s & {"b", "c", "d"} == {"b", "c"} and {"b", "c", "d"} & s == {"b", "c"}
    assert s.union({"d"}) == {"a", "b", "c", "d"} and s.intersection({"b"}) == {"b"}
    assert s.difference({"a"}) == {"b", "c"} and s.symmetric_difference({"c", "d"}) == {"a", "b", "d"}
    assert s.isdisjoint({"x"}) and not s.isdisjoint({"a"})
    assert s.issubset({"a", "b", "c", "d"}) and s.issuperset({"a"})
    assert s < {"a", "b", "c", "d"} and s <= {"a", "b", "c"} and s > {"a"} and s >= {"a", "b"}
    assert s.copy() == {"a", "b", "c"} and type(s.copy()) is set
    s |= {"d", "e"}      # {a b c d e}
    s -= {"a"}           # {b c d e}
    s &= {"b", "c", "d", "x"}   # {b c d}
    s ^= {"d", "f"}      # {b c f}
    s.add("g")
    s.discard("b")
    s.discard("missing")
    s.remove("c")        # {f g}
    s.difference_update({"z"}, {"y"})
    s.intersection_update({"f", "g", "h"}, ["g", "f"])
    s.symmetric_difference_update(["h", "h"])   # {f g h}


def add_many_to_set(s, i, n):
    for j in range(n):
        s.add((i, j))
    s.update([(i, "u", j) for j in range(n)])
    s |= {(i, "o", j) for j in range(n)}


def toggle_batches(s, batches, rounds):
    """Moves ``s`` from each batch to the next with one ``^=``: the old
    batch goes and the new one comes in the same step."""
    for r in range(rounds):
        s ^= set(batches[r % len(batches)]) | set(batches[(r + 1) % len(batches)])


def read_set_snapshots(s, batches, rounds, out):
    bad = []
    for _ in range(rounds):
        snap = s.copy()
        if not any(snap == set(b) for b in batches):
            bad.append(sorted(snap))
    out.put(bad[:3])


def or_batches_into_dict(d, keys, rounds):
    for r in range(rounds):
        d |= {k: r for k in keys}


def read_dict_snapshots(d, rounds, out):
    bad = []
    for _ in range(rounds):
        values = set(d.copy().values())
        if len(values) > 1:
            bad.append(sorted(values))
    out.put(bad[:3])


def dict_ops_in_child(d):
    """What CPython 3.14's manager tests do to a dict proxy in a child."""
    d |= {"bar": 6}
    assert dict(d) == {"foo": 5, "bar": 6}
    x = reversed(d)
    assert isinstance(x, type(iter([]))) and list(x) == ["bar", "foo"]
    x = {"bar": 7, "baz": 7} | d
    assert type(x) is dict and x == {"foo": 5, "bar": 6, "baz": 7}
    x = d | {"bar": 7, "baz": 7}
    assert type(x) is dict and x == {"foo": 5, "bar": 7, "baz": 7}
    x = d.fromkeys(["bar"], 6)
    assert type(x) is dict and x == {"bar": 6}
    d["later"] = 1


def list_ops_in_child(lst):
    copied = lst.copy()
    assert type(copied) is list and copied == [5, 7]
    lst.append(copied[0] + copied[1])
    lst.clear()
    lst.append("after clear")


def add_to_inner_set(d, value):
    d["s"].add(value)


# ------------------------------------------------------------ queue shutdown
# Children report what they saw on `out` and exit 0; an unexpected outcome
# raises, which fails the child's exit code.

#: How long a child's blocked call waits before it gives up: far longer than
#: a wake-up takes on a loaded machine, far shorter than the test's timeout.
WAKE_TIMEOUT = 30


def _raises_shutdown(call, *args):
    from interproc import ShutDown

    try:
        call(*args)
    except ShutDown:
        return True
    return False


def puts_after_shutdown(q, simple):
    assert q.is_shutdown
    calls = [(q.put, 1)] if simple else [(q.put, 1), (q.put_nowait, 1), (q.put_many, [1, 2])]
    for call, arg in calls:
        assert _raises_shutdown(call, arg), call


def drain_after_shutdown(q, n, out, simple):
    got = [q.get(timeout=TIMEOUT) for _ in range(n)]
    calls = [q.get] if simple else [q.get, q.get_nowait, q.get_many]
    for call in calls:
        assert _raises_shutdown(call), call
    out.put(got)


def blocked_get(q, ready, out):
    ready.put("ready")
    from interproc import ShutDown
    import queue as _queue

    try:
        out.put(("item", q.get(timeout=WAKE_TIMEOUT)))
    except ShutDown:
        out.put("ShutDown")
    except _queue.Empty:
        out.put("Empty")


def blocked_put(q, ready, out):
    ready.put("ready")
    from interproc import ShutDown
    import queue as _queue

    try:
        q.put("late", timeout=WAKE_TIMEOUT)
        out.put("put")
    except ShutDown:
        out.put("ShutDown")
    except _queue.Full:
        out.put("Full")


def blocked_join(q, ready, out):
    ready.put("ready")
    q.join()
    out.put("joined")


def blocked_forever(q, ready, what):
    """Blocks in `what` until killed."""
    ready.put("ready")
    if what == "get":
        q.get()
    elif what == "put":
        q.put("never")
    else:
        q.join()
