"""The Redis backend's base layer: connections, errors, codec and keys.

Against real servers (interproc.backends.redis.local_server): a standalone
server, one with a password, a 3-node cluster, and private servers that
tests kill.
"""

import json
import math
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import uuid

import pytest

import _redis_helpers

redis = pytest.importorskip("redis")
import redis.cluster  # noqa: E402

from interproc.backends.redis import (  # noqa: E402
    AuthenticationError,
    ConnectionLostError,
    ServerTimeoutError,
    SignatureError,
    UnreachableError,
)
from interproc.backends.redis import codec as codec_mod  # noqa: E402
from interproc.backends.redis import keys  # noqa: E402
from interproc.backends.redis import local_server  # noqa: E402
from interproc.backends.redis.client import Connection, redact, split_url, translate  # noqa: E402
from interproc.backends.redis.codec import Codec, register_ref  # noqa: E402
from interproc.naming import SegmentError  # noqa: E402

CHILD_TIMEOUT = 60


def uname(prefix="t"):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["standalone", "cluster"])
def any_url(request):
    """Each test once on the standalone server and once on the cluster."""
    return request.getfixturevalue("redis_url" if request.param == "standalone" else "redis_cluster_url")


@pytest.fixture
def names(any_url):
    """Object names on ``any_url``, deleted after the test."""
    conn = Connection.from_url(any_url)
    made = []

    def make():
        made.append(uname())
        return made[-1]

    yield make
    for n in made:
        try:
            keys.delete_object(conn, n)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# Connecting


def test_connect_standalone(redis_url):
    conn = Connection.from_url(redis_url)
    assert conn.ping()
    assert not conn.is_cluster
    assert isinstance(conn.client, redis.Redis)
    assert not isinstance(conn.client, redis.cluster.RedisCluster)
    key = f"ip-test:{uname()}"
    conn.client.set(key, b"v")
    try:
        assert conn.client.get(key) == b"v"  # bytes: responses are never decoded
    finally:
        conn.client.delete(key)


def test_connect_unix_socket(redis_server):
    conn = Connection.from_url(redis_server.unix_url)
    assert conn.ping()
    assert conn.address == redis_server.socket_path
    assert not conn.is_cluster


