# Developer entry points.  A fresh clone needs only python3 (3.11+), gcc and
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

.PHONY: help venv demo test test-all test-cpython bench sanitize sanitize-venv fuzz-venv clean distclean \
	fuzz fuzz-ci fuzz-merge fuzz-coverage fuzz-seed fuzz-repro

help:
	@echo "make demo       build .venv and run 'interproc demo'"
	@echo "make test       build .venv and run the whole test suite"
	@echo "make test-all   the suite, CPython's multiprocessing tests included, on Python 3.11 to 3.15 (.ci/test-matrix)"
	@echo "make test-cpython  only CPython's own multiprocessing tests against interproc, per start method"
	@echo "make bench      run the benchmarks, appending to benchmarks/RESULTS.md and drawing benchmarks/transfer-curve.png"
	@echo "make sanitize   run the tests against an ASan/UBSan build of the core"
	@echo "make fuzz       fuzz each target FUZZ_SECONDS (default $(FUZZ_SECONDS)) seconds; see fuzz/README.md"
	@echo "make fuzz-ci    replay the corpora, then fuzz each target $(FUZZ_CI_SECONDS) seconds"
	@echo "make fuzz-merge add what make fuzz found that reaches new code to fuzz/corpus"
	@echo "make fuzz-coverage  replay the corpora on a coverage build; line and branch coverage per C file"
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

# The Python matrix (.ci/test-matrix says what runs where).  3.14 and 3.15
# come from a Debian sid chroot, which needs root; MATRIX='3.12 3.13' picks
# versions.
MATRIX ?=
test-all:
	.ci/test-matrix $(MATRIX)

# CPython's own test._test_multiprocessing, from the test package of the
# interpreter that runs it, against interproc's objects: under each start
# method, every test in scope passes or is a listed difference (see the
# runner's docstring).  The venv's Python by default; CPYTHON_PY=<python>
# runs it on another interpreter that has interproc installed (no venv is
# built then).  CPYTHON_ARGS passes options, e.g. -v or -k 'WithManager*'.
CPYTHON_PY ?=
CPYTHON_METHODS ?= fork spawn forkserver
CPYTHON_ARGS ?=
test-cpython: $(if $(CPYTHON_PY),,$(STAMP_TEST))
	@status=0; for m in $(CPYTHON_METHODS); do \
	    env -u PYTHONPATH $(or $(CPYTHON_PY),$(PY)) tests/cpython_multiprocessing.py $$m $(CPYTHON_ARGS) || status=1; \
	done; exit $$status

bench: $(STAMP_BENCH)
	$(VENV)/bin/interproc bench --append benchmarks/RESULTS.md --plot benchmarks/transfer-curve.png $(BENCH_ARGS)

# The sanitized build lives in a venv of its own, beside .venv.  ASan must be
# the first library loaded, and
# the interpreter is not built with it, hence LD_PRELOAD; CPython keeps memory
# alive until exit by design, so leak reports would be noise.  Every UBSan
# finding aborts (-fno-sanitize-recover in setup.py, halt_on_error here), as
# every ASan one does, so a report fails the run instead of scrolling by;
# --capture=sys leaves the real stderr to the sanitizers, so that the report
# of one that aborts pytest itself is not lost with pytest's capture files.
# .ci/asan.supp says which third-party reports are ignored, and why.  Tests
# that count memory or mappings, which ASan changes, skip themselves
# (tests/_helpers.py: needs_plain_allocator).  CPython's multiprocessing
# tests and the Redis backend's (its files, and every test with "redis" in
# its name: the contract's Redis parameters) are left out: they check
# behaviour at the Python level, which the plain run covers (the Redis
# backend's only C is the key codec, which the shared-memory dict tests and
# the key fuzzer drive), and would run their processes at ASan's pace.
SANITIZE_ENV := ASAN_OPTIONS=detect_leaks=0:suppressions=$(CURDIR)/.ci/asan.supp \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SAN_VENV := .venv-sanitize
SAN_STAMP := $(SAN_VENV)/.installed-sanitize
sanitize: $(SAN_STAMP)
	env -u PYTHONPATH $(SANITIZE_ENV) \
	    LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	    $(SAN_VENV)/bin/python -m pytest -q --capture=sys --ignore=tests/test_cpython_multiprocessing.py \
	    --ignore-glob='tests/test_redis_*.py' -k 'not redis' $(PYTEST_ARGS) $(TESTS)

