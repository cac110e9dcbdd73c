"""Names: opening, creating, attaching, listing and removing named objects.

A named object lives in POSIX shared memory as ``/dev/shm/interproc.<name>``
until it is unlinked.  An anonymous one is a memfd, freed by the kernel when
the last process using it is gone.

``/dev/shm`` is writable by every user, so a name may already be taken by
someone else's file.  The ``mode`` every named factory takes (0o600 by
default) says whom the caller shares a new object with, and so also whom it
trusts when the name exists: an existing file is accepted only when the
group/other write bits it grants are among ``mode``'s, and it is the
caller's own, or ``mode`` lets others write (anyone's is accepted), or lets
the group write and the file's group is one of the caller's.  Anything else
(another user's file, a file others may write, a link, a FIFO, a directory,
a file with several names) raises PermissionError saying whose it is and
why.  The check runs in the C core on the descriptor actually opened.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional

from . import _core

__all__ = ["ObjectInfo", "attach", "list_objects", "unlink", "SegmentError"]

SegmentError = _core.SegmentError

#: Where POSIX shared memory appears in the file system on Linux.
SHM_DIR = "/dev/shm"
_PREFIX = _core.SHM_PREFIX.lstrip("/")

# kind number -> class; filled in by the modules that define the kinds.
_KINDS: Dict[int, type] = {}


def register_kind(kind: int, cls: type) -> None:
    _KINDS[kind] = cls


def kind_name(kind: int) -> str:
    cls = _KINDS.get(kind)
    return cls.__name__ if cls else f"kind {kind}"


def _check_mode(mode: Any) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int permission mask, not {type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be a permission mask between 0 and 0o777, not {mode:#o}")
    return mode


def open_segment(name: Optional[str], create: Optional[bool], mode: int) -> "tuple[int, bool]":
    """Open or create the file behind an object: ``(fd, created)``.

    An existing file that ``mode`` does not trust (see the module docstring)
    raises PermissionError, and nothing is left open.
    """
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {create!r}")
    return _core.open_segment(name, create, _check_mode(mode))


# name -> the union of the sharing modes this process opened it with: what
# a reference to it carries, so that the receiver trusts what the sender
# did, and what unlink() trusts by default.  Only modes that let the group
# or others write are kept, so the default 0o600 costs nothing.
_shared_modes: Dict[str, int] = {}


def _remember_mode(name: Optional[str], mode: int) -> None:
    if name is not None and mode & 0o022:
        _shared_modes[name] = _shared_modes.get(name, 0) | mode


def trusted_mode(name: str) -> int:
    """The mode this process trusts ``name`` with: 0o600 unless it opened it
    with a mode that shares it."""
    return _shared_modes.get(name, 0o600)


def open_object(
    name: Optional[str],
    create: Optional[bool],
    mode: int,
    make_new: Callable[[int], Any],
    attach_existing: Callable[[int], Any],
) -> Any:
    """The open/create rules every kind shares.

    ``make_new(fd)`` lays out a fresh segment; ``attach_existing(fd)``
    validates and attaches to an existing one.  Both take ownership of fd.
    A new named segment whose layout fails is unlinked again, so a failed
    constructor leaves nothing behind.
    """
    fd, created = open_segment(name, create, mode)
    if not created:
        try:
            _core.segment_kind(fd)  # waits for a creator still laying it out
        except BaseException:
            os.close(fd)
            raise
        obj = attach_existing(fd)
        _remember_mode(name, mode)
        return obj
    try:
        obj = make_new(fd)
    except BaseException:
        if name is not None:
            try:
                _core.unlink_segment(name, mode)
            except OSError:
                pass
        raise
    _remember_mode(name, mode)
    return obj


def attach(name: str, *, mode: int = 0o600) -> Any:
    """Return the object called ``name``, of whatever kind it is.

    ``mode`` says whose segments to accept, as for every named factory: by
    default only the caller's own that nobody else can write.  Raises
    FileNotFoundError if there is none, PermissionError if ``mode`` does not
    trust what is there (the message says whose it is and why), SegmentError
    if the segment is truncated or corrupt.  Nothing stored in the segment is
    unpickled: a Value or Array comes back with a ctypes type rebuilt from
    its plain description (an equivalent type, not the creator's class).
    """
    fd, _ = open_segment(name, False, mode)
    try:
        kind = _core.segment_kind(fd)
        cls = _KINDS.get(kind)
        if cls is None:
            raise SegmentError(f"{name!r} is of kind {kind}, which this interproc does not know")
    except BaseException:
        os.close(fd)
        raise
    obj = cls._attach_fd(fd, name)
    _remember_mode(name, mode)
    return obj


def unlink(name: str, *, mode: Optional[int] = None) -> None:
    """Remove the named object ``name``, of any kind.

    Processes that have it open keep using it; its memory is freed when the
    last of them lets go.  FileNotFoundError if there is no such object.
    Only a name whose owner ``mode`` trusts is removed (by default, the
    caller's own, or one this process opened with a sharing mode); another
    user's raises PermissionError, even for root, unless ``mode`` trusts
    that user (0o..2 trusts anyone).
    """
    if mode is None:
        mode = trusted_mode(name) if isinstance(name, str) else 0o600
    _core.unlink_segment(name, _check_mode(mode))


@dataclasses.dataclass
class ObjectInfo:
    """One named object, as ``interproc ls`` shows it.

    ``owner`` is the file owner's user name (or uid, as text, when it has
    none), ``uid`` and ``file_mode`` its owner and permission bits.
    ``foreign`` is True for an entry the lister's ``mode`` does not trust
    (another user's, writable by others, not a regular file, ...): it is
    not opened at all, and ``refused`` says why.  ``error`` is set for an
    entry that was opened and found damaged.
    """

    name: str
    kind: Optional[str] = None
    capacity_bytes: Optional[int] = None
    items: Optional[int] = None
    bytes_used: Optional[int] = None
    pids: List[int] = dataclasses.field(default_factory=list)
    maxsize: Optional[int] = None
    file_size: Optional[int] = None
    state: Optional[str] = None
    error: Optional[str] = None
    owner: Optional[str] = None
    uid: Optional[int] = None
    file_mode: Optional[int] = None
    foreign: bool = False
    refused: Optional[str] = None


def object_info(name: str, mode: int = 0o600) -> ObjectInfo:
    """Describe one named object; a damaged one gets ``error`` set instead,
    one that ``mode`` does not trust ``foreign`` and ``refused``.

    Nothing in a segment is unpickled or run: an untrusted entry is only
    looked at with ``lstat``, a trusted one is attached like any object.
    """
    try:
        return _entry_info(name, mode)
    except FileNotFoundError as exc:
        return ObjectInfo(name=name, error=f"{type(exc).__name__}: {exc}")


def _entry_info(name: str, mode: int) -> ObjectInfo:
    """object_info, but FileNotFoundError if the name is gone."""
    try:
        st = _core.segment_stat(name, mode)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # a name this interproc cannot use
        return ObjectInfo(name=name, error=f"{type(exc).__name__}: {exc}")
    owner = st["owner"] if st["owner"] is not None else str(st["uid"])
    if st["refused"] is not None:
        info = ObjectInfo(name=name, foreign=True, refused=st["refused"])
    else:
        info = _opened_info(name, mode)
    info.owner, info.uid, info.file_mode = owner, st["uid"], st["mode"]
    if info.file_size is None:
        info.file_size = st["size"]
    return info


def _opened_info(name: str, mode: int) -> ObjectInfo:
    try:
        obj = attach(name, mode=mode)
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        # Replaced since segment_stat looked: refused on the descriptor.
        return ObjectInfo(name=name, foreign=True, refused=str(exc))
    except (OSError, ValueError, TypeError) as exc:
        return ObjectInfo(name=name, error=f"{type(exc).__name__}: {exc}")
    if hasattr(obj, "get_obj"):  # a shared Value or Array: describe its lock, show its type
        kind = kind_name(obj.get_lock()._segkind)
        shown = type(obj.get_obj()).__name__
        lock_stats = obj.get_lock().statistics()
        obj.get_lock().close()
        held = f", locked by {lock_stats['owner_pid']}" if lock_stats["locked"] else ""
        return ObjectInfo(name=name, kind=kind, state=f"{shown}{held}",
                          pids=[lock_stats["owner_pid"]] if lock_stats["locked"] else [])
    if not hasattr(obj, "_info"):
        try:
            stats = obj.statistics()
        finally:
            obj.close()
        if "locked" in stats:
            state = f"locked by {stats['owner_pid']}" if stats["locked"] else "unlocked"
            pids = [stats["owner_pid"]] if stats["locked"] else []
        elif "value" in stats:
            state, pids = f"value {stats['value']}", []
        elif "parties" in stats:
            state = f"{stats['n_waiting']}/{stats['parties']} waiting"
            state, pids = state + (", broken" if stats["broken"] else ""), []
        else:
            state, pids = "set" if stats["set"] else "unset", []
        return ObjectInfo(name=name, kind=type(obj).__name__, pids=pids, state=state)
    try:
        obj._unregister_pid()  # looking is not using: this handle is not listed
        info = obj._info()
    finally:
        obj.close()
    return ObjectInfo(
        name=name,
        kind=kind_name(info["kind"]),
        capacity_bytes=info["capacity_bytes"],
        items=info["items"],
        bytes_used=info["bytes_used"],
        pids=info["pids"],
        maxsize=info["maxsize"],
        file_size=info["file_size"],
    )


def list_objects(*, mode: int = 0o600) -> List[ObjectInfo]:
    """Every named interproc object of this machine, this user's or not.

    Entries that ``mode`` trusts (by default: the caller's own, writable by
    nobody else) are opened and described; the others are listed with their
    owner and mode, marked ``foreign``, and never opened.
    """
    mode = _check_mode(mode)
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if not entry.startswith(_PREFIX) or len(entry) == len(_PREFIX):
            continue
        try:
            out.append(_entry_info(entry[len(_PREFIX):], mode))
        except FileNotFoundError:
            pass  # removed while we looked
    return out


# ---------------------------------------------------------------------------
# How an object travels to another process.

def share_fds(fds: "list[int]") -> tuple:
    """A picklable form of descriptors (-1 for none).

    While a child is being spawned they travel with it, through
    multiprocessing's own ``DupFd``.  Otherwise the receiver reopens them
    through ``/proc/<sender pid>/fd/<fd>``, which needs the sender alive;
    copies of them are kept for the receiver (see :class:`_HandOver`), so
    that the sender may close its object as soon as it has sent it.
    """
    from multiprocessing import context, reduction

    popen = context.get_spawning_popen()
    if popen is not None:
        # One descriptor may back several objects (containers share a heap):
        # the child must be handed each descriptor once.
        handed = _handed_to.setdefault(popen, {})
        out = []
        for fd in fds:
            if fd < 0:
                out.append(None)
            else:
                if fd not in handed:
                    handed[fd] = reduction.DupFd(fd)
                out.append(handed[fd])
        return ("dupfd", out)
    fds = list(fds)
    ids = [_identity(fd) for fd in fds]
    return ("proc", os.getpid(), fds, ids) + _HandOver.get().offer(fds)


# spawning Popen -> {fd: what DupFd made of it}, for share_fds
_handed_to: "weakref.WeakKeyDictionary[Any, Dict[int, Any]]" = weakref.WeakKeyDictionary()


def _identity(fd: int) -> "Optional[tuple[int, int]]":
    if fd < 0:
        return None
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


class _HandOver:
    """Copies of sent descriptors, kept until their receiver has them.

    A receiver reopens a sent descriptor through ``/proc/<sender>/fd/<n>``,
    so ``n`` must still be open when it does; but a sender commonly closes
    what it sent at once (``conn.send(w); w.close()``).  So each send
    duplicates the descriptors and keeps the copies here under a random
    token; the receiver, once it has opened them, writes the token into
    this process's hand-over pipe (reopened through ``/proc`` too), and the
    copies of every token found there are closed at the next sweep.  A
    sweep runs whenever this process sends or receives a descriptor, and
    before a Connection asks the kernel whether its peer is gone: copies of
    an end kept here would count as a holder of it, and hide the peer's
    departure.  No thread is involved.

    - A sender that dies before the receiver opened the copies takes them
      with it: the receiver gets what a dead sender gives (RuntimeError,
      as before).
    - A receiver that dies (or a message that is never read) leaves its
      copies here until this process exits: what it cost is bounded by the
      messages sent and never received.
    - A fork child closes the copies it inherited: they are its parent's
      to hand over, and would hide ends' departures for as long as the child
      lives.
    """

    _current: "Optional[_HandOver]" = None
    _making = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending: "Dict[bytes, List[int]]" = {}
        # Keeps "the table is empty, so the hook goes" from racing with
        # another thread's offer; re-entrant, since a sweep may run from a
        # finalizer that the garbage collector calls in the middle of one.
        self.lock = threading.RLock()

    @classmethod
    def get(cls) -> "_HandOver":
        current = cls._current
        if current is None or current.pid != os.getpid():
            with cls._making:
                current = cls._current
                if current is None or current.pid != os.getpid():
                    current = cls._current = cls()
        return current

    def offer(self, fds: "list[int]") -> tuple:
        with self.lock:
            self.sweep()
            copies: "list[int]" = []
            try:
                for fd in fds:
                    copies.append(os.dup(fd) if fd >= 0 else -1)
            except BaseException:
                _close_all(copies)
                raise
            token = os.urandom(8)
            self.pending[token] = copies
            _set_hook(True)
            return (copies, self.wfd, token)

    def take_local(self, token: bytes) -> "Optional[list[int]]":
        """The copies of ``token``, for a receiver in this same process."""
        with self.lock:
            return self.pending.pop(token, None)

    def sweep(self) -> None:
        if not self.pending:
            return
        with self.lock:
            while True:
                try:
                    data = os.read(self.rfd, 8 * 512)
                except BlockingIOError:
                    break
                if not data:
                    break
                for i in range(0, len(data) - 7, 8):
                    _close_all(self.pending.pop(data[i:i + 8], ()))
            if not self.pending:
                _set_hook(False)

    @classmethod
    def sweep_current(cls) -> None:
        current = cls._current
        if current is not None and current.pid == os.getpid():
            current.sweep()

    @classmethod
    def forget_in_child(cls) -> None:
        # Another thread of the parent may have held it: only this thread
        # exists here.
        cls._making = threading.Lock()
        current, cls._current = cls._current, None
        if current is not None:
            for copies in current.pending.values():
                _close_all(copies)
            _close_all([current.rfd, current.wfd])
        _set_hook(False)


def _set_hook(on: bool) -> None:
    _core.ConnectionCore._set_handover_hook(_HandOver.sweep_current if on else None)


os.register_at_fork(after_in_child=_HandOver.forget_in_child)


def _tell_taken(pid: int, wfd: int, token: bytes) -> None:
    """Tell the sender that its copies may go.  If this fails (its pipe is
    full, or it exited), the copies stay until the sender exits."""
    try:
        fd = os.open(f"/proc/{pid}/fd/{wfd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, token)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reopen(pid: int, fds: "list[int]", flags: "list[int]", ids: list) -> "Optional[list[int]]":
    """Open another process's descriptors through /proc, or None if one of
    them is gone or is no longer the file that was sent (its number was
    given to another file meanwhile).  A descriptor that cannot be reopened
    because nothing is at its other end any more (a pipe without readers)
    comes back as -1."""
    out: "list[int]" = []
    try:
        for fd, flag, ident in zip(fds, flags, ids):
            if fd < 0:
                out.append(-1)
                continue
            try:
                if pid == os.getpid():
                    new = os.dup(fd)
                else:
                    new = os.open(f"/proc/{pid}/fd/{fd}", flag | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    out.append(-1)
                    continue
                if exc.errno in (errno.ENOENT, errno.EBADF, errno.ESRCH):
                    _close_all(out)
                    return None
                raise
            out.append(new)
            if ident is not None and _identity(new) != tuple(ident):
                _close_all(out)
                return None
    except BaseException:
        _close_all(out)
        raise
    return out


def receive_fds(shared: tuple, flags: "list[int]") -> "list[int]":
    """Open what ``share_fds`` made, each with its open flags.  A descriptor
    that cannot be reopened because nothing is at its other end any more
    (a pipe without readers) comes back as -1."""
    out: "list[int]" = []
    if shared[0] == "dupfd":
        try:
            for d in shared[1]:
                out.append(d.detach() if d is not None else -1)
        except BaseException:
            _close_all(out)
            raise
        return out
    pid, fds = shared[1], shared[2]
    ids = shared[3] if len(shared) > 3 else [None] * len(fds)
    _HandOver.sweep_current()
    got = None
    if len(shared) > 4:
        copies, wfd, token = shared[4:7]
        if pid == os.getpid():
            mine = _HandOver.get().take_local(token)
            if mine is not None:
                # Ours to give: the copies themselves become the receiver's.
                return mine
        else:
            got = _reopen(pid, copies, flags, ids)
            if got is not None:
                _tell_taken(pid, wfd, token)
    if got is None:
        # The copies went to an earlier receiver (an object stored in a
        # container is read more than once): the sender's own descriptors,
        # while it keeps the object open.
        got = _reopen(pid, fds, flags, ids)
    if got is None:
        raise RuntimeError(
            f"the process that sent this anonymous object (pid {pid}) has exited or closed it; "
            "give the object a name= to hand it to processes that outlive its sender"
        )
    return got


def _close_all(fds: "list[int]") -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def reference(obj: Any) -> tuple:
    """A picklable reference to the segment behind ``obj``: its name if it
    has one, else its descriptor.  ``uid`` guards against a reused pid and
    fd pointing at another segment."""
    if obj._closed:
        raise ValueError(f"{obj!r} is closed")
    if obj.name is not None:
        return name_reference(obj.name, obj._uid)
    return ("fd", share_fds([obj._fd]), obj._uid)


def name_reference(name: str, uid: int) -> tuple:
    """The reference to a named segment: its name, the mode this process
    trusts it with (so that the receiver accepts what the sender accepted:
    it trusts the sender's pickle already) and its uid."""
    return ("name", name, trusted_mode(name), uid)


def open_reference(ref: tuple) -> "tuple[int, Optional[str]]":
    """Open what ``reference`` made: ``(fd, name)``.  A named reference is
    opened with the mode it carries (0o600 for one without)."""
    if ref[0] == "name":
        name = ref[1]
        mode = _check_mode(ref[2]) if len(ref) > 3 else 0o600
        fd, _ = open_segment(name, False, mode)
        _remember_mode(name, mode)
        return fd, name
    return receive_fds(ref[1], [os.O_RDWR])[0], None


def check_reference(obj: Any, uid: int) -> Any:
    """Fail if what was opened is not the object that was sent."""
    if obj._uid != uid:
        obj.close()
        raise RuntimeError(
            "the object that was sent is gone: it was removed, and its name or descriptor "
            "now belongs to another, before it could be received"
        )
    return obj
