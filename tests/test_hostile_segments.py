"""Hostile segments: what other users (and damaged or forged data) can put
under a name, and what opening, attaching, listing and removing do with it.

The threat: /dev/shm is writable by every user, so a name may already hold
someone else's file, a link, a FIFO, a directory, a socket or a hard link
to something else, with any bytes in it.  Opening must refuse what the
caller's ``mode`` does not trust with a PermissionError that says whose it
is and why; ``ls``/``rm``/attach must never unpickle or run anything from a
segment; a same-user process must not be able to make an anonymous object's
users die of SIGBUS by shrinking its memfd.

Steps that could crash the interpreter (SIGBUS, a hostile type description
rebuilt by ctypes) run in a child interpreter, and the test asserts on its
exit status and output.  Foreign owners are made by chown to ``nobody``,
which needs root: those tests skip otherwise.
"""

import ctypes
import gc
import json
import multiprocessing
import os
import pickle
import pwd
import socket
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

import interproc
from interproc import sharedctypes

import _helpers
from _helpers import shm_path

NOBODY = 65534
META_MAX = 2048  # bytes a Value keeps for its type description (IP_SYNC_META_MAX)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="making a file another user's (chown) needs root"
)
CHILD_TIMEOUT = 60


def nobody_name():
    try:
        return pwd.getpwuid(NOBODY).pw_name
    except KeyError:
        return None


