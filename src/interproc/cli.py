"""The ``interproc`` command: ``demo``, ``ls``, ``rm`` and ``bench``.

It is a thin layer over the public API (:func:`interproc.list_objects`,
:func:`interproc.unlink`, :class:`interproc.Queue`, :func:`interproc.Pipe`,
:func:`interproc.Manager`),
so whatever it shows or does can be done from Python with the same names.
:func:`main` returns an exit code instead of exiting, so it can be called
from tests and scripts.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import queue
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import interproc

__all__ = ["main"]

PROG = "interproc"


# --------------------------------------------------------------------- demo

_DEMO_ITEMS = ("A", "B", "C")
# The seed pauses up to a second per item; a fifth of that keeps the whole
# section under a second while the writer and reader still visibly interleave.
_DEMO_MAX_PAUSE = 0.2
# Only reached if the writer died without sending the sentinel: the reader
# then reports it instead of waiting forever, which is what the seed's reader
# would do (and why the seed had to terminate() it).
_DEMO_GET_TIMEOUT = 10.0


def _say(line: str) -> None:
    # One write per line: print() writes the text and the newline separately,
    # and with unbuffered stdout (python -u, PYTHONUNBUFFERED) the two
    # processes' lines then run into each other.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _queue_writer(q: interproc.Queue) -> None:
    _say(f"Process to write: {os.getpid()}")
    for value in _DEMO_ITEMS:
        _say(f"Put {value} to queue...")
        q.put(value)
        time.sleep(random.random() * _DEMO_MAX_PAUSE)
    q.put(None)


def _queue_reader(q: interproc.Queue) -> None:
    _say(f"Process to read: {os.getpid()}")
    while True:
        try:
            value = q.get(timeout=_DEMO_GET_TIMEOUT)
        except queue.Empty:
            print(
                f"Nothing from the writer for {_DEMO_GET_TIMEOUT:g} s; giving up.",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)
        if value is None:
            return
        _say(f"Get {value} from queue.")


def demo_queue(ctx: multiprocessing.context.BaseContext) -> int:
    """The seed's Queue example: a writer and a reader sharing one Queue."""
    q = interproc.Queue()
    writer = ctx.Process(target=_queue_writer, args=(q,), name="writer")
    reader = ctx.Process(target=_queue_reader, args=(q,), name="reader")
    writer.start()
    reader.start()
    writer.join()
    if writer.exitcode != 0:
        # Let the reader end now rather than after its timeout.
        q.put(None)
    reader.join()
    q.close()
    return _children_status(writer, reader)


def _pipe_child(conn: Any, parent_end: Any) -> None:
    # Under fork this process inherited the parent's end along with
    # everything else, and a pipe reaches end of stream only when every
    # process holding the far end has closed it: were this copy kept, the
    # parent closing its own would never end the loop below.  Under spawn
    # and forkserver the copy arrived as an argument and is closed the same.
    parent_end.close()
    conn.send([42, None, "hello"])
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            # The parent is done: this ends the loop the seed could only
            # end with terminate().
            return
        _say(f"child rec: {msg}")


def demo_pipe(ctx: multiprocessing.context.BaseContext) -> int:
    """The seed's Pipe example: a child sends a list and prints what comes back."""
    parent_conn, child_conn = interproc.Pipe()
    child = ctx.Process(target=_pipe_child, args=(child_conn, parent_conn), name="child")
    child.start()
    # Only the child may hold its end, so that if it dies the recv() below
    # raises EOFError instead of waiting for ever; that is also why no
    # timeout is needed here, unlike the Queue section.
    child_conn.close()
    status = 0
    try:
        msg = parent_conn.recv()
        _say(f"parent rec: {msg}")
        parent_conn.send("666")
    except (EOFError, BrokenPipeError) as exc:
        _error(f"demo: the child process went away early ({type(exc).__name__})")
        status = 1
    finally:
        parent_conn.close()
    child.join()
    return max(status, _children_status(child))


_MANAGER_WORKERS = 10


def _manager_child(d: Any, lst: Any) -> None:
    d[1] = "1"
    d["2"] = 2
    lst.append(1)


