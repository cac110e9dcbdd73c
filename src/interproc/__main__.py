"""``python -m interproc``: the same command as the ``interproc`` script."""

from interproc.cli import main

# Guarded because a spawned child re-imports the parent's main module.
if __name__ == "__main__":
    raise SystemExit(main())
