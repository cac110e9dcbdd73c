"""What the Redis backend believes of the bytes it reads from Redis.

Anyone who can write to the server can put any bytes under interproc's
keys.  These tests write such bytes straight into real servers with
redis-py and check that readers refuse them with CorruptDataError (or
SignatureError, its subclass, when an authkey is set), that nothing named
by them is imported or called, and that signatures vouch for the place of
the bytes as well as the bytes.
"""
import hashlib
import hmac
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("redis")

import _redis_data_helpers as helpers  # noqa: E402

from interproc import SegmentError, _core  # noqa: E402
from interproc.backends.redis import CorruptDataError, SignatureError  # noqa: E402
from interproc.backends.redis import keys  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.codec import Codec  # noqa: E402
from interproc.backends.redis.containers import (  # noqa: E402
    RedisDict, RedisList, RedisNamespace, RedisSet)
from interproc.backends.redis.queues import Queue  # noqa: E402
from interproc.backends.redis.sharedctypes import Array, Value  # noqa: E402
from interproc.backends.redis.synchronize import Barrier  # noqa: E402




# ------------------------------------------------- forged references

# Each is [tag, args] as a reference is stored; none is one interproc writes.
FORGED_REFS = {
    "tag naming a function": ["os:abort", []],
    "tag naming a module": ["this", []],
    "args not a list": ["dict", "d"],
    "args too short": ["dict", ["d"]],
    "id not a str": ["Queue", [123, False, {"maxsize": 0}, None]],
    "id with a hash tag": ["Queue", ["a}b", False, {"maxsize": 0}, None]],
    "anonymity that contradicts the id": ["Queue", ["anon:ab12", False, {"maxsize": 0}, None]],
    "options not a dict": ["Queue", ["q", False, ["maxsize"], None]],
    "state where none is": ["Queue", ["q", False, {"maxsize": 0}, {"x": 1}]],
    "lease not a number": ["dict", ["d", False, {}, "soon"]],
    "lock not a flag": ["Value", ["v", False, {"typecode": "i"}, [1.0, "lock"]]],
    "typecode unknown": ["Value", ["v", False, {"typecode": "O"}, [1.0, True]]],
    "lock parts elsewhere": ["Lock", ["k", False, {}, [1.0, "other:"]]],
    "condition lease": ["Condition", ["c", False, {}, [None, "x"]]],
    "barrier timeout": ["Barrier", ["b", False, {"parties": 1}, [None, "x"]]],
    "barrier action from a module": ["Barrier", ["b", False, {"parties": 1}, ["this:s", None]]],
    "barrier action that kills": ["Barrier", ["b", False, {"parties": 1}, ["os:abort", None]]],
}


def _forged_payload(serializer, ref):
    if serializer == "json":
        return b"j" + json.dumps({"\x00ref": ref}).encode()
    if serializer == "msgpack":
        import msgpack
        return b"m" + msgpack.packb(msgpack.ExtType(1, msgpack.packb(ref)))

    class Forger(pickle.Pickler):
        def persistent_id(self, obj):
            return ("ref", *ref) if obj is Forger else None

    import io
    buf = io.BytesIO()
    Forger(buf, 5).dump(Forger)
    return b"p" + buf.getvalue()


