#!/usr/bin/env python3
"""Run the interproc benchmarks from a checkout: ``python benchmarks/run.py --help``."""
import sys
from pathlib import Path

# Benchmark the checkout this file lives in (an in-place build under src/),
# not whatever interproc happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from interproc.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
