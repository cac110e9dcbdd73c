"""CPython's own multiprocessing tests, run against interproc's objects.

    python tests/cpython_multiprocessing.py {fork|spawn|forkserver} [-v] [-k PATTERN]

Run from the repository root with interproc installed.  The tests come from
``test._test_multiprocessing`` of the interpreter running this script (the
``test`` package must be installed with it), so each Python checks
interproc against its own multiprocessing.

What is run: the test mixins about the objects interproc replaces (queues,
pipes and connections, locks, semaphores, conditions, events, barriers,
shared values and arrays) in their "processes" variant, with interproc's
factories in place of multiprocessing's, and in their "manager" variant,
with ``interproc.Manager()``; and the plain test cases about the same
objects (``TestWait``, ``TestSimpleQueue``, ``TestSyncManagerTypes``,
``TestIgnoreEINTR``), which call ``multiprocessing.Pipe()`` and the like
directly, so those names are pointed at interproc's while they run.  The
"threads" variant tests ``multiprocessing.dummy`` and is not run.

Every test must pass, or be listed in ``DIFFERENCES`` with the reason:
docs/api.md ("Differences from multiprocessing") explains each entry.  A
listed test that passes is reported, so that the list cannot go stale
silently, but does not fail the run (a test may differ on one Python and
not on another).  The exit status is 0 when nothing else failed.

Output: the failures, with what went to stderr during each (its children's
included), and one summary line.  Without -v, everything else the tests
write to stderr (the listed differences' tracebacks, CPython's warnings
about dangling processes) is dropped.

A test that hangs ends the run: after ``--test-timeout`` seconds every
thread's stack is printed and the process exits with status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import fnmatch
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import time
import types
import unittest
from unittest import mock

import interproc
import interproc.managers

try:
    import test._test_multiprocessing as cpython
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    sys.exit(f"cpython_multiprocessing: this Python has no test package ({exc}); install it to run these tests")

# test_wait_result interrupts a wait with SIGINT and expects KeyboardInterrupt.
# A runner started in the background by a non-interactive shell has SIGINT
# ignored, and that disposition is inherited across exec: put Python's own
# handler back, as the interpreter would have installed it.
signal.signal(signal.SIGINT, signal.default_int_handler)

#: The test mixins in scope.  Looked up by name, since the module's content
#: changes between Python versions; the variants built are those of each
#: mixin's ALLOWED_TYPES, but for "threads".
MIXINS = (
    "_TestQueue",
    "_TestLock",
    "_TestSemaphore",
    "_TestCondition",
    "_TestEvent",
    "_TestBarrier",
    "_TestValue",
    "_TestArray",
    "_TestContainers",
    "_TestConnection",
    "_TestPoll",
    "_TestPicklingConnections",
    "_TestSharedCTypes",
)

#: Plain test cases in scope; they name ``multiprocessing.Pipe`` and friends
#: directly, which are pointed at interproc's while they run.
PLAIN_CASES = (
    "TestWait",
    "TestSimpleQueue",
    "TestSyncManagerTypes",
    "TestIgnoreEINTR",
)

#: Tests of the classes above that exercise only multiprocessing's own
#: objects, whatever the substitution: they say nothing about interproc.
#: Keyed by method name (every variant).
NOT_OURS = {
    "test_queue_feeder_on_queue_feeder_error": "subclasses multiprocessing.queues.Queue to hook its feeder thread",
    "test_ignore_listener": "multiprocessing.connection.Listener and Client",
}

#: The deliberate differences: "<variant class>.<test>" -> why it fails on
#: interproc.  Each one is explained in docs/api.md, "Differences from
#: multiprocessing".  Keep this the only list.
_FD_PASSING = (
    "multiprocessing.reduction.send_handle/recv_handle need an AF_UNIX socket behind conn.fileno(); "
    "an interproc Connection is shared memory and refuses them with a TypeError naming the alternatives"
)
_NOT_A_PROXY = (
    "Manager().dict(), list() and set() are interproc's shared-memory containers, not proxies: "
    "isinstance(obj, multiprocessing.managers.DictProxy) (ListProxy, SetProxy) is False"
)
_UNUSED_CLOSE = (
    "close() closes the handle at once; multiprocessing's does nothing to a queue never used "
    "(it has no feeder thread yet), whose empty() still answers True; once used, both raise OSError"
)
DIFFERENCES: "dict[str, str]" = {
    "WithProcessesTestQueue.test_queue_feeder_donot_stop_onexc": (
        "no feeder thread: put() pickles in the caller, so an unpicklable object raises there "
        "instead of being reported on stderr by a feeder thread and dropped"
    ),
    # Python 3.13 and later.
    "WithProcessesTestQueue.test_closed_queue_empty_exceptions": _UNUSED_CLOSE,
    "WithManagerTestQueue.test_closed_queue_empty_exceptions": _UNUSED_CLOSE,
    "WithManagerTestEvent.test_repr": (
        "the manager's Event is interproc's Event, not an EventProxy: its repr is the Event's own"
    ),
    "WithManagerTestContainers.test_nested_queue": (
        "no server process: an anonymous Queue stored in a shared list or dict is reopened from the "
        "process that stored it, which must still hold it; the test keeps no handle on it"
    ),
    "WithProcessesTestConnection.test_fd_transfer": _FD_PASSING,
    "WithProcessesTestConnection.test_large_fd_transfer": _FD_PASSING,
    "WithProcessesTestConnection.test_missing_fd_transfer": (
        _FD_PASSING + "; the test also writes a stray byte into fileno(), which is interproc's readiness pipe"
    ),
    "TestIgnoreEINTR.test_ignore": (
        "send() never blocks (the ring grows where a socket buffer fills): the child's big send_bytes "
        "returns at once, so the child may have exited when the test signals it, and under forkserver, "
        "whose server reaps it at once, os.kill() then fails"
    ),
    # Python 3.14 and later.
    "TestSyncManagerTypes.test_dict": _NOT_A_PROXY,
    "TestSyncManagerTypes.test_list": _NOT_A_PROXY,
    "TestSyncManagerTypes.test_set": _NOT_A_PROXY,
    "TestSyncManagerTypes.test_set_init": (
        "manager.set(1234) raises set(1234)'s own TypeError in the caller: there is no server "
        "process whose error would come back wrapped in RemoteError"
    ),
    "TestSimpleQueue.test_closed": (
        "reads SimpleQueue._reader and _writer, the OS pipe inside multiprocessing's SimpleQueue; "
        "interproc's has none (closed() state is tested by test_close)"
    ),
}


# ---------------------------------------------------------------------------
# interproc in place of multiprocessing

# The ``connection`` namespace the mixins use: multiprocessing's Listener,
# Client and families (interproc has no sockets), interproc's wait().
connection = types.SimpleNamespace(
    **{k: getattr(multiprocessing.connection, k) for k in ("Listener", "Client", "families")},
    wait=interproc.wait,
    Connection=interproc.Connection,
)

#: multiprocessing's top-level factories -> interproc's.
FACTORIES = {
    name: getattr(interproc, name)
    for name in (
        "Pipe", "Queue", "JoinableQueue", "SimpleQueue", "Lock", "RLock", "Semaphore",
        "BoundedSemaphore", "Condition", "Event", "Barrier", "Value", "Array", "RawValue", "RawArray",
    )
}


@contextlib.contextmanager
def substituted():
    """multiprocessing's factories, ``multiprocessing.connection.wait`` and
    the names the test module imported from multiprocessing, pointed at
    interproc's for the duration: for tests that call them directly."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.multiple(multiprocessing, **FACTORIES))
        stack.enter_context(mock.patch.object(multiprocessing.connection, "wait", interproc.wait))
        for name, value in (("Value", interproc.Value), ("wait", interproc.wait)):
            if hasattr(cpython, name):
                stack.enter_context(mock.patch.object(cpython, name, value))
        yield