def run_py(code, timeout=CHILD_TIMEOUT):
    """Run ``code`` in a fresh interpreter; a hang fails through the timeout."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "interproc", *args], capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def planted(unique_name):
    """A factory of names whose files the test plants by hand (foreign
    owners included, which interproc.unlink rightly refuses): every one is
    removed with os.unlink / rmdir afterwards, before unique_name's own
    clean-up looks."""
    made = []

    def make(suffix=""):
        name = unique_name(suffix)
        made.append(name)
        return name

    yield make
    for name in made:
        path = shm_path(name)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        elif os.path.lexists(path):
            os.unlink(path)


def drop(*objs):
    for obj in objs:
        close = getattr(obj, "close", None)
        if close is None and hasattr(obj, "get_lock"):
            close = obj.get_lock().close
        if close is not None:
            close()
    gc.collect()


# ------------------------------------------------------------ every kind

def _lock_kind(cls):
    return lambda name, **kw: cls(name=name, **kw)


KINDS = {
    "Queue": lambda name, **kw: interproc.Queue(name=name, **kw),
    "SimpleQueue": lambda name, **kw: interproc.SimpleQueue(name=name, **kw),
    "JoinableQueue": lambda name, **kw: interproc.JoinableQueue(name=name, **kw),
    "Lock": _lock_kind(interproc.Lock),
    "RLock": _lock_kind(interproc.RLock),
    "Semaphore": lambda name, **kw: interproc.Semaphore(2, name=name, **kw),
    "BoundedSemaphore": lambda name, **kw: interproc.BoundedSemaphore(2, name=name, **kw),
    "Event": _lock_kind(interproc.Event),
    "Condition": _lock_kind(interproc.Condition),
    "Barrier": lambda name, **kw: interproc.Barrier(2, name=name, **kw),
    "Value": lambda name, **kw: interproc.Value("i", name=name, **kw),
    "Array": lambda name, **kw: interproc.Array("d", 4, name=name, **kw),
    "SharedDict": lambda name, **kw: interproc.SharedDict(name=name, **kw),
    "SharedList": lambda name, **kw: interproc.SharedList(name=name, **kw),
    "Namespace": lambda name, **kw: interproc.Namespace(name=name, **kw),
}
OPENERS = [(kind, how) for kind in KINDS for how in ("create=None", "create=False", "attach")]


def open_as(kind, how, name, **kw):
    if how == "attach":
        return interproc.attach(name, **kw)
    return KINDS[kind](name, create=None if how == "create=None" else False, **kw)


def make_foreign(kind, name, mode=0o600, uid=NOBODY, gid=NOBODY):
    """A genuine segment of ``kind``, then given to another user."""
    drop(KINDS[kind](name, create=True))
    os.chown(shm_path(name), uid, gid)
    os.chmod(shm_path(name), mode)


@needs_root
@pytest.mark.parametrize("kind,how", OPENERS)
def test_another_users_segment_is_refused(planted, kind, how):
    name = planted()
    make_foreign(kind, name)
    before = open_fds()
    with pytest.raises(PermissionError) as info:
        open_as(kind, how, name)
    message = str(info.value)
    assert shm_path(name) in message
    assert f"uid {NOBODY}" in message
    if nobody_name():
        assert nobody_name() in message
    assert "not to you" in message
    assert "mode=0o606" in message, "the message must say what to pass to share deliberately"
    assert open_fds() == before, "a refused open left a descriptor open"
    # Refused, not merely failed: the file is as it was.
    st = os.stat(shm_path(name))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o600)


@needs_root
@pytest.mark.parametrize("kind,how", OPENERS)
def test_a_mode_that_lets_others_write_trusts_anyones_segment(planted, kind, how):
    name = planted()
    make_foreign(kind, name)
    obj = open_as(kind, how, name, mode=0o606)
    drop(obj)


@needs_root
def test_group_opt_in_needs_one_of_our_groups(planted):
    mine = planted()
    make_foreign("Queue", mine, mode=0o660, gid=os.getegid())
    with pytest.raises(PermissionError, match="belongs to uid"):
        interproc.Queue(name=mine)
    drop(interproc.Queue(name=mine, mode=0o660))
    # Trusting the group does not trust the others' write bit.
    with pytest.raises(PermissionError, match="can write to it"):
        interproc.Queue(name=mine, mode=0o606)

    theirs = planted()
    other_gid = NOBODY if NOBODY not in os.getgroups() + [os.getegid()] else NOBODY - 1
    make_foreign("Queue", theirs, mode=0o660, gid=other_gid)
    with pytest.raises(PermissionError, match="belongs to uid"):
        interproc.Queue(name=theirs, mode=0o660)
    drop(interproc.Queue(name=theirs, mode=0o666))


@pytest.mark.parametrize("file_mode,opener_mode,accepted", [
    (0o600, 0o600, True),
    (0o644, 0o600, True),   # readers do not matter: nobody else can change it
    (0o666, 0o600, False),
    (0o620, 0o600, False),
    (0o602, 0o600, False),
    (0o620, 0o660, True),
    (0o602, 0o660, False),
    (0o622, 0o666, True),
    (0o602, 0o606, True),
])
def test_own_segment_writable_by_others_needs_a_mode_that_allows_it(
        unique_name, file_mode, opener_mode, accepted):
    name = unique_name()
    drop(interproc.Queue(name=name, create=True))
    os.chmod(shm_path(name), file_mode)
    if accepted:
        q = interproc.Queue(name=name, mode=opener_mode)
        q.put("ok")
        assert q.get() == "ok"
        drop(q)
    else:
        with pytest.raises(PermissionError) as info:
            interproc.Queue(name=name, mode=opener_mode)
        assert f"mode {file_mode:04o}" in str(info.value)
        assert "can write to it" in str(info.value)


def test_a_new_named_object_gets_the_mode_asked_for_and_opens_again(unique_name, umask_022):
    name = unique_name()
    q = interproc.Queue(name=name, mode=0o660)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o660
    with pytest.raises(PermissionError):
        interproc.Queue(name=name)  # 0o600 does not trust what the group may write
    r = interproc.Queue(name=name, mode=0o660)
    q.put(1)
    assert r.get() == 1
    drop(q, r)


# ----------------------------------------------------- not a regular file

def _plant_link_to_segment(planted, link):
    """A genuine queue, and another name made for it by ``link(src, dst)``."""
    target = planted()
    drop(interproc.Queue(name=target, create=True))
    name = planted()
    link(shm_path(target), shm_path(name))
    return name


def _plant_symlink_to_segment(planted):
    return _plant_link_to_segment(planted, os.symlink)


def _plant_dangling_symlink(planted, tmp_path):
    link = planted()
    os.symlink(str(tmp_path / "created-through-a-link"), shm_path(link))
    return link


def _plant_fifo(planted):
    name = planted()
    os.mkfifo(shm_path(name), 0o600)
    return name


def _plant_directory(planted):
    name = planted()
    os.mkdir(shm_path(name), 0o700)
    return name


def _plant_socket(planted):
    name = planted()
    s = socket.socket(socket.AF_UNIX)
    s.bind(shm_path(name))
    s.close()
    return name


def _plant_hard_link(planted):
    return _plant_link_to_segment(planted, os.link)


PLANTS = {
    "symlink": (_plant_symlink_to_segment, "symbolic link"),
    "fifo": (_plant_fifo, "FIFO"),
    "directory": (_plant_directory, "directory"),
    "socket": (_plant_socket, "socket"),
    "hard-link": (_plant_hard_link, "hard links"),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_anything_but_a_regular_file_with_one_name_is_refused(planted, plant):
    make, words = PLANTS[plant]
    name = make(planted)
    lstat_before = os.lstat(shm_path(name))
    # In a child: a FIFO must neither hang nor be mapped.
    res = run_py(f"""
        import interproc
        for how in ("none", "false", "attach", "value"):
            try:
                if how == "attach":
                    interproc.attach({name!r})
                elif how == "value":
                    interproc.Value("i", name={name!r})
                else:
                    interproc.Queue(name={name!r}, create=None if how == "none" else False)
            except BaseException as exc:
                print(how, type(exc).__name__, exc)
            else:
                print(how, "opened")
    """)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4, res.stdout
    for line in lines:
        assert " PermissionError " in line, line
        assert words in line, line
        assert shm_path(name) in line, line
    after = os.lstat(shm_path(name))
    assert (after.st_ino, after.st_mode, after.st_size) == (
        lstat_before.st_ino, lstat_before.st_mode, lstat_before.st_size)


def test_a_dangling_symlink_is_not_followed_to_create_a_file(planted, tmp_path):
    name = _plant_dangling_symlink(planted, tmp_path)
    with pytest.raises(PermissionError, match="symbolic link"):
        interproc.Queue(name=name)
    with pytest.raises(FileExistsError):
        interproc.Queue(name=name, create=True)
    assert not (tmp_path / "created-through-a-link").exists()


# --------------------------------------------- ls, rm and attach never run code

class _Payload:
    """What a planted pickle would run: it creates a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _meta_offset(data, ctype=ctypes.c_int, length=None):
    """Where the type description of a fresh Value/Array of ctype starts:
    the description this interproc writes, searched for in the file; its
    length is the 32-bit word before it."""
    meta = sharedctypes._describe(ctype, length)
    offset = data.find(meta)
    assert offset > 0, "type description not found in the segment"
    assert struct.unpack_from("<I", data, offset - 4)[0] == len(meta)
    return offset


