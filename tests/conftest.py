"""Fixtures shared by the whole suite.

- every test is checked for leftover ``/dev/shm`` entries;
- multi-process tests run under fork, spawn and forkserver;
- named objects get unique names and are unlinked afterwards.
"""

import multiprocessing
import os
import re
import signal
import sys
import time
import uuid
import warnings

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# Children started by spawn/forkserver unpickle their targets by reference,
# so _helpers must be importable there: multiprocessing copies sys.path into
# the child's preparation data, which makes this insert reach them too.
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import _helpers  # noqa: E402

START_METHODS = ("fork", "spawn", "forkserver")

# Child processes may still be exiting (and dropping their last handle) when
# a test returns, so a leftover entry only counts once it has outlived this.
SHM_GRACE_SECONDS = 1.0

@pytest.fixture(autouse=True)
def forks_beside_threads_on_purpose():
    """Many tests fork while a thread of the test is running, because
    threads and processes sharing one object is what they check.  Python
    3.12+ warns about that fork (DeprecationWarning), and the matrix turns
    DeprecationWarning into an error, so that one warning is let through
    here.  That interproc itself leaves no thread behind to make a user's
    fork warn is checked in fresh interpreters instead
    (test_forking_after_using_every_kind_of_object_warns_nothing, and the
    Redis lease renewer's fork test)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)",
                                category=DeprecationWarning)
        yield


@pytest.fixture(autouse=True)
def no_shm_leaks():
    before = _helpers.shm_entries()
    yield
    deadline = time.monotonic() + SHM_GRACE_SECONDS
    while True:
        leaked = _helpers.new_shm_entries(before)
        if not leaked or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if leaked:
        # Remove our own leftovers so one leak does not linger on the machine;
        # entries we cannot attribute to this run are only reported.
        ours = f"{_helpers.SHM_PREFIX}t-{os.getpid()}-"
        for entry in leaked:
            if entry.startswith(ours):
                try:
                    os.unlink(os.path.join(_helpers.SHM_DIR, entry))
                except FileNotFoundError:
                    pass
        pytest.fail(f"test left new /dev/shm entries: {sorted(leaked)}", pytrace=False)


@pytest.fixture(params=START_METHODS)
def start_method(request):
    """A multiprocessing context for each start method."""
    return multiprocessing.get_context(request.param)


@pytest.fixture
def unique_name():
    """A factory of unique object names; every name made is unlinked afterwards.

    Call it (``unique_name()``) once per name needed; ``suffix`` is appended
    for tests that need a name of a particular shape.
    """
    made = []

    def make(suffix=""):
        name = f"t-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
        made.append(name)
        return name

    yield make

    import interproc

    problems = []
    for name in made:
        try:
            interproc.unlink(name)
        except FileNotFoundError:
            pass
        except Exception as exc:
            # Refusing a name that was never valid is right; failing to remove
            # one that exists (a damaged segment, say) is not.
            path = _helpers.shm_path(name)
            if os.path.lexists(path):
                problems.append(f"interproc.unlink({name!r}) raised {exc!r}")
                os.unlink(path)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def default_sigint():
    """SIGINT raises KeyboardInterrupt during the test, whatever handler the
    runner had installed (restored afterwards)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def umask_022():
    """The process umask is 022 during the test (restored afterwards)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------------------
# Redis: real servers, started once per session (see
# interproc.backends.redis.local_server).
# Missing redis-server skips these tests, or fails them when
# INTERPROC_REQUIRE_REDIS=1 (CI).

REDIS_TEST_PASSWORD = "interproc-test-password"


def _local_redis(tmp_path_factory, folder, kind="RedisServer", cli=False, needs=None, **options):
    """Start a ``local_server.<kind>`` in a new temporary folder, yield it and
    stop it afterwards: the body of the session-wide Redis fixtures.

    Missing Redis skips (or fails, see above); ``cli`` also asks for
    redis-cli, and ``needs()``, run after that check, may skip for more.
    """
    import _redis_helpers
    from interproc.backends.redis import local_server

    _redis_helpers.require_redis(cli=cli)
    if needs is not None:
        needs()
    server = getattr(local_server, kind)(str(tmp_path_factory.mktemp(folder)), **options).start()
    yield server
    server.stop()


def _need_openssl():
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the certificates of the TLS tests")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A standalone server without a password: ``.url``, ``.unix_url``, ``.address``."""
    yield from _local_redis(tmp_path_factory, "redis-standalone")