def test_connect_cluster(redis_cluster_url):
    conn = Connection.from_url(redis_cluster_url)
    assert conn.is_cluster
    assert isinstance(conn.client, redis.cluster.RedisCluster)
    assert "cluster" in repr(conn)
    # keys on every node: the cluster client follows the slots
    written = [f"ip-test:{uname()}:{i}" for i in range(30)]
    assert len({redis.cluster.key_slot(k.encode()) // 5462 for k in written}) > 1
    for k in written:
        conn.client.set(k, k.encode())
    try:
        assert [conn.client.get(k) for k in written] == [k.encode() for k in written]
    finally:
        for k in written:
            conn.client.delete(k)


def test_connect_tls(redis_tls_server):
    ca = redis_tls_server.tls_files["ca"]
    conn = Connection.from_url(redis_tls_server.tls_url, ssl_ca_certs=ca)
    assert conn.ping()
    assert conn.options["ssl_ca_certs"] == ca
    assert pickle.loads(pickle.dumps(conn)).ping()
    # the server's certificate is checked: without the CA it is refused
    with pytest.raises(UnreachableError, match=f"127.0.0.1:{redis_tls_server.tls_port}") as info:
        Connection.from_url(redis_tls_server.tls_url).ping()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_cluster_option_skips_detection(redis_url, redis_cluster_url):
    assert Connection.from_url(redis_url, cluster=False).is_cluster is False
    assert Connection.from_url(redis_cluster_url, cluster=True).is_cluster is True
    with pytest.raises(TypeError):
        Connection.from_url(redis_url, cluster="yes")


def test_cluster_has_only_database_0(redis_cluster):
    for url in (f"redis://{redis_cluster.servers[0].address}/1",
                f"redis://{redis_cluster.servers[0].address}?db=2"):
        with pytest.raises(ValueError, match="only database 0"):
            Connection.from_url(url).ping()


def test_one_connection_per_process_and_options(redis_url):
    a = Connection.from_url(redis_url)
    assert Connection.from_url(redis_url) is a
    assert Connection.from_options(a.options) is not None
    b = Connection.from_url(redis_url, socket_timeout=5.0)
    assert b is not a
    assert b.options["socket_timeout"] == 5.0


def test_connection_pickles_as_its_options(redis_url):
    conn = Connection.from_url(redis_url)
    conn.ping()
    again = pickle.loads(pickle.dumps(conn))
    assert again.options == conn.options
    assert again.ping()


def test_decode_responses_is_refused(redis_url):
    with pytest.raises(ValueError, match="bytes"):
        Connection.from_url(redis_url, decode_responses=True)


def test_bad_urls():
    with pytest.raises(ValueError, match="not a Redis URL"):
        Connection.from_url("http://localhost:6379")
    with pytest.raises(ValueError, match="needs a host"):
        Connection.from_url("redis://")
    with pytest.raises(ValueError, match="socket path"):
        Connection.from_url("unix://")
    with pytest.raises(TypeError):
        Connection.from_url(b"redis://localhost")
    with pytest.raises(TypeError, match="into the URL"):
        Connection.from_url("redis://localhost", port=1234)


def test_split_url_takes_credentials_out():
    assert split_url("redis://bob:p%40ss@host:7000/2") == ("redis://host:7000/2", "bob", "p@ss")
    assert split_url("rediss://:pw@host") == ("rediss://host", None, "pw")
    assert split_url("unix:///run/r.sock?db=3&password=pw") == ("unix:///run/r.sock?db=3", None, "pw")
    assert split_url("redis://host:1/0") == ("redis://host:1/0", None, None)
    assert "pw" not in redact("redis://bob:pw@host/0")
    assert "pw" not in redact("unix:///s?password=pw")


def test_credentials_from_url_or_arguments(redis_auth_server):
    pw = redis_auth_server.password
    by_url = Connection.from_url(redis_auth_server.auth_url)
    assert by_url.ping()
    by_arg = Connection.from_url(redis_auth_server.url, password=pw)
    assert by_arg.ping()
    # the argument wins over the URL
    assert Connection.from_url(f"redis://:wrong@{redis_auth_server.address}/0", password=pw).ping()
    assert Connection.from_url(redis_auth_server.url, username="default", password=pw).ping()
    for conn in (by_url, by_arg):
        assert pw not in conn.url and pw not in repr(conn)
        assert conn.options["password"] == pw  # it must travel with the options


def test_cluster_with_a_password(redis_auth_cluster):
    pw = redis_auth_cluster.password
    for conn in (Connection.from_url(redis_auth_cluster.auth_url),
                 Connection.from_url(redis_auth_cluster.url, password=pw)):
        assert conn.is_cluster
        written = [f"ip-test:{uname()}:{i}" for i in range(12)]  # on every node
        for k in written:
            conn.client.set(k, b"x")
        assert all(conn.client.get(k) == b"x" for k in written)
        for k in written:
            conn.client.delete(k)
    for cluster in (None, True):  # refused by the question, or by the cluster client
        with pytest.raises(AuthenticationError, match=redis_auth_cluster.servers[0].address):
            Connection.from_url(redis_auth_cluster.url, password="wrong", cluster=cluster).ping()


def test_cluster_node_down(tmp_path):
    _redis_helpers.require_redis(cli=True)
    with local_server.RedisClusterServers(str(tmp_path)) as cluster:
        conn = Connection.from_url(cluster.url)
        assert conn.is_cluster
        # a key on each node
        by_node = {}
        for i in range(200):
            k = f"ip-test:{i}"
            by_node.setdefault(conn.client.get_node_from_key(k).name, k)
        assert len(by_node) == 3
        dead = cluster.servers[2]
        dead.kill()
        with pytest.raises(UnreachableError) as info:
            with conn.errors("GET"):
                conn.client.get(by_node[dead.address])
        text = str(info.value)
        assert f"Redis Cluster at {cluster.servers[0].address}" in text
        assert dead.address in text and "during GET" in text


# ---------------------------------------------------------------------------
# Errors


def test_wrong_password(redis_auth_server):
    conn = Connection.from_url(redis_auth_server.url, password="not-the-password")
    with pytest.raises(AuthenticationError) as info:
        conn.ping()
    assert isinstance(info.value, PermissionError)
    assert redis_auth_server.address in str(info.value)
    assert "not-the-password" not in str(info.value)


def test_missing_password(redis_auth_server):
    conn = Connection.from_url(redis_auth_server.url)
    with pytest.raises(AuthenticationError, match=redis_auth_server.address):
        conn.ping()


def test_unknown_user(redis_auth_server):
    conn = Connection.from_url(redis_auth_server.url, username="nobody", password="x")
    with pytest.raises(AuthenticationError, match=redis_auth_server.address):
        conn.ping()


def test_unreachable_port():
    port = local_server.free_port()
    conn = Connection.from_url(f"redis://127.0.0.1:{port}/0")
    t0 = time.monotonic()
    with pytest.raises(UnreachableError) as info:
        conn.ping()
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, ConnectionError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)


def test_unreachable_unix_socket(tmp_path):
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(UnreachableError, match=path):
        Connection.from_url(f"unix://{path}").ping()


def test_server_killed_during_a_blocking_command(private_redis):
    server = private_redis()
    conn = Connection.from_url(server.url)
    key = f"ip-test:{uname()}"
    conn.ping()
    result = queue.Queue()

    def block():
        try:
            with conn.errors("BLPOP"):
                conn.bounded(key, 30, lambda pipe: pipe.blpop([key], timeout=30))
            result.put(None)
        except BaseException as exc:
            result.put(exc)

    t = threading.Thread(target=block)
    t.start()
    # wait until the BLPOP is in the server
    deadline = time.monotonic() + 10
    while b"cmd=blpop" not in server.command("CLIENT", "LIST"):
        assert time.monotonic() < deadline, "BLPOP never reached the server"
        time.sleep(0.02)
    server.kill()
    t.join(20)
    exc = result.get(timeout=1)
    assert isinstance(exc, ConnectionLostError), repr(exc)
    assert server.address in str(exc) and "BLPOP" in str(exc)
    assert "may or may not" in str(exc)
    # the server is gone for good: the next command cannot connect at all
    with pytest.raises(UnreachableError, match=server.address):
        conn.ping()


def test_server_killed_between_commands(private_redis):
    server = private_redis()
    conn = Connection.from_url(server.url)
    assert conn.ping()
    server.kill()
    with pytest.raises(UnreachableError, match=server.address):
        with conn.errors("GET"):
            conn.client.get("ip-test:x")


def test_server_restarted_between_commands(private_redis):
    server = private_redis()
    conn = Connection.from_url(server.url)
    assert conn.ping()
    server.stop()
    server.start()  # same port: the pooled socket is stale, nothing was sent on it
    assert conn.ping()


def test_each_thread_has_a_client_and_gives_its_connection_back(redis_url):
    conn = Connection.from_url(redis_url, socket_timeout=6.5)  # an object of this test's own
    main = conn.client
    assert conn.client is main
    ids = []

    def work():
        c = conn.client
        assert c is not main and conn.client is c
        ids.append(c.client_id())

    for _ in range(5):  # one after the other: each ended thread's connection is reused
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert len(ids) == 5 and main.client_id() not in ids
    assert len(set(ids)) == 1
    conn.close()
    assert conn.client is not main and conn.ping()


def test_reply_timeout_and_bounded_blocking_commands(redis_url, redis_server):
    conn = Connection.from_url(redis_url, socket_timeout=0.3)
    key = f"ip-test:{uname()}"
    with pytest.raises(ServerTimeoutError, match=redis_server.address) as info:
        with conn.errors("BLPOP"):
            conn.client.blpop([key], timeout=2)
    assert isinstance(info.value, TimeoutError)
    # A bounded call waits as long as the server may take, whatever the
    # connection's own socket timeout.
    started = time.monotonic()
    with conn.errors("BLPOP"):
        assert conn.bounded(key, 1.0, lambda pipe: pipe.blpop([key], timeout=1)) == [None]
    assert time.monotonic() - started >= 0.9


def test_wrongtype_is_a_type_error(any_url):
    conn = Connection.from_url(any_url)
    key = f"ip-test:{uname()}"
    conn.client.set(key, b"x")
    try:
        with pytest.raises(TypeError, match="WRONGTYPE"):
            with conn.errors("LPUSH"):
                conn.client.lpush(key, b"y")
    finally:
        conn.client.delete(key)


def test_script_errors_pass_through(any_url):
    conn = Connection.from_url(any_url)
    script = conn.script("return redis.error_reply('FULL the queue is full')")
    with pytest.raises(redis.exceptions.ResponseError, match="FULL"):
        with conn.errors("put"):
            script([f"ip-test:{uname()}"])


def test_translate_leaves_other_exceptions_alone():
    exc = KeyError("x")
    assert translate(exc, "h:1", "op") is exc


def test_translated_decorator(redis_auth_server):
    from interproc.backends.redis.client import translated

    class Thing:
        def __init__(self, conn):
            self._conn = conn

        @translated("Thing.poke")
        def poke(self):
            return self._conn.client.ping()

    # with cluster=None the first contact is the cluster question, made while connecting
    with pytest.raises(AuthenticationError, match="refused the credentials during connecting"):
        Thing(Connection.from_url(redis_auth_server.url, password="bad")).poke()
    with pytest.raises(AuthenticationError, match="refused the credentials during Thing.poke"):
        Thing(Connection.from_url(redis_auth_server.url, password="bad", cluster=False)).poke()
    assert Thing(Connection.from_url(redis_auth_server.auth_url)).poke()


# ---------------------------------------------------------------------------
# Scripts


def test_script_runs_and_survives_a_script_flush(any_url):
    conn = Connection.from_url(any_url)
    name = uname()
    k = keys.object_key(name, "n")
    incr = conn.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert conn.script("return redis.call('INCRBY', KEYS[1], ARGV[1])") is incr
    try:
        assert incr([k], [5]) == 5
        conn.client.script_flush()  # every primary, on a cluster
        assert conn.client.script_exists(incr.sha) == [False]
        assert incr([k], [2]) == 7  # reloaded by EVAL after NOSCRIPT
    finally:
        conn.client.delete(k)


# ---------------------------------------------------------------------------
# Processes


def test_forked_child_gets_its_own_socket(any_url):
    import multiprocessing

    conn = Connection.from_url(any_url)
    probe = [f"ip-test:{uname()}:{i}" for i in range(20)]  # on every node of a cluster
    for k in probe:
        conn.client.set(k, b"1")
    parent_id = None if conn.is_cluster else conn.client.client_id()
    key = f"ip-test:{uname()}"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_redis_helpers.child_uses_connection, args=(conn, key, out))
    p.start()
    status, child_id, _ = out.get(timeout=CHILD_TIMEOUT)
    p.join(CHILD_TIMEOUT)
    assert status == "ok", child_id
    assert p.exitcode == 0
    # the parent's sockets are intact and still its own
    if parent_id is not None:
        assert child_id != parent_id
        assert conn.client.client_id() == parent_id
    assert [conn.client.get(k) for k in probe] == [b"1"] * len(probe)
    assert conn.client.get(key) == str(p.pid).encode()
    for k in [key, *probe]:
        conn.client.delete(k)


