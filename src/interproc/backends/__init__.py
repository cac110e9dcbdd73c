"""Backends: where interproc's objects live.

- shared memory, the default: ``interproc.Manager()`` and the classes of
  the top-level package;
- Redis, for processes on several machines: ``interproc.Manager(url)``
  (:mod:`interproc.backends.redis`; needs ``pip install interproc[redis]``).

Both answer to the contract in :mod:`interproc.backends.contract`.
Importing this package imports no backend, and never redis-py.
"""