def rewrite_meta(name, meta, ctype=ctypes.c_int, length=None):
    """Replace the type description stored in the Value/Array ``name``."""
    assert len(meta) <= META_MAX
    with open(shm_path(name), "rb") as f:
        data = f.read()
    offset = _meta_offset(data, ctype, length)
    fd = os.open(shm_path(name), os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<I", len(meta)) + meta, offset - 4)
    finally:
        os.close(fd)


def plant_pickled_value(name, marker):
    """A genuine Value whose description is replaced by a pickle that would
    create ``marker`` when loaded: what the old layout stored, forged."""
    drop(interproc.Value(ctypes.c_int, name=name, create=True))
    payload = pickle.dumps(_Payload(str(marker)))
    assert len(payload) < 2048
    rewrite_meta(name, payload)


def test_listing_attaching_or_opening_a_planted_value_runs_nothing(unique_name, tmp_path):
    name = unique_name()
    marker = tmp_path / "pwned"
    plant_pickled_value(name, marker)

    res = run_cli("ls")
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), "interproc ls ran code stored in a segment"
    (row,) = [line for line in res.stdout.splitlines() if line.startswith(name)]
    assert "damaged" in row and "type description" in row, row

    res = run_py(f"""
        import ctypes, interproc
        for label, how in [("attach", lambda: interproc.attach({name!r})),
                           ("Value same type", lambda: interproc.Value(ctypes.c_int, name={name!r})),
                           ("Value other type", lambda: interproc.Value(ctypes.c_long, name={name!r})),
                           ("list_objects", lambda: [o for o in interproc.list_objects()
                                                     if o.name == {name!r} and o.error is None])]:
            try:
                out = how()
            except BaseException as exc:
                print(label, type(exc).__name__, isinstance(exc, interproc.SegmentError))
            else:
                print(label, "returned", out)
    """)
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), f"opening a planted Value ran its code: {res.stdout}"
    assert res.stdout.splitlines() == [
        "attach SegmentError True",
        "Value same type SegmentError True",
        "Value other type SegmentError True",
        "list_objects returned []",
    ], res.stdout