def demo_manager(ctx: multiprocessing.context.BaseContext, url: str | None = None) -> int:
    """The seed's Manager example: ten processes fill a shared dict and list.

    With ``url`` (a Redis URL) the same code runs on ``Manager(url)``: the
    dict and the list live on that Redis server, and the manager deletes
    them when the section ends.
    """
    if url is None:
        # As in the seed, one Manager() each; neither starts a server
        # process: the dict and the list live in shared memory.
        return _run_manager_section(ctx, interproc.Manager().dict(),
                                    interproc.Manager().list(range(5)))
    try:
        manager = interproc.Manager(url)
    except (ImportError, ValueError, OSError) as exc:
        # A bad URL, no redis-py, an unreachable server, refused credentials.
        _error(f"demo: cannot use the Redis server: {exc}")
        return 1
    with manager:
        return _run_manager_section(ctx, manager.dict(), manager.list(range(5)))


def _run_manager_section(ctx: multiprocessing.context.BaseContext, d: Any, lst: Any) -> int:
    workers = [
        ctx.Process(target=_manager_child, args=(d, lst), name=f"worker {i}")
        for i in range(_MANAGER_WORKERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    _say(str(d))
    _say(str(lst))
    return _children_status(*workers)


# Requests the asyncio section sends, and the worker processes that answer.
_ASYNC_NUMBERS = (3, 5, 7, 9)
_ASYNC_WORKERS = 2
# The first request takes longest, so answers come back out of order.
_ASYNC_WORK_SECONDS = 0.05


def _async_worker(jobs: interproc.Queue, results: interproc.Queue) -> None:
    # A plain blocking worker: only the side that awaits needs asyncio.
    for job_id, n in iter(jobs.get, None):
        time.sleep(_ASYNC_WORK_SECONDS * (len(_ASYNC_NUMBERS) - job_id))
        results.put((job_id, n * n))


async def _await_answers(jobs: interproc.Queue, results: interproc.Queue) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    # One future per request, filled by one dispatcher that routes each
    # answer by its id: many coroutines can wait on one results queue.
    answers = {job_id: loop.create_future() for job_id in range(len(_ASYNC_NUMBERS))}

    async def dispatch() -> None:
        for _ in answers:
            job_id, square = await results.get_async(timeout=_DEMO_GET_TIMEOUT)
            answers[job_id].set_result(square)

    async def request(job_id: int, n: int) -> None:
        await jobs.put_async((job_id, n))
        _say(f"request {job_id}: {n} squared is {await answers[job_id]}")

    _say(f"{len(answers)} requests awaiting {_ASYNC_WORKERS} worker processes at once")
    await asyncio.gather(dispatch(), *(request(i, n) for i, n in enumerate(_ASYNC_NUMBERS)))
    _say(f"{len(answers)} answers, each routed by its id to the coroutine awaiting it")


def demo_asyncio(ctx: multiprocessing.context.BaseContext) -> int:
    """Coroutines hand jobs to worker processes and await the answers with get_async()."""
    import asyncio

    jobs, results = interproc.Queue(), interproc.Queue()
    workers = [ctx.Process(target=_async_worker, args=(jobs, results), name=f"worker {i}")
               for i in range(_ASYNC_WORKERS)]
    for worker in workers:
        worker.start()
    status = 0
    try:
        asyncio.run(_await_answers(jobs, results))
    except queue.Empty:
        _error(f"demo: no answer from the workers for {_DEMO_GET_TIMEOUT:g} s")
        status = 1
    finally:
        for _ in workers:
            jobs.put(None)
        for worker in workers:
            worker.join()
        jobs.close()
        results.close()
    return max(status, _children_status(*workers))


class Demo(NamedTuple):
    key: str
    title: str
    run: Callable[[multiprocessing.context.BaseContext], int]


# In the order of the seed tutorial.
DEMOS: list[Demo] = [
    Demo("queue", "Queue", demo_queue),
    Demo("pipe", "Pipe", demo_pipe),
    Demo("manager", "Manager", demo_manager),
    Demo("asyncio", "asyncio", demo_asyncio),
]


def _children_status(*procs: multiprocessing.process.BaseProcess) -> int:
    status = 0
    for proc in procs:
        if proc.exitcode != 0:
            _error(f"demo: the {proc.name} process exited with code {proc.exitcode}")
            status = 1
    return status


def _demo_section(text: str) -> str:
    # A type= check rather than choices=: with choices=, argparse rejects
    # the empty list that nargs="*" gives when no section is named.
    key = text.lower()
    if key not in {demo.key for demo in DEMOS}:
        known = ", ".join(demo.key for demo in DEMOS)
        raise argparse.ArgumentTypeError(f"unknown section {text!r} (choose from {known})")
    return key


def _cmd_demo(args: argparse.Namespace) -> int:
    ctx = multiprocessing.get_context(args.start_method)
    wanted = set(args.sections) if args.sections else None
    status = 0
    for demo in DEMOS:
        if wanted is not None and demo.key not in wanted:
            continue
        # Flushed before any child starts: a forked child inherits unflushed
        # buffers and would print them a second time.
        _say(f"== {demo.title} ==")
        if demo.key == "manager" and args.url is not None:
            status = max(status, demo_manager(ctx, args.url))
        else:
            status = max(status, demo.run(ctx))
    return status


# ----------------------------------------------------------------------- ls

_INFO_FIELDS = ("name", "kind", "capacity_bytes", "items", "bytes_used", "pids", "state", "error",
                "owner", "uid", "file_mode", "foreign", "refused", "maxsize")
# More pids than this make the table unreadable; --json has them all.
_MAX_PIDS_SHOWN = 4


def _info_to_dict(info: Any) -> dict[str, Any]:
    # getattr rather than asdict/_asdict: ObjectInfo's container type is not
    # part of the documented API, only its field names are.
    row = {field: getattr(info, field, None) for field in _INFO_FIELDS}
    if row["pids"] is not None:
        row["pids"] = [int(pid) for pid in row["pids"]]
    return row


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f} {unit}"


def _show_name(name: str) -> str:
    # Names may hold any character but '/' and NUL; a newline or escape
    # sequence in one must not break the table or the terminal.
    return name if name and name.isprintable() else repr(name)


def _show_pids(pids: list[int] | None) -> str:
    if not pids:
        return "-"
    shown = ",".join(str(pid) for pid in pids[:_MAX_PIDS_SHOWN])
    if len(pids) > _MAX_PIDS_SHOWN:
        shown += f" +{len(pids) - _MAX_PIDS_SHOWN}"
    return shown


def _status(row: dict[str, Any]) -> str:
    if row["foreign"]:
        return f"foreign, not opened: {row['refused']}"
    if row["error"] is not None:
        return f"damaged: {row['error']}"
    return row["state"] or "ok"


def _format_table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("NAME", "KIND", "OWNER", "CAPACITY", "ITEMS", "USED", "PIDS", "STATUS")
    right_aligned = {3, 4, 5}
    cells = [header]
    for row in rows:
        cells.append(
            (
                _show_name(str(row["name"])),
                row["kind"] or "?",
                "?" if row["owner"] is None else _show_name(str(row["owner"])),
                _human_size(row["capacity_bytes"]),
                _show_count(row["items"]),
                _human_size(row["bytes_used"]),
                _show_pids(row["pids"]),
                _status(row),
            )
        )
    return _align(cells, right_aligned)


def _show_count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _align(cells: list[tuple[str, ...]], right_aligned: set[int]) -> list[str]:
    header = cells[0]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = []
    for line in cells:
        parts = [
            cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _cmd_ls(args: argparse.Namespace) -> int:
    mode = _shm_mode(args, "ls")
    if mode is None:
        return 2
    if args.url is not None:
        return _ls_redis(args)
    if args.anonymous:
        _error("ls: --anonymous needs --url: anonymous objects in shared memory have no name")
        return 2
    try:
        infos = interproc.list_objects(mode=mode)
    except OSError as exc:
        _error(f"ls: cannot list named objects: {exc}")
        return 1
    rows = sorted((_info_to_dict(info) for info in infos), key=lambda r: str(r["name"]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No named interproc objects (they live in /dev/shm/interproc.<name>).")
        return 0
    for line in _format_table(rows):
        print(line)
    damaged = [row["name"] for row in rows if row["error"] is not None]
    if damaged:
        # stderr, so that the table on stdout stays clean for scripts.
        noun = "object is" if len(damaged) == 1 else "objects are"
        _error(f"{len(damaged)} {noun} damaged; 'interproc rm NAME' removes one.")
    foreign = [row["name"] for row in rows if row["foreign"]]
    if foreign:
        noun = "entry was" if len(foreign) == 1 else "entries were"
        _error(f"{len(foreign)} foreign {noun} not opened: --mode does not trust them (another "
               "user's, writable by others, or not a segment file); the STATUS column says why.")
    return 0


def _redis_listing() -> Any:
    # Imported on use: redis-py is an optional extra, and `ls` without
    # --url must work without it.
    from interproc.backends.redis import listing
    return listing


def _ls_redis(args: argparse.Namespace) -> int:
    try:
        infos = _redis_listing().list_objects(args.url, anonymous=args.anonymous)
    except (ImportError, ValueError, OSError) as exc:
        # No redis-py, a bad URL, an unreachable server, refused credentials.
        _error(f"ls: cannot list the objects on {_redact(args.url)}: {exc}")
        return 1
    rows = [_info_to_dict(info) for info in infos]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        what = "objects" if args.anonymous else "named objects (--anonymous lists the others too)"
        print(f"No interproc {what} on {_redact(args.url)}.")
        return 0
    cells = [("NAME", "KIND", "MAXSIZE", "ITEMS", "USED", "STATUS")]
    for row in rows:
        cells.append((
            _show_name(str(row["name"])),
            row["kind"] or "?",
            _show_count(row["maxsize"]),
            _show_count(row["items"]),
            _human_size(row["bytes_used"]),
            _status(row),
        ))
    for line in _align(cells, {2, 3, 4}):
        print(line)
    damaged = [row["name"] for row in rows if row["error"] is not None]
    if damaged:
        noun = "object is" if len(damaged) == 1 else "objects are"
        _error(f"{len(damaged)} {noun} damaged; 'interproc rm --url URL NAME' removes one.")
    return 0


def _redact(url: str) -> str:
    try:
        from interproc.backends.redis.client import redact
    except ImportError:  # pragma: no cover - the module imports no redis-py
        return "the server"
    try:
        return redact(url)
    except ValueError:
        return repr(url)


# ----------------------------------------------------------------------- rm


def _cmd_rm(args: argparse.Namespace) -> int:
    mode = _shm_mode(args, "rm")
    if mode is None:
        return 2
    if args.url is not None:
        remove = functools.partial(_redis_listing().unlink, args.url)
    else:
        remove = functools.partial(_unlink_shm, mode=mode)
    status = 0
    for name in args.names:
        try:
            remove(name)
        except FileNotFoundError:
            if not args.force:
                _error(f"rm: {_show_name(name)}: no such object")
                status = 1
        except ImportError as exc:  # --url without redis-py: no name can be removed
            _error(f"rm: {exc}")
            return 1
        except (ValueError, OSError) as exc:
            # Like rm(1): report and go on with the other names.
            _error(f"rm: {_show_name(name)}: {exc}")
            status = 1
        else:
            if args.verbose:
                print(f"removed {_show_name(name)}")
    return status


def _unlink_shm(name: str, mode: int) -> None:
    interproc.unlink(name, mode=mode)


# -------------------------------------------------------------------- bench


def _cmd_bench(argv: list[str]) -> int:
    try:
        from interproc import bench
    except ImportError as exc:
        _error(
            f"bench: the benchmark runner cannot be loaded ({exc}). "
            "Install the package with its bench extras from a source tree: "
            "pip install '.[bench]' (or run 'make bench')."
        )
        return 1
    return _exit_code(bench.main(argv))


# --------------------------------------------------------------------- main


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - always present on 3.10+
        return str(getattr(interproc, "__version__", "unknown"))
    try:
        return version("interproc")
    except PackageNotFoundError:
        return str(getattr(interproc, "__version__", "unknown"))


def _octal_mode(text: str) -> int:
    try:
        mode = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode such as 600 or 666") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a permission mask between 000 and 777")
    return mode


def _add_mode_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--mode",
        type=_octal_mode,
        default=None,
        metavar="MODE",
        help=f"octal permission mask saying whom to trust (default: 600, only your own "
        f"segments that nobody else can write): {what}",
    )


def _add_url_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        default=None,
        help=f"redis://[user:password@]host:port/db, rediss://... (TLS) or unix:///path; a Redis "
        f"Cluster is recognized: {what}. Needs redis-py (pip install interproc[redis])",
    )


def _shm_mode(args: argparse.Namespace, command: str) -> int | None:
    """The --mode of a shared-memory command; None (after an error) when it
    was given with --url, where it means nothing."""
    if args.url is not None:
        if args.mode is not None:
            _error(f"{command}: --mode is about files in /dev/shm; it cannot go with --url")
            return None
        return 0o600
    return 0o600 if args.mode is None else args.mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Fast, crash-safe inter-process communication on shared memory: "
            "run the demo and benchmarks, list and remove named objects."
        ),
        epilog="Run 'interproc COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the tutorial examples on interproc",
        description=(
            "Run the tutorial's examples with interproc objects in place of "
            "multiprocessing's. Queue: a writer process puts A, B and C on an "
            "interproc.Queue and a reader process gets them, each printing as "
            "it goes; the reader stops at a None sentinel. Pipe: a child sends "
            "a list over an interproc.Pipe, the parent prints it and sends "
            "'666' back, the child prints that, and the parent's closing its "
            "end ends the child's loop with EOFError. Manager: ten processes "
            "each set two keys of a dict and append to a list made by "
            "interproc.Manager(), which keeps both in shared memory without a "
            "server process, and the parent prints them; with --url the same "
            "code runs on interproc.Manager(URL), which keeps them on a Redis "
            "server, so the workers could be on other machines. asyncio: "
            "coroutines put requests on an interproc.Queue with put_async, two "
            "worker processes answer with plain blocking get() and put(), and "
            "one dispatcher coroutine awaits the answers with get_async() and "
            "hands each, by its request id, to the coroutine awaiting it; no "
            "thread waits and nothing polls. Every section ends by "
            "itself. The exit code is 0 when every child exited cleanly."
        ),
    )
    demo.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        type=_demo_section,
        help=f"sections to run, of: {', '.join(d.key for d in DEMOS)} (default: all)",
    )
    demo.add_argument(
        "--start-method",
        choices=multiprocessing.get_all_start_methods(),
        default=None,
        help="how child processes are started (default: the platform's, as multiprocessing)",
    )
    demo.add_argument(
        "--url",
        metavar="URL",
        default=None,
        help=(
            "run the Manager section on a Redis server: redis://host:port/db, "
            "rediss://... (TLS) or unix:///path (a Redis Cluster is recognized); "
            "the Queue and Pipe sections stay in shared memory. Needs redis-py "
            "(pip install interproc[redis])"
        ),
    )
    demo.set_defaults(handler=_cmd_demo)

    ls = commands.add_parser(
        "ls",
        help="list named objects",
        description=(
            "List the named objects in /dev/shm/interproc.*: kind, owner, ring "
            "capacity, items queued, bytes in use and the live processes "
            "attached. A damaged segment (truncated or corrupt) is listed with "
            "what is wrong with it; 'interproc rm NAME' removes it. An entry "
            "that --mode does not trust (by default: another user's, or one "
            "that others may write, or anything but a regular file) is listed "
            "as foreign with its owner and why, and is never opened: nothing "
            "in it is read. With --url, the objects stored on that Redis "
            "server instead (named ones; --anonymous adds the others)."
        ),
    )
    ls.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects with exact byte counts, for scripts",
    )
    _add_mode_option(ls, "open and describe the entries a program passing mode=MODE would accept")
    _add_url_option(ls, "list the objects stored on a Redis server instead: their kind, maxsize, "
                    "items and the memory their keys use. Nothing stored is decoded")
    ls.add_argument(
        "--anonymous",
        action="store_true",
        help="with --url, list anonymous objects too (made without a name; a manager that was "
        "killed leaves its own behind)",
    )
    ls.set_defaults(handler=_cmd_ls)

    rm = commands.add_parser(
        "rm",
        help="remove named objects",
        description=(
            "Remove the names of named objects of any kind. Processes that "
            "have one open keep using it; its memory is freed when the last "
            "of them closes it. Only unlinks: nothing in the object is opened "
            "or read. A name that belongs to another user is refused (root "
            "included) unless --mode trusts its owner. Exits with 1 if any "
            "name could not be removed. With --url, removes objects stored "
            "on that Redis server: every key of each, at once."
        ),
    )
    rm.add_argument("names", nargs="+", metavar="NAME", help="name of an object, as 'interproc ls' shows it")
    rm.add_argument("-f", "--force", action="store_true", help="ignore names that do not exist")
    rm.add_argument("-v", "--verbose", action="store_true", help="print each name removed")
    _add_mode_option(
        rm,
        "also remove names of the owners MODE trusts: 666 (or any MODE letting others "
        "write) anyone's, 660 your groups'; removing another user's needs root",
    )
    _add_url_option(rm, "remove objects stored on a Redis server instead, with all their keys; "
                    "anonymous ones too, by the names 'ls --url URL --anonymous' shows")
    rm.set_defaults(handler=_cmd_rm)

    # Never parsed here: main() hands everything after "bench" to the
    # benchmark runner, so 'interproc bench --help' shows the runner's help.
    bench = commands.add_parser(
        "bench",
        help="run the benchmarks (see 'interproc bench --help')",
        add_help=False,
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    return _exit_code(args.handler(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``interproc`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code: 0 on success, 1 when the command failed, 2 on a
    usage error, 130 when interrupted.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(arguments)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors.
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away ('interproc ls | head'). Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