@pytest.mark.parametrize("start", ["spawn", "forkserver"])
def test_connection_travels_to_a_child(redis_url, start):
    import multiprocessing

    conn = Connection.from_url(redis_url)
    key = f"ip-test:{uname()}"
    ctx = multiprocessing.get_context(start)
    out = ctx.Queue()
    p = ctx.Process(target=_redis_helpers.child_uses_connection, args=(conn, key, out))
    p.start()
    status, detail, options = out.get(timeout=CHILD_TIMEOUT)
    p.join(CHILD_TIMEOUT)
    assert status == "ok", detail
    assert options["url"] == conn.options["url"]
    assert conn.client.get(key) == str(p.pid).encode()
    conn.client.delete(key)


@pytest.mark.parametrize("which", ["auth", "cluster"])
def test_options_reconnect_in_a_spawned_child(request, which):
    import multiprocessing

    url = request.getfixturevalue("redis_auth_url" if which == "auth" else "redis_cluster_url")
    conn = Connection.from_url(url)
    assert conn.ping()
    options = pickle.loads(pickle.dumps(conn.options))
    key = f"ip-test:{uname()}"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_redis_helpers.child_reconnects_from_options, args=(options, key, out))
    p.start()
    status, detail, is_cluster = out.get(timeout=CHILD_TIMEOUT)
    p.join(CHILD_TIMEOUT)
    assert status == "ok", detail
    assert is_cluster is (which == "cluster")
    assert conn.client.get(key) == b"from-options"
    conn.client.delete(key)


