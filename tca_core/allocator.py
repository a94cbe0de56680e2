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
model as their Ray runtime_env; other C libraries (musl, macOS) ignore them.
"""

from __future__ import annotations

INFERENCE_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(512 * 2**20),
}
