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