def test_import_interproc_does_not_import_redis():
    code = (
        "import sys, interproc, interproc.backends.redis, interproc.backends.redis.keys;"
        "import interproc.backends.redis.codec as c; c.Codec('pickle').dumps(1);"
        "print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_redis_py_says_how_to_install():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from interproc.backends.redis.client import Connection\n"
        "try:\n"
        "    Connection.from_url('redis://127.0.0.1:1/0').client\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install interproc[redis]" in out.stdout


# ---------------------------------------------------------------------------
# Codec

SAMPLES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, "", "héllo\u2603", "\x00ref",
    [], {}, [1, [2, [3]]], {"a": 1, "b": [None, {"c": "d"}]}, {"\x00ref": [1, 2]},
    {"\x00\x00x": 1, "y": {"\x00ref": "z"}}, ["\ud800"],
]


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack"])
@pytest.mark.parametrize("authkey", [None, b"secret key"])
def test_codec_round_trips(serializer, authkey):
    c = Codec(serializer, authkey)
    for value in SAMPLES:
        data = c.dumps(value)
        assert isinstance(data, bytes)
        back = c.loads(data)
        assert back == value and type(back) is type(value), (value, back)
    assert math.isinf(c.loads(c.dumps(float("inf"))))


def _plain_data(with_bytes):
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.floats(
        allow_nan=False)
    if with_bytes:
        leaves = leaves | st.binary()
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=20,
    )


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_plain_round_trips_property(serializer):
    from hypothesis import given, settings

    c = Codec(serializer, b"k")

    @settings(max_examples=200, deadline=None)
    @given(_plain_data(serializer == "msgpack"))
    def check(value):
        back = c.loads(c.dumps(value))
        assert back == value and repr(back) == repr(value)  # types too, -0.0 included

    check()


