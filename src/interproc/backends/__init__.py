"""Backends: where interproc's objects keep their state.

The default backend is shared memory (the objects of the top-level
``interproc`` package).  :mod:`interproc.backends.redis` keeps the same
objects in a Redis server or Redis Cluster, so that processes on several
machines can share them.  Importing this package imports no backend.
"""
