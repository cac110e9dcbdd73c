"""Helpers of the Redis backend tests: ``require_redis()``, and child-process
targets (module level, so that spawn and forkserver can import them by name).

The servers themselves come from ``interproc.backends.redis.local_server``,
which the benchmarks use too.
"""

import os

INSTALL_HINT = (
    "install Redis to run these tests (Debian/Ubuntu: apt-get install redis-server; "
    "CI: .ci/run installs it and runs make test)"
)


def require_redis(cli: bool = False) -> None:
    """Skip (or, with INTERPROC_REQUIRE_REDIS=1, fail) when Redis is missing."""
    import pytest

    from interproc.backends.redis.local_server import missing_binaries

    missing = missing_binaries(cli)
    if not missing:
        return
    msg = f"{' and '.join(missing)} not found: {INSTALL_HINT}"
    if os.environ.get("INTERPROC_REQUIRE_REDIS") == "1":
        pytest.fail(f"INTERPROC_REQUIRE_REDIS=1, but {msg}", pytrace=False)
    pytest.skip(msg)


def child_uses_connection(conn, key, out):
    """Write through a Connection handed to a child; report the child's client id."""
    try:
        client = conn.client
        client.set(key, str(os.getpid()).encode())
        out.put(("ok", client.client_id(), conn.options))
    except BaseException as exc:  # reported, not lost in the child's stderr
        out.put(("error", f"{type(exc).__name__}: {exc}", None))


def child_reconnects_from_options(options, key, out):
    """Rebuild a Connection from its pickled options in a child."""
    try:
        from interproc.backends.redis.client import Connection

        conn = Connection.from_options(options)
        conn.client.set(key, b"from-options")
        out.put(("ok", conn.client.client_id(), conn.is_cluster))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None))


def child_creates_meta(url, name, barrier, out):
    """Race other children to create one object; report whether this one made it."""
    try:
        from interproc.backends.redis import keys
        from interproc.backends.redis.client import Connection

        conn = Connection.from_url(url)
        conn.ping()
        barrier.wait(30)
        meta = keys.create_meta(conn, name, "Queue", {"maxsize": os.getpid()}, None, parts=["items"])
        out.put(("ok", meta.created, meta["maxsize"], meta.uid))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None, None))


def child_puts_replicated(q, item, out):
    """Put through a queue handed to a child; report the child's replica
    setting and what the put raised (None if nothing)."""
    try:
        conn = q._conn
        try:
            q.put(item)
            raised = None
        except Exception as exc:
            raised = type(exc).__name__
        out.put(("ok", conn.replicas, conn.replica_timeout, raised))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None, None))
