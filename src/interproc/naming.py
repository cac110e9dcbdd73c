"""Names: opening, creating, attaching, listing and removing named objects.

A named object lives in POSIX shared memory as ``/dev/shm/interproc.<name>``
until it is unlinked.  An anonymous one is a memfd, freed by the kernel when
the last process using it is gone.
"""
from __future__ import annotations

import dataclasses
import errno
import os
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


def open_segment(name: Optional[str], create: Optional[bool], mode: int) -> "tuple[int, bool]":
    """Open or create the file behind an object: ``(fd, created)``."""
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {create!r}")
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int permission mask, not {type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be a permission mask between 0 and 0o777, not {mode:#o}")
    return _core.open_segment(name, create, mode)


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
        return attach_existing(fd)
    try:
        return make_new(fd)
    except BaseException:
        if name is not None:
            try:
                _core.unlink_segment(name)
            except OSError:
                pass
        raise


def attach(name: str) -> Any:
    """Return the object called ``name``, of whatever kind it is.

    Raises FileNotFoundError if there is none, SegmentError if the segment
    is truncated, foreign or corrupt.
    """
    fd, _ = open_segment(name, False, 0o600)
    try:
        kind = _core.segment_kind(fd)
        cls = _KINDS.get(kind)
        if cls is None:
            raise SegmentError(f"{name!r} is of kind {kind}, which this interproc does not know")
    except BaseException:
        os.close(fd)
        raise
    return cls._attach_fd(fd, name)


def unlink(name: str) -> None:
    """Remove the named object ``name``, of any kind.

    Processes that have it open keep using it; its memory is freed when the
    last of them lets go.  FileNotFoundError if there is no such object.
    """
    _core.unlink_segment(name)


@dataclasses.dataclass
class ObjectInfo:
    """One named object, as ``interproc ls`` shows it."""

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


def object_info(name: str) -> ObjectInfo:
    """Describe one named object; a damaged one gets ``error`` set instead."""
    try:
        obj = attach(name)
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


def list_objects() -> List[ObjectInfo]:
    """Every named interproc object of this machine that this user can see."""
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []
    return [object_info(e[len(_PREFIX):]) for e in entries if e.startswith(_PREFIX) and len(e) > len(_PREFIX)]


# ---------------------------------------------------------------------------
# How an object travels to another process.

def share_fds(fds: "list[int]") -> tuple:
    """A picklable form of descriptors (-1 for none).

    While a child is being spawned they travel with it, through
    multiprocessing's own ``DupFd``.  Otherwise the receiver reopens them
    through ``/proc/<sender pid>/fd/<fd>``, which needs the sender alive.
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
    return ("proc", os.getpid(), list(fds))


# spawning Popen -> {fd: what DupFd made of it}, for share_fds
_handed_to: "weakref.WeakKeyDictionary[Any, Dict[int, Any]]" = weakref.WeakKeyDictionary()


def receive_fds(shared: tuple, flags: "list[int]") -> "list[int]":
    """Open what ``share_fds`` made, each with its open flags.  A descriptor
    that cannot be reopened because nothing is at its other end any more
    (a pipe without readers) comes back as -1."""
    if shared[0] == "dupfd":
        return [d.detach() if d is not None else -1 for d in shared[1]]
    _, pid, fds = shared
    out: "list[int]" = []
    try:
        for fd, flag in zip(fds, flags):
            if fd < 0:
                out.append(-1)
            elif pid == os.getpid():
                out.append(os.dup(fd))
            else:
                try:
                    out.append(os.open(f"/proc/{pid}/fd/{fd}", flag | os.O_CLOEXEC))
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    out.append(-1)
    except FileNotFoundError:
        for fd in out:
            if fd >= 0:
                os.close(fd)
        raise RuntimeError(
            f"the process that sent this anonymous object (pid {pid}) has exited or closed it; "
            "give the object a name= to hand it to processes that outlive its sender"
        ) from None
    return out


def reference(obj: Any) -> tuple:
    """A picklable reference to the segment behind ``obj``: its name if it
    has one, else its descriptor.  ``uid`` guards against a reused pid and
    fd pointing at another segment."""
    if obj._closed:
        raise ValueError(f"{obj!r} is closed")
    if obj.name is not None:
        return ("name", obj.name, obj._uid)
    return ("fd", share_fds([obj._fd]), obj._uid)


def open_reference(ref: tuple) -> "tuple[int, Optional[str]]":
    """Open what ``reference`` made: ``(fd, name)``."""
    if ref[0] == "name":
        fd, _ = open_segment(ref[1], False, 0o600)
        return fd, ref[1]
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