class Substituting:
    # Around the whole run, not in setUp: several test mixins define a
    # setUp that does not call super().
    def run(self, result=None):
        with substituted():
            return super().run(result)


class ProcessesMixin(Substituting, cpython.ProcessesMixin):
    connection = connection
    Pipe = staticmethod(interproc.Pipe)
    Queue = staticmethod(interproc.Queue)
    JoinableQueue = staticmethod(interproc.JoinableQueue)
    SimpleQueue = staticmethod(interproc.SimpleQueue)
    Lock = staticmethod(interproc.Lock)
    RLock = staticmethod(interproc.RLock)
    Semaphore = staticmethod(interproc.Semaphore)
    BoundedSemaphore = staticmethod(interproc.BoundedSemaphore)
    Condition = staticmethod(interproc.Condition)
    Event = staticmethod(interproc.Event)
    Barrier = staticmethod(interproc.Barrier)
    Value = staticmethod(interproc.Value)
    Array = staticmethod(interproc.Array)
    RawValue = staticmethod(interproc.RawValue)
    RawArray = staticmethod(interproc.RawArray)



class ManagerMixin(Substituting, cpython.ManagerMixin):
    connection = connection

    # CPython's setUpClass/tearDownClass start multiprocessing.Manager() and
    # count the objects its server holds; interproc's manager has no server
    # for these types.
    @classmethod
    def setUpClass(cls):
        cpython.BaseMixin.setUpClass.__func__(cls)
        cls.manager = interproc.Manager()

    @classmethod
    def tearDownClass(cls):
        cls.manager.shutdown()
        cls.manager.join()
        cls.manager = None
        cpython.BaseMixin.tearDownClass.__func__(cls)