@needs_root
def test_ls_does_not_open_a_foreign_planted_value(planted, tmp_path):
    name = planted()
    marker = tmp_path / "pwned"
    plant_pickled_value(name, marker)
    os.chown(shm_path(name), NOBODY, NOBODY)
    res = run_cli("ls")
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), "interproc ls ran code stored in another user's segment"
    (row,) = [line for line in res.stdout.splitlines() if line.startswith(name)]
    assert "foreign" in row
    res = run_cli("ls", "--json")
    (entry,) = [e for e in json.loads(res.stdout) if e["name"] == name]
    assert entry["foreign"] is True
    assert entry["kind"] is None, "a foreign entry was opened to learn its kind"
    assert not marker.exists()


# --------------------------------------------------------------- ls and rm

@needs_root
def test_ls_marks_foreign_entries_with_their_owner(planted, unique_name):
    mine = unique_name()
    q = interproc.Queue(name=mine)
    theirs = planted()
    make_foreign("Queue", theirs, mode=0o666)
    fifo = _plant_fifo(planted)

    by_name = {o.name: o for o in interproc.list_objects()}
    assert by_name[mine].foreign is False
    assert by_name[mine].kind == "Queue"
    assert by_name[mine].uid == os.geteuid()
    info = by_name[theirs]
    assert info.foreign is True
    assert info.kind is None and info.items is None, "a foreign entry was opened"
    assert info.uid == NOBODY
    assert info.file_mode == 0o666
    assert info.owner == (nobody_name() or str(NOBODY))
    assert f"uid {NOBODY}" in info.refused
    assert by_name[fifo].foreign is True and "FIFO" in by_name[fifo].refused

    # Opting in opens it.
    trusting = {o.name: o for o in interproc.list_objects(mode=0o666)}
    assert trusting[theirs].foreign is False
    assert trusting[theirs].kind == "Queue"
    assert trusting[fifo].foreign is True, "no mode makes a FIFO a segment"

    res = run_cli("ls")  # in a child: a FIFO must not hang it
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "OWNER" in lines[0]
    (row,) = [line for line in lines if line.startswith(theirs)]
    assert "foreign" in row and (nobody_name() or str(NOBODY)) in row
    assert "foreign" in res.stderr
    drop(q)


