"""Mask2Former's post-processing, as `transformers` computes it, at the cost of the pixels that need it.

`transformers`' image processor brings every query's mask logits to POSTPROCESS_SIZE (bilinear),
then, for semantic segmentation, sums class probability x mask probability over the queries, brings
those class scores to the frame's size (bilinear) and takes the argmax per pixel; for instances, it
scores each query by its class probability x its mean mask probability inside its mask and brings
the binary masks to the frame's size (nearest). At a video's own size (1080p: 2 M pixels, against
147 k at POSTPROCESS_SIZE) that last resizing is most of the cost. Here:

- The label map is decided at POSTPROCESS_SIZE wherever it can be: an output pixel whose four
  source pixels all have the same best class, ahead of every other class by more than
  `SURE_MARGIN`, takes that class, because bilinear interpolation is a convex combination (and
  floating-point rounding is monotone), so the class stays ahead there. Only the other pixels, near
  class boundaries, are interpolated (`_interpolated_labels`), which agrees with `transformers`
  except where two classes' interpolated scores are within float rounding of each other.
- Instances: only the queries whose class probability alone reaches the score threshold are scored
  (a query's score is at most its class probability); their binary masks are brought to the frame's
  size by the same index arithmetic as `torch`'s nearest mode (`nearest_indices`), on booleans.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# `transformers`' Mask2Former post-processing first brings every model's mask logits to this size
# (Mask2FormerImageProcessor.post_process_*_segmentation); ours does the same, so that its label maps
# and instances are those of `transformers` on the same outputs (tests/test_published.py).
POSTPROCESS_SIZE = (384, 384)
# A source pixel decides the label of the output pixels around it when its best class's score is
# ahead of every other's by more than this: far above float32 rounding of scores that are sums of at
# most a few hundred products of probabilities.
SURE_MARGIN = 1e-4


def postprocess_logits(mask_logits: torch.Tensor) -> torch.Tensor:
    """(Q, h, w) mask logits of one frame at POSTPROCESS_SIZE (bilinear), what `instance_scores` and
    `semantic_label_map` take."""
    return F.interpolate(mask_logits[None], size=POSTPROCESS_SIZE, mode="bilinear", align_corners=False)[0]


class Scored(NamedTuple):
    """Per query of one frame: best class, score and mask area; the binary masks (0/1 floats) of the
    scored queries only, `rows[q]` being query q's row in `binary` (-1: not scored, score 0)."""

    labels: torch.Tensor
    scores: torch.Tensor
    area: torch.Tensor
    binary: torch.Tensor
    rows: torch.Tensor


def instance_scores(class_logits, logits, probabilities=None, least: float = 0.0) -> Scored:
    """(Q, K+1) class logits and (Q, 384, 384) mask logits from `postprocess_logits` (and their
    sigmoid, `probabilities`, when at hand) as `post_process_instance_segmentation` scores them: each
    query's best class, its score (that class's probability x the mean mask probability inside its
    binary mask) and the mask's area, for the queries whose class probability is at least `least`
    (the others score 0: their score could not reach `least`). That function ranks (query, class)
    pairs, so below a score threshold of 0.5 it may report one query under two classes; at 0.5 and
    above (a softmax gives at most one class over 0.5) the instances are the same."""
    class_scores, labels = class_logits.softmax(-1)[:, :-1].max(-1)
    picked = torch.nonzero(class_scores >= least).flatten()
    rows = torch.full_like(labels, -1)
    rows[picked] = torch.arange(len(picked), device=labels.device)
    chosen = logits[picked]
    sigmoid = chosen.sigmoid() if probabilities is None else probabilities[picked]
    binary = (chosen > 0).float()  # 0/1: sums of floats run at several times those of bools on a CPU
    area, scores = torch.zeros_like(class_scores), torch.zeros_like(class_scores)
    area[picked] = binary.flatten(1).sum(1)  # exact below 2^24 pixels
    inside = (sigmoid * binary).flatten(1).sum(1)
    scores[picked] = class_scores[picked] * inside / (area[picked] + 1e-6)
    return Scored(labels, scores, area, binary, rows)


def nearest_indices(source: int, target: int) -> torch.Tensor:
    """The source index of each of `target` output positions, as `torch`'s nearest mode picks it
    (F.interpolate(mode="nearest")): floor(i * source / target) in float32, clamped."""
    positions = torch.arange(target)
    if source == target:
        return positions
    if target == 2 * source:
        return positions // 2
    scale = torch.tensor(source, dtype=torch.float32) / torch.tensor(target, dtype=torch.float32)
    return (positions.to(torch.float32) * scale).floor().long().clamp_max(source - 1)


