"""Helpers shared by the tests, and the targets of every child process.

Child targets live here, at module level, because spawn and forkserver pickle
them by reference: the child imports this module by name.  Every blocking
call in a child has a timeout so that a bug shows up as a failed child (a
non-zero exit code) instead of a hung test.
"""

import hashlib
import os
import queue
import random
import re
import resource
import signal
import sys
import threading
import time

import pytest

SHM_DIR = "/dev/shm"
SHM_PREFIX = "interproc."

# Long enough for a loaded 2-core machine, short enough that a lost wake-up
# fails the test well before pytest-timeout.
CHILD_TIMEOUT = 30.0

# How long the parent waits for its children.  Generous: a spawned child
# imports pytest's __main__ and interproc before it runs, which is slow on a
# loaded 2-core machine.
TIMEOUT = 60


# Under AddressSanitizer (make sanitize preloads it) each process has its own
# shadow memory and quarantine, and the allocator maps large blocks itself:
# tests that count memory or mappings measure ASan, not interproc.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
needs_plain_allocator = pytest.mark.skipif(
    UNDER_ASAN, reason="counts memory or mappings, which AddressSanitizer changes")


def shm_path(name):
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


def shm_entries():
    return set(os.listdir(SHM_DIR))


# Names made by the unique_name fixture carry the pid of the run that made
# them, and so do the fuzz targets' (fuzz-<target>-<pid>-<n>, made in the
# shared /dev/shm where no private one can be mounted): what another test
# or fuzz run on the machine creates meanwhile is not ours.
OTHER_RUN_NAME = re.compile(re.escape(SHM_PREFIX) + r"(?:t|fuzz-[a-z]+)-(\d+)-")

# multiprocessing's own named semaphores (Lock, Queue, Event of another
# program, or of another test run): its resource tracker removes them, and
# they carry nothing that says whose they are.
MP_SEMAPHORE = "sem.mp-"


def _another_runs(entry):
    if entry.startswith(MP_SEMAPHORE):
        return True
    m = OTHER_RUN_NAME.match(entry)
    return m is not None and int(m.group(1)) != os.getpid()


def new_shm_entries(before):
    """The /dev/shm entries made since ``before`` (a shm_entries() result)
    that may be this run's: those another test run on the machine made
    meanwhile are left out."""
    return {e for e in shm_entries() - before if not _another_runs(e)}


def memfd_maps():
    """Mappings of this process that are backed by a memfd."""
    with open("/proc/self/maps") as f:
        return [line for line in f if "/memfd:" in line]


def memfd_fds():
    """File descriptors of this process that refer to a memfd."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:"):
            found.append((int(fd), target))
    return found


class Point:
    """A user-defined class, to check that instances round-trip by reference."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r})"


# ------------------------------------------------ driving child processes

def describe_exit(code, meanings=None):
    """A child's exit code in words, for failure messages.

    ``meanings`` maps the exit codes that a test module's children use on
    purpose to what each one means (see the EXIT_MEANINGS of the helper
    modules); ``None`` is a child still running, a negative code a signal.
    """
    if code is None:
        return "still running"
    if code == 0:
        return "exit 0"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit {code} ({(meanings or {}).get(code, 'unexpected')})"


def start(ctx, target, *args):
    """Start ``target(*args)`` in a new process of context ``ctx``; return it."""
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def join_ok(*procs, timeout=TIMEOUT, meanings=None):
    """Wait for ``procs`` and assert that every one of them exited 0.

    ``timeout`` bounds the wait for all of them together.  Children still
    running then are killed (so that a hang fails the test instead of
    stalling it) and the failure names their pids; otherwise a non-zero exit
    fails it with every child's exit described (``meanings``: see
    describe_exit).
    """
    deadline = time.monotonic() + timeout
    hung = []
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            hung.append(p.pid)
            p.kill()
            p.join(10)
    assert not hung, f"children {hung} did not finish within {timeout}s"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * len(procs), f"children: {[describe_exit(c, meanings) for c in codes]}"