@needs_root
def test_rm_of_a_foreign_entry_is_a_clear_error(planted):
    name = planted()
    make_foreign("Queue", name)
    res = run_cli("rm", name)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert f"uid {NOBODY}" in res.stderr and "refusing to remove" in res.stderr, res.stderr
    assert "--mode" in res.stderr
    assert os.path.exists(shm_path(name))
    with pytest.raises(PermissionError, match="belongs to uid"):
        interproc.unlink(name)
    assert os.path.exists(shm_path(name))
    res = run_cli("rm", "--mode", "606", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(shm_path(name))


def test_rm_only_unlinks(unique_name, tmp_path):
    """rm never opens what it removes: a planted Value is removed, its code not run."""
    name = unique_name()
    marker = tmp_path / "pwned"
    plant_pickled_value(name, marker)
    res = run_cli("rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(shm_path(name))
    assert not marker.exists()


def test_rm_of_a_planted_fifo_removes_it_without_opening_it(planted):
    name = _plant_fifo(planted)
    res = run_cli("rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.lexists(shm_path(name))


def test_cli_mode_option_is_octal_and_checked():
    res = run_cli("ls", "--mode", "999")
    assert res.returncode == 2 and "octal" in res.stderr
    res = run_cli("ls", "--mode", "0o644", "--json")
    assert res.returncode == 0, res.stderr


# ----------------------------------------------- a reference carries the mode

def _child_reads(q, out):
    out.put(q.get(timeout=_helpers.CHILD_TIMEOUT))


def assert_travels(q, ctx, item):
    """``q`` pickled to a child of ``ctx`` (by name, with its mode) still works there."""
    out = interproc.Queue()
    q.put(item)
    _helpers.join_ok(_helpers.start(ctx, _child_reads, q, out))
    assert out.get(timeout=10) == item
    drop(out)


@needs_root
def test_a_trusted_foreign_queue_travels_with_its_mode(planted, start_method):
    name = planted()
    make_foreign("Queue", name)
    q = interproc.Queue(name=name, mode=0o606)
    assert_travels(q, start_method, "through a foreign queue")
    # And unlink() by this process trusts what it opened.
    q.unlink()
    assert not os.path.exists(shm_path(name))
    drop(q)


def test_an_own_shared_queue_travels_with_its_mode(unique_name, start_method):
    q = interproc.Queue(name=unique_name(), mode=0o666)
    assert_travels(q, start_method, "shared")
    drop(q)


def _child_stores(d, out):
    d["child"] = "was here"
    out.put(sorted(d.keys()))


def test_an_own_shared_container_travels_with_its_mode(unique_name, start_method):
    d = interproc.SharedDict(name=unique_name(), mode=0o666)
    d["parent"] = 1
    out = interproc.Queue()
    _helpers.join_ok(_helpers.start(start_method, _child_stores, d, out))
    assert out.get(timeout=10) == ["child", "parent"]
    drop(out)
    drop(d)


# ------------------------------------- a header changing while it is checked

FLIP_HEADER = """
    import os, struct, sys, time
    path, seconds = sys.argv[1], float(sys.argv[2])
    fd = os.open(path, os.O_RDWR)
    good = os.pread(fd, 64, 0)
    # (offset, format, forged value) in ip_seghdr_t, layout version 3
    forged = [(8, "<I", 7), (12, "<I", 99), (16, "<Q", 0), (16, "<Q", 1 << 30),
              (24, "<Q", 1 << 40), (24, "<Q", 0), (40, "<Q", 1 << 50)]
    print("flipping", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for offset, fmt, value in forged:
            os.pwrite(fd, struct.pack(fmt, value), offset)
            os.pwrite(fd, good, 0)
    os.pwrite(fd, good, 0)
"""

ATTACH_WHILE_FLIPPED = """
    import json, sys, time, interproc
    name, seconds = sys.argv[1], float(sys.argv[2])
    deadline = time.monotonic() + seconds
    outcomes = set()
    while time.monotonic() < deadline:
        try:
            obj = interproc.attach(name)
        except (interproc.SegmentError, TypeError) as exc:
            outcomes.add(type(exc).__name__)
            continue
        with obj:
            pass
        obj.statistics()
        obj.close()
        outcomes.add("attached")
    print(json.dumps(sorted(outcomes)))
"""


def test_attach_survives_a_header_changing_under_it(unique_name):
    """Attach checks a private copy of the header and sizes everything from
    that copy: another process rewriting the header at the same time can
    make it fail with SegmentError (or TypeError, for a forged kind), never
    crash it."""
    name = unique_name()
    drop(interproc.Lock(name=name, create=True))
    seconds = "3"
    flipper = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FLIP_HEADER), shm_path(name), seconds],
        stdout=subprocess.PIPE, text=True)
    try:
        assert flipper.stdout.readline().strip() == "flipping"
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(ATTACH_WHILE_FLIPPED), name, seconds],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    finally:
        flipper.wait(CHILD_TIMEOUT)
    assert res.returncode == 0, f"{_helpers.describe_exit(res.returncode)}\n{res.stderr}"
    assert set(json.loads(res.stdout)) <= {"attached", "SegmentError", "TypeError"}, res.stdout
    drop(interproc.attach(name))  # and the restored header is fine again


# ------------------------------------------------------------ truncation

TRUNCATE_FROM_ANOTHER_PROCESS = """
    import os, subprocess, sys, interproc

    def shrink(fd):
        # Another process of the same user, through /proc/<pid>/fd.
        code = "import os, sys; os.truncate(sys.argv[1], 0)"
        r = subprocess.run([sys.executable, "-c", code, f"/proc/{os.getpid()}/fd/{fd}"],
                           capture_output=True, text=True)
        return "refused" if "PermissionError" in r.stderr else f"rc={r.returncode}"

    q = interproc.Queue()
    q.put("before")
    print("queue", shrink(q._fd))
    q.put("after")
    print(q.get(timeout=5), q.get(timeout=5))

    v = interproc.Value("q", 41)
    print("value", shrink(v.get_lock()._fd))
    v.value += 1
    print(v.value)

    d = interproc.SharedDict(a=1)
    print("dict", shrink(d._heap.fd))
    d["b"] = "x" * 100000
    print(d["a"], len(d["b"]))

    parent, child = interproc.Pipe()
    memfds = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}").startswith("/memfd:interproc"):
                memfds.append(int(entry))
        except OSError:
            pass  # the descriptor listdir itself used
    print("pipe", sorted({shrink(fd) for fd in memfds}))
    parent.send("ping")
    print(child.recv())
"""


