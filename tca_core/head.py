"""The pixel decoder's multi-scale deformable attention, summed level by level.

`transformers`' Mask2Former computes it in plain PyTorch (`multi_scale_deformable_attention`): it
samples every level, stacks the samples of all levels and points into one tensor, weights and sums
it. `level_by_level` computes the same sum (the same bilinear samples, the same weights) as one
weighted sum per level, without the stacked copy: on this project's 2-core CPU the pixel
decoder runs 1.38x as fast (docs/benchmarks.md, "Where the time goes"). `deformable_attention()`
makes the Mask2Former modules use it while the segmenter's forward pass runs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers.models.mask2former import modeling_mask2former

_NAME = "multi_scale_deformable_attention"
_ORIGINAL = getattr(modeling_mask2former, _NAME)
_LOCK = threading.Lock()
_DEPTH = [0]  # nested or concurrent passes inside the swap


def level_by_level(value: torch.Tensor, shapes, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Deformable attention with the signature of `transformers`' function: `value` (B, S, heads, d)
    over the levels' (height, width) `shapes`, sampling `locations` (B, Q, heads, levels, points, 2)
    in 0..1 and their attention `weights` (B, Q, heads, levels, points); returns (B, Q, heads * d)."""
    batch, _, heads, dim = value.shape
    queries, levels = locations.shape[1], locations.shape[3]
    per_level = value.split([int(h) * int(w) for h, w in shapes], dim=1)
    grids = (2 * locations - 1).permute(0, 2, 3, 1, 4, 5).flatten(0, 1)  # (B*heads, levels, Q, points, 2)
    weights = weights.permute(0, 2, 3, 1, 4).flatten(0, 1)  # (B*heads, levels, Q, points)
    out = None
    for level in range(levels):
        height, width = (int(n) for n in shapes[level])
        level_value = per_level[level].flatten(2).transpose(1, 2).reshape(batch * heads, dim, height, width)
        sampled = F.grid_sample(
            level_value, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )
        part = (sampled * weights[:, level, None]).sum(-1)  # (B*heads, d, Q)
        out = part if out is None else out + part
    return out.reshape(batch, heads * dim, queries).transpose(1, 2).contiguous()


@contextmanager
def deformable_attention():
    """Within this context, `transformers`' Mask2Former pixel decoder uses `level_by_level`. The
    swap is of a module attribute, so other threads' Mask2Former passes meanwhile use it too (it
    computes the same values); the original is restored when the last pass leaves."""
    with _LOCK:
        _DEPTH[0] += 1
        setattr(modeling_mask2former, _NAME, level_by_level)
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                setattr(modeling_mask2former, _NAME, _ORIGINAL)
