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
