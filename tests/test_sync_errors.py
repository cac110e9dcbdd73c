"""User mistakes with the synchronization primitives raise exceptions that
name them; nothing crashes and nothing is left behind."""

import multiprocessing
import os
import threading
import time

import pytest

import interproc

import _helpers

KINDS = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event"]
SEMAPHORES = ["Semaphore", "BoundedSemaphore"]


def blocked(kind):
    """A fresh interproc object of ``kind`` on which a wait would block."""
    obj = getattr(interproc, kind)(0) if kind in SEMAPHORES else getattr(interproc, kind)()
    if kind == "Lock":
        obj.acquire()
    return obj


def in_other_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    assert out, "the thread hung or raised"
    return out[0]


def timed_wait(kind, obj):
    """The kind's waiting call, taking only a timeout."""
    if kind == "Event":
        return lambda timeout: obj.wait(timeout)
    return lambda timeout: obj.acquire(timeout=timeout)


# ---------------------------------------------------------- constructors

@pytest.mark.parametrize("kind", SEMAPHORES)
@pytest.mark.parametrize("bad", [-1, -(2**40)], ids=str)
def test_negative_semaphore_value_is_value_error(kind, bad):
    """threading says ValueError; multiprocessing lets sem_init's EINVAL out
    as an OSError.  ValueError names the mistake."""
    with pytest.raises(ValueError):
        getattr(interproc, kind)(bad)


@pytest.mark.parametrize("kind", SEMAPHORES)
def test_multiprocessing_rejects_a_negative_value_too(kind):
    """What interproc's ValueError stands in for."""
    with pytest.raises(OSError):
        getattr(multiprocessing, kind)(-1)


@pytest.mark.parametrize("kind", SEMAPHORES)
@pytest.mark.parametrize("bad", ["3", 1.5, None, [1], b"1"], ids=repr)
def test_non_int_semaphore_value_is_type_error(kind, bad):
    with pytest.raises(TypeError):
        getattr(multiprocessing, kind)(bad)
    with pytest.raises(TypeError):
        getattr(interproc, kind)(bad)


@pytest.mark.parametrize("kind", SEMAPHORES)
def test_semaphore_value_beyond_machine_words_is_rejected(kind):
    with pytest.raises((ValueError, OverflowError)):
        getattr(interproc, kind)(2**80)


@pytest.mark.parametrize("kind", SEMAPHORES)
def test_rejected_value_leaves_no_named_segment(unique_name, kind):
    name = unique_name()
    with pytest.raises(ValueError):
        getattr(interproc, kind)(-1, name=name)
    assert not os.path.exists(_helpers.shm_path(name))


@pytest.mark.parametrize("kind", KINDS)
def test_options_are_keyword_only(kind):
    cls = getattr(interproc, kind)
    with pytest.raises(TypeError):
        cls(1, "a-name") if kind in SEMAPHORES else cls("a-name")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["yes", 1, 0], ids=repr)
def test_create_must_be_none_or_bool(unique_name, kind, bad):
    with pytest.raises(TypeError):
        getattr(interproc, kind)(name=unique_name(), create=bad)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_mode(unique_name, kind):
    cls = getattr(interproc, kind)
    with pytest.raises(TypeError):
        cls(name=unique_name(), mode="0600")
    with pytest.raises(ValueError):
        cls(name=unique_name(), mode=0o1000)
    with pytest.raises(ValueError):
        cls(name=unique_name(), mode=-1)


# ------------------------------------------------------------------ names

