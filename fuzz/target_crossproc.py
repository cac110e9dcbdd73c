"""Fuzz target `crossproc`: two processes use one object; one is killed.

The input chooses an object, a list of operations for a forked child, a
list for the parent, which runs its own while the child runs, and when the
child is SIGKILLed: after it has finished a given number of operations,
plus a delay, so that the kill lands anywhere, inside an operation
included.  Once the child is reaped the parent checks the promise:

- queue: FIFO per producer and per consumer, nothing twice, nothing lost
  but what the child's interrupted get had taken, nothing extra but what its
  interrupted put was putting, then empty; nothing hangs;
- dict and list: the content equals the state before or after the child's
  interrupted operation (the parent replays the child's operations on a
  plain dict or list), and the container keeps working;
- Lock and RLock: the parent gets the lock within a few seconds, with
  OwnerDiedWarning exactly when the child died holding it;
- pipe: the parent receives every message whose send() returned, in order,
  then EOFError.

    u8   kind
    u8   child operations (1 + n % MAX_OPS), each u8 op, u8 argument
    u8   parent operations (n % MAX_OPS), each u8 op, u8 argument
    u8   operations the child finishes before the kill may come
    u8   extra delay before the kill, in 10 µs steps
    u8   initial content

The child logs each finished operation's result in shared memory before
counting it done, so the parent knows exactly which operation was
interrupted.  Before the operation the kill is aimed at, the child waits
for the parent's signal, and the parent kills it the chosen delay after
giving it: so the kill lands in that operation or a later one, whatever
the machine's load.  Coverage in the child does not reach libFuzzer (only the
parent's does: its recovery of the dead child's locks and journals, which
is the point); the child is the kill target, the parent the checker.
"""
from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import sys
import time
import traceback
import warnings
from typing import Any, Dict, List, Tuple

from common import (
    Finding,
    Reader,
    Writer,
    documented_errors,
    exit_child,
    real_loads,
    run_op,
    unique_name,
)

import interproc
from interproc import naming

MAX_OPS = 24
SLOT = 8192                 # bytes of log per child operation
LOG = mmap.PAGESIZE + SLOT * MAX_OPS
CHILD_DEADLINE = 20.0       # a child still alive by then is a hang
QUEUE_CAP = 4096
ALLOWED = documented_errors()


class Log:
    """The child's results, in memory shared with the parent (an anonymous
    shared mapping made before fork)."""

    def __init__(self) -> None:
        self.map = mmap.mmap(-1, LOG)

    def done(self) -> int:
        return struct.unpack_from("<I", self.map, 0)[0]

    def wait_for_go(self) -> None:
        """The child, at the operation the kill is aimed at: wait until the
        parent is ready to time the kill from here."""
        deadline = time.monotonic() + CHILD_DEADLINE
        while self.map[4] == 0 and time.monotonic() < deadline:
            pass

    def go(self) -> None:
        self.map[4] = 1

    def record(self, i: int, result: Any) -> None:
        data = pickle.dumps(result)
        if len(data) + 4 > SLOT:
            raise RuntimeError("harness: result too large for its log slot")
        off = mmap.PAGESIZE + i * SLOT
        self.map[off:off + 4] = struct.pack("<I", len(data))
        self.map[off + 4:off + 4 + len(data)] = data
        self.map[0:4] = struct.pack("<I", i + 1)  # last: the operation counts as done

    def result(self, i: int) -> Any:
        off = mmap.PAGESIZE + i * SLOT
        n = struct.unpack_from("<I", self.map, off)[0]
        return real_loads(self.map[off + 4:off + 4 + n])

    def close(self) -> None:
        self.map.close()


# ---------------------------------------------------------------------------
# Scenarios.  Each has: setup(r), child_op(i, op, arg) -> result,
# parent_op(op, arg), check(log, done, child_ops), cleanup().