def test_codec_keeps_types_apart():
    assert Codec("msgpack").loads(Codec("msgpack").dumps([b"x", "x"])) == [b"x", "x"]
    p = Codec("pickle")
    value = {(1, 2): {1, 2}, "t": (b"x", 3j)}
    assert p.loads(p.dumps(value)) == value


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize(
    "value, shown",
    [
        ((1, 2), "is a tuple"),
        ({1: "a"}, "has a key of type int"),
        ({"a": [1, {2, 3}]}, "value['a'][1] is a set"),
        (object(), "is a object"),
        (json, "is a module"),
        (pytest.param(type("MyInt", (int,), {})(3), "MyInt", id="int-subclass")),
    ],
)
def test_plain_serializers_refuse_other_data(serializer, value, shown):
    with pytest.raises(TypeError, match="plain data only") as info:
        Codec(serializer).dumps(value)
    assert shown in str(info.value)
    assert "pickle" in str(info.value)


def test_json_refuses_bytes_msgpack_big_ints_and_cycles():
    with pytest.raises(TypeError, match="is a bytes"):
        Codec("json").dumps({"a": b"x"})
    with pytest.raises(OverflowError, match="msgpack"):
        Codec("msgpack").dumps(2**64)
    assert Codec("json").loads(Codec("json").dumps(2**70)) == 2**70
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        Codec("json").dumps(loop)