def kill_and_reap(proc, timeout=CHILD_TIMEOUT):
    """SIGKILL ``proc``, wait for it and return its exit code: -SIGKILL, or
    the code it had already exited with by itself.  A process still there
    ``timeout`` seconds later fails the test."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.join(timeout)
    assert not proc.is_alive(), f"pid {proc.pid} survived SIGKILL"
    return proc.exitcode


class KillDelay:
    """How long after starting a child to SIGKILL it, so that the kill lands
    inside an operation whose length is only guessed: a delay drawn below
    the guess, and the guess lowered to the delay whenever the operation had
    finished by then.  The guess usually comes from one first run, which is
    slower than the later ones (cold pages) or faster (a quieter machine);
    adapting keeps most kills inside the operation whatever else runs."""

    def __init__(self, rng, span):
        self.rng = rng
        self.span = span
        self.delay = 0.0

    def sleep(self):
        self.delay = self.rng.uniform(0, 1.1 * self.span)
        time.sleep(self.delay)

    def outcome(self, completed):
        """Record whether the last child finished before it was killed."""
        if completed:
            self.span = max(min(self.span, self.delay), 0.001)


def more_rounds(done, rounds, interrupted, wanted):
    """Whether a kill-in-the-middle loop goes on: ``rounds`` rounds, then
    while fewer than ``wanted`` were interrupted, up to three times as many."""
    return done < rounds or (interrupted < wanted and done < 3 * rounds)


def keep_killing(kills, wanted, started, seconds):
    """Whether a kill loop goes on: until ``wanted`` kills, for about
    ``seconds``; past that only while fewer than half are done.  A loaded
    machine makes the loop take longer, never the run weaker, so the
    caller's ``kills >= wanted // 2`` holds whatever else is running."""
    if kills >= wanted:
        return False
    return time.monotonic() - started < seconds or kills < wanted // 2


def wait_until(predicate, timeout=TIMEOUT, what="condition", interval=0.001):
    """Poll ``predicate()`` every ``interval`` seconds until it is true;
    fail the test, naming ``what`` was awaited, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def collect(q, n, timeout=TIMEOUT):
    """The next ``n`` items of queue ``q``, each awaited at most ``timeout``
    seconds (queue.Empty, and so a failure, past that)."""
    return [q.get(timeout=timeout) for _ in range(n)]


def owner_died_warnings(caught):
    """The OwnerDiedWarnings among warnings recorded by warnings.catch_warnings."""
    import interproc

    return [w for w in caught if issubclass(w.category, interproc.OwnerDiedWarning)]


# ------------------------------------------------------------------ timing

# How late a timed call (a timeout that expires) may return.  Early is never
# allowed.
TIMING_SLACK = 0.05
# time.monotonic() and the C side's CLOCK_MONOTONIC agree, but float rounding
# of a deadline can cost a few microseconds.
EARLY_EPSILON = 0.001


def assert_took(elapsed, timeout):
    """Assert that a call given ``timeout`` returned after ``elapsed``
    seconds: not early, and at most TIMING_SLACK late."""
    assert elapsed >= timeout - EARLY_EPSILON, f"returned early: {elapsed:.4f}s < {timeout}s"
    assert elapsed <= timeout + TIMING_SLACK, f"returned late: {elapsed:.4f}s for {timeout}s"


def cpu_seconds():
    """CPU time of this whole process, every thread included."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sigint_soon(delay=0.2):
    """Send this process SIGINT (Ctrl-C) after ``delay`` seconds, from a
    timer thread; returns the timer, to cancel."""
    t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


# ---------------------------------------------------------------- checksums

