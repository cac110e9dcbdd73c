"""Facts recorded with every result, so numbers from different runs can be weighed."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Machine", "describe", "command_line"]


class Machine:
    def __init__(self) -> None:
        self.when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.nproc = nproc()
        self.cpu = cpu_model()
        self.system = f"{platform.system()} {platform.release()} {platform.machine()}"
        self.python = f"{platform.python_implementation()} {platform.python_version()}"
        self.interproc = interproc_version()


def nproc() -> int:
    """What `nproc` prints: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    # x86 says "model name"; other architectures use one of the others.
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def interproc_version() -> str:
    try:
        import interproc
    except Exception as exc:
        return f"not importable ({type(exc).__name__})"
    version = getattr(interproc, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("interproc")
        except Exception:
            version = "unknown version"
    revision = _git_revision(Path(interproc.__path__[0]))
    return f"{version} ({revision})" if revision else str(version)


def _git_revision(where: Path) -> str | None:
    """The commit the measured code came from, with -dirty for local changes."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def command_line(argv: list[str]) -> str:
    """The command as the user typed it, as near as the process can tell."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script == "interproc":
        prefix = "interproc bench"
    elif script == "__main__.py":
        package = Path(sys.argv[0]).parent.name
        prefix = "python -m interproc" + (" bench" if package == "interproc" else ".bench")
    elif script.endswith(".py"):
        prefix = f"python {shlex.quote(os.path.relpath(sys.argv[0]))}"
    else:
        prefix = "interproc.bench.main"
    return f"{prefix} {shlex.join(argv)}".rstrip()


def describe(machine: Machine) -> list[str]:
    return [
        f"machine: nproc {machine.nproc}, {machine.cpu}, {machine.system}",
        f"Python {machine.python}; interproc {machine.interproc}",
    ]
