"""Anonymous Redis objects live as long as their manager's process: every
key of them expires ``orphan_ttl`` after its last refresh, which that
process makes in the background, so that a manager that is SIGKILLed
leaves nothing behind; named objects never expire."""
import contextlib
import math
import os
import select
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("redis")

import interproc  # noqa: E402
from interproc.backends.redis import RedisManager, ObjectGoneError  # noqa: E402
from interproc.backends.redis import synchronize as rs  # noqa: E402

import _redis_helpers  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TTL = 3.0  # the shortest a manager accepts
ANON = "ip:{anon:*"


def _client(url):
    import redis

    return redis.Redis.from_url(url)


def _keys(client, match=ANON):
    return sorted(k.decode() for k in client.scan_iter(match=match, count=1000))


def _keys_of(client, obj):
    return _keys(client, f"ip:{{{obj._ident}}}*")


def _without_expiry_or_longer(client, keys, ttl_ms):
    """The keys whose expiry is missing (-1) or longer than ``ttl_ms``
    (gone ones, -2, are left out: they may expire meanwhile)."""
    ttls = {k: client.pttl(k) for k in keys}
    return {k: t for k, t in ttls.items() if t == -1 or t > ttl_ms}


def _wait_for_no_keys(client, match, seconds):
    """Poll until no key matches; the keys left when ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        left = _keys(client, match)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _popen(code, *args, warnings_as_errors=False):
    flags = ["-W", "error::DeprecationWarning"] if warnings_as_errors else []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([sys.executable, *flags, "-c", code, TESTS_DIR, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _read_line(proc, seconds=60.0):
    """The next line the child prints, waited for at most ``seconds``."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    line = proc.stdout.readline().decode() if ready else ""
    if not line:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the child printed nothing (exit {proc.returncode}): {err.decode()}")
    return line.split()


@contextlib.contextmanager
def _manager_process(code, *args, **kwargs):
    """A process running ``code`` (``_popen``), and a list for the pids of
    processes it starts that are to outlive it: all killed at the end."""
    proc = _popen(code, *args, **kwargs)
    survivors = []
    try:
        yield proc, survivors
    finally:
        _kill(proc)
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _left_after_killing(client, proc, survivors):
    """SIGKILL the manager's process ``proc``, and wait (bounded) until its
    anonymous objects expire; the keys left then, with their expiry.  The
    ``survivors`` it started must still live: they keep nothing alive."""
    _kill(proc)
    left = _wait_for_no_keys(client, ANON, 4 * TTL + 10)
    for pid in survivors:
        os.kill(pid, 0)
    return {k: client.pttl(k) for k in left}


def _kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    for stream in (proc.stdout, proc.stderr):
        if not stream.closed:
            stream.close()


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("ttl, error", [
    (2.9, ValueError), (0, ValueError), (-5, ValueError), (math.inf, ValueError),
    (math.nan, ValueError), ("60", TypeError), (True, TypeError), ([60], TypeError),
])
def test_orphan_ttl_is_checked_at_construction(redis_url, ttl, error):
    with pytest.raises(error, match="orphan_ttl"):
        RedisManager(redis_url, orphan_ttl=ttl)


def test_orphan_ttl_defaults_to_a_minute_and_none_turns_it_off(redis_url):
    assert RedisManager(redis_url).orphan_ttl == 60.0
    assert RedisManager(redis_url, orphan_ttl=3).orphan_ttl == 3.0
    assert RedisManager(redis_url, orphan_ttl=None).orphan_ttl is None
    client = _client(redis_url)
    with interproc.Manager(redis_url, orphan_ttl=None) as m:
        objs = _redis_helpers.make_every_kind(m)
        _redis_helpers.exercise(objs)
        for kind, obj in objs.items():
            keys = [k for k in _keys_of(client, obj) if ":proc:" not in k]
            assert keys and all(client.pttl(k) == -1 for k in keys), kind


# ------------------------------------------------------------------ killed