MIXIN_CLASSES = {"processes": ProcessesMixin, "manager": ManagerMixin}


def check_invariant(self, cond):
    # CPython reads the private semaphores multiprocessing builds a
    # Condition from; the invariant it checks (nobody left waiting) is what
    # interproc's statistics() report.
    self.assertEqual(cond.statistics()["condition_waiters"], 0)


def _plain_case(base):
    attrs = {}
    if base.__name__ == "TestSyncManagerTypes":
        attrs["manager_class"] = interproc.managers.SyncManager
    return type(base.__name__, (Substituting, base), attrs)


def build_cases():
    """The test classes, as ``install_tests_in_module_dict`` names them, in
    this module's namespace (children started by spawn or forkserver find
    them there by name)."""
    cases = []
    for name in MIXINS:
        base = getattr(cpython, name, None)
        if base is None:
            continue
        for type_ in base.ALLOWED_TYPES:
            if type_ not in MIXIN_CLASSES:
                continue
            newname = "With" + type_.capitalize() + name[1:]
            # Set on the class itself: the test mixin's own comes first in the MRO.
            attrs = {"check_invariant": check_invariant} if hasattr(base, "check_invariant") else {}
            cases.append(type(newname, (base, MIXIN_CLASSES[type_], unittest.TestCase), attrs))
    for name in PLAIN_CASES:
        base = getattr(cpython, name, None)
        if base is not None:
            cases.append(_plain_case(base))
    for case in cases:
        case.__qualname__ = case.__name__
        case.__module__ = __name__
        globals()[case.__name__] = case
    return cases


CASES = build_cases()


# ---------------------------------------------------------------------------
# Running and reporting

def test_key(test):
    return f"{type(test).__name__}.{test._testMethodName}"


