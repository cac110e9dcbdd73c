"""What the fuzz targets share: reading an input, safe unpickling, the
exceptions interproc documents, and writing into a segment's file.

An input is read front to back by a Reader; once it runs out, every read
gives zeros, so any byte string is a valid input and a shorter one is a
prefix of a longer one's behaviour (which keeps minimized inputs
meaningful).  The formats are our own rather than atheris's
FuzzedDataProvider, so that the corpora in fuzz/corpus/ stay valid across
atheris versions and can be replayed without atheris at all.
"""
from __future__ import annotations

import io
import mmap
import os
import pickle
import pickletools
import queue
import signal
import struct
import sys
import threading
import time
from typing import Any, Callable, List, Sequence, Tuple


class Reader:
    """Consumes an input; past its end every read is zero."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out + bytes(n - len(out))

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def below(self, n: int) -> int:
        """A number in range(n), from one byte (two when n > 256)."""
        return (self.u8() if n <= 256 else self.u16()) % n

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.below(len(seq))]


class Writer:
    """Builds inputs for the seed generators: the mirror image of Reader."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def _pack(self, fmt: str, v: int) -> "Writer":
        self.buf += struct.pack(fmt, v % (1 << (8 * struct.calcsize(fmt))))
        return self

    def u8(self, v: int) -> "Writer":
        return self._pack("<B", v)

    def u16(self, v: int) -> "Writer":
        return self._pack("<H", v)

    def u32(self, v: int) -> "Writer":
        return self._pack("<I", v)

    def u64(self, v: int) -> "Writer":
        return self._pack("<Q", v)

    def raw(self, b: bytes) -> "Writer":
        self.buf += b
        return self

    def bytes(self) -> bytes:
        return bytes(self.buf)


# ---------------------------------------------------------------------------
# Unpickling.  Queues carry pickles by design, as multiprocessing's do, so a
# damaged segment hands garbage to pickle.loads.  The harnesses must not run
# whatever a mutated pickle names, and every way garbage fails to unpickle
# is the same, documented outcome: UnpicklingError.

_SAFE_GLOBALS = {
    ("builtins", name)
    for name in ("set", "frozenset", "complex", "bytearray", "list", "dict", "tuple", "int",
                 "float", "str", "bytes", "range", "slice")
} | {("copyreg", "_reconstructor"), ("collections", "OrderedDict")}


def _check_global(module: str, name: str) -> None:
    if (module, name) in _SAFE_GLOBALS or (module == "ctypes" and name.startswith("c_")):
        return
    raise pickle.UnpicklingError(f"global {module}.{name} refused while fuzzing")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        _check_global(module, name)
        return super().find_class(module, name)


real_loads = pickle.loads
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def safe_loads(data: Any, **kwargs: Any) -> Any:
    data = bytes(data)
    try:
        # pickletools reads every length field against the bytes really
        # there, so a forged length is refused here, before the unpickler
        # allocates what it says (which is pickle's business, not ours).
        # A memo index is not a length, but the unpickler grows its memo
        # to it just the same: a pickler numbers its memo entries from 0,
        # one per opcode at most, so none lies beyond the pickle's size.
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in _MEMO_PUTS and arg >= len(data):
                raise pickle.UnpicklingError(f"memo index {arg} beyond a pickle of {len(data)} bytes")
        return _unpickler(io.BytesIO(data), **kwargs).load()
    except pickle.UnpicklingError:
        raise
    except RecursionError:
        raise pickle.UnpicklingError("pickle nested too deeply") from None
    except Exception as exc:  # every other way garbage fails to unpickle
        raise pickle.UnpicklingError(f"{type(exc).__name__}: {exc}") from None


