"""The host memory allocator of a process that runs the model on CPU.

With glibc's defaults, every forward pass gets its larger activations as fresh memory mappings and
hands them back when it ends, so the kernel maps and zeroes every page again on the next pass: in a
Ray actor running the shipped model at short side 224, a million page faults per 64-frame chunk and
a fifth of the inference time (docs/benchmarks.md, "Inference memory"). These settings make glibc
serve blocks up to 32 MB (its maximum) from one heap, shared by all threads (Ray calls an actor from
a thread of its own, whose separate arena would otherwise map and unmap its heaps), grown 256 MB at a
time, with up to 512 MB of it kept free for the next pass instead of returned.

glibc reads them from the environment when a process starts (mallopt(3) from a running Ray worker
cannot change the arenas its threads already have), so they are given to the processes that run the
model as their Ray runtime_env; other C libraries (musl, macOS) ignore them. A benchmark that
times the model in its own process calls `reuse_freed_memory` first, so that it measures what the
job's actors see.
"""

from __future__ import annotations

import ctypes
import ctypes.util

INFERENCE_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(512 * 2**20),
}

# mallopt(3) parameters of INFERENCE_ENV's variables (glibc's malloc.h).
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}


def reuse_freed_memory() -> bool:
    """Give the running process INFERENCE_ENV's settings through mallopt(3), for the heap of the
    thread that calls it and arenas made later: what a benchmark timing the model on its own main
    thread needs to be timed as the job's actors run it. False where the C library is not glibc
    (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(_MALLOPT[name], int(value)) == 1 for name, value in INFERENCE_ENV.items())
