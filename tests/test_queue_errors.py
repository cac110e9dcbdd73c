"""User mistakes raise exceptions that name them; nothing crashes."""

import os
import pickle

import pytest

import interproc
from interproc import Empty, Full, JoinableQueue, Queue, SimpleQueue

KINDS = [Queue, SimpleQueue, JoinableQueue]
BOUNDED_KINDS = [Queue, JoinableQueue]


# ---------------------------------------------------------------- maxsize

@pytest.mark.parametrize("cls", BOUNDED_KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", ["3", 1.5, None, [1], b"1"], ids=repr)
def test_maxsize_non_int_is_type_error(cls, bad):
    with pytest.raises(TypeError):
        cls(maxsize=bad)


@pytest.mark.parametrize("cls", BOUNDED_KINDS, ids=lambda c: c.__name__)
def test_negative_maxsize_is_unbounded_like_multiprocessing(cls):
    """multiprocessing.Queue(maxsize<=0) is unbounded; so is ours."""
    q = cls(maxsize=-5)
    for i in range(100):
        q.put(i, block=False)
    assert not q.full()
    assert q.qsize() == 100


def test_maxsize_is_positional_and_everything_else_keyword_only():
    assert Queue(4).maxsize == 4
    assert JoinableQueue(4).maxsize == 4
    with pytest.raises(TypeError):
        Queue(4, "name")
    with pytest.raises(TypeError):
        SimpleQueue(4)


# --------------------------------------------------------- capacity_bytes

@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [0, -1, -(2**40), 2**40 + 1, 2**41], ids=str)
def test_absurd_capacity_is_value_error(cls, bad):
    with pytest.raises(ValueError):
        cls(capacity_bytes=bad)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_capacity_beyond_machine_words_is_rejected(cls):
    with pytest.raises((ValueError, OverflowError)):
        cls(capacity_bytes=2**80)


@pytest.mark.parametrize("bad", ["64k", 1.5, [65536]], ids=repr)
def test_capacity_non_int_is_type_error(bad):
    with pytest.raises(TypeError):
        Queue(capacity_bytes=bad)


def test_rejected_capacity_leaves_no_named_segment(unique_name):
    name = unique_name()
    with pytest.raises(ValueError):
        Queue(name=name, capacity_bytes=0)
    with pytest.raises(FileNotFoundError):
        interproc.attach(name)


# ---------------------------------------------------------------- timeout