class _ArrayUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler, whose BUILD can be overridden, with the
    same refusals, that never hands a state to `numpy.dtype.__setstate__`:
    NumPy does not check a hostile one (a forged state can make it follow
    a null pointer), which is NumPy's business, not ours.  A dtype's state
    is accepted only when NumPy's public constructor makes a dtype with the
    same arguments and that very state; the harness then uses that one."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        _check_global(module, name)
        return super().find_class(module, name)

    def load_build(self) -> None:
        numpy = sys.modules.get("numpy")  # no dtype without it
        inst = self.stack[-2]  # under the state
        if numpy is None or not isinstance(inst, numpy.dtype):
            # Nor any other NumPy object's state (an array's, the dtype
            # class's): arrays come from _frombuffer, built.
            if isinstance(inst, type) or type(inst).__module__.split(".")[0] == "numpy":
                raise pickle.UnpicklingError(f"BUILD of a {type(inst).__name__} refused while fuzzing")
            return pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        state = self.stack.pop()
        built = _dtype_with_state(inst, state)
        self.stack[-1] = built
        for key, value in list(self.memo.items()):
            if value is inst:
                self.memo[key] = built

    dispatch[pickle.BUILD[0]] = load_build


def _dtype_with_state(inst: Any, state: Any) -> Any:
    import numpy

    args, current = inst.__reduce__()[1:3]
    if state == current:
        return inst
    if not isinstance(state, tuple) or len(state) != 8:
        raise pickle.UnpicklingError("dtype state refused while fuzzing")
    _, order, sub, names, fields, size, _, flags = state
    if sub is not None:
        made = numpy.dtype(tuple(sub))
    elif names is not None:
        spec = [fields[name] for name in names]
        made = numpy.dtype({"names": list(names), "formats": [f[0] for f in spec],
                            "offsets": [f[1] for f in spec],
                            "titles": [f[2] if len(f) > 2 else None for f in spec],
                            "itemsize": size}, align=bool(flags & 0x80))
    else:
        made = inst.newbyteorder(order)  # the other byte order
    if made.__reduce__()[1:3] != (args, state):
        raise pickle.UnpicklingError("dtype state refused while fuzzing")
    return made


_unpickler: type = _SafeUnpickler


def allow_numpy_arrays() -> None:
    """Let the unpickler rebuild NumPy arrays as protocol 5 pickles them:
    `_frombuffer(buffer, dtype, shape, order)`, which lays an array over a
    buffer it is given (NumPy refuses to lay a dtype holding object
    references over raw memory), and `numpy.dtype`, whose states are
    checked (_ArrayUnpickler).  For the `oob` target, whose records carry
    arrays' buffers; nothing else NumPy offers is let through."""
    global _unpickler
    _SAFE_GLOBALS.update({("numpy._core.numeric", "_frombuffer"),  # NumPy 2
                          ("numpy.core.numeric", "_frombuffer"),   # NumPy 1
                          ("numpy", "dtype")})
    _unpickler = _ArrayUnpickler


def install_safe_loads() -> None:
    """Replace pickle.loads before interproc is imported, so that both its
    C core (configured with pickle.loads at import) and its Python layer use
    the restricted one."""
    pickle.loads = safe_loads


# ---------------------------------------------------------------------------
# What counts as a finding.

def documented_errors() -> Tuple[type, ...]:
    """Exceptions interproc documents for bad state, bad arguments, closed
    handles, empty/full queues, dead peers and missing keys.  Anything else
    escaping an operation (SystemError above all) is a finding, as are
    signals, sanitizer reports and hangs."""
    import builtins
    import multiprocessing

    import interproc

    # FUZZ_IGNORE_EXCEPTIONS=SystemError,...: look past a known finding
    # until its fix lands.
    ignored = tuple(getattr(builtins, name) for name in
                    filter(None, os.environ.get("FUZZ_IGNORE_EXCEPTIONS", "").split(",")))
    return ignored + (
        multiprocessing.BufferTooShort,  # recv_bytes_into() with a buffer too small
        interproc.SegmentError,  # a ValueError
        ValueError,              # closed handle, bad value, UnicodeDecodeError
        TypeError,               # a segment of another kind
        OSError,                 # incl. BrokenPipeError, FileNotFoundError, PermissionError
        EOFError,
        queue.Empty,
        queue.Full,
        KeyError,
        IndexError,
        RuntimeError,            # a stale reference, a dict changed while iterated
        MemoryError,             # a region table full, a heap that cannot grow
        OverflowError,
        AssertionError,          # RLock released by a thread that does not hold it
        threading.BrokenBarrierError,
        pickle.UnpicklingError,
    )