KILLED_MANAGER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import interproc, _redis_helpers as h
m = interproc.Manager(sys.argv[2], orphan_ttl=float(sys.argv[3]))
objs = h.make_every_kind(m)
h.exercise(objs)
h.exercise(objs)
print("ready", flush=True)
time.sleep(600)
"""


def test_a_killed_managers_anonymous_objects_expire(private_redis):
    """The manager's process makes an object of every kind, empties and
    refills them (keys made afresh), and is SIGKILLed: within about twice
    the TTL no key of theirs is left."""
    server = private_redis()
    client = _client(server.url)
    with _manager_process(KILLED_MANAGER, server.url, str(TTL)) as (proc, survivors):
        assert _read_line(proc) == ["ready"]
        keys = _keys(client)
        assert len(keys) > 30
        # While it lives, every key expires, and no later than the TTL.
        assert not _without_expiry_or_longer(client, keys, int(TTL * 1000))
        assert not _left_after_killing(client, proc, survivors)


HELD_BY_A_WORKER = """
import multiprocessing, os, sys, time
sys.path.insert(0, sys.argv[1])
import interproc, _redis_helpers as h

def worker(lock, out, parent):
    lock.acquire()
    out.put(os.getpid())
    h.outlive(parent, 4 * float(sys.argv[3]) + 15)

ttl = float(sys.argv[3])
m = interproc.Manager(sys.argv[2], orphan_ttl=ttl, lease=ttl)
lock = m.Lock()
ctx = multiprocessing.get_context("fork")
out = ctx.SimpleQueue()
# Daemonic: a parent that fails ends it on its way out; a killed one does not.
ctx.Process(target=worker, args=(lock, out, os.getpid()), daemon=True).start()
print(out.get(), lock._ident, flush=True)
time.sleep(600)
"""


def test_a_lock_held_by_a_live_worker_goes_with_its_killed_manager(private_redis):
    """The holder's process renews the lease only while the lock's object
    exists: once it expired with its manager, the owner key goes too."""
    server = private_redis()
    client = _client(server.url)
    with _manager_process(HELD_BY_A_WORKER, server.url, str(TTL)) as (proc, survivors):
        pid, ident = _read_line(proc)
        survivors.append(int(pid))
        assert f"ip:{{{ident}}}:owner" in _keys(client)
        # The worker still believes it holds the lock.
        assert not _left_after_killing(client, proc, survivors)


def test_a_live_manager_keeps_its_objects_past_the_ttl(private_redis):
    server = private_redis()
    client = _client(server.url)
    with interproc.Manager(server.url, orphan_ttl=TTL) as m:
        objs = _redis_helpers.make_every_kind(m)
        end = time.monotonic() + 2.7 * TTL
        while time.monotonic() < end:
            _redis_helpers.exercise(objs)
            time.sleep(0.5)
        time.sleep(TTL / 2)
        _redis_helpers.exercise(objs)
        assert objs["dict"]["b"] == 2 and objs["list"][:] == [3, 4] and objs["Namespace"].y == 2
        assert objs["Queue"].get(timeout=10) == "y"
        keys = _keys(client)
        assert not _without_expiry_or_longer(client, keys, int(TTL * 1000))
        # Each object's metadata is among them: none ran out.
        assert all(any(k == f"ip:{{{o._ident}}}:meta" for k in keys) for o in objs.values())


def test_dead_waiters_wake_keys_expire_no_later_than_their_object(private_redis):
    """A waiter that registered and died leaves its wake key behind when
    woken; on an expiring object, it expires no later than the object."""
    from interproc.backends.redis import _waiters

    server = private_redis()
    client = _client(server.url)
    with interproc.Manager(server.url, orphan_ttl=TTL) as m:
        e = m.Event()
        # What Event.wait's first step does, for a waiter that never blocks.
        e._script(rs._EVENT_WAIT_LUA, e._keys, ["deadbeef", 1, _waiters.REGISTRATION_TTL_MS,
                                                 e._wake_prefix, ""])
        e.set()
        wake = e._wake_prefix + "deadbeef"
        assert 0 < client.pttl(wake) <= TTL * 1000
    with interproc.Manager(server.url) as m:
        name = f"t-redis-life-{os.getpid()}-{time.monotonic_ns()}"
        e = m.Event(name=name)
        try:
            e._script(rs._EVENT_WAIT_LUA, e._keys, ["deadbeef", 1, _waiters.REGISTRATION_TTL_MS,
                                                     e._wake_prefix, ""])
            e.set()
            # A named object's keep the registry's own expiry.
            assert TTL * 1000 < client.pttl(e._wake_prefix + "deadbeef") <= _waiters.WAKE_TTL_MS
        finally:
            e.unlink()
            client.delete(e._wake_prefix + "deadbeef")


# ------------------------------------------------------------------ named

def test_named_objects_never_expire(private_redis):
    server = private_redis()
    client = _client(server.url)
    base = f"t-redis-life-{os.getpid()}-{time.monotonic_ns()}"
    with interproc.Manager(server.url, orphan_ttl=TTL) as m:
        objs = _redis_helpers.make_every_kind(m, name=lambda kind: f"{base}-{kind}")
        try:
            _redis_helpers.exercise(objs)
            _redis_helpers.exercise(objs)
            for kind, obj in objs.items():
                # Processing lists expire by design, an hour after their last take.
                keys = [k for k in _keys_of(client, obj) if ":proc:" not in k]
                assert keys and {k: client.pttl(k) for k in keys} == {k: -1 for k in keys}, kind
            assert not _keys(client)
        finally:
            for obj in objs.values():
                obj.unlink()


# ------------------------------------------------------------------ fork

FORKING_MANAGER = """
import multiprocessing, os, sys, threading, time, warnings
sys.path.insert(0, sys.argv[1])
import interproc, _redis_helpers as h