def resized_masks(binary: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) 0/1 masks at `size` as (N, H, W) booleans, the pixels of F.interpolate's nearest
    mode; beyond the masks' own size by taking rows and then columns of booleans (a third of the
    time of interpolating floats at 1080p)."""
    if size[0] * size[1] <= binary.shape[1] * binary.shape[2]:
        return F.interpolate(binary[None], size=tuple(size), mode="nearest")[0].bool().cpu().numpy()
    masks = (binary > 0).cpu().numpy()
    rows = nearest_indices(masks.shape[1], size[0]).numpy()
    cols = nearest_indices(masks.shape[2], size[1]).numpy()
    return np.take(np.take(masks, rows, axis=1), cols, axis=2)


def semantic_label_map(class_logits, logits, size, probabilities=None) -> np.ndarray:
    """Mask2Former semantic inference for one frame, (Q, K+1) class logits and (Q, 384, 384) mask
    logits from `postprocess_logits` (and their sigmoid, `probabilities`, when at hand), as
    `post_process_semantic_segmentation` computes it: the sum over queries of class probability x
    mask probability, brought to `size` (bilinear), argmax per pixel (the first maximum on ties)."""
    class_probs = class_logits.softmax(-1)[:, :-1]  # drop "no object"
    probabilities = logits.sigmoid() if probabilities is None else probabilities
    scores = (class_probs.T @ probabilities.flatten(1)).view(-1, *probabilities.shape[1:])
    if size[0] * size[1] <= scores.shape[1] * scores.shape[2]:  # no larger: interpolating all is cheap
        scores = F.interpolate(scores[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        # max(0).indices is argmax(0) (the first maximum on ties) at a sixth of its time on a CPU.
        return scores.max(0).indices.to(torch.int32).cpu().numpy()
    grid = [_linear_source(scores.shape[1 + axis], size[axis], scores.device) for axis in (0, 1)]
    labels = _sure_cells(scores).index_select(0, grid[0].low)[:, grid[1].low]
    unsure = torch.nonzero(labels.flatten() < 0).flatten()
    if len(unsure):
        labels.view(-1)[unsure] = _interpolated_labels(scores, grid, unsure)
    return labels.to(torch.int32).cpu().numpy()


class _Source(NamedTuple):
    """Per output position along one axis: the two source positions bilinear interpolation mixes
    and the weight of the second."""

    low: torch.Tensor
    high: torch.Tensor
    weight: torch.Tensor


def _linear_source(source: int, target: int, device) -> _Source:
    """`torch`'s bilinear source positions and weights (align_corners=False) along one axis."""
    # The scale in float32 as `torch` has it; scale * (i + 0.5) - 0.5 rounded once, as its fused
    # multiply-add does (computed in float64, exact for these operands, then rounded to float32).
    scale = (torch.tensor(source, dtype=torch.float32) / torch.tensor(target, dtype=torch.float32)).double()
    positions = torch.arange(target, dtype=torch.float64, device=device)
    real = (scale.to(device) * (positions + 0.5) - 0.5).to(torch.float32).clamp_min(0)
    low = real.floor().long().clamp_max(source - 1)
    high = torch.where(low < source - 1, low + 1, low)
    return _Source(low, high, (real - low.to(torch.float32)).clamp(0, 1))


def _sure_cells(scores: torch.Tensor) -> torch.Tensor:
    """(h, w) int16: the class that wins every output pixel whose upper-left source pixel is this one
    (its own best class, ahead by more than SURE_MARGIN here and at its right, lower and lower-right
    neighbours, the edges clamped), -1 where no class is sure."""
    first, best = scores.max(0)
    if scores.shape[0] > 1:
        second = scores.scatter(0, best[None], float("-inf")).max(0).values
        best = torch.where(first - second > SURE_MARGIN, best, -1)
    best = best.to(torch.int16)
    below = torch.cat([best[1:], best[-1:]], 0)
    cell = torch.where(best == below, best, -1)
    right = torch.cat([cell[:, 1:], cell[:, -1:]], 1)
    return torch.where(cell == right, cell, -1)


def _interpolated_labels(scores: torch.Tensor, grid: list[_Source], pixels: torch.Tensor) -> torch.Tensor:
    """The argmax of the bilinearly interpolated class scores at output `pixels` (flat indices)."""
    rows, cols = grid
    r, c = pixels // len(cols.low), pixels % len(cols.low)
    y0, y1, wy = rows.low[r], rows.high[r], rows.weight[r]
    x0, x1, wx = cols.low[c], cols.high[c], cols.weight[c]
    flat, width = scores.flatten(1), scores.shape[2]

    def at(y, x):
        return flat.index_select(1, y * width + x)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).max(0).indices.to(torch.int16)
