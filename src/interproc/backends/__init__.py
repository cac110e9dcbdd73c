"""Backends: where interproc's objects live.

- shared memory, the default: ``interproc.Manager()`` and the classes of
  the top-level package;
- Redis, for processes on several machines: ``interproc.Manager(url)``.

Both answer to the contract in :mod:`interproc.backends.contract`.
"""