def test_no_process_can_shrink_an_anonymous_segment():
    res = run_py(TRUNCATE_FROM_ANOTHER_PROCESS)
    assert res.returncode == 0, (
        f"{_helpers.describe_exit(res.returncode)}\n{res.stdout}\n{res.stderr}")
    assert res.stdout.splitlines() == [
        "queue refused", "before after",
        "value refused", "42",
        "dict refused", "1 100000",
        "pipe ['refused']", "ping",
    ], res.stdout


def test_anonymous_segments_still_grow():
    """The seal forbids shrinking only: a ring and a heap still grow their files."""
    q = interproc.Queue(capacity_bytes=4096)
    items = [os.urandom(3000) for _ in range(20)]
    q.put_many(items)
    assert q.get_many(20, timeout=5) == items
    d = interproc.SharedDict()
    d.update({i: "v" * 10000 for i in range(300)})
    assert len(d) == 300
    drop(q, d)


def test_a_named_segment_shorter_than_its_header_says_is_reported(unique_name):
    """Truncating a named segment's file is a same-user act (documented as
    outside what interproc defends against while it is mapped); what it can
    still demand is that attach and ls report such a file rather than die."""
    name = unique_name()
    q = interproc.Queue(name=name, capacity_bytes=4096)
    q.put_many([os.urandom(3000) for _ in range(8)])  # grows the file beyond its first size
    drop(q)
    grown = os.stat(shm_path(name)).st_size
    for size in (grown - 4096, 8192, 4096):
        os.truncate(shm_path(name), size)
        res = run_py(f"""
            import interproc
            try:
                interproc.attach({name!r})
            except interproc.SegmentError as exc:
                print("SegmentError", exc)
            (info,) = [o for o in interproc.list_objects() if o.name == {name!r}]
            print("ls", info.error)
        """)
        assert res.returncode == 0, f"{_helpers.describe_exit(res.returncode)} {res.stderr}"
        lines = res.stdout.splitlines()
        assert lines[0].startswith("SegmentError") and "truncated" in lines[0], res.stdout
        assert lines[1].startswith("ls SegmentError") and "truncated" in lines[1], res.stdout


# ------------------------------------------------------ type descriptions

class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


class Packed(ctypes.Structure):
    # The layout _pack_ has always meant; 3.14 deprecates leaving it implicit.
    _layout_ = "ms"
    _pack_ = 1
    _fields_ = [("tag", ctypes.c_char), ("n", ctypes.c_uint32), ("flags", ctypes.c_uint16, 3),
                ("more", ctypes.c_uint16, 5)]


class Derived(Packed):
    _fields_ = [("extra", ctypes.c_short)]


class Both(ctypes.Union):
    _fields_ = [("p", Point), ("raw", ctypes.c_ubyte * 16)]


class Inner(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_int)]


class WithAnonymous(ctypes.Structure):
    _anonymous_ = ("inner",)
    _fields_ = [("inner", Inner), ("c", ctypes.c_long), ("grid", (ctypes.c_float * 3) * 2)]


class Network(ctypes.BigEndianStructure):
    _fields_ = [("port", ctypes.c_uint16), ("addr", ctypes.c_uint32)]


class MyInt(ctypes.c_int):
    pass


def _layout(t):
    """Size, alignment and every field's offset and size, recursively."""
    out = [ctypes.sizeof(t), ctypes.alignment(t)]
    if issubclass(t, ctypes.Array):
        return out + [t._length_, _layout(t._type_)]
    for klass in reversed(t.__mro__):
        for field in vars(klass).get("_fields_", []):
            descr = getattr(t, field[0])
            out.append((field[0], descr.offset, descr.size, _layout(field[1])))
    return out


TYPES = [ctypes.c_int, ctypes.c_double, ctypes.c_bool, ctypes.c_char, ctypes.c_wchar,
         ctypes.c_ulonglong, ctypes.c_longdouble, Point, Packed, Derived, Both, WithAnonymous,
         Network, MyInt, ctypes.c_uint32.__ctype_be__]


@pytest.mark.parametrize("ctype", TYPES, ids=lambda t: t.__name__)
def test_attach_rebuilds_an_equivalent_type(unique_name, ctype):
    name = unique_name()
    v = interproc.RawValue(ctype, name=name)
    raw = bytes(range(1, ctypes.sizeof(ctype) + 1))
    ctypes.memmove(ctypes.addressof(v), raw, len(raw))
    other = interproc.attach(name)
    rebuilt = type(other.get_obj())
    assert rebuilt.__name__ == ctype.__name__
    assert _layout(rebuilt) == _layout(ctype)
    assert bytes(other.get_obj()) == raw
    # The same type, described again, is the same description: opening by
    # name with the rebuilt type is accepted.
    again = interproc.RawValue(rebuilt, name=name)
    assert bytes(again) == raw
    drop(other)


