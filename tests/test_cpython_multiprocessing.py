"""CPython's own multiprocessing tests against interproc, under each start
method: tests/cpython_multiprocessing.py, run in a fresh interpreter.

Every test in scope must pass or be one of the runner's listed differences
(docs/api.md, "Differences from multiprocessing").  The runner ends itself,
with every thread's stack, when one test hangs; the timeout here catches
anything else, so that a hang fails the test instead of stalling the suite.
"""

import ast
import os
import subprocess
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(TESTS_DIR, "cpython_multiprocessing.py")
API_DOC = os.path.join(TESTS_DIR, os.pardir, "docs", "api.md")

# Generous: the spawn run takes about a minute on an idle 2-core machine.
RUN_TIMEOUT = 1200

try:
    import test._test_multiprocessing  # noqa: F401
except ImportError:  # pragma: no cover - depends on how Python was installed
    HAVE_TESTS = False
else:
    HAVE_TESTS = True


def _text(out):
    # TimeoutExpired carries bytes even when the run was asked for text.
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


@pytest.mark.skipif(not HAVE_TESTS, reason="this Python has no test package (test._test_multiprocessing)")
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_cpython_multiprocessing_tests_pass_on_interproc(method):
    try:
        r = subprocess.run([sys.executable, RUNNER, method, "--test-timeout", "400"],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"CPython's multiprocessing tests did not finish in {RUN_TIMEOUT}s:\n"
                    f"{_text(exc.stdout)[-4000:]}\n{_text(exc.stderr)[-4000:]}")
    assert r.returncode == 0, f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}"


def _listed_differences():
    """The runner's DIFFERENCES keys, read from its source (importing it
    would import CPython's test module)."""
    with open(RUNNER, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "DIFFERENCES":
            return [ast.literal_eval(k) for k in node.value.keys]
    raise AssertionError("no DIFFERENCES in the runner")


def test_every_listed_difference_is_explained_in_the_api_docs():
    with open(API_DOC, encoding="utf-8") as f:
        doc = f.read()
    section = doc[doc.index("### What CPython's multiprocessing tests show"):]
    listed = _listed_differences()
    assert listed
    missing = [key for key in listed if key.split(".")[1] not in section]
    assert not missing, f"listed in the runner but not explained in docs/api.md: {missing}"
