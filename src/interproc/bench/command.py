"""``interproc bench``: options, the run, the report."""
from __future__ import annotations

import argparse
import sys
import time

from . import adapters
from . import cases as cases_module
from . import plot
from . import redis as redis_cases
from .machine import Machine, command_line, describe
from .report import section
from .runner import Series, Settings, TrialError, run_case

__all__ = ["main"]

_DESCRIPTION = """\
Measure interproc's Queue against multiprocessing.Queue, faster-fifo and
hyperq, its Pipe against multiprocessing.Pipe and pyzmq, its synchronization
primitives against multiprocessing's, its awaitable methods against
run_in_executor and aiomultiprocess, its SharedDict and SharedList
against multiprocessing's Manager proxies and UltraDict, its Redis
backend's queue and dict against the same operations written with redis-py,
and its Queue and Pipe moving numpy arrays of 1 KiB to 1 GiB against
multiprocessing's, faster-fifo, a hand-written SharedMemory copy and one
np.copyto (the transfer curve, drawn with --plot); print medians and
interproc/peer ratios against the project's targets, and optionally append
them to a results file.

Every trial runs in freshly forked processes (producers and consumers apart);
implementations take turns trial by trial and the median is reported.  Sized
cases first scale their item count so that one trial lasts --trial-seconds.
A full run takes about ten minutes, most of it in the array cases (their
1 GiB cases want about 7 GiB of free memory), and wants an otherwise idle
machine; trust the ratios more than the absolute rates.  Peers that cannot
be imported are skipped with a note.  The Redis cases start a throw-away
redis-server on a free loopback port for each case (or use --redis-url),
and are skipped when there is neither.
"""


def _parser(case_list: list[cases_module.Case]) -> argparse.ArgumentParser:
    width = max((len(case.name) for case in case_list), default=0)
    listing = "\n".join(
        f"  {number:>2}. {case.name:<{width}} {case.description}"
        for number, case in enumerate(case_list, 1)
    )
    parser = argparse.ArgumentParser(
        prog="interproc bench",
        description=_DESCRIPTION,
        epilog=f"cases:\n{listing}\n\nexamples:\n  interproc bench --case ping-pong --trials 5\n"
        "  interproc bench --case 'array-*' --plot benchmarks/transfer-curve.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--case", action="append", default=[], metavar="NAME",
        help="run only this case (name, number, or a quoted pattern such as 'array-*' or "
        "'array-queue-*'); repeat for several; default: all",
    )
    parser.add_argument(
        "--trials", type=_positive_int, default=None, metavar="N",
        help="trials per implementation (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke check: tiny sizes, one short trial each, no sizing; numbers mean nothing",
    )
    parser.add_argument(
        "--trial-seconds", type=_positive_float, default=None, metavar="S",
        help="how long one trial should last (default 0.5; 0.05 with --quick)",
    )
    parser.add_argument(
        "--idle-seconds", type=_positive_float, default=None, metavar="S",
        help="how long the idle-cpu and pipe-idle-cpu children stay blocked "
        "(default 2; 0.2 with --quick)",
    )
    parser.add_argument(
        "--async-idle-seconds", type=_positive_float, default=None, metavar="S",
        help="how long the async-idle-cpu case's 1,000 get_async calls stay pending "
        "(default 10; 1 with --quick)",
    )
    parser.add_argument(
        "--redis-url", metavar="URL",
        help="run the Redis cases on this server (redis://host:port/db) instead of a "
        "throw-away local redis-server per case; each trial removes the keys it made",
    )
    parser.add_argument(
        "--append", metavar="FILE",
        help="also append the report as a new section to FILE (e.g. benchmarks/RESULTS.md); "
        "not with --quick",
    )
    parser.add_argument(
        "--plot", metavar="PNG",
        help="also draw the array cases' transfer curve (GB/s against item size, one line "
        "per implementation, queue and pipe side by side) into PNG, e.g. "
        "benchmarks/transfer-curve.png; needs matplotlib (bench extras), else skipped "
        "with a note",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(case: cases_module.Case, settings: Settings) -> list[Series]:
    """Every contender's series; all skipped (or failed) when what the case
    needs around its trials (a Redis server) is missing (or broken)."""
    try:
        with cases_module.session(case, settings) as inner:
            return run_case(case, cases_module.bind(case, inner), inner, _log)
    except adapters.Unavailable as exc:
        _log(f"{case.name}: skipped: {exc}")
        return [Series(c.key, c.label, skipped=str(exc)) for c in case.contenders]
    except TrialError as exc:
        _log(f"{case.name}: failed: {exc}")
        return [Series(c.key, c.label, error=str(exc)) for c in case.contenders]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 when every trial ran, 1 when one failed, 2 on bad options.

    Missed targets do not change the exit status: benchmarks are not tests.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(cases_module.all_cases(Settings()))
    args = parser.parse_args(argv)
    settings = Settings(
        trials=args.trials or (1 if args.quick else 3),
        quick=args.quick,
        trial_seconds=args.trial_seconds or (0.05 if args.quick else 0.5),
        idle_seconds=args.idle_seconds or (0.2 if args.quick else 2.0),
        async_idle_seconds=args.async_idle_seconds or (1.0 if args.quick else 10.0),
        redis_url=args.redis_url,
    )
    try:
        chosen = cases_module.select(cases_module.all_cases(settings), args.case)
    except ValueError as exc:
        parser.error(str(exc))
    if args.append:
        if args.quick:
            # A results log is only worth keeping if every section in it measured something.
            parser.error("--quick numbers are not results; drop --append or --quick")
        try:
            open(args.append, "a", encoding="utf-8").close()
        except OSError as exc:
            parser.error(f"cannot append to {args.append}: {exc}")

    machine = Machine()
    command = command_line(argv)
    started = time.monotonic()
    results = []
    for number, case in enumerate(chosen, 1):
        _log(f"[{number}/{len(chosen)}] {case.name}: {case.description}")
        results.append((case, _run(case, settings)))
    _log(f"done in {time.monotonic() - started:.0f} s")

    facts = [f"command: `{command}`", *describe(machine)]
    if any(case.around is redis_cases.server for case in chosen):
        facts.append(redis_cases.describe(settings))
    title = machine.when + (" (quick smoke run)" if settings.quick else "")
    text = section(title, facts, results, settings)
    print(text, end="")
    if args.plot:
        plot.transfer_curve(results, args.plot, title, settings, _log)
    failed = any(s.error for _, series in results for s in series)
    if args.append:
        try:
            with open(args.append, "a", encoding="utf-8") as f:
                f.write("\n" + text)
        except OSError as exc:
            _log(f"interproc bench: cannot append to {args.append}: {exc}")
            return 1
        _log(f"appended to {args.append}")
    return 1 if failed else 0
