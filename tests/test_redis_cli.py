"""`interproc ls --url` and `rm --url`, and the functions behind them
(interproc.backends.redis.list_objects and unlink), on a real server."""
import json
import os
import subprocess
import sys
import uuid

import pytest

pytest.importorskip("redis")

import interproc  # noqa: E402
from interproc.backends import redis as redis_backend  # noqa: E402


def _unique():
    return f"t-redis-cli-{uuid.uuid4().hex[:10]}"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "interproc", *args], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def _client(url):
    import redis

    return redis.Redis.from_url(url)


def _keys_of(client, name):
    return {k.decode() for k in client.scan_iter(match=f"ip:{{{name}}}*", count=1000)}


def _rows(url, *extra):
    res = run_cli("ls", "--url", url, "--json", *extra)
    assert res.returncode == 0, res.stderr
    return {row["name"]: row for row in json.loads(res.stdout)}


def test_ls_shows_named_objects_with_kind_maxsize_and_items(redis_url):
    qname, dname, lname = _unique(), _unique(), _unique()
    with interproc.Manager(redis_url) as m:
        q = m.Queue(maxsize=7, name=qname)
        q.put("a")
        q.put("b")
        m.dict({"x": 1, "y": 2, "z": 3}, name=dname)
        m.Lock(name=lname)
        anon = m.list([1, 2])
        anon_name = anon._ident

        rows = _rows(redis_url)
        assert (rows[qname]["kind"], rows[qname]["maxsize"], rows[qname]["items"]) == ("JoinableQueue", 7, 2)
        assert (rows[dname]["kind"], rows[dname]["maxsize"], rows[dname]["items"]) == ("dict", None, 3)
        assert (rows[lname]["kind"], rows[lname]["items"]) == ("Lock", None)
        assert all(rows[n]["bytes_used"] > 0 and rows[n]["error"] is None for n in (qname, dname, lname))
        assert not any(n.startswith("anon:") for n in rows), "anonymous objects listed without --anonymous"

        with_anon = _rows(redis_url, "--anonymous")
        anonymous = {n: r for n, r in with_anon.items() if n.startswith("anon:") and r["kind"] == "list"}
        assert any(r["items"] == 2 for r in anonymous.values()), with_anon
        if anon_name is not None:
            assert anon_name in with_anon

        table = run_cli("ls", "--url", redis_url)
        assert table.returncode == 0, table.stderr
        line = next(ln for ln in table.stdout.splitlines() if ln.startswith(qname))
        assert line.split()[1:4] == ["JoinableQueue", "7", "2"]
        assert table.stdout.splitlines()[0].split() == ["NAME", "KIND", "MAXSIZE", "ITEMS", "USED", "STATUS"]
    for name in (qname, dname, lname):
        redis_backend.unlink(redis_url, name)


def test_rm_removes_every_key_of_an_object(redis_url):
    name = _unique()
    client = _client(redis_url)
    with interproc.Manager(redis_url) as m:
        q = m.Queue(name=name)
        q.put("x")
        assert q.get(timeout=5) == "x"  # consumer keys too
        q.put("y")
    assert _keys_of(client, name)
    res = run_cli("rm", "-v", "--url", redis_url, name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"removed {name}"
    assert _keys_of(client, name) == set()

    missing = run_cli("rm", "--url", redis_url, name)
    assert missing.returncode == 1 and "no such object" in missing.stderr
    assert run_cli("rm", "-f", "--url", redis_url, name).returncode == 0


def test_rm_removes_an_anonymous_object_left_by_a_killed_manager(redis_url):
    client = _client(redis_url)
    code = ("import os, interproc, sys; m = interproc.Manager(sys.argv[1]); l = m.list([1, 2, 3]); "
            "print(l._ident, flush=True); os._exit(0)")  # as if killed: no shutdown
    out = subprocess.run([sys.executable, "-c", code, redis_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert name.startswith("anon:") and _keys_of(client, name)
    assert name in _rows(redis_url, "--anonymous")
    res = run_cli("rm", "--url", redis_url, name)
    assert res.returncode == 0, res.stderr
    assert _keys_of(client, name) == set()


def test_ls_lists_damaged_metadata_without_decoding_anything(redis_url):
    name = _unique()
    client = _client(redis_url)
    client.hset(f"ip:{{{name}}}:meta", mapping={"kind": "Queue", "options": "{not json",
                                                 "uid": "u", "version": "x", "parts": "[]"})
    try:
        rows = _rows(redis_url)
        assert rows[name]["error"], rows[name]
        table = run_cli("ls", "--url", redis_url)
        assert "damaged" in next(ln for ln in table.stdout.splitlines() if ln.startswith(name))
        assert "1 object is damaged" in table.stderr or "objects are damaged" in table.stderr
        res = run_cli("rm", "--url", redis_url, name)
        assert res.returncode == 0, res.stderr
        assert _keys_of(client, name) == set()
    finally:
        client.delete(f"ip:{{{name}}}:meta")


def test_rm_of_a_damaged_object_whose_name_is_a_pattern_removes_only_it(redis_url):
    """Damaged metadata cannot be trusted to name the keys, so every key
    with the object's hash tag goes -- and only those, whatever glob
    characters the name holds."""
    base = _unique()
    damaged, bystander = base + "*", base + "-kept"
    client = _client(redis_url)
    client.hset(f"ip:{{{damaged}}}:meta", mapping={"kind": "NoSuchKind", "parts": "oops"})
    client.rpush(f"ip:{{{damaged}}}:items", b"x")
    with interproc.Manager(redis_url) as m:
        m.list([1], name=bystander)
    try:
        res = run_cli("rm", "--url", redis_url, damaged)
        assert res.returncode == 0, res.stderr
        assert not client.exists(f"ip:{{{damaged}}}:meta", f"ip:{{{damaged}}}:items")
        assert _keys_of(client, bystander), "a key of another object was deleted"
    finally:
        redis_backend.unlink(redis_url, bystander)


def test_the_functions_behind_the_commands(redis_url):
    name = _unique()
    with interproc.Manager(redis_url) as m:
        m.Semaphore(3, name=name)
    infos = {i.name: i for i in redis_backend.list_objects(redis_url)}
    assert isinstance(infos[name], interproc.ObjectInfo) and infos[name].kind == "Semaphore"
    redis_backend.unlink(redis_url, name)
    assert name not in {i.name for i in redis_backend.list_objects(redis_url)}
    with pytest.raises(FileNotFoundError):
        redis_backend.unlink(redis_url, name)


def test_bad_combinations_and_unreachable_servers_are_clear_errors(redis_url):
    res = run_cli("ls", "--url", redis_url, "--mode", "600")
    assert res.returncode == 2 and "--mode" in res.stderr and "--url" in res.stderr
    res = run_cli("rm", "--url", redis_url, "--mode", "666", "x")
    assert res.returncode == 2 and "--mode" in res.stderr
    res = run_cli("ls", "--anonymous")
    assert res.returncode == 2 and "--anonymous needs --url" in res.stderr
    from interproc.backends.redis.local_server import free_port

    res = run_cli("ls", "--url", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert res.returncode == 1 and "cannot list the objects on" in res.stderr
    assert "secret" not in res.stderr, "the password was printed"
    assert "Traceback" not in res.stderr
    res = run_cli("ls", "--url", "http://example.invalid/")
    assert res.returncode == 1 and "Traceback" not in res.stderr