@pytest.fixture(scope="session")
def redis_url(redis_server):
    """``redis://127.0.0.1:<port>/0`` of the standalone server."""
    return redis_server.url


@pytest.fixture
def conn(redis_url):
    """A backend Connection to the standalone server."""
    from interproc.backends.redis.client import Connection

    return Connection.from_url(redis_url)


@pytest.fixture
def made():
    """Redis objects a test makes, destroyed afterwards (anonymous ones included)."""
    objs = []
    yield objs
    for obj in objs:
        obj._destroy()


@pytest.fixture(scope="session")
def redis_auth_server(tmp_path_factory):
    """A standalone server that requires ``.password`` (REDIS_TEST_PASSWORD)."""
    yield from _local_redis(tmp_path_factory, "redis-auth", password=REDIS_TEST_PASSWORD)


@pytest.fixture(scope="session")
def redis_auth_url(redis_auth_server):
    """``redis://:<password>@127.0.0.1:<port>/0`` of the password-protected server."""
    return redis_auth_server.auth_url


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory):
    """A standalone server with a TLS port: ``.tls_url``, ``.tls_files["ca"]``."""
    yield from _local_redis(tmp_path_factory, "redis-tls", needs=_need_openssl, tls=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-node Redis Cluster (no replicas): ``.url``, ``.servers``."""
    yield from _local_redis(tmp_path_factory, "redis-cluster", "RedisClusterServers", cli=True)


@pytest.fixture(scope="session")
def redis_auth_cluster(tmp_path_factory):
    """A 3-node Redis Cluster whose nodes require ``.password``: ``.url``, ``.auth_url``."""
    yield from _local_redis(
        tmp_path_factory, "redis-auth-cluster", "RedisClusterServers", cli=True, password=REDIS_TEST_PASSWORD
    )


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster):
    """The URL of one node of the cluster; clients find the others from it."""
    return redis_cluster.url


@pytest.fixture
def private_redis(tmp_path):
    """Start standalone servers that belong to one test:
    ``make(persistent=False, password=None)``; stopped (and continued, if
    the test left one SIGSTOPped) afterwards."""
    import _redis_helpers
    from interproc.backends.redis import local_server

    _redis_helpers.require_redis()
    started = []

    def make(persistent=False, password=None):
        server = local_server.RedisServer(str(tmp_path / f"private{len(started)}"),
                                          password=password, persistent=persistent)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def failover_cluster(tmp_path_factory):
    """A Redis Cluster of three masters with one replica each and a short
    node timeout, for a test that kills a master (``kill_master``,
    ``wait_failover``)."""
    yield from _local_redis(tmp_path_factory, "failover-cluster", "RedisClusterServers", cli=True,
                            replicas=1)


@pytest.fixture
def proxied_cluster(tmp_path_factory):
    """A 3-master Redis Cluster whose nodes tell clients the ports of fault
    proxies in front of them: ``(cluster, proxies)``, ``proxies`` mapping
    each node's real port to its FaultProxy.  Clients (any cluster client)
    then reach every node through its proxy."""
    from _fault_proxy import FaultProxy

    for cluster in _local_redis(tmp_path_factory, "proxied-cluster", "RedisClusterServers", cli=True):
        proxies = {s.port: FaultProxy(s.port) for s in cluster.servers}
        try:
            cluster.announce({port: p.port for port, p in proxies.items()})
            yield cluster, proxies
        finally:
            for p in proxies.values():
                p.close()


def pytest_collection_modifyitems(config, items):
    """The event loop's kind (the ``arun`` fixture) and the children's start
    method are independent: uvloop runs with fork children only, which
    keeps the asyncio tests' time in bounds without losing a pairing that
    matters."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("arun") == "uvloop" and params.get("start_method", "fork") != "fork":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
