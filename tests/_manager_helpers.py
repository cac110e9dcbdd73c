"""Child-process targets, a registered type and its manager for the Manager tests.

Everything here is at module level because spawn and forkserver pickle
targets, and the server process its registry, by reference.  Every
blocking call in a child has a timeout, so a bug shows up as a failed child
instead of a hung test.
"""

import threading
from multiprocessing.managers import BaseProxy

from interproc.managers import SyncManager

CHILD_TIMEOUT = 30.0


class Counter:
    """A user type served by the manager's server process."""

    def __init__(self, start=0):
        self._value = start
        self._lock = threading.Lock()

    def increment(self, delta=1):
        with self._lock:
            self._value += delta
            return self._value

    def get(self):
        return self._value


class CounterProxy(BaseProxy):
    _exposed_ = ("increment", "get")

    def increment(self, delta=1):
        return self._callmethod("increment", (delta,))

    def get(self):
        return self._callmethod("get")


class CounterManager(SyncManager):
    """A subclass with a registered typeid, as users write them."""


CounterManager.register("Counter", Counter, CounterProxy)


def square(n):
    return n * n


# ------------------------------------------------------------- children


def use_builtins(lock, event, q, jq, value, array, barrier, sem, cond, flag, out):
    """Use every primitive a Manager made, then report through ``out``."""
    index = barrier.wait(timeout=CHILD_TIMEOUT)
    with lock:
        value.value += 1
    array[1] = 7
    q.put("from child")
    jq.put("task")
    assert sem.acquire(timeout=CHILD_TIMEOUT)
    with cond:
        flag.value = 1
        cond.notify_all()
    event.set()
    out.put(("barrier index", index))


def seed_worker(d, lst):
    """The seed tutorial's f(d, l)."""
    d[1] = "1"
    d["2"] = 2
    lst.append(1)


def use_containers(d, lst, ns, out):
    d["child"] = [1, 2]
    lst.extend(["a", "b"])
    ns.seen = ns.x + 1
    out.put(sorted(map(str, d)))


def bump_counter(counter, n):
    for _ in range(n):
        counter.increment()


def serve_counter_manager(authkey, address_out):
    """Serve a CounterManager on a free localhost port until terminated."""
    manager = CounterManager(address=("127.0.0.1", 0), authkey=authkey)
    server = manager.get_server()
    address_out.put(server.address)
    server.serve_forever()


def use_remote_objects(counter, d, n):
    for i in range(n):
        counter.increment()
        d[f"k{i}"] = i


def use_served_set(s, n):
    for i in range(n):
        s.add(i)
    s |= {"or"}
    s -= {0}
