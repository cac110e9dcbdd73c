"""Build the C core.

Build switches (environment variables), each for a variant that `make`
builds into a place of its own, never over the normal build:

- INTERPROC_SANITIZE=1: gcc with ASan and UBSan; any UBSan finding aborts
  (`make sanitize`).
- INTERPROC_FUZZ=1: clang with ASan, UBSan and libFuzzer's coverage
  instrumentation, for the atheris harnesses in fuzz/ (`make fuzz`).
- INTERPROC_COVERAGE=1: clang with source-based coverage, to measure what
  the fuzz corpora reach (`make fuzz-coverage`).
- INTERPROC_WERROR=1: warnings are errors.
- INTERPROC_CFLAGS: more compiler flags for any of them, e.g.
  -fno-sanitize=alignment to look past a known finding until its fix lands.

Each variant builds under build/<variant>, so that it never reuses the
normal build's objects; the clang ones use $CC if it is set, else clang-14
or clang from PATH.
"""
import os
import shlex
import shutil

from setuptools import Extension, setup

sources = [
    "src/interproc/_core/module.c",
    "src/interproc/_core/segment.c",
    "src/interproc/_core/wait.c",
    "src/interproc/_core/ring.c",
    "src/interproc/_core/channel.c",
    "src/interproc/_core/buffer.c",
    "src/interproc/_core/queue.c",
    "src/interproc/_core/connection.c",
    "src/interproc/_core/sync.c",
    "src/interproc/_core/atomic.c",
    "src/interproc/_core/heap.c",
    "src/interproc/_core/dict.c",
    "src/interproc/_core/list.c",
    "src/interproc/_core/plain.c",
]
# Only PyInit__core is exported: calls between the core's files are then
# direct, never through the PLT, and the compiler may inline them.
cflags = ["-std=gnu11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
ldflags = ["-lpthread"]
options = {}


def build_apart(variant):
    """Build under build/<variant>: never over, nor from, the normal
    build's objects, and beside another variant's build."""
    options["build"] = {"build_base": f"build/{variant}"}


def use_clang(variant):
    """Compile with clang, into build/<variant>."""
    cc = os.environ.get("CC") or shutil.which("clang-14") or shutil.which("clang")
    if cc is None:
        raise SystemExit(f"INTERPROC_{variant.upper()}=1 needs clang (apt-get install clang-14)")
    os.environ["CC"] = cc
    os.environ.setdefault("LDSHARED", f"{cc} -shared")
    build_apart(variant)


if os.environ.get("INTERPROC_SANITIZE"):
    build_apart("sanitize")
    cflags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-O1", "-g"]
    ldflags += ["-fsanitize=address,undefined"]
elif os.environ.get("INTERPROC_FUZZ"):
    # No sanitizer runtime is linked in: atheris's asan_with_fuzzer.so,
    # preloaded, provides ASan, UBSan and libFuzzer's coverage hooks.
    use_clang("fuzz")
    sanitize = ["-fsanitize=address,undefined,fuzzer-no-link"]
    cflags += sanitize + ["-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                          "-O1", "-g"]
    ldflags += sanitize
elif os.environ.get("INTERPROC_COVERAGE"):
    use_clang("coverage")
    cflags += ["-fprofile-instr-generate", "-fcoverage-mapping", "-O0", "-g"]
    ldflags += ["-fprofile-instr-generate"]
if os.environ.get("INTERPROC_WERROR"):
    cflags.append("-Werror")
cflags += shlex.split(os.environ.get("INTERPROC_CFLAGS", ""))

setup(
    options=options,
    ext_modules=[
        Extension(
            "interproc._core",
            sources=sources,
            depends=["src/interproc/_core/interproc.h"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