# ---------------------------------------------------------------------------
# Fuzzing (fuzz/README.md): atheris (libFuzzer) drives the targets in fuzz/
# against a clang build of the core with ASan, UBSan and libFuzzer's coverage
# counters.  That build lives in its own venv, so it never replaces the
# normal one; so does the coverage build.
CLANG ?= $(shell command -v clang-14 || command -v clang)
LLVM_PROFDATA ?= $(shell command -v llvm-profdata-14 || command -v llvm-profdata)
LLVM_COV ?= $(shell command -v llvm-cov-14 || command -v llvm-cov)
FUZZ_TARGETS ?= segment plain oob key crossproc
FUZZ_SECONDS ?= 300
FUZZ_CI_SECONDS ?= 45
# Seconds one input may take before it counts as a hang.
FUZZ_TIMEOUT ?= 10
# More libFuzzer options, e.g. FUZZ_OPTIONS=-jobs=2 or -seed=1.
FUZZ_OPTIONS ?=
FUZZ_VENV := .venv-fuzz
COV_VENV := .venv-cov
FUZZ_STAMP := $(FUZZ_VENV)/.installed-fuzz
COV_STAMP := $(COV_VENV)/.installed-coverage
# Python's allocator is bypassed so that ASan sees every Python object the
# core touches.  Each input is run in a private /dev/shm when possible.
# Fuzzing yields the CPU to anything else (FUZZ_NICE); CI, which runs it
# beside other work, keeps it at the same priority so that a slow input is
# not starved into a false timeout.
FUZZ_NICE ?= 19
FUZZ_RUN = env -u PYTHONPATH PATH="$(CURDIR)/$(FUZZ_VENV)/bin:$$PATH" \
	LD_PRELOAD="$$($(FUZZ_VENV)/bin/python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so" \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONMALLOC=malloc \
	nice -n $(FUZZ_NICE) fuzz/in-private-shm.sh fuzz/run.py fuzz
FUZZ_FLAGS = -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=4096 -print_final_stats=1 $(FUZZ_OPTIONS)

$(FUZZ_VENV)/bin/python $(COV_VENV)/bin/python $(SAN_VENV)/bin/python: | $(PY)
	$(PY) -m venv $(@D)/..

$(SAN_STAMP): $(PKG_SOURCES) | $(SAN_VENV)/bin/python
	rm -rf build/sanitize
	INTERPROC_SANITIZE=1 $(SAN_VENV)/bin/python -m pip install '.[test]'
	rm -rf build/sanitize
	@touch $@

# Only the builds: CI makes every venv before running anything, since two
# builds from one tree at once would share its egg-info.
sanitize-venv: $(SAN_STAMP)
fuzz-venv: $(FUZZ_STAMP)

# atheris is built from source with the same clang, so that its libFuzzer and
# sanitizer runtimes are the ones the core is instrumented for.
$(FUZZ_STAMP): $(PKG_SOURCES) | $(FUZZ_VENV)/bin/python
	@test -n "$(CLANG)" || { echo "fuzzing needs clang: apt-get install clang-14 libclang-rt-14-dev llvm-14" >&2; exit 1; }
	rm -rf build/fuzz
	CC=$(CLANG) CLANG_BIN=$(CLANG) INTERPROC_FUZZ=1 \
	    $(FUZZ_VENV)/bin/python -m pip install --no-binary atheris --force-reinstall '.[fuzz]'
	rm -rf build/fuzz
	@touch $@

$(COV_STAMP): $(PKG_SOURCES) | $(COV_VENV)/bin/python
	@test -n "$(CLANG)" || { echo "coverage needs clang: apt-get install clang-14 llvm-14" >&2; exit 1; }
	rm -rf build/coverage
	CC=$(CLANG) INTERPROC_COVERAGE=1 $(COV_VENV)/bin/python -m pip install --no-deps --force-reinstall .
	rm -rf build/coverage
	@touch $@

# Each target FUZZ_SECONDS, new inputs in fuzz/work/<target>, findings in
# fuzz/artifacts/.  A finding stops its target; the others still run, and
# the command fails at the end.
fuzz: $(FUZZ_STAMP)
	@mkdir -p fuzz/artifacts; status=0; \
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/work/$$t; echo "== fuzz $$t: $(FUZZ_SECONDS)s"; \
	    $(FUZZ_RUN) $$t fuzz/work/$$t fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=fuzz/artifacts/$$t- $(FUZZ_FLAGS) || status=1; \
	done; \
	if [ $$status -ne 0 ]; then echo "fuzz: findings in fuzz/artifacts/ (see fuzz/README.md)" >&2; fi; \
	exit $$status

# CI: every corpus input first (the regression seeds among them), then a
# short fixed budget per target.  New inputs go to a scratch directory: CI
# never changes the corpora.
fuzz-ci: $(FUZZ_STAMP)
	@mkdir -p fuzz/artifacts; passed=0; failed=0; scratch=$$(mktemp -d); \
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p $$scratch/$$t; echo "== fuzz-ci $$t: corpus, then $(FUZZ_CI_SECONDS)s"; \
	    if $(FUZZ_RUN) $$t $$scratch/$$t fuzz/corpus/$$t -max_total_time=$(FUZZ_CI_SECONDS) \
	        -artifact_prefix=fuzz/artifacts/$$t- $(FUZZ_FLAGS) > fuzz/artifacts/$$t.log 2>&1; \
	    then passed=$$((passed + 1)); grep -E "INITED|^Done|stat::number_of_executed_units" fuzz/artifacts/$$t.log; \
	    else failed=$$((failed + 1)); tail -n 80 fuzz/artifacts/$$t.log; \
	        echo "== fuzz-ci $$t: FINDING, input and log in fuzz/artifacts/"; fi; \
	done; \
	rm -rf $$scratch; \
	echo "fuzz-ci: $$passed passed, $$failed failed"; \
	test $$failed -eq 0