def digest(tag, payload):
    """A checksum that also binds the item's identity, so that a header from
    one item glued to the payload of another is caught too."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(tag).encode())
    h.update(b"\0")
    h.update(payload)
    return h.digest()


def checked_item(producer, seq, payload):
    return (producer, seq, digest((producer, seq), payload), payload)


def check_item(item):
    """(producer, seq, ok) for an item made by checked_item."""
    try:
        producer, seq, dg, payload = item
    except (TypeError, ValueError):
        return None, None, False
    ok = isinstance(payload, bytes) and digest((producer, seq), payload) == dg
    return producer, seq, ok


def random_payload(rng):
    """Mixed sizes around a 64 KiB ring: tiny, ~1 KiB, ~100 KiB (already
    bigger than the ring) and, rarely, ~1 MiB."""
    r = rng.random()
    if r < 0.45:
        size = rng.randint(0, 16)
    elif r < 0.80:
        size = rng.randint(768, 1280)
    elif r < 0.97:
        size = rng.randint(90_000, 110_000)
    else:
        size = rng.randint(600_000, 1_200_000)
    return rng.randbytes(size)


# ---------------------------------------------------------- simple children

def echo_double(q_in, q_out, n):
    for _ in range(n):
        q_out.put(q_in.get(timeout=CHILD_TIMEOUT) * 2)


def produce_range(q, producer_id, n):
    for i in range(n):
        q.put((producer_id, i), timeout=CHILD_TIMEOUT)


def simple_echo(q_in, q_out, n):
    """SimpleQueue.get() takes no timeout; the parent's deadline covers it."""
    for _ in range(n):
        q_out.put(q_in.get())


def consume_until_none(q, results, worker_id):
    got = []
    while True:
        item = q.get(timeout=CHILD_TIMEOUT)
        if item is None:
            break
        got.append(item)
    results.put((worker_id, got))


def put_items(q, items):
    for item in items:
        q.put(item)
    return len(items)


def get_items(q, n):
    return [q.get(timeout=CHILD_TIMEOUT) for _ in range(n)]


_POOL_QUEUE = None


def pool_init(q):
    global _POOL_QUEUE
    _POOL_QUEUE = q


def pool_put(x):
    _POOL_QUEUE.put((os.getpid(), x))
    return x


def get_and_report(q, ready, out):
    """Signal readiness, block in get(), then report what and when."""
    ready.put(os.getpid())
    item = q.get(timeout=CHILD_TIMEOUT)
    out.put((item, time.monotonic()))


def put_and_report(q, ready, out, item):
    """Signal readiness, block in put() on a full queue, then report when."""
    ready.put(os.getpid())
    q.put(item, timeout=CHILD_TIMEOUT)
    out.put(time.monotonic())


def use_queue_from_queue(outer, n):
    inner = outer.get(timeout=CHILD_TIMEOUT)
    for i in range(n):
        inner.put(i)


def send_anonymous_queue(outer, ack, payload):
    """Hand the parent a queue this child created, and stay alive until the
    parent has unpickled it."""
    import interproc

    q = interproc.Queue()
    q.put(payload)
    outer.put(q)
    ack.get(timeout=CHILD_TIMEOUT)


def send_anonymous_queue_and_exit(outer):
    import interproc

    q = interproc.Queue()
    q.put("orphan")
    outer.put(q)


def joinable_worker(q, out):
    while True:
        item = q.get(timeout=CHILD_TIMEOUT)
        try:
            if item is None:
                return
            out.put(item * item)
        finally:
            q.task_done()


def put_big(q, seed, size):
    payload = random.Random(seed).randbytes(size)
    q.put(checked_item("big", seed, payload))


def get_big_and_check(q, out):
    producer, seq, ok = check_item(q.get(timeout=CHILD_TIMEOUT))
    out.put((producer, seq, ok))


def attach_and_wait(name, ready, release):
    import interproc

    q = interproc.attach(name)
    ready.put(os.getpid())
    release.get(timeout=CHILD_TIMEOUT)
    q.close()


