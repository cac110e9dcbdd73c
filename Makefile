# Developer entry points.  A fresh clone needs only python3 (3.10+), gcc and
# the Python headers; everything else goes into .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
# What to run: the whole suite, or e.g. TESTS=tests/test_containers_basic.py
TESTS ?= tests
BENCH_ARGS ?=

# Whatever ends up in the built wheel: a change to any of these must reach
# .venv before the next demo, test or bench run.
PKG_SOURCES := setup.py pyproject.toml README.md $(wildcard MANIFEST.in) \
	$(shell find src -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.c' \
	        -o -name '*.h' -o -name py.typed \) 2>/dev/null)

# One stamp per set of extras, so `make test` does not pull in the
# benchmark competitors and `make bench` does not pull in pytest.
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench
STAMPS := $(STAMP_TEST) $(STAMP_BENCH)

.PHONY: help venv demo test bench sanitize clean distclean

help:
	@echo "make demo       build .venv and run 'interproc demo'"
	@echo "make test       build .venv and run the whole test suite"
	@echo "make bench      run the benchmarks, appending to benchmarks/RESULTS.md"
	@echo "make sanitize   run the tests against an ASan/UBSan build of the core"
	@echo "make venv       only create .venv and install the package with test extras"
	@echo "make clean      remove build products (keeps .venv)"
	@echo "make distclean  clean, and remove .venv"

venv: $(STAMP_TEST)

demo: $(STAMP_TEST)
	$(VENV)/bin/interproc demo

# Run from the repository root: with the src layout, src/ is not on sys.path,
# so the tests import the installed package (with its compiled core) rather
# than the bare sources.  PYTHONPATH is dropped for the same reason.
test: $(STAMP_TEST)
	env -u PYTHONPATH $(PY) -m pytest -q $(PYTEST_ARGS) $(TESTS)

bench: $(STAMP_BENCH)
	$(VENV)/bin/interproc bench --append benchmarks/RESULTS.md $(BENCH_ARGS)

# The sanitized build replaces the installed core, so the stamps are dropped
# before the run: the next plain target then reinstalls a normal build, even
# when the sanitized tests fail.  ASan must be the first library loaded, and
# the interpreter is not built with it, hence LD_PRELOAD; CPython keeps memory
# alive until exit by design, so leak reports would be noise.
sanitize: $(STAMP_TEST)
	rm -rf build
	INTERPROC_SANITIZE=1 $(PIP) install --no-deps --force-reinstall .
	rm -rf build $(STAMPS)
	env -u PYTHONPATH ASAN_OPTIONS=detect_leaks=0 \
	    LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	    $(PY) -m pytest -q $(PYTEST_ARGS) $(TESTS)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	    echo "interproc needs Python 3.10 or newer, and '$(PYTHON)' is missing or older." >&2; \
	    echo "Point PYTHON at one: make PYTHON=/path/to/python3.x ..." >&2; \
	    exit 1; }
	@# Debian splits ensurepip into python3-venv.  Without it, fall back to a
	@# pip-less venv seeded by the system pip, if there is one.
	$(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); \
	    echo "'$(PYTHON) -m venv' failed; trying a venv without pip, seeded by the system pip" >&2; \
	    $(PYTHON) -m venv --without-pip $(VENV) && \
	    $(PYTHON) -m pip --python $(PY) install pip; } || { \
	    rm -rf $(VENV); \
	    echo "Cannot create $(VENV). On Debian/Ubuntu: apt-get install python3-venv" >&2; \
	    exit 1; }

# `rm -rf build` first: setuptools reuses an object in build/ whenever it is
# newer than its source, so a core compiled with other flags (make sanitize)
# would otherwise be installed again.
$(STAMPS): $(VENV)/.installed-%: $(PKG_SOURCES) | $(PY)
	rm -rf build
	$(PIP) install '.[$*]'
	@touch $@

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .hypothesis $(STAMPS)
	rm -f src/interproc/_core*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
