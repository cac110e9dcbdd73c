"""Child-process targets of the Redis container and manager tests.

They live in a module (not in the test files) so that spawn and forkserver
children can import them by name.
"""
import time


def append_many(lst, start, n):
    for i in range(start, start + n):
        lst.append(i)


def increment_many(d, key, n):
    for _ in range(n):
        d.increment(key)


def locked_increments(d, key, n):
    # The read-modify-write the lock exists for.
    for _ in range(n):
        with d.lock:
            d[key] = d.get(key, 0) + 1


def value_locked_increments(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def seed_child(d, lst):
    # The tutorial's Manager child.
    d[1] = "1"
    d["2"] = 2
    lst.append(1)


def set_key(d, key, value, done):
    d[key] = value
    done.value = time.monotonic()


def timed_set(d, key, value, out):
    """Set d[key], then report when that returned (a monotonic time) in out[key]."""
    d[key] = value
    out[key] = time.monotonic()


def grow_dict(d, n):
    for i in range(n):
        d[("child", i)] = i
        time.sleep(0.002)


def read_nested(d, out):
    inner = d["inner"]
    inner.append("from child")
    out["type"] = type(inner).__name__


def fill_named(url, names):
    """In an unrelated process: open the named objects and change them."""
    import interproc

    m = interproc.Manager(url)
    d = m.dict(name=names["dict"], create=False)
    lst = m.list(name=names["list"], create=False)
    ns = m.Namespace(name=names["ns"], create=False)
    v = m.Value("i", 0, name=names["value"], create=False)
    a = m.Array("d", [0.0, 0.0], name=names["array"], create=False)
    d["child"] = dict(d)
    lst.extend([len(lst), "child"])
    ns.child = ns.parent + 1
    v.value += 100
    a[1] = a[0] * 2
    m.shutdown()  # named objects are not the manager's to delete


def value_fetch_adds(v, n, delta):
    # Lock-free: each fetch_add is one atomic step of its own.
    for _ in range(n):
        v.fetch_add(delta)
