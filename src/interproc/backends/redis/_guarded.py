"""Objects whose every operation honours their own lock: dict, list, Namespace, Value, Array.

Each such object has an RLock living with it (``synchronize.RLock``, under
the parts ``lock.owner``, ``lock.state`` and its waiter registry, see
``synchronize.EMBEDDED_PARTS``): ``d.lock`` for a container, ``get_lock()``
for a Value or Array.  **Every operation is one Lua script** (made with
:func:`lua`) that first looks at the lock's owner: when another thread or
process holds it, the script changes nothing and answers ``IPLOCKED``; the
caller then acquires the lock (waiting as any acquirer does), runs the
operation again under it, and releases it.  So ``with d.lock:`` makes a
sequence of operations atomic with respect to every other process and
thread, as holding the shared-memory heap's lock does, and an operation
that finds the lock free costs one round trip.

- **Timeout**: an operation has none; it waits as long as another holds
  the lock.  ``lock.acquire(timeout=...)`` is the way to bound a wait.
- **Peer death**: the lock is leased (``lease`` seconds, renewed by the
  holder's process while held); a holder that dies, or loses the server for
  longer than the lease, loses the lock, and the next acquirer (an explicit
  one or an operation) takes it over with ``OwnerDiedWarning``, since
  operations done under the dead holder's lock may be half done.
- **Lost connection**: ``ConnectionLostError``/``ServerTimeoutError`` from
  the operation; a single operation is one script, so it happened entirely
  or not at all, but the caller cannot tell which.
- **Close**: a closed handle's operations raise ValueError.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Tuple

import redis

from ._base import alive, thread_token
from ._waiters import WaitingObject
from .synchronize import (
    DEFAULT_LEASE,
    EMBEDDED_PARTS,
    EMBEDDED_PREFIX,
    EMBEDDED_REGISTRIES,
    RLock,
    check_lease,
)

__all__ = ["GuardedObject", "lua"]

_GUARD = """
local holder = redis.call('HGET', KEYS[1], 't')
if holder and holder ~= ARGV[1] then return redis.error_reply('IPLOCKED') end
"""


# How many of the object's keys each operation uses: KEYS[1] up to the
# highest KEYS[n] its source names.  Only those are sent.
_NKEYS: Dict[str, int] = {}
_KEY_REF = re.compile(r"KEYS\[(\d+)\]")


def lua(body: str) -> str:
    """An operation: KEYS[1] is the object's lock owner, KEYS[2:] its data
    parts (``_PARTS``, in order), ARGV[1] the caller's token; it refuses to
    run while another holds the lock.  It must name its keys literally
    (``KEYS[3]``, not ``KEYS[i]``): the keys after the highest one it names
    are not passed to it."""
    source = _GUARD + body
    if "#KEYS" in source or re.search(r"KEYS\[[^\]0-9]", source):
        raise ValueError("an operation must name its keys as KEYS[<number>]")
    _NKEYS[source] = max(int(n) for n in _KEY_REF.findall(source))
    return source


class GuardedObject(WaitingObject):
    """Base of the Redis containers, Value and Array (see the module docstring).

    Subclasses set ``_PARTS`` (their data keys; the scripts see them as
    KEYS[2:]) and ``_lease`` before :meth:`_open`.
    """

    _REGISTRIES = EMBEDDED_REGISTRIES
    _lease: float = DEFAULT_LEASE

    @classmethod
    def _declared_parts(cls) -> Tuple[str, ...]:
        return EMBEDDED_PARTS + super()._declared_parts()

    def _setup(self) -> None:
        self._keylist = [self._key(EMBEDDED_PARTS[0])] + [self._key(p) for p in self._PARTS]
        self._lock = RLock._embedded(self, EMBEDDED_PREFIX, self._lease)

    def _handle_state(self) -> Any:
        return self._lease

    def _set_handle_state(self, state: Any) -> None:
        self._lease = state

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        return check_lease(state)

    def _run(self, source: str, *args: Any) -> Any:
        """Run the operation ``source`` (made with :func:`lua`) on this object's keys."""
        if self._closed:
            self._check()
        conn = self._conn
        n = _NKEYS[source]
        keys = self._keylist[:n]
        argv = (thread_token(), *args)
        try:
            return conn.script(alive(source)).execute(conn.client, n + 1, *keys, self._meta,
                                                      *argv, self._uid)
        except redis.ResponseError as exc:
            if str(exc) != "IPLOCKED":
                self._raise(exc)
        except BaseException as exc:
            self._raise(exc)
        # Another holds the lock: wait for it, and run under it.
        with self._lock:
            return self._script(source, keys, argv)
