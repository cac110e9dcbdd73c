"""The public surface: every name exported once, and multiprocessing's signatures."""

import inspect
import multiprocessing.queues
import queue
import subprocess
import sys

import interproc


def test_every_public_name_is_exported_once_and_exists():
    names = interproc.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(interproc, name), name
    public = {n for n in dir(interproc) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(interproc, n))}
    assert public - modules == set(names)


def test_exceptions_are_the_standard_librarys():
    assert interproc.Full is queue.Full
    assert interproc.Empty is queue.Empty
    assert issubclass(interproc.SegmentError, ValueError)


def params(func):
    return [(p.name, p.default) for p in inspect.signature(func).parameters.values()][1:]


def test_queue_methods_have_multiprocessings_signatures():
    ours, theirs = interproc.Queue, multiprocessing.queues.Queue
    for method in ["put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full", "close",
                   "join_thread", "cancel_join_thread"]:
        mine = params(getattr(ours, method))
        mp = params(getattr(theirs, method))
        # put_nowait(obj) is positional-only here; the names still match.
        assert [n for n, _ in mine] == [n for n, _ in mp], method
        assert [d for _, d in mine] == [d for _, d in mp], method
    for method in ["task_done", "join"]:
        assert params(getattr(interproc.JoinableQueue, method)) == params(
            getattr(multiprocessing.queues.JoinableQueue, method))
    for method in ["put", "get", "empty", "close"]:
        assert hasattr(interproc.SimpleQueue, method)


def test_constructors_take_multiprocessings_arguments():
    assert list(inspect.signature(interproc.Queue).parameters)[0] == "maxsize"
    assert list(inspect.signature(interproc.JoinableQueue).parameters)[0] == "maxsize"
    for cls in (interproc.Queue, interproc.SimpleQueue, interproc.JoinableQueue):
        sig = inspect.signature(cls)
        for keyword in ("name", "create", "mode", "capacity_bytes"):
            assert sig.parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY


def test_public_classes_and_functions_are_documented():
    for name in interproc.__all__:
        obj = getattr(interproc, name)
        assert inspect.getdoc(obj), name
    for method in ["put", "get", "put_many", "get_many", "qsize", "close", "unlink"]:
        assert inspect.getdoc(getattr(interproc.Queue, method)), method


def test_manager_is_multiprocessings_with_the_same_methods():
    import multiprocessing.managers

    assert "Manager" in interproc.__all__
    m = interproc.Manager()
    assert isinstance(m, multiprocessing.managers.SyncManager)
    for typeid in ["dict", "list", "Namespace", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
                   "Condition", "Event", "Barrier", "Queue", "JoinableQueue", "Value", "Array",
                   "Pool"]:
        assert inspect.getdoc(getattr(m, typeid)) or typeid == "Pool", typeid
    for method in ["start", "shutdown", "join", "connect", "get_server", "register",
                   "__enter__", "__exit__"]:
        assert callable(getattr(m, method)), method
    m.shutdown()


def test_a_free_threaded_build_is_refused_at_import_with_a_clear_message():
    """No free-threaded CPython is available to test on, so the build flag
    is set by hand before the import, in a fresh interpreter."""
    code = (
        "import sysconfig\n"
        "sysconfig.get_config_vars()['Py_GIL_DISABLED'] = 1\n"
        "try:\n"
        "    import interproc\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    assert "free-threaded" in out.stdout and "3.11 to 3.15" in out.stdout


FORK_AFTER_USE = """
import multiprocessing, threading
import interproc

q = interproc.Queue(); q.put(1); q.get()
a, b = interproc.Pipe(); a.send(1); b.recv()
v = interproc.Value("i", 1); arr = interproc.Array("d", 3)
lock = interproc.Lock(); lock.acquire(); lock.release()
cond = interproc.Condition(); ev = interproc.Event(); ev.set()
bar = interproc.Barrier(1); bar.wait()
m = interproc.Manager(); d = m.dict(a=1); lst = m.list([1]); ns = m.Namespace(x=1)
d["b"] = 2; lst.append(2); ns.y = 2

def child(q, d):
    q.put(d["b"])

p = multiprocessing.get_context("fork").Process(target=child, args=(q, d))
p.start(); p.join()
print(q.get(timeout=10), p.exitcode, threading.active_count())
"""


def test_forking_after_using_every_kind_of_object_warns_nothing():
    """Python 3.12+ warns (DeprecationWarning) when a process with threads
    forks: interproc's shared-memory objects and Manager must leave no
    thread behind that would make a user's fork() warn."""
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", FORK_AFTER_USE],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "0", "1"], (out.stdout, out.stderr)