# Adds to fuzz/corpus/<target> the inputs of fuzz/work/<target> that reach
# code (edges: -use_counters=0 ignores hit counts) the corpus does not,
# which keeps the corpora to a few hundred inputs.
fuzz-merge: $(FUZZ_STAMP)
	@for t in $(FUZZ_TARGETS); do \
	    test -d fuzz/work/$$t || continue; \
	    mkdir -p fuzz/artifacts; \
	    $(FUZZ_RUN) $$t -merge=1 -use_counters=0 fuzz/corpus/$$t fuzz/work/$$t \
	        -artifact_prefix=fuzz/artifacts/$$t- $(FUZZ_FLAGS) 2>&1 \
	        | grep -E "MERGE-OUTER: [0-9]+ new files"; \
	done

# Runs one input once (or, with FUZZ_OPTIONS='-minimize_crash=1 -runs=2000',
# shrinks it): make fuzz-repro TARGET=segment INPUT=fuzz/artifacts/segment-crash-...
fuzz-repro: $(FUZZ_STAMP)
	@test -n "$(TARGET)" -a -n "$(INPUT)" || { echo "usage: make fuzz-repro TARGET=<target> INPUT=<file>" >&2; exit 2; }
	$(FUZZ_RUN) $(TARGET) $(FUZZ_FLAGS) -artifact_prefix=fuzz/artifacts/$(TARGET)- $(INPUT)

# Writes each target's generated seeds into its corpus (done once; kept).
fuzz-seed: $(STAMP_TEST)
	@for t in $(FUZZ_TARGETS); do env -u PYTHONPATH $(PY) fuzz/run.py seed $$t fuzz/corpus/$$t; done

# Replays every corpus on a coverage build of the core, each input in a
# child process, and prints line and branch coverage per C file.  Inputs that
# fail (the regression seeds of findings not fixed yet) are listed.
COV_OUT := fuzz/coverage
fuzz-coverage: $(COV_STAMP)
	rm -rf $(COV_OUT) && mkdir -p $(COV_OUT)
	@for t in $(FUZZ_TARGETS); do \
	    env -u PYTHONPATH LLVM_PROFILE_FILE=$(CURDIR)/$(COV_OUT)/$$t-%m.profraw \
	        nice -n 19 fuzz/in-private-shm.sh $(COV_VENV)/bin/python fuzz/run.py replay $$t fuzz/corpus/$$t \
	        2>$(COV_OUT)/$$t-replay.log | tail -n 20 || true; \
	done
	$(LLVM_PROFDATA) merge -sparse $(COV_OUT)/*.profraw -o $(COV_OUT)/fuzz.profdata
	$(LLVM_COV) report "$$($(COV_VENV)/bin/python -c 'import interproc._core as c; print(c.__file__)')" \
	    -instr-profile=$(COV_OUT)/fuzz.profdata $(sort $(wildcard src/interproc/_core/*.c)) \
	    | tee $(COV_OUT)/report.txt

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	    echo "interproc needs Python 3.11 or newer, and '$(PYTHON)' is missing or older." >&2; \
	    echo "Point PYTHON at one: make PYTHON=/path/to/python3.x ..." >&2; \
	    exit 1; }
	@# Debian splits ensurepip into python3-venv.  Without it, fall back to a
	@# pip-less venv seeded by the system pip, if there is one.  The recipe is
	@# not echoed: its fallback's messages would read as a failure in every log.
	@echo "$(PYTHON) -m venv $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); \
	    echo "'$(PYTHON) -m venv' failed; trying a venv without pip, seeded by the system pip" >&2; \
	    $(PYTHON) -m venv --without-pip $(VENV) && \
	    $(PYTHON) -m pip --python $(PY) install pip; } || { \
	    rm -rf $(VENV); \
	    echo "Cannot create $(VENV). On Debian/Ubuntu: apt-get install python3-venv" >&2; \
	    exit 1; }

# `rm -rf build` first: setuptools reuses an object in build/ whenever it is
# newer than its source, so a core compiled with other flags (INTERPROC_CFLAGS)
# would otherwise be installed again.
$(STAMPS): $(VENV)/.installed-%: $(PKG_SOURCES) | $(PY)
	rm -rf build
	$(PIP) install '.[$*]'
	@touch $@

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .hypothesis $(STAMPS) \
	    fuzz/work fuzz/artifacts fuzz/coverage
	rm -f src/interproc/_core*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(FUZZ_VENV) $(COV_VENV) $(SAN_VENV)
