"""Build the C core.  Set INTERPROC_SANITIZE=1 for an ASan/UBSan build."""
import os
from setuptools import Extension, setup

sources = [
    "src/interproc/_core/module.c",
    "src/interproc/_core/segment.c",
    "src/interproc/_core/wait.c",
    "src/interproc/_core/ring.c",
    "src/interproc/_core/channel.c",
    "src/interproc/_core/queue.c",
    "src/interproc/_core/connection.c",
    "src/interproc/_core/sync.c",
    "src/interproc/_core/atomic.c",
    "src/interproc/_core/heap.c",
    "src/interproc/_core/dict.c",
    "src/interproc/_core/list.c",
    "src/interproc/_core/plain.c",
]
cflags = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
ldflags = ["-lpthread"]
if os.environ.get("INTERPROC_SANITIZE"):
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1"]
    ldflags += ["-fsanitize=address,undefined"]
if os.environ.get("INTERPROC_WERROR"):
    cflags.append("-Werror")

setup(
    ext_modules=[
        Extension(
            "interproc._core",
            sources=sources,
            depends=["src/interproc/_core/interproc.h"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ]
)