@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "/lead", "trail/", "../escape", "x" * 201, "nul\0byte"],
    ids=["empty", "slash", "leading-slash", "trailing-slash", "dotdot", "201-chars", "nul"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_invalid_names_raise_value_error(kind, bad):
    with pytest.raises(ValueError):
        getattr(interproc, kind)(name=bad)
    assert not any(e.startswith(_helpers.SHM_PREFIX) and "escape" in e for e in _helpers.shm_entries())


@pytest.mark.parametrize("bad", [123, b"bytes-name", ["x"], 1.5, object()], ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("kind", KINDS)
def test_non_str_names_raise_type_error(kind, bad):
    with pytest.raises(TypeError):
        getattr(interproc, kind)(name=bad)


# ---------------------------------------------------------------- timeout

@pytest.fixture(params=["interproc", "multiprocessing"])
def impl(request):
    return interproc if request.param == "interproc" else multiprocessing


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_negative_timeout_means_do_not_wait_as_multiprocessing(impl, kind):
    """multiprocessing's SemLock clamps a negative timeout to 0: one try, no
    error.  interproc matches it rather than raising ValueError as threading
    and interproc's own queues do, because code written against
    multiprocessing (deadline - now, gone negative) must keep working."""
    obj = getattr(impl, kind)()
    assert obj.acquire(timeout=-1) is True
    if kind == "RLock":
        assert obj.acquire(timeout=-1) is True  # the owner re-enters
        obj.release()
        obj.release()
        assert in_other_thread(lambda: obj.acquire(timeout=-1)) is True
        assert obj.acquire(timeout=-0.5) is False
        return
    t0 = time.monotonic()
    for bad in (-1, -0.5, -1e-9, -1e10):
        assert obj.acquire(timeout=bad) is False
    assert time.monotonic() - t0 < 0.05


def test_negative_event_wait_returns_false_at_once(impl):
    ev = impl.Event()
    t0 = time.monotonic()
    assert ev.wait(-1) is False
    assert ev.wait(timeout=-0.5) is False
    assert time.monotonic() - t0 < 0.05
    ev.set()
    assert ev.wait(-1) is True


def test_negative_timeout_with_block_false_is_ignored(impl):
    lock = impl.Lock()
    assert lock.acquire(False, -1) is True
    assert lock.acquire(False, -1) is False


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["1", [1], b"1"], ids=repr)
def test_non_number_timeout_is_type_error(kind, bad):
    obj = blocked(kind)
    with pytest.raises(TypeError):
        timed_wait(kind, obj)(bad)
    mp_obj = getattr(multiprocessing, kind)(0) if kind in SEMAPHORES else getattr(multiprocessing, kind)()
    if kind == "Lock":
        mp_obj.acquire()
    with pytest.raises(TypeError):
        timed_wait(kind, mp_obj)(bad)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_timeout_does_not_hang(kind):
    obj = blocked(kind)
    try:
        result = timed_wait(kind, obj)(float("nan"))
    except ValueError:
        return
    assert result is False


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_timeout_beyond_nanosecond_range_is_fine(kind):
    """1e10 s is more nanoseconds than an int64 holds; a deadline computed
    naively overflows.  Nothing needs to wait here."""
    obj = getattr(interproc, kind)()
    assert obj.acquire(timeout=1e10) is True
    obj.release()
    ev = interproc.Event()
    ev.set()
    assert ev.wait(1e10) is True


@pytest.mark.timeout(10)
def test_infinite_timeout_waits_like_none():
    ev = interproc.Event()
    ev.set()
    assert ev.wait(float("inf")) is True
    lock = interproc.Lock()
    assert lock.acquire(timeout=float("inf")) is True


# ---------------------------------------------------------------- release

@pytest.mark.parametrize("kind", SEMAPHORES)
@pytest.mark.parametrize("bad", [0, -1], ids=str)
def test_release_n_below_one_is_value_error(kind, bad):
    """As threading.Semaphore.release(n)."""
    sem = getattr(interproc, kind)(1)
    sem.acquire()
    with pytest.raises(ValueError):
        sem.release(bad)
    assert sem.get_value() == 0


@pytest.mark.parametrize("kind", SEMAPHORES)
@pytest.mark.parametrize("bad", ["1", 1.0, None], ids=repr)
def test_release_n_non_int_is_type_error(kind, bad):
    sem = getattr(interproc, kind)(1)
    sem.acquire()
    with pytest.raises(TypeError):
        sem.release(bad)
    assert sem.get_value() == 0


def test_semaphore_release_beyond_machine_words_is_rejected():
    sem = interproc.Semaphore(0)
    with pytest.raises((ValueError, OverflowError)):
        sem.release(2**80)
    assert sem.get_value() == 0


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_release_takes_no_argument(kind):
    """As multiprocessing's: release(n) is a semaphore's.  A Lock that took
    release(2) and released once would hide a caller's mistake."""
    with pytest.raises(TypeError):
        getattr(multiprocessing, kind)().release(1)
    lock = getattr(interproc, kind)()
    lock.acquire()
    with pytest.raises(TypeError):
        lock.release(1)
    lock.release()


def test_lock_error_messages_name_the_mistake():
    with pytest.raises(ValueError, match="(?i)releas"):
        interproc.Lock().release()
    with pytest.raises(ValueError, match="(?i)releas"):
        interproc.BoundedSemaphore(1).release()
    with pytest.raises(AssertionError, match="(?i)own"):
        interproc.RLock().release()