TRACE = os.environ.get("FUZZ_TRACE") == "1"


def trace(*what: Any) -> None:
    """With FUZZ_TRACE=1, say what an input does (to read a finding's input)."""
    if TRACE:
        print("fuzz:", *what, file=sys.stderr, flush=True)


class Blocked(Exception):
    """An operation waited longer than the watchdog allows, and the wait
    could be interrupted: it was waiting for a lock whose word names a live
    holder (a damaged word can name any thread, this one included), which
    is what waiting for a lock held by a frozen process looks like too.  A
    wait that a signal cannot interrupt is a hang, and libFuzzer's -timeout
    reports it."""


class Watchdog:
    """Interrupts, with Blocked, an operation that runs longer than `limit`
    seconds: a thread sends SIGUSR1 to the main thread, whose handler raises
    it at the next point where the core checks for signals."""

    def __init__(self, limit: float = 1.0) -> None:
        self.limit = limit
        self.deadline = 0.0  # 0: disarmed
        self.pid = 0
        signal.signal(signal.SIGUSR1, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.deadline and time.monotonic() > self.deadline:
            self.deadline = time.monotonic() + self.limit  # and again, if this does not end it
            raise Blocked(f"an operation waited more than {self.limit}s")

    def _watch(self) -> None:
        while True:
            time.sleep(self.limit / 10)
            d = self.deadline
            if d and time.monotonic() > d:
                signal.pthread_kill(self.main, signal.SIGUSR1)

    def arm(self) -> None:
        if self.pid != os.getpid():  # first use, or a forked child: threads do not survive fork
            self.pid = os.getpid()
            self.main = threading.main_thread().ident
            threading.Thread(target=self._watch, name="fuzz-watchdog", daemon=True).start()
        self.deadline = time.monotonic() + self.limit

    def disarm(self) -> None:
        self.deadline = 0.0


class Finding(Exception):
    """A broken promise the harness detected itself (a wrong result, a
    process that died of a signal, an exception of an undocumented type)."""


def run_op(fn: Callable[[], Any], allowed: Tuple[type, ...]) -> Any:
    """Run one operation; documented errors are outcomes, not findings."""
    try:
        out = fn()
        trace("   ->", repr(out)[:120])
        return out
    except allowed as exc:
        trace("   ->", type(exc).__name__, str(exc)[:120])
        return None
    except Blocked:
        trace("   -> blocked (interruptibly)")
        raise
    except Exception as exc:
        raise Finding(f"undocumented {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------
# Segment files.

SEGHDR = struct.Struct("<QIIQQQQQ")  # magic, version, kind, header_size, initial_size, pid, file_end, uid
SHM_DIR = "/dev/shm"


def shm_path(name: str) -> str:
    import interproc._core as core

    return os.path.join(SHM_DIR, core.SHM_PREFIX.lstrip("/") + name)


class SegmentFile:
    """A writable mapping of a segment's whole file, as another process of
    the same user could make: through /dev/shm for a named object, through
    /proc/self/fd for an anonymous one."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)

    @classmethod
    def of_fd(cls, fd: int) -> "SegmentFile":
        return cls(f"/proc/self/fd/{fd}")

    def header(self) -> Tuple[int, ...]:
        return SEGHDR.unpack_from(self.map, 0)

    def header_size(self) -> int:
        return self.header()[3]

    def read(self, off: int, n: int) -> bytes:
        return self.map[off:off + n]

    def write(self, off: int, data: bytes) -> None:
        end = min(off + len(data), self.size)
        if 0 <= off < end:
            self.map[off:end] = data[:end - off]

    def close(self) -> None:
        self.map.close()


#: A ring record's header: type, reserved, payload length.
REC = struct.Struct("<IIQ")


def first_record(seg: SegmentFile) -> Tuple[int, int, int]:
    """The offset, type and payload length of the record at the start of a
    queue segment's base region: where a fresh queue's first put goes."""
    at = seg.header_size()
    rtype, _, rlen = REC.unpack_from(seg.map, at)
    return at, rtype, rlen


def record_of(value: Any, capacity: int, rtype: int) -> bytes:
    """The payload of the record a fresh queue of ``capacity`` bytes makes
    for ``value`` (AssertionError unless it is of type ``rtype``)."""
    import interproc

    q = interproc.Queue(capacity_bytes=capacity)
    try:
        q.put(value)
        seg = SegmentFile.of_fd(q._fd)
        try:
            at, found, rlen = first_record(seg)
            assert found == rtype, f"{value!r} travelled as record type {found}, not {rtype}"
            return seg.read(at + REC.size, rlen)
        finally:
            seg.close()
    finally:
        q.close()


_robust_head = 0


def robust_mutexes_held() -> bool:
    """Whether this thread still holds a robust mutex.  glibc threads the
    robust mutexes a thread holds into a list through the mutexes
    themselves; one still held when its segment is unmapped leaves a
    dangling entry, and the thread's next robust lock or unlock writes
    through it.  Asked after every input, this turns that delayed crash
    into a finding of the input that caused it."""
    global _robust_head
    import ctypes

    if not _robust_head:
        head, size = ctypes.c_void_p(), ctypes.c_size_t()
        if ctypes.CDLL(None).syscall(274, 0, ctypes.byref(head), ctypes.byref(size)) != 0:
            return False  # SYS_get_robust_list: x86-64 only
        _robust_head = head.value or 0
    return bool(_robust_head) and ctypes.c_void_p.from_address(_robust_head).value != _robust_head


def exit_child(code: int) -> None:
    """Ends a forked child without Python's finalization, which would run
    the parent's exit handlers.  When replaying (no libFuzzer, whose exit
    handler would take a child's exit for the target's) C's atexit handlers
    run, so that a coverage build writes the child's counters too."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("FUZZ_REPLAY") == "1":
        import ctypes

        ctypes.CDLL(None).exit(code)
    os._exit(code)


def unique_name(tag: str) -> str:
    global _counter
    _counter += 1
    return f"fuzz-{tag}-{os.getpid()}-{_counter}"


_counter = 0


def remove_stale_names() -> None:
    """Unlink what earlier runs that crashed left in /dev/shm (their pid is gone)."""
    prefix = "interproc.fuzz-"
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        parts = entry.split("-")
        try:
            pid = int(parts[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
        except OSError:
            pass


def private_shm() -> bool:
    """Whether /dev/shm is ours alone (the Makefile runs the fuzzers in a
    private mount namespace when it can): only then may a target list every
    named object, since listing attaches to each."""
    return os.environ.get("FUZZ_PRIVATE_SHM") == "1"


def close_all(objs: List[Any]) -> None:
    """Close handles; a documented error while closing a damaged object is
    fine, anything else is a finding."""
    allowed = documented_errors()
    for obj in objs:
        close = getattr(obj, "close", None)
        if close is not None:
            run_op(close, allowed)
    objs.clear()


Op = Callable[[Any, Reader], Any]


def item_from(r: Reader, big: int = 0) -> Any:
    """A message: each of the ring's codecs (plain, bytes, pickle) and sizes
    that fill a small ring (big: bytes of the largest payload)."""
    choice = r.below(12)
    n = r.u8()
    if choice == 0:
        return None
    if choice == 1:
        return n - 128
    if choice == 2:
        return "s" * (n % 40)
    if choice == 3:
        return "\u20ac" * (n % 20) + "\U0001F600" * (n % 3)
    if choice == 4:
        return bytes([n]) * (n % 50)
    if choice == 5:
        return (n, "t", 2.5, None, True, b"b")
    if choice == 6:
        return [n, "l"] * (n % 5)
    if choice == 7:
        return {"k": n, n: "v", 1.5: None}
    if choice == 8:
        return {n, n + 1}                           # pickled
    if choice == 9:
        return 1 << (64 + n % 64)                   # pickled: beyond int64
    if choice == 10:
        return b"x" * (1 + (big * n) // 255)        # up to `big` bytes: overflow regions
    return [list(range(n % 8))]                     # nested: pickled