def test_signed_payloads():
    key = b"k" * 16
    signer = Codec("pickle", key)
    data = signer.dumps({"x": 1})
    assert signer.loads(data) == {"x": 1}
    assert len(data) == len(Codec("pickle").dumps({"x": 1})) + 32

    # unsigned
    with pytest.raises(SignatureError, match="unsigned payload at key 'ip:{q}:items'"):
        signer.loads(Codec("pickle").dumps({"x": 1}), key=b"ip:{q}:items")
    # forged body, forged header, signed with another key, truncated
    forged = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(SignatureError, match="bad signature"):
        signer.loads(forged)
    with pytest.raises(SignatureError):
        signer.loads(b"J" + data[1:])
    with pytest.raises(SignatureError, match="bad signature"):
        Codec("pickle", b"other key").loads(data)
    with pytest.raises(SignatureError, match="truncated"):
        signer.loads(data[:10])
    # a signed payload without the key is refused too
    with pytest.raises(SignatureError, match="no authkey"):
        Codec("pickle").loads(data)
    assert issubclass(SignatureError, ValueError)


def test_forged_pickle_never_runs():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    evil = Codec("pickle").dumps(Boom())
    with pytest.raises(SignatureError):
        Codec("pickle", b"key").loads(evil)


def test_codec_checks():
    with pytest.raises(ValueError, match="serializer"):
        Codec("yaml")
    with pytest.raises(TypeError):
        Codec("pickle", "str key")
    with pytest.raises(ValueError):
        Codec("pickle", b"")
    with pytest.raises(ValueError, match="written with serializer 'pickle'"):
        Codec("json").loads(Codec("pickle").dumps(1))
    with pytest.raises(ValueError, match="not an interproc payload"):
        Codec("json").loads(b"hello")
    with pytest.raises(ValueError, match="empty"):
        Codec().loads(b"")
    c = Codec("msgpack", b"k")
    assert pickle.loads(pickle.dumps(c)) == c
    assert Codec(**c.options) == c


class FakeShared:
    """Stands in for a Redis object that travels as a reference."""

    def __init__(self, key, maxsize, context=None):
        self.key, self.maxsize, self.context = key, maxsize, context

    def __interproc_redis_ref__(self):
        return ("FakeShared", self.key, (self.maxsize, None), {"opt": True})

    def __eq__(self, other):
        return isinstance(other, FakeShared) and (self.key, self.maxsize) == (other.key, other.maxsize)

    def __reduce__(self):  # how it would travel to a child: not what the codec uses
        raise AssertionError("the codec must store a reference, not pickle the object")


