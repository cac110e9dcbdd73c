"""The command line and the examples, end to end, as a user runs them."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEED_LINES = [
    r"Process to write: \d+",
    r"Put A to queue\.\.\.",
    r"Get A from queue\.",
    r"Put B to queue\.\.\.",
    r"Get B from queue\.",
    r"Put C to queue\.\.\.",
    r"Get C from queue\.",
]


def run(*args, timeout=60):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


START_METHODS = ["fork", "spawn", "forkserver"]


def under_method(method, path, *args):
    """The arguments that make ``python`` run the program at ``path`` as
    ``python path args`` would, with ``method`` as the default start method,
    which the program does not choose itself."""
    code = (
        "import multiprocessing, runpy, sys\n"
        f"multiprocessing.set_start_method({method!r})\n"
        f"sys.argv = {[path, *args]!r}\n"
        f"runpy.run_path({path!r}, run_name='__main__')\n"
    )
    return ["-c", code]


def run_under(method, path, timeout=60):
    return run(*under_method(method, path), timeout=timeout)


def check_seed_output(stdout):
    lines = stdout.splitlines()
    for pattern in SEED_LINES:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, stdout)
    assert any(re.fullmatch(r"Process to read: \d+", line) for line in lines), stdout
    # Each item is put before it is got.
    for item in "ABC":
        assert lines.index(f"Put {item} to queue...") < lines.index(f"Get {item} from queue.")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_demo_runs_the_seed_queue_example_and_ends_by_itself(method):
    result = run("-m", "interproc", "demo", "--start-method", method)
    assert result.returncode == 0, result.stderr
    check_seed_output(result.stdout)
    # The whole demo runs every section.
    check_pipe_output(result.stdout)
    check_manager_output(result.stdout)
    check_asyncio_output(result.stdout)


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_example_runs_unchanged_on_interproc(method):
    result = run_under(method, os.path.join("examples", "queue_seed.py"))
    assert result.returncode == 0, result.stderr
    check_seed_output(result.stdout)


def check_pipe_output(stdout):
    lines = stdout.splitlines()
    assert lines.count("parent rec: [42, None, 'hello']") == 1, stdout
    assert lines.count("child rec: 666") == 1, stdout


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_demo_runs_the_seed_pipe_example_and_ends_by_itself(method):
    # The seed's own version hangs in join() on a child that loops for ever.
    result = run("-m", "interproc", "demo", "pipe", "--start-method", method, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "== Pipe ==" in result.stdout
    check_pipe_output(result.stdout)


@pytest.mark.parametrize("method", START_METHODS)
def test_pipe_example_runs_on_interproc(method):
    result = run_under(method, os.path.join("examples", "pipe_seed.py"), timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_pipe_output(result.stdout)


MANAGER_LINES = [
    "{1: '1', '2': 2}",
    "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
]


def each_line_once(stdout, expected):
    """The lines of ``stdout``, after checking that each of ``expected`` is there once."""
    lines = stdout.splitlines()
    for line in expected:
        assert lines.count(line) == 1, (line, stdout)
    return lines


def check_manager_output(stdout):
    each_line_once(stdout, MANAGER_LINES)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_demo_runs_the_seed_manager_example(method):
    result = run("-m", "interproc", "demo", "manager", "--start-method", method)
    assert result.returncode == 0, result.stderr
    assert "== Manager ==" in result.stdout
    check_manager_output(result.stdout)


ASYNCIO_FIRST = "4 requests awaiting 2 worker processes at once"
ASYNCIO_ANSWERS = [f"request {i}: {n} squared is {n * n}" for i, n in enumerate((3, 5, 7, 9))]
ASYNCIO_LAST = "4 answers, each routed by its id to the coroutine awaiting it"


def check_asyncio_output(stdout):
    # The answers arrive in whatever order the workers finish, between
    # the first line and the last.
    lines = each_line_once(stdout, [ASYNCIO_FIRST, *ASYNCIO_ANSWERS, ASYNCIO_LAST])
    answers = [lines.index(line) for line in ASYNCIO_ANSWERS]
    assert lines.index(ASYNCIO_FIRST) < min(answers), stdout
    assert lines.index(ASYNCIO_LAST) > max(answers), stdout


@pytest.mark.parametrize("method", START_METHODS)
def test_demo_runs_the_asyncio_section(method):
    result = run("-m", "interproc", "demo", "asyncio", "--start-method", method, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "== asyncio ==" in result.stdout
    check_asyncio_output(result.stdout)


def test_demo_help_describes_the_asyncio_section():
    result = run("-m", "interproc", "demo", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "asyncio:" in text and "get_async()" in text


SERVER_ANSWERS = [
    "GET /primes/10 -> primes below 10: 4",
    "GET /primes/100 -> primes below 100: 25",
    "GET /primes/1000 -> primes below 1000: 168",
    "GET /primes/10000 -> primes below 10000: 1229",
    "GET /primes/100000 -> primes below 100000: 9592",
    "GET /primes/1000000 -> primes below 1000000: 78498",
    "try GET /primes/N",
    "2 workers stopped with exit codes [0, 0]",
]


# The examples whose whole output is known: the manager's, and the
# server's answers to its built-in client, after which it stops.
EXACT_OUTPUTS = {"manager_seed.py": MANAGER_LINES, "async_server.py": SERVER_ANSWERS}


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("example", sorted(EXACT_OUTPUTS))
def test_example_runs_on_interproc_and_prints_exactly(example, method):
    result = run_under(method, os.path.join("examples", example))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == EXACT_OUTPUTS[example]


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("when", ["while the workers start", "after a request"])
def test_async_server_example_stops_cleanly_on_ctrl_c(method, when):
    import signal
    import urllib.request

    port = _free_port()
    # The default SIGINT handler, as in a terminal (a runner started in the
    # background may ignore SIGINT), and a process group of its own, so
    # that Ctrl-C reaches the workers too, as a terminal's does. Sent at
    # once, it finds the workers still starting under spawn and forkserver.
    proc = subprocess.Popen(
        [sys.executable, *under_method(method, os.path.join("examples", "async_server.py"),
                                       "--serve", "--port", str(port))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.setsid()),
    )
    try:
        assert "serving on" in proc.stdout.readline()
        if when == "after a request":
            url = f"http://127.0.0.1:{port}/primes/1000"
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.read() == b"primes below 1000: 168\n"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""
    assert out.splitlines() == ["2 workers stopped with exit codes [0, 0]"]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_programs():
    """The README's complete programs: its Python blocks with a main guard."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    return [b for b in blocks if 'if __name__ == "__main__":' in b]