class Result(unittest.TextTestResult):
    """Sorts each outcome: passed, a listed difference, or a failure."""

    def __init__(self, *args, test_timeout, capture, real_stderr, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_timeout = test_timeout
        # What the tests and their children write to stderr goes to a file
        # (see captured_stderr), and a test's part of it is shown only with
        # its failure: listed differences and CPython's own warnings would
        # drown the report otherwise.  The watchdog writes to the real
        # stderr.
        self.capture = capture
        self.real_stderr = real_stderr
        self.stderr_start = 0
        self.passed = []
        self.listed = []          # (key, reason) of listed tests that failed
        self.listed_passed = []   # listed, yet passed
        self.failed = []          # (key, traceback text)

    def startTest(self, test):
        # Arms a watchdog: a hung test prints every stack and ends the run.
        faulthandler.dump_traceback_later(self.test_timeout, exit=True, file=self.real_stderr)
        if self.capture is not None:
            sys.stderr.flush()
            self.stderr_start = os.fstat(self.capture.fileno()).st_size
        if self.showAll:
            self.stream.write(f"{test_key(test)} ... ")
            self.stream.flush()
        unittest.TestResult.startTest(self, test)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def _written(self):
        """What went to stderr since this test started."""
        sys.stderr.flush()
        return os.pread(self.capture.fileno(), 1 << 20, self.stderr_start).decode(errors="replace")

    def _line(self, word):
        if self.showAll:
            self.stream.writeln(word)
            self.stream.flush()

    def addSuccess(self, test):
        key = test_key(test)
        if key in DIFFERENCES:
            self.listed_passed.append(key)
            self._line("ok (listed as a difference)")
        else:
            self.passed.append(key)
            self._line("ok")

    def _bad(self, test, err, word):
        key = test_key(test)
        if key in DIFFERENCES:
            self.listed.append((key, DIFFERENCES[key]))
            self._line("listed difference")
        else:
            text = self._exc_info_to_string(err, test)
            written = self._written() if self.capture is not None else ""
            if written.strip():
                text += f"\nstderr since it started (its children's included):\n{written}"
            self.failed.append((key, text))
            self._line(word)

    def addFailure(self, test, err):
        self._bad(test, err, "FAIL")

    def addError(self, test, err):
        if isinstance(test, unittest.suite._ErrorHolder):
            # setUpClass or tearDownClass: not one test's.
            self.failed.append((str(test), self._exc_info_to_string(err, test)))
            self._line("ERROR")
        else:
            self._bad(test, err, "ERROR")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._bad(test, err, "FAIL (subtest)")

    def addSkip(self, test, reason):
        unittest.TestResult.addSkip(self, test, reason)
        self._line(f"skipped {reason!r}")

    def addExpectedFailure(self, test, err):
        self._bad(test, err, "FAIL (expected failure)")

    def addUnexpectedSuccess(self, test):
        self.addSuccess(test)

    def printErrors(self):
        pass


def _skip_not_ours(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            _skip_not_ours(test)
            continue
        reason = NOT_OURS.get(test._testMethodName)
        if reason is not None:
            setattr(test, test._testMethodName,
                    unittest.skip(f"not interproc's: {reason}")(getattr(test, test._testMethodName)))


@contextlib.contextmanager
def captured_stderr(enabled):
    """Points file descriptor 2 at a temporary file for the run: the tests',
    their children's and the forkserver's (started inside) output goes
    there.  Yields (the file or None, a file object on the real stderr)."""
    real = os.fdopen(os.dup(2), "w")
    if not enabled:
        try:
            yield None, real
        finally:
            real.close()
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield capture, real
        finally:
            sys.stderr.flush()
            os.dup2(real.fileno(), 2)
            real.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("method", choices=("fork", "spawn", "forkserver"))
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only tests whose 'Class.test' matches this glob (repeatable)")
    parser.add_argument("--test-timeout", type=float, default=300.0,
                        help="seconds one test may take before the run is ended as hung (default 300)")
    args = parser.parse_args(argv)

    multiprocessing.set_start_method(args.method, force=True)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in CASES:
        for test in loader.loadTestsFromTestCase(case):
            if args.patterns and not any(fnmatch.fnmatch(test_key(test), p) for p in args.patterns):
                continue
            suite.addTest(test)
    _skip_not_ours(suite)

    stream = unittest.runner._WritelnDecorator(sys.stdout)
    started = time.monotonic()
    with captured_stderr(not args.verbose) as (capture, real_stderr):
        result = Result(stream, True, 2 if args.verbose else 0, test_timeout=args.test_timeout,
                        capture=capture, real_stderr=real_stderr)
        suite(result)
    elapsed = time.monotonic() - started

    for key, text in result.failed:
        print(f"\n{'=' * 70}\nFAIL: {key}\n{'-' * 70}\n{text}", end="")
    if result.listed_passed:
        print("\nListed as differences, but passed here (remove an entry once it passes on every "
              "Python and start method):")
        for key in result.listed_passed:
            print(f"  {key}")
    version = ".".join(map(str, sys.version_info[:3]))
    print(
        f"\ncpython_multiprocessing {args.method} (Python {version}): "
        f"{len(result.passed) + len(result.listed_passed)} passed, {len(result.listed)} listed differences, "
        f"{len(result.skipped)} skipped, {len(result.failed)} failed in {elapsed:.0f}s"
    )
    ran = result.testsRun - len(result.skipped)
    return 0 if not result.failed and ran > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