# Runs in a fresh interpreter: reads every forged element of the list, and
# reports what each read raised, and whether the module 'this' got imported.
# A Barrier that comes back is waited on, which runs its action.
_READER = textwrap.dedent("""
    import json, sys
    from interproc.backends.redis.client import Connection
    from interproc.backends.redis.codec import Codec
    from interproc.backends.redis.containers import RedisList
    url, name, serializer, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lst = RedisList(Connection.from_url(url), name=name, create=False, codec=Codec(serializer))
    seen = []
    for i in range(count):
        try:
            obj = lst[i]
        except Exception as exc:
            seen.append(type(exc).__name__)
            continue
        if hasattr(obj, "wait"):
            try:
                obj.wait(timeout=5)
            except Exception:
                pass
        seen.append("read")
    print(json.dumps({"seen": seen, "this": "this" in sys.modules}))
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_forged_references_are_refused_and_nothing_is_imported(conn, made, unique_name,
                                                               redis_url, serializer):
    name = unique_name()
    lst = RedisList(conn, name=name, codec=Codec(serializer))
    made.append(lst)
    cases = list(FORGED_REFS.items())
    raw = conn.client
    for _, ref in cases:
        raw.rpush(keys.object_key(name, "l"), _forged_payload(serializer, ref))
    # A genuine reference, last: reading it still works.
    lst.append(RedisDict(conn, {"ok": 1}, codec=Codec(serializer)))
    made.append(lst[-1])
    assert lst[-1]["ok"] == 1

    run = subprocess.run(
        [sys.executable, "-c", _READER, redis_url, name, serializer, str(len(cases))],
        capture_output=True, text=True, timeout=50, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, f"the reader died ({run.returncode}): {run.stderr[-2000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    outcomes = dict(zip((c for c, _ in cases), report["seen"]))
    assert outcomes == {c: "CorruptDataError" for c, _ in cases}
    assert report["this"] is False, "a name read from Redis was imported"


@pytest.mark.timeout(30)
def test_barrier_action_comes_back_only_when_this_process_knows_it(conn, made, unique_name):
    plain = Codec("json")
    barrier = Barrier(conn, 1, helpers.value_fetch_adds, name=unique_name(), codec=plain)
    d = RedisDict(conn, codec=plain)
    made += [barrier, d]
    d["b"] = barrier
    # This process opened the Barrier with its action: the name read back
    # matches it, and the action is this process's own object.
    assert d["b"]._action is helpers.value_fetch_adds
    # Signed pickle: the name is imported (its writer holds the key).
    signed = Codec("pickle", b"key")
    other = Barrier(conn, 1, helpers.append_many, codec=signed)
    sd = RedisDict(conn, codec=signed)
    made += [other, sd]
    sd["b"] = other
    assert sd["b"]._action is helpers.append_many


@pytest.mark.timeout(30)
def test_plain_data_never_parses_as_code(conn, made):
    d = RedisDict(conn, {"x": 1}, codec=Codec("json"))
    made.append(d)
    field_key = keys.object_key(d._ident, "h")
    (field,) = conn.client.hkeys(field_key)
    for forged in (b"j{not json", b"j\xff\xfe", b"q1", b"p\x80\x05K\x01.", b""):
        conn.client.hset(field_key, field, forged)
        with pytest.raises(CorruptDataError):
            d["x"]


# ------------------------------------------- signatures bound to their place


@pytest.mark.timeout(30)
def test_signed_value_copied_to_another_object_is_refused(conn, made):
    codec = Codec(authkey=b"secret")
    a, b = RedisList(conn, ["from a"], codec=codec), RedisList(conn, ["from b"], codec=codec)
    qa, qb = Queue(conn, codec=codec), Queue(conn, codec=codec)
    made += [a, b, qa, qb]
    raw = conn.client
    raw.lset(keys.object_key(b._ident, "l"), 0, raw.lindex(keys.object_key(a._ident, "l"), 0))
    with pytest.raises(SignatureError):
        b[0]
    qa.put("meant for qa")
    raw.rpush(keys.object_key(qb._ident, "items"), raw.lindex(keys.object_key(qa._ident, "items"), 0))
    with pytest.raises(SignatureError):
        qb.get(timeout=5)
    assert a[0] == "from a" and qa.get(timeout=5) == "meant for qa"


def _hash_state(conn, obj):
    """Everything a dict, set or Namespace keeps in Redis, as raw bytes."""
    raw = conn.client
    return (raw.hgetall(keys.object_key(obj._ident, "h")),
            raw.hgetall(keys.object_key(obj._ident, "k")),
            raw.zrange(keys.object_key(obj._ident, "o"), 0, -1, withscores=True),
            raw.get(keys.object_key(obj._ident, "ver")))


def _refused_and_unchanged(conn, obj, reads):
    before = _hash_state(conn, obj)
    for read in reads:
        with pytest.raises(SignatureError):
            read()
        assert _hash_state(conn, obj) == before, f"{read} changed what is stored"


@pytest.mark.timeout(30)
def test_signed_dict_value_copied_to_another_field_is_refused(conn, made):
    d = RedisDict(conn, {"a": "for a", "b": "for b"}, codec=Codec(authkey=b"secret"))
    ns = RedisNamespace(conn, a="for a", b="for b", codec=Codec(authkey=b"secret"))
    made += [d, ns]
    raw = conn.client
    for obj in (d, ns):
        h = keys.object_key(obj._ident, "h")
        raw.hset(h, _core.encode_key("b"), raw.hget(h, _core.encode_key("a")))
    # Every read of b refuses it, and none of them (pop and popitem
    # included) removes or changes anything.
    _refused_and_unchanged(conn, d, [
        lambda: d["b"], lambda: d.get("b"), lambda: list(d.items()), lambda: list(d.values()),
        d.copy, lambda: d == {"a": "for a", "b": "for a"}, lambda: d.pop("b"), lambda: d.pop("b", 0),
        d.popitem, lambda: d.setdefault("b"), lambda: d.increment("b", "!"),
    ])
    _refused_and_unchanged(conn, ns, [lambda: ns.b, lambda: repr(ns)])
    assert d["a"] == ns.a == "for a" and list(d) == ["a", "b"]
    # Once rewritten by a key holder, b is what was written.
    d["b"] = ns.b = "for b again"
    assert d.copy() == {"a": "for a", "b": "for b again"} and ns.b == "for b again"


@pytest.mark.timeout(30)
def test_signed_original_key_copied_to_another_field_or_part_is_refused(conn, made):
    # (1, True) and (2, 1.0) come back as they were only from their signed
    # original form in 'k': their encodings decode as (1, 1) and (2, 1).
    first, second = (1, True), (2, 1.0)
    d = RedisDict(conn, {first: "one", second: "two"}, codec=Codec(authkey=b"secret"))
    s = RedisSet(conn, [first, second], codec=Codec(authkey=b"secret"))
    made += [d, s]
    raw = conn.client
    f1, f2 = _core.encode_key(first), _core.encode_key(second)
    for obj in (d, s):
        k = keys.object_key(obj._ident, "k")
        raw.hset(k, f2, raw.hget(k, f1))
    _refused_and_unchanged(conn, d, [lambda: list(d), lambda: list(d.items()), d.copy, d.popitem])
    _refused_and_unchanged(conn, s, [lambda: list(s), s.copy, s.pop])
    assert d[second] == "two" and list(d.values()) == ["one", "two"] and second in s
    # An original key is not a value: moved from 'k' to 'h' at its own field.
    h = keys.object_key(d._ident, "h")
    raw.hset(h, f1, raw.hget(keys.object_key(d._ident, "k"), f1))
    _refused_and_unchanged(conn, d, [lambda: d[first], lambda: d.pop(first)])


@pytest.mark.timeout(30)
def test_unsigned_dict_accepts_payloads_moved_between_fields(conn, made):
    # Without an authkey nothing vouches for a payload's place: what is
    # stored is what is read (and payloads are the same bytes as a list's).
    first, second = (1, True), (2, 1.0)
    d = RedisDict(conn, {"a": "for a", "b": "for b", first: 1, second: 2})
    made.append(d)
    raw, h, k = conn.client, keys.object_key(d._ident, "h"), keys.object_key(d._ident, "k")
    assert raw.hget(h, _core.encode_key("a")) == Codec().dumps("for a")
    raw.hset(h, _core.encode_key("b"), raw.hget(h, _core.encode_key("a")))
    raw.hset(k, _core.encode_key(second), raw.hget(k, _core.encode_key(first)))
    assert d["b"] == "for a" and list(d)[2:] == [first, first]


def test_a_payload_signed_for_a_place_reads_only_there():
    codec = Codec(authkey=b"secret").bind(None, "obj")
    anywhere = codec.dumps("x")
    placed = {(part, field): codec.dumps("x", part, field)
              for part in ("h", "k") for field in (b"", b"a", b"\x00\x00\x00\x01a")}
    assert len({anywhere, *placed.values()}) == 1 + len(placed)
    for (part, field), data in placed.items():
        assert codec.loads(data, None, part, field) == "x"
        with pytest.raises(SignatureError):
            codec.loads(data)
    with pytest.raises(SignatureError):
        codec.loads(anywhere, None, "h", b"")
    # A payload without a place is signed as the module docstring says,
    # and an unsigned one is the same bytes wherever it goes.
    body = anywhere[1 + 32:]
    assert anywhere[1:33] == hmac.new(b"secret", b"P\x00\x00\x00\x03obj" + body,
                                      hashlib.sha256).digest()
    assert Codec().dumps("x", "h", b"a") == Codec().dumps("x") == b"p" + pickle.dumps("x", 5)


@pytest.mark.timeout(30)
def test_forged_or_copied_metadata_is_refused(conn, made, unique_name):
    codec = Codec(authkey=b"secret")
    name, other = unique_name(), unique_name()
    bounded = Queue(conn, 1, name=name, codec=codec)
    made += [bounded, Queue(conn, 5, name=other, codec=codec)]
    assert Queue(conn, name=name, codec=codec)._maxsize == 1
    raw, meta = conn.client, keys.meta_key(name)
    stored = raw.hgetall(meta)

    # A forged maxsize would make the bounded queue unbounded.
    raw.hset(meta, "options", json.dumps({"maxsize": 0}))
    with pytest.raises(SignatureError):
        Queue(conn, name=name, codec=codec)
    # Another object's metadata, signature and all.
    raw.hset(meta, mapping=raw.hgetall(keys.meta_key(other)))
    with pytest.raises(SignatureError):
        Queue(conn, name=name, codec=codec)
    # No signature at all.
    raw.hset(meta, mapping=stored)
    raw.hdel(meta, "mac")
    with pytest.raises(SignatureError):
        Queue(conn, name=name, codec=codec)
    raw.hset(meta, mapping=stored)
    assert Queue(conn, name=name, codec=codec)._maxsize == 1


@pytest.mark.timeout(30)
def test_value_and_array_contents_are_signed_for_their_place(conn, made):
    codec = Codec(authkey=b"secret")
    a, b = Value(conn, "i", 1, codec=codec), Value(conn, "i", 2, codec=codec)
    arr = Array(conn, "i", [10, 20], codec=codec)
    made += [a, b, arr]
    raw = conn.client
    raw.set(keys.object_key(b._ident, "v"), raw.get(keys.object_key(a._ident, "v")))
    for read in (lambda: b.value, b.load, b.fetch_add, lambda: b.get_obj().value):
        with pytest.raises(SignatureError):
            read()
    raw.set(keys.object_key(a._ident, "v"), b"5")  # unsigned
    with pytest.raises(SignatureError):
        a.value
    items = keys.object_key(arr._ident, "a")
    raw.lset(items, 1, raw.lindex(items, 0))  # item 0's signed bytes, at index 1
    assert arr[0] == 10
    with pytest.raises(SignatureError):
        arr[1]
    with pytest.raises(SignatureError):
        arr[:]


@pytest.mark.timeout(30)
def test_unsigned_value_and_array_contents_are_parsed_strictly(conn, made):
    v, c = Value(conn, "h", 1), Array(conn, "c", b"ab")
    made += [v, c]
    raw = conn.client
    for forged in (b"abc", b"99999", b"1e3", b"", b"--1"):
        raw.set(keys.object_key(v._ident, "v"), forged)
        for read in (lambda: v.value, v.load, v.fetch_add):
            with pytest.raises(CorruptDataError):
                read()
    raw.lset(keys.object_key(c._ident, "a"), 0, b"xy")
    with pytest.raises(CorruptDataError):
        c[0]
    assert issubclass(CorruptDataError, SegmentError) and issubclass(SignatureError,
                                                                      CorruptDataError)


# ------------------------------------------------------- pickle's trust


class _Trap:
    """Unpickling this creates a file: the mark of code run on load."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.timeout(30)
def test_only_an_unsigned_pickle_reader_runs_what_the_store_holds(conn, made, tmp_path):
    # The documented trust of each codec: json and msgpack never unpickle;
    # with an authkey, an unsigned or forged pickle is refused before it is
    # loaded; only pickle without an authkey (the default) runs it.
    trap = tmp_path / "ran"
    forged = b"p" + pickle.dumps(_Trap(str(trap)), 5)
    for codec, error in ((Codec("json"), CorruptDataError), (Codec("msgpack"), CorruptDataError),
                         (Codec("pickle", b"key"), SignatureError)):
        lst = RedisList(conn, [0], codec=codec)
        made.append(lst)
        conn.client.lset(keys.object_key(lst._ident, "l"), 0, forged)
        with pytest.raises(error):
            lst[0]
        # Signed with the key, but for another object: refused all the same.
        if codec.authkey:
            other = RedisList(conn, [0], codec=codec)
            made.append(other)
            conn.client.lset(keys.object_key(lst._ident, "l"), 0,
                             other._codec.dumps(_Trap(str(trap))))
            with pytest.raises(SignatureError):
                lst[0]
        assert not trap.exists()
    trusting = RedisList(conn, [0])
    made.append(trusting)
    conn.client.lset(keys.object_key(trusting._ident, "l"), 0, forged)
    trusting[0].close()
    assert trap.exists()


@pytest.mark.timeout(30)
def test_unsigned_metadata_of_the_wrong_shape_is_corrupt(conn, made, unique_name):
    for make, forged in (
        (lambda n, **kw: Queue(conn, 3, name=n, **kw), {"maxsize": "many"}),
        (lambda n, **kw: Barrier(conn, 2, name=n, **kw), {"parties": None}),
        (lambda n, **kw: Value(conn, "i", name=n, **kw), {"typecode": "O"}),
        (lambda n, **kw: Array(conn, "i", 2, name=n, **kw), {"typecode": "i", "length": -1}),
    ):
        name = unique_name()
        made.append(make(name))
        conn.client.hset(keys.meta_key(name), "options", json.dumps(forged))
        with pytest.raises(CorruptDataError):
            make(name, create=False)
    name = unique_name()
    made.append(Queue(conn, name=name))
    parts = conn.client.hget(keys.meta_key(name), "parts")
    conn.client.hset(keys.meta_key(name), "parts", "{not json")
    with pytest.raises(CorruptDataError):
        Queue(conn, name=name)
    conn.client.hset(keys.meta_key(name), "parts", parts)  # so that it can be deleted
