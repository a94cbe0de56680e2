"""FLOP counts with torch.utils.flop_counter (matmuls, convolutions and attention)."""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode


def flops_by_module(fn, *args, **kwargs) -> dict[str, int]:
    """Run `fn(*args, **kwargs)` and return FLOPs per module path ("Global" holds the total)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
