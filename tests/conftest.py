"""Fixtures shared by the whole suite.

- every test is checked for leftover ``/dev/shm`` entries;
- multi-process tests run under fork, spawn and forkserver;
- named objects get unique names and are unlinked afterwards.
"""

import multiprocessing
import os
import sys
import time
import uuid

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# Children started by spawn/forkserver unpickle their targets by reference,
# so _helpers must be importable there: multiprocessing copies sys.path into
# the child's preparation data, which makes this insert reach them too.
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import _helpers  # noqa: E402

START_METHODS = ("fork", "spawn", "forkserver")

# Child processes may still be exiting (and dropping their last handle) when
# a test returns, so a leftover entry only counts once it has outlived this.
SHM_GRACE_SECONDS = 1.0


@pytest.fixture(autouse=True)
def no_shm_leaks():
    before = _helpers.shm_entries()
    yield
    deadline = time.monotonic() + SHM_GRACE_SECONDS
    while True:
        leaked = _helpers.shm_entries() - before
        if not leaked or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if leaked:
        # Remove our own leftovers so one leak does not linger on the machine;
        # entries we cannot attribute to this run are only reported.
        ours = f"{_helpers.SHM_PREFIX}t-{os.getpid()}-"
        for entry in leaked:
            if entry.startswith(ours):
                try:
                    os.unlink(os.path.join(_helpers.SHM_DIR, entry))
                except FileNotFoundError:
                    pass
        pytest.fail(f"test left new /dev/shm entries: {sorted(leaked)}", pytrace=False)


@pytest.fixture(params=START_METHODS)
def start_method(request):
    """A multiprocessing context for each start method."""
    return multiprocessing.get_context(request.param)


@pytest.fixture
def unique_name():
    """A factory of unique object names; every name made is unlinked afterwards.

    Call it (``unique_name()``) once per name needed; ``suffix`` is appended
    for tests that need a name of a particular shape.
    """
    made = []

    def make(suffix=""):
        name = f"t-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
        made.append(name)
        return name

    yield make

    import interproc

    problems = []
    for name in made:
        try:
            interproc.unlink(name)
        except FileNotFoundError:
            pass
        except Exception as exc:
            # Refusing a name that was never valid is right; failing to remove
            # one that exists (a damaged segment, say) is not.
            path = _helpers.shm_path(name)
            if os.path.lexists(path):
                problems.append(f"interproc.unlink({name!r}) raised {exc!r}")
                os.unlink(path)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