class QueueScenario:
    """Both processes put and get; items are (producer, seq, padding)."""

    def __init__(self, r: Reader) -> None:
        self.q = interproc.Queue(capacity_bytes=QUEUE_CAP)
        self.parent_put: List[int] = []
        self.parent_got: List[Tuple[int, int]] = []
        self.seq = {0: 0, 1: 0}
        for _ in range(r.u8() % 6):
            self.parent_put += self._put(0, 1, 7)

    def _item(self, tag: int, arg: int) -> tuple:
        s = self.seq[tag]
        self.seq[tag] += 1
        return (tag, s, b"p" * (arg * 13 % 2600))

    def _put(self, tag: int, n: int, arg: int) -> List[int]:
        items = [self._item(tag, arg + k) for k in range(n)]
        if n == 1:
            self.q.put(items[0])
        else:
            self.q.put_many(items)
        return [it[1] for it in items]

    def _get(self, op: int, arg: int) -> List[Tuple[int, int]]:
        try:
            if op == 2:
                got = [self.q.get_nowait()]
            elif op == 3:
                got = self.q.get_many(max_items=1 + arg % 4, block=False)
            else:
                got = [self.q.get(timeout=0.002)]
        except interproc.Empty:
            got = []
        return [(t, s) for t, s, _ in got]

    @staticmethod
    def takes(op: int, arg: int) -> int:
        """How many items an interrupted get may have taken."""
        return 0 if op < 2 else (1 + arg % 4 if op == 3 else 1)

    @staticmethod
    def puts(op: int, arg: int) -> int:
        return 1 if op == 0 else (1 + arg % 4 if op == 1 else 0)

    def child_op(self, i: int, op: int, arg: int) -> Any:
        op %= 5
        if op < 2:
            return self._put(1, self.puts(op, arg), arg)
        return self._get(op, arg)

    def parent_op(self, op: int, arg: int) -> None:
        op %= 5
        if op < 2:
            self.parent_put += self._put(0, self.puts(op, arg), arg)
        else:
            self.parent_got += self._get(op, arg)

    def check(self, log: Log, done: int, ops: List[Tuple[int, int]]) -> None:
        child_got: List[Tuple[int, int]] = []
        child_put: List[int] = []
        for i in range(done):
            res = log.result(i)
            if ops[i][0] % 5 < 2:
                child_put += res
            else:
                child_got += [tuple(x) for x in res]
        # The child's sequence numbers follow from its operations alone.
        in_flight_put: List[int] = []
        may_lose = 0
        if done < len(ops):
            op, arg = ops[done][0] % 5, ops[done][1]
            start = sum(self.puts(o % 5, a) for o, a in ops[:done])
            in_flight_put = list(range(start, start + self.puts(op, arg)))
            may_lose = self.takes(op, arg)
        # A put of our own makes a producer journal the dead child left valid
        # take effect; everything before it then comes out, and nothing after.
        end = (0, -1, b"")
        self.q.put(end)
        drained: List[Tuple[int, int]] = []
        while True:
            try:
                t, s, _ = self.q.get(timeout=5)
            except interproc.Empty:
                raise Finding("the item put after the kill never arrived") from None
            if (t, s) == (0, -1):
                break
            drained.append((t, s))
            if len(drained) > 10000:
                raise Finding("the queue never reaches the item put after the kill")
        if not self.q.empty() or self.q.qsize() != 0:
            raise Finding(f"queue not empty after its last item (qsize {self.q.qsize()})")
        streams = {"parent": self.parent_got + drained, "child": child_got}
        seen: Dict[Tuple[int, int], str] = {}
        for who, stream in streams.items():
            last = {0: -1, 1: -1}
            for t, s in stream:
                if (t, s) in seen:
                    raise Finding(f"item {(t, s)} delivered twice ({seen[(t, s)]}, {who})")
                seen[(t, s)] = who
                if s <= last[t]:
                    raise Finding(f"{who} got producer {t}'s items out of order: {s} after {last[t]}")
                last[t] = s
        expected = {(0, s) for s in self.parent_put} | {(1, s) for s in child_put}
        missing = expected - set(seen)
        if len(missing) > may_lose:
            raise Finding(f"items lost: {sorted(missing)} (the interrupted operation could take "
                          f"{may_lose})")
        extra = set(seen) - expected - {(1, s) for s in in_flight_put}
        if extra:
            raise Finding(f"items that nobody put: {sorted(extra)}")

    def cleanup(self) -> None:
        self.q.close()


KEYS = ["k0", "k1", "k2", "k3", "k4", "k5"]


def _value(arg: int) -> Any:
    return [arg, f"v{arg}", b"b" * (arg * 11), (arg, None), 2.5 * arg][arg % 5]