def probe_open(name):
    """Try every way of opening ``name``; return what each one raised.

    Run in a child so that a crash on a damaged segment fails the test
    instead of killing the test runner.
    """
    import interproc

    openers = {
        "Queue(create=False)": lambda: interproc.Queue(name=name, create=False),
        "Queue(create=None)": lambda: interproc.Queue(name=name),
        "SimpleQueue(create=False)": lambda: interproc.SimpleQueue(name=name, create=False),
        "JoinableQueue(create=False)": lambda: interproc.JoinableQueue(name=name, create=False),
        "attach": lambda: interproc.attach(name),
    }
    results = {}

    def attempt(label, opener):
        try:
            obj = opener()
        except BaseException as exc:  # noqa: BLE001 - report whatever it was
            results[label] = (
                type(exc).__name__,
                isinstance(exc, interproc.SegmentError),
                isinstance(exc, ValueError),
                str(exc),
            )
        else:
            obj.close()
            results[label] = None

    # In parallel: an opener may legitimately wait a while for a creator
    # that is still laying the segment out.
    threads = [threading.Thread(target=attempt, args=item) for item in openers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CHILD_TIMEOUT)
    for label in openers:
        results.setdefault(label, ("hung", False, False, f"still running after {CHILD_TIMEOUT}s"))
    return results


def probe_list_objects():
    """list_objects() as plain tuples, computed in a child (see probe_open)."""
    import interproc

    return [
        (o.name, o.kind, o.capacity_bytes, o.items, o.bytes_used, list(o.pids), o.error)
        for o in interproc.list_objects()
    ]


# ------------------------------------------------------ crash-test children

def crash_producer(q, producer_id, log_path, stop, seed, batch_max, throttle):
    """Put checksummed items until told to stop.

    The seqs whose put()/put_many() returned are appended to ``log_path``
    only after the call returns, so the log is a lower bound of what went in.
    """
    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    seq = 0
    while not stop.value:
        if throttle and q.qsize() > throttle:
            time.sleep(0.001)
            continue
        n = 1 if rng.random() < 0.7 else rng.randint(2, batch_max)
        items = [checked_item(producer_id, seq + i, random_payload(rng)) for i in range(n)]
        try:
            if n == 1:
                q.put(items[0], timeout=1.0)
            else:
                q.put_many(items, timeout=1.0)
            done = n
        except queue.Full as exc:
            done = getattr(exc, "count", 0) if n > 1 else 0
        if done:
            os.write(fd, "".join(f"{seq + i}\n" for i in range(done)).encode())
            seq += done
    os.close(fd)


def crash_consumer(q, log_path, stop, seed, batch_max):
    """Take items until told to stop and the queue is empty.

    Each batch is logged with one write() after get()/get_many() returned,
    as "producer seq ok|BAD" lines; anything unexpected as an "EXC" line.
    """
    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        try:
            if rng.random() < 0.5:
                items = [q.get(timeout=0.05)]
            else:
                items = q.get_many(max_items=batch_max, timeout=0.05)
        except queue.Empty:
            if stop.value:
                break
            continue
        except Exception as exc:  # noqa: BLE001 - a torn item may raise anything
            os.write(fd, f"EXC {type(exc).__name__}: {exc!r}\n".encode())
            if stop.value:
                break
            continue
        lines = []
        for item in items:
            producer, seq, ok = check_item(item)
            lines.append(f"{producer} {seq} {'ok' if ok else 'BAD'}\n")
        os.write(fd, "".join(lines).encode())
    os.close(fd)


def put_then_exit_code(q, seq, payload):
    q.put((seq, payload))


def get_then_exit_code(q, expected):
    """Exit 0 if the item taken is intact, 3 if it is torn."""
    seq, payload = q.get(timeout=CHILD_TIMEOUT)
    if payload != expected:
        sys.exit(3)


def churn(q, seed):
    """Put and take small checksummed items as fast as possible, forever."""
    rng = random.Random(seed)
    seq = 0
    while True:
        if rng.random() < 0.5:
            try:
                q.put(checked_item(seed, seq, rng.randbytes(rng.randint(0, 2048))), timeout=0.01)
            except queue.Full:
                continue
            seq += 1
        else:
            try:
                for item in q.get_many(max_items=4, timeout=0.01):
                    if not check_item(item)[2]:
                        sys.exit(3)
            except queue.Empty:
                pass


# ------------------------------------------------------- crash-test logs

def new_seed():
    """A random 32-bit seed, for a test to print with its failures."""
    return int.from_bytes(os.urandom(4), "little")


def read_lines(path):
    """Complete lines only: a process killed inside write() may leave a
    partial last line, which counts as never written."""
    try:
        with open(path) as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.split("\n")[:-1]
