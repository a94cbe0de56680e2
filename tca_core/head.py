"""The pixel decoder's multi-scale deformable attention, laid out for a CPU.

`transformers`' Mask2Former computes it in plain PyTorch (`Mask2FormerPixelDecoderEncoder
MultiscaleDeformableAttention.forward`): a softmax over the 12 samples of each head along the last
axis, sampling locations divided by each level's size in a broadcast over (levels, points, xy),
and every level's samples stacked into one tensor before they are weighted and summed. Those are
slow on a CPU (the softmax alone runs 15x slower over a last axis of 12 than over a leading one).
`summed_forward` computes the same values in another layout: the levels' sizes folded into the
offset projection's rows, the softmax over a leading axis, one bilinear sampling per level with
the points along its rows, and the weighted sum accumulated point by point. On this project's
2-core CPU the pixel decoder runs 2.1x as fast as with `transformers`' forward (docs/benchmarks.md,
"Where the time goes").
`deformable_attention()` makes the Mask2Former modules use it while the segmenter's forward pass
runs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers.models.mask2former import modeling_mask2former

_ATTENTION = modeling_mask2former.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention
_ORIGINAL = _ATTENTION.forward
_LOCK = threading.Lock()
_DEPTH = [0]  # nested or concurrent passes inside the swap


def summed_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask=None,
    position_embeddings: torch.Tensor | None = None,
    reference_points: torch.Tensor | None = None,
    spatial_shapes_list=None,
    level_start_index=None,
    output_attentions: bool = False,
):
    """The attention module's forward with `transformers`' parameters and results: queries
    `hidden_states` (B, Q, C) plus `position_embeddings`, values `encoder_hidden_states` (B, S, C)
    over the levels' (height, width) `spatial_shapes_list`, zeroed where `attention_mask` (B, S) is
    True, `reference_points` (B, Q, levels, 2) in 0..1. Returns the output (B, Q, C) and the
    attention weights (B, Q, heads, levels, points)."""
    if reference_points.shape[-1] != 2:  # boxes as reference points: not the pixel decoder's
        return _ORIGINAL(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                         position_embeddings, reference_points, spatial_shapes_list, level_start_index,
                         output_attentions)  # fmt: skip
    if position_embeddings is not None:
        hidden_states = hidden_states + position_embeddings
    batch, queries, _ = hidden_states.shape
    heads, levels, points = self.n_heads, self.n_levels, self.n_points
    value = values(self, encoder_hidden_states, attention_mask)
    grids = sampling_grids(self, hidden_states, reference_points, spatial_shapes_list)
    weights = attention_weights(self, hidden_states)
    out = sampled_sum(self, value, grids, weights, spatial_shapes_list)
    attention = weights.view(levels * points, batch, heads, queries).permute(1, 3, 2, 0)
    return self.output_proj(out), attention.reshape(batch, queries, heads, levels, points)


def values(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The values (B*heads, d, S) of tokens (B, S, C), zeroed where `mask` (B, S) is True."""
    value = self.value_proj(hidden)
    if mask is not None:
        value = value.masked_fill(mask[..., None], 0.0)
    return value.transpose(1, 2).reshape(hidden.shape[0] * self.n_heads, self.d_model // self.n_heads, -1)


def attention_weights(self, queries: torch.Tensor) -> torch.Tensor:
    """The softmax weights (levels, points, B*heads, Q) of queries (B, Q, C), taken over a leading
    axis (over the last, of levels*points, it runs 15x slower here)."""
    batch, length, _ = queries.shape
    heads, levels, points = self.n_heads, self.n_levels, self.n_points
    logits = self.attention_weights(queries).view(batch, length, heads, levels * points)
    return logits.permute(3, 0, 2, 1).softmax(0).reshape(levels, points, batch * heads, length)


def sampled_sum(self, value: torch.Tensor, grids: torch.Tensor, weights: torch.Tensor, shapes) -> torch.Tensor:
    """The attention's output before its projection, (B, Q, C): `value` (B*heads, d, S) sampled
    bilinearly at `grids` (levels, B*heads, points, Q, 2), one call per level, and summed with
    `weights` (levels, points, B*heads, Q) point by point."""
    out, start = None, 0
    for level, (height, width) in enumerate(shapes):
        level_value = value[:, :, start : start + height * width].reshape(*value.shape[:2], height, width)
        start += height * width
        sampled = F.grid_sample(level_value, grids[level], mode="bilinear", padding_mode="zeros", align_corners=False)
        for point in range(self.n_points):  # sampled: (B*heads, d, points, Q)
            part = sampled[:, :, point] * weights[level, point][:, None]
            out = part if out is None else out.add_(part)
    batch = value.shape[0] // self.n_heads
    return out.view(batch, self.d_model, -1).transpose(1, 2)


def sampling_grids(self, queries: torch.Tensor, reference_points: torch.Tensor, shapes) -> torch.Tensor:
    """The sampling locations in `grid_sample`'s -1..1, (levels, B*heads, points, Q, 2): the
    offset projection's rows scaled by 2 / each level's (width, height), added to 2 * reference - 1."""
    batch, length, _ = queries.shape
    heads, levels, points = self.n_heads, self.n_levels, self.n_points
    sizes = torch.tensor([[w, h] for h, w in shapes], dtype=queries.dtype, device=queries.device)
    scale = (2.0 / sizes)[None, :, None, :].expand(heads, levels, points, 2).reshape(-1)
    projection = self.sampling_offsets
    offsets = F.linear(queries, projection.weight * scale[:, None], projection.bias * scale)
    offsets = offsets.view(batch, length, heads, levels, points, 2).permute(3, 0, 2, 4, 1, 5).contiguous()
    start = (2 * reference_points - 1).permute(2, 0, 1, 3)[:, :, None, None]  # (levels, B, 1, 1, Q, 2)
    return offsets.add_(start).view(levels, batch * heads, points, length, 2)


@contextmanager
def deformable_attention():
    """Within this context, `transformers`' Mask2Former pixel decoder's attention modules run
    `summed_forward`. The swap is of the class's method, so other threads' Mask2Former passes
    meanwhile use it too (it computes the same values); the original is restored when the last
    pass leaves."""
    with _LOCK:
        _DEPTH[0] += 1
        _ATTENTION.forward = summed_forward
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                _ATTENTION.forward = _ORIGINAL
