"""Where a Ray worker runs the model: on the GPU Ray assigned it, else on the CPU.

Since Ray stopped hiding `CUDA_VISIBLE_DEVICES` from workers that asked for no GPU, such a worker on
a GPU node sees every GPU, and `torch.cuda.is_available()` would put it on GPU 0 beside the actors
that were assigned it. So the device comes from Ray's assignment (`ray.get_gpu_ids()`), never from
what torch can see: no GPU assigned, the CPU; a GPU assigned, that GPU, in float16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    """A device and the dtype the model runs in there."""

    device: str
    dtype: torch.dtype


def placement(requested: str = "auto") -> Placement:
    """`requested` "auto": the GPU Ray assigned this worker (float16), else the CPU (float32); any other
    value ("cpu", "cuda", "cuda:1") is taken as it is, in the dtype that suits it."""
    device = _assigned() if requested == "auto" else requested
    return Placement(device, torch.float16 if device.startswith("cuda") else torch.float32)


def _assigned() -> str:
    import ray

    if not ray.is_initialized():
        return "cpu"
    gpus = ray.get_gpu_ids()
    if not gpus:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"Ray assigned GPU {gpus} to this worker but torch {torch.__version__} sees no CUDA device "
            "(a CPU build of torch, or no driver): install PyTorch's CUDA build on the GPU nodes"
        )
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs, so the first of them is cuda:0; where that is
    # turned off (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES), the index is the assigned id itself.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.split(",")[0].strip() == str(gpus[0]):
        return "cuda:0"
    return f"cuda:{int(gpus[0])}"