class DictScenario:
    """The child changes a dict; the parent reads it meanwhile, and replays
    the child's operations on a plain dict to know the states it may find."""

    def __init__(self, r: Reader) -> None:
        self.name = unique_name("xp")
        self.d = interproc.SharedDict(name=self.name)
        for k in range(r.u8() % 4):
            self.d[KEYS[k]] = k
        self.d["n"] = 0

    @staticmethod
    def apply(d: Any, op: int, arg: int) -> None:
        op %= 7
        k, v = KEYS[arg % 6], _value(arg)
        if op == 0:
            d[k] = v
        elif op == 1:
            d.pop(k, None)
        elif op == 2:
            d.update({k: v, KEYS[(arg + 1) % 6]: _value(arg + 1)})
        elif op == 3:
            d.setdefault(k, v)
        elif op == 4:
            try:
                d.popitem()
            except KeyError:
                pass
        elif op == 5:
            # One operation: the check allows the state before or after the
            # interrupted one, so a step here must be a single atomic call.
            if arg < 32:
                d.clear()
        elif hasattr(d, "increment"):
            d.increment("n", arg)
        else:
            d["n"] = d.get("n", 0) + arg

    def child_op(self, i: int, op: int, arg: int) -> Any:
        self.apply(self.d, op, arg)
        return None

    def parent_op(self, op: int, arg: int) -> None:
        [lambda: self.d.get(KEYS[arg % 6]), lambda: len(self.d), lambda: self.d.copy(),
         lambda: KEYS[arg % 6] in self.d, lambda: list(self.d.items())][op % 5]()

    def states(self, start: Dict[Any, Any], ops: List[Tuple[int, int]]) -> List[Any]:
        model = dict(start)
        out = [list(model.items())]
        for op, arg in ops:
            self.apply(model, op, arg)
            out.append(list(model.items()))
        return out

    def snapshot(self) -> Any:
        return list(self.d.copy().items())

    def check(self, log: Log, done: int, ops: List[Tuple[int, int]]) -> None:
        now = self.snapshot()
        ok = self.allowed[done:done + 2]
        if now not in ok:
            raise Finding(f"after a kill in operation {done} ({ops[done] if done < len(ops) else '-'}) "
                          f"the content is {now!r}, neither of {ok!r}")
        self.apply(self.d, 0, 1)  # still usable
        self.apply(self.d, 1, 1)

    def cleanup(self) -> None:
        self.d.close()
        try:
            naming.unlink(self.name)
        except OSError:
            pass


class ListScenario(DictScenario):
    def __init__(self, r: Reader) -> None:
        self.name = unique_name("xp")
        self.d = interproc.SharedList([_value(k) for k in range(r.u8() % 5)], name=self.name)

    @staticmethod
    def apply(lst: Any, op: int, arg: int) -> None:
        op %= 9
        i = arg % 9 - 4
        try:
            if op == 0:
                lst.append(_value(arg))
            elif op == 1:
                lst.insert(i, _value(arg))
            elif op == 2:
                lst.pop(i)
            elif op == 3:
                lst[i] = _value(arg)
            elif op == 4:
                del lst[i]
            elif op == 5:
                lst.extend([_value(arg), _value(arg + 1)])
            elif op == 6:
                lst[i:i + 2] = [_value(arg)] * (arg % 3)
            elif op == 7:
                lst.reverse()
            else:
                lst.sort(key=repr)
        except IndexError:
            pass

    def parent_op(self, op: int, arg: int) -> None:
        try:
            [lambda: self.d[arg % 5], lambda: len(self.d), lambda: self.d.copy(),
             lambda: self.d[1:3], lambda: self.d.count(None)][op % 5]()
        except IndexError:
            pass

    def states(self, start: Any, ops: List[Tuple[int, int]]) -> List[Any]:
        model = list(start)
        out = [list(model)]
        for op, arg in ops:
            self.apply(model, op, arg)
            out.append(list(model))
        return out

    def snapshot(self) -> Any:
        return list(self.d.copy())


