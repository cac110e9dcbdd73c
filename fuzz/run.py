#!/usr/bin/env python3
"""Runs the fuzz targets.  See fuzz/README.md; `make fuzz` is the usual way in.

    run.py fuzz TARGET [libFuzzer options and corpus directories]
        Fuzz with atheris (libFuzzer).  Needs the fuzzing build of the core
        and atheris's asan_with_fuzzer.so preloaded (the Makefile does both).
    run.py replay TARGET PATH...
        Run each input (files, or directories of them) once, each in a child
        process of its own, and say which ones fail: a finding, a signal or
        a hang.  Needs no atheris; `make fuzz-coverage` uses it.
    run.py seed TARGET DIR
        Write the target's generated seed inputs into DIR.

libFuzzer's -merge=1 and -fork=N modes start workers as `run.py <options
and directories>`, with the target in $FUZZ_TARGET: so this file is executable, and the python3 first
on PATH must be the fuzzing venv's (the Makefile sees to both).
"""
from __future__ import annotations

import faulthandler
import hashlib
import importlib
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("segment", "plain", "oob", "key", "crossproc")
REPLAY_TIMEOUT = 60


def load(target: str, instrument: bool = False):
    if target not in TARGETS:
        raise SystemExit(f"unknown target {target!r}; the targets are: {', '.join(TARGETS)}")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import common

    common.install_safe_loads()  # before interproc captures pickle.loads
    if instrument:
        import atheris

        # interproc's Python layer (naming, attach, the containers' API) is
        # part of what a damaged segment reaches: its coverage counts too.
        with atheris.instrument_imports(include=["interproc"]):
            import interproc  # noqa: F401
            import interproc.containers  # noqa: F401
    return importlib.import_module(f"target_{target}")


def fuzz(target: str, args: list) -> None:
    import atheris

    os.environ["FUZZ_TARGET"] = target  # for -fork workers, which get only the options
    mod = load(target, instrument=True)
    mod.initialize()
    atheris.Setup([sys.argv[0]] + args, mod.TestOneInput)
    atheris.Fuzz()


def _inputs(paths: list) -> list:
    out = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, f) for f in os.listdir(path)
                          if os.path.isfile(os.path.join(path, f)))
        else:
            out.append(path)
    return out


def replay(target: str, paths: list) -> int:
    os.environ["FUZZ_REPLAY"] = "1"
    mod = load(target)
    import common

    mod.initialize()
    files = _inputs(paths)
    failed = []
    start = time.monotonic()
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                faulthandler.dump_traceback_later(REPLAY_TIMEOUT, exit=True)
                mod.TestOneInput(data)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            common.exit_child(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            if os.WIFSIGNALED(status):
                why = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            else:
                why = f"exit status {os.WEXITSTATUS(status)}"
            failed.append((path, why))
            print(f"replay {target}: {path}: {why}", file=sys.stderr)
    took = time.monotonic() - start
    print(f"replay {target}: {len(files)} inputs, {len(failed)} failed ({took:.1f}s)")
    for path, why in failed:
        print(f"  FAILED {path}: {why}")
    return 1 if failed else 0


def seed(target: str, directory: str) -> None:
    mod = load(target)
    os.makedirs(directory, exist_ok=True)
    for name, data in mod.seeds().items():
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(directory, f"seed-{name}-{digest}"), "wb") as f:
            f.write(data)


def main(argv: list) -> int:
    if len(argv) >= 2 and argv[1] not in ("fuzz", "replay", "seed") and os.environ.get("FUZZ_TARGET"):
        fuzz(os.environ["FUZZ_TARGET"], argv[1:])  # a libFuzzer -merge or -fork worker
        return 0
    if len(argv) < 3 or argv[1] not in ("fuzz", "replay", "seed"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, target, rest = argv[1], argv[2], argv[3:]
    if cmd == "fuzz":
        fuzz(target, rest)
        return 0
    if cmd == "replay":
        return replay(target, rest)
    if len(rest) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    seed(target, rest[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
