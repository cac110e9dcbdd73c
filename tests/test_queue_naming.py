"""Named queues: create/open rules, kinds, permissions, damaged segments,
list_objects() and the ``interproc ls``/``rm`` CLI."""

import gc
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

import interproc
from interproc import JoinableQueue, Queue, SimpleQueue

import _helpers
from _helpers import shm_path

KiB = 1024
KINDS = {"Queue": Queue, "SimpleQueue": SimpleQueue, "JoinableQueue": JoinableQueue}


def in_child(fn, *args):
    """Run fn in a forked child so that a crash fails the test rather than
    taking the test runner down with it."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as ex:
        try:
            return ex.submit(fn, *args).result(timeout=60)
        except BrokenProcessPool:
            pytest.fail(f"{fn.__name__}{args!r} crashed the process")


def info_for(name):
    found = [o for o in interproc.list_objects() if o.name == name]
    assert len(found) <= 1, found
    return found[0] if found else None


# ------------------------------------------------------------ create/open

@pytest.mark.parametrize("kind", KINDS)
def test_create_none_opens_or_creates(unique_name, kind):
    cls = KINDS[kind]
    name = unique_name()
    assert not os.path.exists(shm_path(name))
    a = cls(name=name)
    assert os.path.exists(shm_path(name))
    b = cls(name=name)
    assert a.name == b.name == name
    a.put("from a")
    assert b.get() == "from a"
    a.close()
    b.close()


@pytest.mark.parametrize("kind", KINDS)
def test_create_true_refuses_existing(unique_name, kind):
    cls = KINDS[kind]
    name = unique_name()
    q = cls(name=name, create=True)
    with pytest.raises(FileExistsError):
        cls(name=name, create=True)
    q.put(1)  # the failed attempt left the existing queue alone
    assert q.get() == 1
    q.close()


@pytest.mark.parametrize("kind", KINDS)
def test_create_false_requires_existing(unique_name, kind):
    cls = KINDS[kind]
    name = unique_name()
    with pytest.raises(FileNotFoundError):
        cls(name=name, create=False)
    assert not os.path.exists(shm_path(name))
    q = cls(name=name, create=True)
    r = cls(name=name, create=False)
    q.put("x")
    assert r.get() == "x"
    q.close()
    r.close()


@pytest.mark.parametrize("kind", KINDS)
def test_attach_returns_the_right_class(unique_name, kind):
    cls = KINDS[kind]
    name = unique_name()
    q = cls(name=name)
    q.put("hello")
    other = interproc.attach(name)
    assert type(other) is cls
    assert other.name == name
    assert other.get() == "hello"
    q.close()
    other.close()


def test_attach_keeps_maxsize_and_capacity(unique_name):
    name = unique_name()
    q = Queue(maxsize=5, name=name, capacity_bytes=64 * KiB)
    other = interproc.attach(name)
    assert other.maxsize == 5
    assert other.capacity_bytes == q.capacity_bytes
    for i in range(5):
        other.put(i)
    assert q.full() and other.full()
    q.close()
    other.close()


def test_attach_missing():
    with pytest.raises(FileNotFoundError):
        interproc.attach(f"t-{os.getpid()}-never-created")


def test_unlink_method(unique_name):
    name = unique_name()
    q = Queue(name=name)
    other = Queue(name=name, create=False)
    q.put("kept")
    q.unlink()
    assert not os.path.exists(shm_path(name))
    with pytest.raises(FileNotFoundError):
        Queue(name=name, create=False)
    # Existing handles keep the memory alive after the name is gone.
    assert other.get() == "kept"
    q.put("still")
    assert other.get() == "still"
    q.close()
    other.close()


def test_unlink_function(unique_name):
    name = unique_name()
    q = JoinableQueue(name=name)
    interproc.unlink(name)
    assert not os.path.exists(shm_path(name))
    with pytest.raises(FileNotFoundError):
        interproc.unlink(name)
    q.put(1)
    assert q.get() == 1
    q.close()


def test_name_reused_after_unlink_is_a_new_queue(unique_name):
    name = unique_name()
    old = Queue(name=name)
    old.put("old")
    old.unlink()
    new = Queue(name=name, create=True)
    assert new.empty()
    new.put("new")
    assert old.get() == "old"
    assert new.get() == "new"
    old.close()
    new.close()


def test_named_queue_memory_stays_after_last_handle_until_unlink(unique_name):
    name = unique_name()
    q = Queue(name=name)
    q.put("persisted")
    q.close()
    del q
    gc.collect()
    r = Queue(name=name, create=False)
    assert r.get() == "persisted"
    r.close()


# ------------------------------------------------------------------ names

@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "/lead", "trail/", "../escape", "x" * 201, "nul\0byte"],
    ids=["empty", "slash", "leading-slash", "trailing-slash", "dotdot", "201-chars", "nul"],
)
def test_invalid_names_raise_value_error(bad):
    for cls in KINDS.values():
        with pytest.raises(ValueError):
            cls(name=bad)
    with pytest.raises(ValueError):
        interproc.attach(bad)
    with pytest.raises(ValueError):
        interproc.unlink(bad)
    assert not any(e.startswith(_helpers.SHM_PREFIX) and "escape" in e for e in _helpers.shm_entries())


@pytest.mark.parametrize(
    "bad", [123, b"bytes-name", ["x"], 1.5, object()], ids=lambda v: type(v).__name__
)
def test_non_str_names_raise_type_error(bad):
    for cls in KINDS.values():
        with pytest.raises(TypeError):
            cls(name=bad)
    with pytest.raises(TypeError):
        interproc.attach(bad)
    with pytest.raises(TypeError):
        interproc.unlink(bad)


def test_name_of_200_chars_is_valid(unique_name):
    base = unique_name()
    name = unique_name(suffix="-" + "n" * (200 - len(base) - 1))
    assert len(name) == 200
    q = Queue(name=name)
    assert os.path.exists(shm_path(name))
    q.put(1)
    assert q.get() == 1
    q.close()


def test_non_ascii_name(unique_name):
    name = unique_name(suffix="-naïve-☃")
    q = Queue(name=name)
    assert os.path.exists(shm_path(name))
    assert interproc.attach(name).name == name
    q.close()


def test_long_multibyte_name_is_valid_or_value_error(unique_name):
    """200 characters of 2-byte UTF-8 exceed the file-name limit of the file
    system; that must surface as the documented ValueError, not an OSError."""
    base = unique_name()
    name = unique_name(suffix="-" + "é" * (200 - len(base) - 1))
    assert len(name) == 200
    try:
        q = Queue(name=name)
    except ValueError:
        return
    q.put(1)
    assert q.get() == 1
    q.close()


# ------------------------------------------------------------------- mode

@pytest.mark.parametrize("kind", KINDS)
def test_default_mode_is_0600(unique_name, umask_022, kind):
    name = unique_name()
    q = KINDS[kind](name=name)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o600
    q.close()


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640])
def test_mode_widens_permissions(unique_name, umask_022, mode):
    name = unique_name()
    q = Queue(name=name, mode=mode)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == mode
    q.close()


def test_mode_is_ignored_when_opening(unique_name, umask_022):
    name = unique_name()
    q = Queue(name=name)
    r = Queue(name=name, mode=0o644)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o600
    q.close()
    r.close()


# ------------------------------------------------------------ kind checks

MISMATCHES = [(a, b) for a in KINDS for b in KINDS if a != b]


@pytest.mark.parametrize("created,opened", MISMATCHES)
def test_opening_another_kind_raises_type_error(unique_name, created, opened):
    name = unique_name()
    q = KINDS[created](name=name)
    q.put("untouched")
    with pytest.raises(TypeError):
        KINDS[opened](name=name, create=False)
    with pytest.raises(TypeError):
        KINDS[opened](name=name)
    with pytest.raises(FileExistsError):
        KINDS[opened](name=name, create=True)
    assert q.get() == "untouched"
    assert type(interproc.attach(name)) is KINDS[created]
    q.close()


# ----------------------------------------------------- damaged segments

def _real_segment(name):
    """Make a genuine queue segment, drop every handle, return its bytes."""
    q = Queue(name=name, capacity_bytes=64 * KiB)
    q.put_many([b"x" * 100, "y", 3])
    q.close()
    del q
    gc.collect()
    with open(shm_path(name), "rb") as f:
        return f.read()


def _write_segment(name, data):
    fd = os.open(shm_path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def damage_empty(name):
    _write_segment(name, b"")


def damage_tiny(name):
    _write_segment(name, b"abc")


def damage_junk_page(name):
    _write_segment(name, os.urandom(4096))


def damage_junk_large(name):
    _write_segment(name, os.urandom(256 * KiB))


def damage_zeroed(name):
    _write_segment(name, bytes(len(_real_segment(name))))


def damage_header_only(name):
    _write_segment(name, _real_segment(name)[:8])


def damage_truncated_half(name):
    real = _real_segment(name)
    _write_segment(name, real[: len(real) // 2])


def damage_truncated_one_page(name):
    real = _real_segment(name)
    _write_segment(name, real[:4096])


def damage_bad_magic(name):
    real = bytearray(_real_segment(name))
    for i in range(4):
        real[i] ^= 0xFF
    _write_segment(name, bytes(real))


def damage_scrambled_header(name):
    """Keep the first 8 bytes (the magic, whatever its width up to 8) and
    scramble the rest of the first 256: version, kind and sizes."""
    real = bytearray(_real_segment(name))
    real[8:256] = b"\xa5" * 248
    _write_segment(name, bytes(real))


def damage_foreign_file(name):
    _write_segment(name, b"SQLite format 3\0" + os.urandom(8192))


DAMAGES = [
    damage_empty,
    damage_tiny,
    damage_junk_page,
    damage_junk_large,
    damage_zeroed,
    damage_header_only,
    damage_truncated_half,
    damage_truncated_one_page,
    damage_bad_magic,
    damage_scrambled_header,
    damage_foreign_file,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__[len("damage_"):])
def test_damaged_segment_raises_segment_error(unique_name, damage):
    name = unique_name()
    damage(name)
    with open(shm_path(name), "rb") as f:
        before = f.read()

    results = in_child(_helpers.probe_open, name)
    for opener, outcome in results.items():
        assert outcome is not None, f"{opener} opened a damaged segment"
        exc_name, is_segment_error, is_value_error, message = outcome
        assert is_segment_error and is_value_error, f"{opener} raised {exc_name}: {message}"
        assert message.strip(), f"{opener} raised {exc_name} without a message"

    # Safe to try in this process now that a child survived it.
    with pytest.raises(interproc.SegmentError) as info:
        Queue(name=name, create=False)
    assert str(info.value)

    with open(shm_path(name), "rb") as f:
        assert f.read() == before, "opening a damaged segment changed it"

    listed = {entry[0]: entry for entry in in_child(_helpers.probe_list_objects)}
    assert name in listed, "list_objects() hides a damaged segment"
    error = listed[name][6]
    assert isinstance(error, str) and error.strip()

    interproc.unlink(name)
    assert not os.path.exists(shm_path(name))


def test_segment_error_is_a_value_error():
    assert issubclass(interproc.SegmentError, ValueError)


def test_damaged_segment_does_not_hide_healthy_ones(unique_name):
    good = unique_name()
    bad = unique_name()
    q = SimpleQueue(name=good)
    damage_junk_page(bad)
    by_name = {o.name: o for o in interproc.list_objects()}
    assert by_name[good].error is None
    assert by_name[good].kind == "SimpleQueue"
    assert by_name[bad].error
    q.close()


# ----------------------------------------------------------- list_objects

@pytest.mark.parametrize("kind", KINDS)
def test_list_objects_describes_a_named_queue(unique_name, kind):
    name = unique_name()
    q = KINDS[kind](name=name, capacity_bytes=64 * KiB)
    q.put_many(["a", "b", b"c" * 1000])
    info = info_for(name)
    assert info is not None
    assert info.name == name
    assert info.kind == kind
    assert info.items == 3
    assert info.capacity_bytes == q.capacity_bytes >= 64 * KiB
    assert info.bytes_used > 1000
    assert info.error is None
    # Seen from another process, this one is attached.
    (seen,) = [o for o in in_child(_helpers.probe_list_objects) if o[0] == name]
    assert os.getpid() in seen[5]
    q.get()
    assert info_for(name).items == 2
    q.close()
    interproc.unlink(name)
    assert info_for(name) is None


def test_pid_stays_listed_while_another_handle_is_open(unique_name):
    """Closing one of two handles in a process, or listing (which attaches
    and closes), must not drop the process from ``pids``."""
    name = unique_name()
    q = Queue(name=name)

    def pids_seen_by_another_process():
        (seen,) = [o for o in in_child(_helpers.probe_list_objects) if o[0] == name]
        return seen[5]

    assert os.getpid() in pids_seen_by_another_process()
    second = Queue(name=name, create=False)
    second.close()
    assert os.getpid() in pids_seen_by_another_process(), "closing a second handle unlisted us"
    interproc.list_objects()
    assert os.getpid() in pids_seen_by_another_process(), "list_objects() unlisted us"
    q.close()


def test_list_objects_skips_anonymous_queues():
    before = {o.name for o in interproc.list_objects()}
    q = Queue()
    q.put(1)
    after = {o.name for o in interproc.list_objects()}
    assert after == before
    assert None not in after
    q.close()


@pytest.mark.timeout(60)
def test_list_objects_pids_are_live_attached_pids(unique_name, start_method):
    name = unique_name()
    q = Queue(name=name)
    ready, release = Queue(), Queue()
    child = start_method.Process(target=_helpers.attach_and_wait, args=(name, ready, release))
    child.start()
    try:
        assert ready.get(timeout=60) == child.pid
        assert child.pid in info_for(name).pids
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        assert child.pid not in info_for(name).pids, "a SIGKILLed process is still listed"
        (seen,) = [o for o in in_child(_helpers.probe_list_objects) if o[0] == name]
        assert os.getpid() in seen[5]
        assert child.pid not in seen[5]
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
    q.put("alive")
    assert q.get(timeout=5) == "alive"
    q.close()


# -------------------------------------------------------------------- CLI

def run_cli(*args):
    import interproc as pkg

    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(pkg.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "interproc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_ls_shows_named_queue(unique_name):
    name = unique_name()
    q = Queue(name=name)
    q.put_many([1, 2, 3])
    res = run_cli("ls")
    assert res.returncode == 0, res.stderr
    line = [ln for ln in res.stdout.splitlines() if name in ln]
    assert line, res.stdout
    assert "Queue" in line[0]
    q.close()


def test_cli_ls_survives_damaged_segment(unique_name):
    name = unique_name()
    damage_junk_page(name)
    res = run_cli("ls")
    assert res.returncode == 0, res.stderr
    assert name in res.stdout
    assert "Traceback" not in res.stderr


def test_cli_rm_removes(unique_name):
    name = unique_name()
    q = Queue(name=name)
    q.close()
    res = run_cli("rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(shm_path(name))


def test_cli_rm_removes_damaged_segment(unique_name):
    name = unique_name()
    damage_empty(name)
    res = run_cli("rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(shm_path(name))


def test_cli_rm_missing_exits_1(unique_name):
    res = run_cli("rm", unique_name())
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.strip() or res.stdout.strip(), "no message for a missing name"