register_ref(
    "FakeShared",
    lambda args, codec: FakeShared(args[0], args[1][0], codec.context) if args[2] == {"opt": True} else None,
)


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack"])
def test_references_in_every_serializer(serializer):
    ctx = object()
    c = Codec(serializer, b"key", context=ctx)
    shared = FakeShared("ip:{q}", 7)
    value = {"inner": shared, "list": [1, shared], "\x00ref": ["FakeShared", []]}
    back = c.loads(c.dumps(value))
    assert back == value
    assert back["inner"].context is ctx
    top = c.loads(c.dumps(shared))
    assert top == shared
    assert c.bind("other").loads(c.dumps(shared)).context == "other"


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack"])
def test_unknown_reference_kind(serializer):
    class Unknown:
        def __interproc_redis_ref__(self):
            return ("NoSuchKind", 1)

    c = Codec(serializer)
    with pytest.raises(ValueError, match="NoSuchKind"):
        c.loads(c.dumps([Unknown()]))


def test_bad_reference_method():
    class Bad:
        def __interproc_redis_ref__(self):
            return "nope"

    with pytest.raises(TypeError, match="must return a tuple"):
        Codec("json").dumps(Bad())


# ---------------------------------------------------------------------------
# Keys


def test_keys_of_one_object_share_a_slot(redis_cluster_url):
    conn = Connection.from_url(redis_cluster_url)
    for name in ["jobs", "a:b", "ünïcode", keys.anonymous_name(), "x" * 200]:
        ks = [keys.meta_key(name)] + [keys.object_key(name, p) for p in ("", "items", "state", "a:b{c")]
        slots = {redis.cluster.key_slot(k.encode()) for k in ks}
        assert len(slots) == 1, (name, ks)
        server_slots = {conn.client.cluster_keyslot(k) for k in ks}
        assert server_slots == slots
    assert keys.object_key("jobs", "items") == "ip:{jobs}:items"


def test_names():
    assert keys.check_name("jobs") == "jobs"
    for bad, exc in [("", ValueError), ("a/b", ValueError), ("a\0b", ValueError), (".", ValueError),
                     ("a{b", ValueError), ("a}b", ValueError), ("anon:123", ValueError),
                     ("x" * 201, ValueError), (b"jobs", TypeError), (None, TypeError)]:
        with pytest.raises(exc):
            keys.check_name(bad)
    a, b = keys.anonymous_name(), keys.anonymous_name()
    assert a != b and a.startswith("anon:")
    assert keys.object_key("jobs") == "ip:{jobs}"
    with pytest.raises(TypeError):
        keys.object_key("jobs", None)


def test_create_meta_rules(any_url, names):
    conn = Connection.from_url(any_url)
    name = names()
    with pytest.raises(FileNotFoundError) as info:
        keys.create_meta(conn, name, "Queue", {"maxsize": 3}, False)
    assert str(info.value) == f"[Errno 2] No such file or directory: {name!r}"
    made = keys.create_meta(conn, name, "Queue", {"maxsize": 3}, None, parts=["items"])
    assert made.created and made == {"maxsize": 3} and made.kind == "Queue"
    opened = keys.create_meta(conn, name, "Queue", {"maxsize": 99}, None)
    assert not opened.created
    assert opened == {"maxsize": 3}  # the creator's options
    assert opened.uid == made.uid and opened.parts == ("items",)
    assert keys.create_meta(conn, name, "Queue", {}, False) == {"maxsize": 3}
    with pytest.raises(FileExistsError) as info:
        keys.create_meta(conn, name, "Queue", {}, True)
    assert str(info.value) == f"[Errno 17] File exists: {name!r}"
    with pytest.raises(FileExistsError):
        keys.create_meta(conn, name, "Lock", {}, True)  # existence is checked first
    with pytest.raises(TypeError, match=f"{name!r} holds a Queue; asked for: Lock"):
        keys.create_meta(conn, name, "Lock", {}, None)
    with pytest.raises(TypeError, match="create must be"):
        keys.create_meta(conn, name, "Queue", {}, 1)
    with pytest.raises(TypeError, match="plain JSON"):
        keys.create_meta(conn, names(), "Queue", {"x": object()})
    assert keys.read_meta(conn, name, "Queue") == {"maxsize": 3}
    with pytest.raises(TypeError):
        keys.read_meta(conn, name, "Lock")
    assert name in keys.list_names(conn)