@pytest.mark.parametrize("cls", BOUNDED_KINDS, ids=lambda c: c.__name__)
def test_negative_timeout_is_value_error(cls):
    q = cls(maxsize=1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(True, -0.5)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get_many(timeout=-1)
    q.put("x")  # full: put would have to wait
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put("y", timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put_many(["y"], timeout=-1)
    assert q.get_nowait() == "x"


def test_negative_timeout_is_rejected_even_when_it_would_not_wait():
    q = Queue()
    q.put(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(2, timeout=-1)
    assert q.qsize() == 1


@pytest.mark.parametrize("bad", ["1", [1], b"1"], ids=repr)
def test_non_number_timeout_is_type_error(bad):
    q = Queue()
    with pytest.raises(TypeError):
        q.get(timeout=bad)
    with pytest.raises(TypeError):
        q.put(1, timeout=bad)


@pytest.mark.timeout(10)
def test_nan_timeout_does_not_hang():
    q = Queue()
    with pytest.raises((ValueError, Empty)):
        q.get(timeout=float("nan"))


def test_timeout_beyond_nanosecond_range_is_fine():
    """1e10 s is more nanoseconds than an int64 holds; a deadline computed
    naively overflows.  With an item present nothing needs to wait."""
    q = Queue()
    q.put(1)
    assert q.get(timeout=1e10) == 1
    q.put(2)
    assert q.get_many(timeout=1e10) == [2]
    q = Queue(maxsize=1)
    q.put(3, timeout=1e10)
    assert q.get() == 3


# -------------------------------------------------------------- max_items

@pytest.mark.parametrize("bad", [0, -1, -100])
def test_max_items_must_be_positive(bad):
    q = Queue()
    q.put(1)
    with pytest.raises(ValueError):
        q.get_many(max_items=bad)
    assert q.qsize() == 1


@pytest.mark.parametrize("bad", ["2", 1.5], ids=repr)
def test_max_items_non_int_is_type_error(bad):
    q = Queue()
    q.put(1)
    with pytest.raises(TypeError):
        q.get_many(max_items=bad)
    assert q.qsize() == 1


def test_put_many_non_iterable_is_type_error():
    q = Queue()
    with pytest.raises(TypeError):
        q.put_many(5)
    assert q.empty()


def test_put_many_with_unpicklable_item_keeps_queue_consistent():
    """Pickling happens before anything is appended, or up to the bad item;
    either way the queue holds a prefix of the batch, in order."""
    q = Queue()
    # What pickling a local lambda raises: AttributeError before 3.14,
    # PicklingError from 3.14 on.
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        q.put_many([1, 2, lambda: None, 4])
    got = q.get_many(block=False) if not q.empty() else []
    assert got in ([], [1, 2])
    q.put(5)
    assert q.get() == 5


# ------------------------------------------------------------------ close

@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_use_after_close(cls):
    q = cls()
    q.put(1)
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put(2)
    with pytest.raises(ValueError, match="closed"):
        q.get()
    with pytest.raises(ValueError, match="closed"):
        q.get_nowait()
    with pytest.raises(ValueError, match="closed"):
        q.put_many([2])
    with pytest.raises(ValueError, match="closed"):
        q.get_many()
    q.close()  # closing twice is allowed, as in multiprocessing


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_state_of_a_closed_queue_is_an_os_error_as_in_multiprocessing(cls):
    """multiprocessing's empty() on a closed (used) Queue, and on any closed
    SimpleQueue, raises OSError "handle is closed" (CPython's
    test_closed_queue_empty_exceptions and test_empty_exceptions)."""
    q = cls()
    q.put(1)
    q.close()
    for call in (q.empty, q.qsize):
        with pytest.raises(OSError, match="is closed"):
            call()
    with pytest.raises(OSError, match="is closed"):
        q.get()
    assert issubclass(interproc.queues.QueueClosedError, ValueError)


def test_task_done_after_close():
    q = JoinableQueue()
    q.put(1)
    q.get()
    q.close()
    with pytest.raises(ValueError):
        q.task_done()


def test_closed_queue_errors_are_not_empty_or_full():
    q = Queue(maxsize=1)
    q.close()
    with pytest.raises(ValueError) as info:
        q.get(block=False)
    assert not isinstance(info.value, (Empty, Full))


def test_only_joinable_has_task_done():
    assert not hasattr(Queue(), "task_done")
    assert not hasattr(Queue(), "join")
    assert not hasattr(SimpleQueue(), "task_done")


# --------------------------------------------------- foreign segments

def test_foreign_segment_is_segment_error(unique_name):
    name = unique_name()
    with open(f"/dev/shm/interproc.{name}", "wb") as f:
        f.write(b"not an interproc segment" * 100)
    with pytest.raises(interproc.SegmentError) as info:
        Queue(name=name)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


# --------------------------------------------------------- name and mode

@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [1, b"x", ("x",)], ids=repr)
def test_name_wrong_type(cls, bad):
    with pytest.raises(TypeError):
        cls(name=bad)


@pytest.mark.parametrize("bad", ["0600", 1.5, b"\x01"], ids=repr)
def test_mode_wrong_type(unique_name, bad):
    name = unique_name()
    with pytest.raises(TypeError):
        Queue(name=name, mode=bad)
    assert not os.path.exists(f"/dev/shm/interproc.{name}")


@pytest.mark.parametrize("bad", [-1, 0o10000, 2**40])
def test_mode_out_of_range(unique_name, bad):
    name = unique_name()
    with pytest.raises((ValueError, OverflowError)):
        Queue(name=name, mode=bad)
    assert not os.path.exists(f"/dev/shm/interproc.{name}")
