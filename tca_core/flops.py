"""FLOP counts with torch.utils.flop_counter (matmuls, convolutions and attention)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


# PyTorch's counter knows the fused attention kernels of CUDA, not the one scaled_dot_product_attention
# runs on CPU: without this, a CPU count leaves out the attention of Swin's blocks (the math fallback,
# taken when a call cannot use the kernel, is counted through its matmuls).
def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention}


def flops_by_module(fn, *args, **kwargs) -> dict[str, int]:
    """Run `fn(*args, **kwargs)` and return FLOPs per module path ("Global" holds the total)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn(*args, **kwargs)
    return {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
