"""torch tensors through interproc, as through torch.multiprocessing.

torch registers its reductions with multiprocessing's ForkingPickler (on
``import torch``), and interproc pickles with ForkingPickler: a tensor sent
through an interproc Queue or Pipe is moved to shared memory and shared,
exactly as torch.multiprocessing's queues do.  torch is a test-only extra:
``pip install torch==2.13.0`` (CPU build); without it these tests skip,
except where INTERPROC_REQUIRE_TORCH=1 asks for it on Python 3.11.
"""
import os
import sys

import pytest

if os.environ.get("INTERPROC_REQUIRE_TORCH") == "1" and sys.version_info[:2] == (3, 11):
    import torch
else:
    torch = pytest.importorskip("torch")

import torch.multiprocessing as torch_mp  # noqa: E402

# A child forked after torch's OpenMP pool ran hangs in its first parallel
# operation (torch's own rule: fork before using threads, or use one);
# one thread keeps every test free to fork.
torch.set_num_threads(1)

import interproc  # noqa: E402

import _torch_helpers as th  # noqa: E402
from _helpers import CHILD_TIMEOUT, join_ok, start  # noqa: E402


def queues(name, ctx):
    if name == "interproc":
        return interproc.Queue(), interproc.Queue()
    return ctx.Queue(), ctx.Queue()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_tensors_pass_as_through_torch_multiprocessing(method):
    """The same values, dtype, shape and strides, moved to shared memory;
    and a tensor already in shared memory is shared: what the child adds
    shows in the parent."""
    ctx = torch_mp.get_context(method)
    seen = {}
    for name in ("torch.multiprocessing", "interproc"):
        q, out = queues(name, ctx)
        p = start(ctx, th.receive_and_report, q, out)
        try:
            t = torch.arange(1_000_000, dtype=torch.float32).reshape(1000, 1000).t()
            q.put(t)
            report = out.get(timeout=CHILD_TIMEOUT)
            shared = torch.zeros(16, dtype=torch.int64).share_memory_()
            q.put(shared)
            assert out.get(timeout=CHILD_TIMEOUT) == "added"
            assert shared.tolist() == [1] * 16, name
            seen[name] = report
        finally:
            join_ok(p)
    assert seen["interproc"] == seen["torch.multiprocessing"]
    assert seen["interproc"][3] is True  # moved to shared memory on the way


def test_tensors_over_a_pipe_and_in_containers():
    a, b = interproc.Pipe()
    t = torch.randn(256, 256)
    a.send({"w": t, "step": 3})
    got = b.recv()
    assert torch.equal(got["w"], t) and got["step"] == 3
    q = interproc.Queue()
    q.put_many([t, t * 2])
    first, second = q.get_many(max_items=2)
    assert torch.equal(first, t) and torch.equal(second, t * 2)