def renewer():
    return any(t.name == "interproc-lease-renewer" for t in threading.enumerate())

def child(out, parent):
    out.put(renewer())
    h.outlive(parent, 4 * float(sys.argv[3]) + 15)

ttl = float(sys.argv[3])
m = interproc.Manager(sys.argv[2], orphan_ttl=ttl)
d = m.dict(a=1)
before = renewer()
ctx = multiprocessing.get_context("fork")
out = ctx.SimpleQueue()
# Daemonic: a parent that fails ends it on its way out; a killed one does not.
p = ctx.Process(target=child, args=(out, os.getpid()), daemon=True)
# Python 3.12+ warns about a fork beside threads; "-W error" does not make
# that warning an error, so it is recorded.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    p.start()
warned = sum("fork" in str(w.message) for w in caught)
after = renewer()
in_child = out.get()
# Past the TTL: only the parent's refreshes keep d.
end = time.monotonic() + 1.5 * ttl
while time.monotonic() < end:
    d["a"] += 1
    time.sleep(0.2)
print(before, warned, after, in_child, d["a"] > 1, p.pid, d._ident, flush=True)
time.sleep(600)
"""


def test_forking_a_managers_process_warns_nothing_and_the_child_keeps_nothing_alive(private_redis):
    """The keeper thread stops for a fork (Python 3.12+ would warn about a
    fork beside it) and starts again in the parent, which goes on keeping
    its objects alive; the child keeps nothing alive: once the parent is
    killed, its objects expire though the child lives."""
    server = private_redis()
    client = _client(server.url)
    with _manager_process(FORKING_MANAGER, server.url, str(TTL),
                          warnings_as_errors=True) as (proc, survivors):
        before, warned, after, in_child, kept, pid, ident = _read_line(proc)
        survivors.append(int(pid))
        assert (before, warned, after, in_child, kept) == ("True", "0", "True", "False", "True")
        assert _keys(client, f"ip:{{{ident}}}*")
        assert not _left_after_killing(client, proc, survivors)


# ------------------------------------------------------------------ shutdown

def test_shutdown_deletes_every_key_at_once_and_stops_keeping_them(private_redis):
    server = private_redis()
    client = _client(server.url)
    m = interproc.Manager(server.url, orphan_ttl=60)
    objs = _redis_helpers.make_every_kind(m)
    _redis_helpers.exercise(objs)
    metas = {f"ip:{{{o._ident}}}:meta" for o in objs.values()}
    assert metas <= set(_keys(client))
    assert metas <= set(rs._renewer._kept)
    m.shutdown()
    assert not _keys(client)
    assert not metas & set(rs._renewer._kept)
    with pytest.raises(ObjectGoneError):
        objs["dict"]["a"] = 1


def test_ls_shows_how_long_an_anonymous_object_has_left(private_redis):
    from interproc.backends.redis import list_objects

    server = private_redis()
    with interproc.Manager(server.url, orphan_ttl=30) as m:
        d = m.dict(a=1)
        with interproc.Manager(server.url, orphan_ttl=None) as forever:
            kept = forever.list([1])
            rows = {info.name: info for info in list_objects(server.url, anonymous=True)}
            state = rows[d._ident].state
            assert state.startswith("ttl ") and 0 < int(state[4:-1]) <= 30, state
            assert rows[kept._ident].state is None
