"""What the asyncio test modules share: the loops they run on and the
fixtures that run them."""

import asyncio

import pytest

from interproc import _aio

from _helpers import TIMEOUT

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])

# How late an awaited timeout may end on a loaded machine: the loop's
# timers are not real-time.  Early is never allowed.
LATE = 1.0


@pytest.fixture(autouse=True)
def rings_only(monkeypatch):
    """This process's loops get no safety sweep: a wait that ends does so
    because its bell rang (the sweep has a test of its own)."""
    monkeypatch.setattr(_aio, "SWEEP", 3600.0)


@pytest.fixture(params=LOOPS)
def arun(request):
    """Run a coroutine function to completion on a fresh loop of the kind."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def run(coro_fn, *args):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro_fn(*args), TIMEOUT))

    return run
