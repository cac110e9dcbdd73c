"""What the asyncio test modules share: the loops they run on and the
fixtures that run them."""

import pytest

from interproc import _aio

import _aio_helpers as h
from _helpers import TIMEOUT

# How late an awaited timeout may end on a loaded machine: the loop's
# timers are not real-time.  Early is never allowed.
LATE = 1.0


@pytest.fixture(autouse=True)
def rings_only(monkeypatch):
    """This process's loops get no safety sweep: a wait that ends does so
    because its bell rang (the sweep has a test of its own)."""
    monkeypatch.setattr(_aio, "SWEEP", 3600.0)


@pytest.fixture(params=h.LOOPS)
def arun(request):
    """Run a coroutine function to completion on a fresh loop of the kind."""
    return h.runner(request.param, TIMEOUT)