def test_create_meta_init_and_delete(any_url, names):
    conn = Connection.from_url(any_url)
    name = names()
    k = {p: keys.object_key(name, p) for p in ("items", "state", "count", "spare")}
    conn.client.set(k["spare"], b"stale leftover")
    big = [str(i).encode() for i in range(2500)]  # more than one RPUSH batch
    meta = keys.create_meta(
        conn, name, "Thing", {}, True, parts=list(k),
        init={"items": big, "state": {"a": b"1", "b": "2"}, "count": 5, "spare": []},
    )
    assert conn.client.lrange(k["items"], 0, -1) == big
    assert conn.client.hgetall(k["state"]) == {b"a": b"1", b"b": b"2"}
    assert conn.client.get(k["count"]) == b"5"
    assert not conn.client.exists(k["spare"])  # stale keys of declared parts are cleared
    # opening never rewrites the initial values
    conn.client.incr(k["count"])
    keys.create_meta(conn, name, "Thing", {}, None, parts=list(k), init={"count": 0})
    assert conn.client.get(k["count"]) == b"6"

    with pytest.raises(TypeError, match="holds a Thing; asked for: Queue"):
        keys.delete_object(conn, name, "Queue")
    with pytest.raises(FileNotFoundError):
        keys.delete_object(conn, name, uid="not-its-uid")
    keys.delete_object(conn, name, "Thing", uid=meta.uid)
    assert not any(conn.client.exists(key) for key in [keys.meta_key(name), *k.values()])
    with pytest.raises(FileNotFoundError):
        keys.delete_object(conn, name)
    with pytest.raises(FileNotFoundError):
        keys.read_meta(conn, name)
    with pytest.raises(ValueError, match="not declared"):
        keys.create_meta(conn, name, "Thing", {}, parts=["a"], init={"b": 1})


def test_recreated_name_gets_a_new_uid(redis_url, names):
    conn = Connection.from_url(redis_url)
    name = names()
    first = keys.create_meta(conn, name, "Queue", {}, True)
    keys.delete_object(conn, name)
    second = keys.create_meta(conn, name, "Queue", {}, True)
    assert first.uid != second.uid
    with pytest.raises(FileNotFoundError):
        keys.delete_object(conn, name, uid=first.uid)  # a late cleanup of the first
    assert keys.read_meta(conn, name).uid == second.uid


def test_anonymous_objects(redis_url):
    conn = Connection.from_url(redis_url)
    name = keys.anonymous_name()
    meta = keys.create_meta(conn, name, "Lock", {}, True, parts=["owner"])
    assert meta.created
    keys.delete_object(conn, name)


def test_corrupt_or_foreign_metadata(redis_url, names):
    conn = Connection.from_url(redis_url)
    name = names()
    keys.create_meta(conn, name, "Queue", {}, True)
    conn.client.hset(keys.meta_key(name), "version", "999")
    with pytest.raises(SegmentError, match="layout version 999"):
        keys.create_meta(conn, name, "Queue", {})
    conn.client.hdel(keys.meta_key(name), "kind")
    with pytest.raises(SegmentError, match="incomplete"):
        keys.read_meta(conn, name)


def test_create_meta_race_across_processes(redis_url):
    import multiprocessing

    name = uname()
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [ctx.Process(target=_redis_helpers.child_creates_meta, args=(redis_url, name, barrier, out))
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=CHILD_TIMEOUT) for _ in procs]
    finally:
        for p in procs:
            p.join(CHILD_TIMEOUT)
        try:
            keys.delete_object(Connection.from_url(redis_url), name)
        except FileNotFoundError:
            pass
    assert all(r[0] == "ok" for r in results), results
    assert sum(1 for r in results if r[1]) == 1  # exactly one creator
    assert len({r[2] for r in results}) == 1  # everyone sees the creator's options
    assert len({r[3] for r in results}) == 1