README_PROGRAMS = readme_programs()


def test_the_readme_has_programs_to_run():
    assert len(README_PROGRAMS) >= 6


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("index", range(len(README_PROGRAMS)))
def test_readme_program_runs_and_prints_what_it_says(tmp_path, index, method):
    program = README_PROGRAMS[index]
    path = tmp_path / f"readme_{index}.py"
    path.write_text(program)
    result = run_under(method, str(path))
    assert result.returncode == 0, (program, result.stderr)
    assert result.stdout.strip(), program
    # `print(...)   # what it prints` in the README is a promise.
    for expected in re.findall(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$", program, flags=re.M):
        assert expected in result.stdout, (expected, result.stdout)


@pytest.mark.parametrize("command", [[], ["demo"], ["ls"], ["rm"], ["bench"]])
def test_help_explains_every_command(command):
    result = run("-m", "interproc", *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_unknown_command_fails_with_usage():
    result = run("-m", "interproc", "frobnicate")
    assert result.returncode != 0
    assert "usage:" in result.stderr


def test_bench_smoke_run_prints_a_table():
    # Benchmarks are measured by `make bench`; this only checks the command works.
    result = run("-m", "interproc", "bench", "--quick", "--case", "ping-pong", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "interproc.Queue" in result.stdout


def test_bench_container_cases_smoke_run():
    # The container cases, their Manager peers, and a case with a second
    # figure (RSS beside PSS) in the measurements.
    result = run("-m", "interproc", "bench", "--quick", "--case", "dict-child-set-get",
                 "--case", "list-read", "--case", "dict-memory", timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("interproc.SharedDict", "interproc.SharedList", "mp Manager().dict()",
                 "MiB PSS", "MiB RSS"):
        assert text in result.stdout


def test_bench_array_cases_smoke_run(tmp_path):
    # A pattern picks both 1 GiB cases; --quick moves 1 MiB arrays in them.
    # faster_fifo is in the bench extras only: without it, its column says
    # skipped.  The picture needs matplotlib (bench extras) and is otherwise
    # skipped with a note, without failing the run.
    picture = tmp_path / "curve.png"
    result = run("-m", "interproc", "bench", "--quick", "--case", "array-*-1g",
                 "--plot", str(picture), timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("1 GiB array queue", "1 GiB array pipe", "interproc.Queue", "interproc.Pipe",
                 "mp.Queue", "mp.Pipe", "SharedMemory + np.copyto by hand",
                 "np.copyto in one process (floor)", "≥ 0.5× the np.copyto floor"):
        assert text in result.stdout, (text, result.stdout)
    assert "failed" not in result.stdout
    assert "array-queue-1k" not in result.stderr
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no picture" in result.stderr
    else:
        assert picture.read_bytes().startswith(b"\x89PNG"), result.stderr


def test_bench_case_pattern_that_matches_nothing_is_refused():
    result = run("-m", "interproc", "bench", "--quick", "--case", "array-*-2g")
    assert result.returncode == 2
    assert "unknown case 'array-*-2g'" in result.stderr


def test_bench_redis_cases_smoke_run():
    # Each Redis case starts and stops its own redis-server on loopback.
    import _redis_helpers

    _redis_helpers.require_redis()
    result = run("-m", "interproc", "bench", "--quick", "--case", "redis-queue",
                 "--case", "redis-dict", "--case", "redis-batch", timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("interproc Manager(url).Queue()", "redis-py RPUSH/BLPOP",
                 "interproc Manager(url).dict()", "redis-py HSET/HGET",
                 "interproc put_many/get_many", "local redis-server"):
        assert text in result.stdout
    assert "skipped" not in result.stdout and "failed" not in result.stdout


def test_bench_asyncio_cases_smoke_run():
    # aiomultiprocess is in the bench extras only: without it, its column
    # says skipped and the other contenders still run.
    result = run("-m", "interproc", "bench", "--quick", "--async-idle-seconds", "0.2",
                 "--case", "async-ping-pong", "--case", "async-1to1",
                 "--case", "async-idle-cpu", "--case", "async-10k-waiters", timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("interproc put_async + get_async", "mp.Queue put + run_in_executor(get)",
                 "aiomultiprocess Pool.apply", "interproc put + get (blocking)",
                 "interproc put_async/get_async", "interproc 1,000 × get_async",
                 "µs wake"):
        assert text in result.stdout, (text, result.stdout)
    # The 10,000 waiting coroutines' counts: figures, not targets.
    for pattern in (r"\| \d+ threads? \|", r"\| \d+ descriptors? added \|",
                    r"\| 10,\d{3} descriptors \|"):
        assert re.search(pattern, result.stdout), (pattern, result.stdout)
    assert "failed" not in result.stdout