class LockScenario:
    """The child takes and releases the lock (re-entrantly for an RLock); the
    parent tries it meanwhile.  After the kill the parent must get it, told
    of the death exactly when the child held it."""

    cls: Any = interproc.Lock

    def __init__(self, r: Reader) -> None:
        self.lock = self.cls()
        self.depth = 0  # the child's, in the child

    def child_op(self, i: int, op: int, arg: int) -> Any:
        if op % 3 < 2:
            if self.depth == 0 or self.cls is interproc.RLock:
                if self.lock.acquire(timeout=0.05):
                    self.depth += 1
        elif self.depth:
            self.lock.release()
            self.depth -= 1
        return self.depth

    def parent_op(self, op: int, arg: int) -> None:
        if self.lock.acquire(timeout=0.001):
            self.lock.release()

    def check(self, log: Log, done: int, ops: List[Tuple[int, int]]) -> None:
        depth = log.result(done - 1) if done else 0
        interrupted = ops[done][0] % 3 if done < len(ops) else None
        held = depth > 0 and not (interrupted == 2 and depth == 1)
        free = depth == 0 and interrupted not in (0, 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if not self.lock.acquire(timeout=5):
                raise Finding(f"lock not taken over from a dead child (depth {depth}, "
                              f"interrupted op {interrupted})")
        died = any(issubclass(w.category, interproc.OwnerDiedWarning) for w in caught)
        if held and not died:
            raise Finding(f"took a dead holder's lock without OwnerDiedWarning (depth {depth})")
        if free and died:
            raise Finding("OwnerDiedWarning for a lock the dead child did not hold")
        self.lock.release()

    def cleanup(self) -> None:
        self.lock.close()


class RLockScenario(LockScenario):
    cls = interproc.RLock


class PipeScenario:
    """The child sends numbered messages; the parent receives meanwhile, and
    after the kill must get the rest in order, then EOFError."""

    def __init__(self, r: Reader) -> None:
        self.a, self.b = interproc.Pipe(capacity_bytes=QUEUE_CAP)
        self.got: List[int] = []
        self.sent = 0

    def after_fork_parent(self) -> None:
        self.b.close()  # the dead child must be the last holder of the sending end

    def child_op(self, i: int, op: int, arg: int) -> Any:
        if not self.a.closed:
            self.a.close()  # the child only sends
        msg = (self.sent, b"m" * (arg * 17 % 3000))
        if op & 1:
            self.b.send_bytes(pickle.dumps(msg))
        else:
            self.b.send(msg)
        self.sent += 1
        return self.sent

    def parent_op(self, op: int, arg: int) -> None:
        if self.a.poll(0):
            self.got.append(self._recv())

    def _recv(self) -> int:
        return self.a.recv()[0]

    def check(self, log: Log, done: int, ops: List[Tuple[int, int]]) -> None:
        sent = log.result(done - 1) if done else 0
        while True:
            if not self.a.poll(5):
                raise Finding("recv() would hang: the sender is dead and everything was read")
            try:
                self.got.append(self._recv())
            except EOFError:
                break
        if self.got != list(range(len(self.got))):
            raise Finding(f"messages out of order or lost: {self.got}")
        if not sent <= len(self.got) <= sent + 1:
            raise Finding(f"{len(self.got)} messages arrived; {sent} sends returned")

    def cleanup(self) -> None:
        self.a.close()
        self.b.close()


SCENARIOS = [QueueScenario, DictScenario, ListScenario, LockScenario, RLockScenario, PipeScenario]


# ---------------------------------------------------------------------------

def _ops(r: Reader, n: int) -> List[Tuple[int, int]]:
    return [(r.u8(), r.u8()) for _ in range(n)]


def _child(sc: Any, log: Log, ops: List[Tuple[int, int]], kill_after: int) -> None:
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, (op, arg) in enumerate(ops):
                if i == kill_after:
                    log.wait_for_go()
                log.record(i, sc.child_op(i, op, arg))
    except BaseException:
        traceback.print_exc()
        code = 70
    exit_child(code)


def _reap(pid: int) -> int:
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Finding("the child hung")
        time.sleep(0.001)


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    cls = SCENARIOS[r.below(len(SCENARIOS))]
    child_ops = _ops(r, 1 + r.u8() % MAX_OPS)
    parent_ops = _ops(r, r.u8() % MAX_OPS)
    kill_after = r.u8() % (len(child_ops) + 1)
    delay = r.u8() * 10e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = cls(Reader(r.take(1)))
        log = Log()
        try:
            if hasattr(sc, "states"):
                start = sc.snapshot()
                sc.allowed = sc.states(start, child_ops)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(sc, log, child_ops, kill_after)
            if hasattr(sc, "after_fork_parent"):
                sc.after_fork_parent()
            killed = False

            def maybe_kill(wait: bool) -> None:
                nonlocal killed
                if killed:
                    return
                if wait:
                    deadline = time.monotonic() + CHILD_DEADLINE
                    while log.done() < kill_after and os.waitpid(pid, os.WNOHANG) == (0, 0):
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.0002)
                elif log.done() < kill_after:
                    return
                log.go()
                until = time.perf_counter() + delay
                while time.perf_counter() < until:
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed = True

            try:
                for op, arg in parent_ops:
                    maybe_kill(False)
                    if killed:
                        break  # what follows the kill is check()'s
                    run_op(lambda: sc.parent_op(op, arg), ALLOWED)
            finally:
                maybe_kill(True)
                status = _reap(pid)
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL) and status != 0:
                raise Finding(f"the child failed (wait status {status:#x}); its stderr says why")
            sc.check(log, log.done(), child_ops)
        finally:
            sc.cleanup()
            log.close()


def initialize() -> None:
    from common import remove_stale_names

    remove_stale_names()


def seeds() -> Dict[str, bytes]:
    out = {}
    for k, cls in enumerate(SCENARIOS):
        for variant in range(4):
            w = Writer().u8(k)
            n = 8 + variant * 4
            w.u8(n - 1)
            for i in range(n):
                w.u8(i * (variant + 3)).u8(i * 29 + variant * 7)
            w.u8(4 + variant)
            for i in range(4 + variant):
                w.u8(i).u8(i * 3)
            w.u8(variant * 3).u8(variant * 50).u8(3)
            out[f"{cls.__name__}-{variant}"] = w.bytes()
    return out