@pytest.mark.parametrize("ctype,length", [(Point, 3), (ctypes.c_short, 7), (ctypes.c_char, 100)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_attach_rebuilds_an_array(unique_name, ctype, length):
    name = unique_name()
    a = interproc.Array(ctype, length, name=name)
    other = interproc.attach(name)
    assert len(other) == length
    assert _layout(type(other.get_obj())) == _layout(ctype * length)
    drop(a, other)


def _child_reads_point(v, out):
    out.put((v.get_obj().x, v.get_obj().y))


def test_an_attached_structure_value_travels_to_children(unique_name, start_method):
    name = unique_name()
    v = interproc.Value(Point, name=name)
    v.get_obj().x, v.get_obj().y = 7, 2.5
    other = interproc.attach(name)
    out = interproc.Queue()
    child = _helpers.start(start_method, _child_reads_point, other, out)
    _helpers.join_ok(child)
    assert out.get(timeout=10) == (7, 2.5)
    drop(v, other, out)


def test_another_type_under_the_name_is_a_type_error_naming_both(unique_name):
    name = unique_name()
    v = interproc.Value(Point, name=name)
    with pytest.raises(TypeError, match=r"holds Point, not c_int"):
        interproc.Value("i", name=name)
    with pytest.raises(TypeError, match=r"holds Point, not Packed"):
        interproc.Value(Packed, name=name)
    a = interproc.Array("h", 4, name=unique_name())
    with pytest.raises(TypeError, match=r"holds c_short \* 4, not c_short \* 5"):
        interproc.Array("h", 5, name=a.get_lock().name)
    drop(v, a)


def test_a_description_too_long_is_a_clear_error():
    fields = [(f"field_with_a_long_name_{i}", ctypes.c_int) for i in range(100)]
    Big = type("Big", (ctypes.Structure,), {"_fields_": fields})
    with pytest.raises(ValueError, match=r"takes \d+ bytes.*at most 2048"):
        interproc.Value(Big)


@pytest.mark.parametrize("ctype", [ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                                   ctypes.POINTER(ctypes.c_int)], ids=lambda t: t.__name__)
def test_types_holding_addresses_cannot_be_shared(ctype):
    with pytest.raises(TypeError):
        interproc.Value(ctype)
    Holder = type("Holder", (ctypes.Structure,), {"_fields_": [("p", ctype)]})
    with pytest.raises(TypeError, match="address"):
        interproc.Value(Holder)


def test_field_names_that_would_replace_class_machinery_are_refused():
    Bad = type("Bad", (ctypes.Structure,), {"_fields_": [("__init__", ctypes.c_int)]})
    with pytest.raises(TypeError, match="plain identifier"):
        interproc.Value(Bad)


HOSTILE_DESCRIPTIONS = {
    "not json": b"\x80\x04\x95 not json at all",
    "not utf-8": b"\xff\xfe\xfd",
    "empty": b"",
    "a list": b"[]",
    "null": b"null",
    "pointer type": b'"c_void_p"',
    "py_object": b'"py_object"',
    "c_char_p": b'{"s":"c_char_p"}',
    "unknown simple": b'"c_int128"',
    "dunder class name": b'{"s":"c_int","n":"__init__"}',
    "class name with spaces": b'{"k":"struct","n":"a b","f":[]}',
    "dunder field": b'{"k":"struct","n":"X","f":[["__class__","c_int"]]}',
    "sunder field": b'{"k":"struct","n":"X","f":[["_fields_","c_int"]]}',
    "bad bit width": b'{"k":"struct","n":"X","f":[["a","c_int",999]]}',
    "bit field on a double": b'{"k":"struct","n":"X","f":[["a","c_double",3]]}',
    "negative length": b'{"e":"c_int","len":-1}',
    "huge length": b'{"e":"c_int","len":4611686018427387904}',
    "bool length": b'{"e":"c_int","len":true}',
    "bigger than the segment": b'{"e":"c_char","len":100000}',
    "bigger than the value": b'"c_longlong"',
    "deep nesting": b'{"e":' * 100 + b'"c_char"' + b',"len":1}' * 100,
    "deeper than json": b"[" * 2000,
    "base not a struct": b'{"k":"struct","n":"X","base":"c_int"}',
    "union on a struct base": b'{"k":"union","n":"X","base":{"k":"struct","n":"Y"}}',
    "unknown byte order": b'{"k":"struct","n":"X","o":"middle"}',
    "negative pack": b'{"k":"struct","n":"X","pack":-1,"f":[]}',
    "anonymous non-field": b'{"k":"struct","n":"X","anon":["zz"],"f":[["a","c_int"]]}',
    "unknown key": b'{"s":"c_int","extra":1}',
    "field not a list": b'{"k":"struct","n":"X","f":["a"]}',
}


def test_hostile_type_descriptions_are_segment_errors(unique_name):
    """Whatever the description says, attach and open raise SegmentError:
    no crash, no other exception, nothing built but ctypes types."""
    names = {}
    for label, meta in HOSTILE_DESCRIPTIONS.items():
        name = unique_name()
        drop(interproc.Value(ctypes.c_int, name=name, create=True))
        rewrite_meta(name, meta)
        names[label] = name
    array = unique_name()
    drop(interproc.Array(ctypes.c_int, 3, name=array, create=True))
    rewrite_meta(array, b'"c_int"', ctypes.c_int, 3)
    names["array holding a non-array"] = array
    res = run_py(f"""
        import ctypes, interproc
        for label, name in {names!r}.items():
            for how in ("attach", "open"):
                try:
                    if how == "attach":
                        interproc.attach(name)
                    elif name == {array!r}:
                        interproc.Array(ctypes.c_int, 3, name=name)
                    else:
                        interproc.Value(ctypes.c_int, name=name)
                except interproc.SegmentError as exc:
                    print(label, how, "SegmentError", str(exc)[:60])
                except BaseException as exc:
                    print(label, how, "WRONG", type(exc).__name__, exc)
                else:
                    print(label, how, "WRONG opened")
        print("survived")
    """)
    assert res.returncode == 0, f"{_helpers.describe_exit(res.returncode)}\n{res.stderr}"
    lines = res.stdout.splitlines()
    assert lines[-1] == "survived"
    wrong = [line for line in lines if "WRONG" in line]
    assert not wrong, wrong
    assert len(lines) == 2 * len(names) + 1


# ------------------------------------------------------------ descriptors

def test_refused_and_damaged_opens_leave_no_descriptor(planted, tmp_path):
    fifo = _plant_fifo(planted)
    link = _plant_dangling_symlink(planted, tmp_path)
    directory = _plant_directory(planted)
    writable = planted()
    drop(interproc.Queue(name=writable, create=True))
    os.chmod(shm_path(writable), 0o666)
    junk = planted()
    with open(shm_path(junk), "wb") as f:
        f.write(os.urandom(8192))
    gc.collect()
    before = open_fds()
    for _ in range(3):
        for name in (fifo, link, directory, writable):
            with pytest.raises(PermissionError):
                interproc.Queue(name=name)
            with pytest.raises(PermissionError):
                interproc.attach(name)
        with pytest.raises(interproc.SegmentError):
            interproc.attach(junk)
        with pytest.raises(interproc.SegmentError):
            interproc.Value("i", name=junk)
    gc.collect()
    assert open_fds() == before


def _hold_fds(ready, release):
    """Hold a memfd and a directory open, and say which descriptors they are."""
    q = interproc.Queue()
    dir_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    ready.put((os.getpid(), q._fd, dir_fd))
    release.get(timeout=_helpers.CHILD_TIMEOUT)
    os.close(dir_fd)
    q.close()


def test_receiving_descriptors_closes_them_all_when_one_fails():
    """Reopening several descriptors through /proc/<pid>/fd: one that cannot
    be opened (a directory, asked for read-write) must not leak the others."""
    from interproc import naming

    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_hold_fds, args=(ready, release))
    child.start()
    try:
        pid, memfd, dir_fd = ready.get(timeout=_helpers.TIMEOUT)
        before = open_fds()
        with pytest.raises(IsADirectoryError):
            naming.receive_fds(("proc", pid, [memfd, dir_fd]), [os.O_RDWR, os.O_RDWR])
        assert open_fds() == before
    finally:
        release.put(None)
        child.join(_helpers.TIMEOUT)
    assert child.exitcode == 0
