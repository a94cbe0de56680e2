"""Mask2Former's post-processing, as `transformers` computes it, at the cost of the pixels that need it.

`transformers`' image processor brings every query's mask logits to POSTPROCESS_SIZE (bilinear),
then, for semantic segmentation, sums class probability x mask probability over the queries, brings
those class scores to the frame's size (bilinear) and takes the argmax per pixel; for instances, it
scores each query by its class probability x its mean mask probability inside its mask and brings
the binary masks to the frame's size (nearest). Resizing every query's mask to 384x384 and taking
its sigmoid (24 x 147 k values) cost more than the rest at the model's own size, and the last
resizing dominates at a video's (1080p: 2 M pixels). Here:

- The label map is decided per cell of the model's mask grid wherever it can be (`_sure_cells`):
  bilinear interpolation is a convex combination of a cell's four corners and the sigmoid is
  monotone, so each query's mask probability anywhere in the cell lies between the sigmoids of its
  lowest and highest corner; a class whose lowest score beats every other class's highest by
  `SURE_MARGIN` wins every pixel resized from that cell, at 384x384 and at the frame's size. Class
  scores are computed only in the other cells and around them (`_Scores`; on the shipped model's
  held-out frames about a fifth of the 384x384 pixels), the masks resized along their rows by
  torch's own kernel and down the columns at those pixels with its arithmetic (fused multiply-adds,
  `_mixed`), so the scores there are torch's own. An output pixel whose four source pixels are sure
  of one class takes it; the others are interpolated from the scores (`_interpolated_labels`), with
  the same arithmetic. The label map equals `transformers`' (tests/test_published.py,
  tests/test_postprocess.py) except where two classes' scores tie to float rounding.
- Instances: only the queries whose class probability alone reaches the score threshold are scored
  and resized to 384x384 (a query's score is at most its class probability); their binary masks
  are brought to the frame's size by the same index arithmetic as `torch`'s nearest mode
  (`nearest_indices`), on booleans.
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
# A cell (or a pixel) decides the label of the pixels resized from it when its best class's least
# score is ahead of every other's greatest by more than this: far above float32 rounding of scores
# that are sums of at most a few hundred products of probabilities.
SURE_MARGIN = 1e-4


def postprocess_logits(mask_logits: torch.Tensor) -> torch.Tensor:
    """(Q, h, w) mask logits of one frame at POSTPROCESS_SIZE (bilinear), as `transformers` resizes them."""
    return F.interpolate(mask_logits[None], size=POSTPROCESS_SIZE, mode="bilinear", align_corners=False)[0]


class Scored(NamedTuple):
    """Per query of one frame: best class, score and mask area; the binary masks (0/1 floats) of the
    scored queries only, `rows[q]` being query q's row in `binary` (-1: not scored, score 0)."""

    labels: torch.Tensor
    scores: torch.Tensor
    area: torch.Tensor
    binary: torch.Tensor
    rows: torch.Tensor


def instance_scores(class_logits, masks, least: float = 0.0) -> Scored:
    """(Q, K+1) class logits and (Q, h, w) mask logits as the model gives them, as
    `post_process_instance_segmentation` scores them: each query's best class, its score (that
    class's probability x the mean mask probability inside its binary mask, at POSTPROCESS_SIZE)
    and the mask's area, for the queries whose class probability is at least `least` (the others
    score 0: their score could not reach `least`; their masks are not resized). That function ranks
    (query, class) pairs, so below a score threshold of 0.5 it may report one query under two
    classes; at 0.5 and above (a softmax gives at most one class over 0.5) the instances are the same."""
    class_scores, labels = class_logits.softmax(-1)[:, :-1].max(-1)
    picked = torch.nonzero(class_scores >= least).flatten()
    rows = torch.full_like(labels, -1)
    rows[picked] = torch.arange(len(picked), device=labels.device)
    chosen = postprocess_logits(masks[picked]) if len(picked) else masks.new_zeros(0, *POSTPROCESS_SIZE)
    binary = (chosen > 0).float()  # 0/1: sums of floats run at several times those of bools on a CPU
    area, scores = torch.zeros_like(class_scores), torch.zeros_like(class_scores)
    area[picked] = binary.flatten(1).sum(1)  # exact below 2^24 pixels
    inside = (chosen.sigmoid() * binary).flatten(1).sum(1)
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


def semantic_label_map(class_logits, masks, size) -> np.ndarray:
    """Mask2Former semantic inference for one frame, (Q, K+1) class logits and (Q, h, w) mask logits
    as the model gives them, as `post_process_semantic_segmentation` computes it: the masks brought
    to POSTPROCESS_SIZE (bilinear), the sum over queries of class probability x mask probability,
    brought to `size` (bilinear), argmax per pixel (the first maximum on ties). Class scores are
    computed only in the mask cells whose bounds leave the class open (`_sure_cells`) and around
    them (`_Scores`); output pixels among sure pixels of one class take it, the others are
    interpolated from the scores (`_interpolated_labels`)."""
    class_probs = class_logits.softmax(-1)[:, :-1]  # drop "no object"
    first = _Grid.of(masks.shape[1:], POSTPROCESS_SIZE, masks.device)  # model -> POSTPROCESS_SIZE
    second = _Grid.of(POSTPROCESS_SIZE, size, masks.device)  # POSTPROCESS_SIZE -> the frame
    cells = _sure_cells(class_probs, masks)
    scores = _Scores.around_unsure(class_probs, masks, cells, first)
    labels = _agreeing(scores.labels).index_select(0, second.rows.low)[:, second.cols.low]
    unsure = torch.nonzero(labels.flatten() < 0).flatten()
    if len(unsure):
        labels.view(-1)[unsure] = _interpolated_labels(scores.dense, second, unsure)
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


class _Grid(NamedTuple):
    """`_linear_source` along both axes of a resize from `source` to `target` (height, width)."""

    rows: _Source
    cols: _Source

    @staticmethod
    def of(source, target, device) -> _Grid:
        return _Grid(*(_linear_source(source[axis], target[axis], device) for axis in (0, 1)))


def _mixed(corners: dict, row_weight: torch.Tensor, col_weight: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of `corners[r, c]` (r, c: 0 the low, 1 the high source position) with
    the arithmetic of torch's CPU kernel, whose values are then its own: a fused multiply-add
    (`torch.addcmul`) along each row, then one down the column."""
    top = torch.addcmul(corners[0, 1] * col_weight, corners[0, 0], 1 - col_weight)
    bottom = torch.addcmul(corners[1, 1] * col_weight, corners[1, 0], 1 - col_weight)
    return torch.addcmul(bottom * row_weight, top, 1 - row_weight)


def _shifted(values: torch.Tensor, dim: int) -> torch.Tensor:
    """`values` at the next position along `dim`, the last one repeated."""
    return torch.cat([values.narrow(dim, 1, values.shape[dim] - 1), values.narrow(dim, -1, 1)], dim)


def _dilated(flags: torch.Tensor, dim: int) -> torch.Tensor:
    """Boolean `flags` or-ed with their neighbours on both sides along `dim`."""
    before = torch.cat([flags.narrow(dim, 0, 1), flags.narrow(dim, 0, flags.shape[dim] - 1)], dim)
    return flags | _shifted(flags, dim) | before


def _sure_cells(class_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(h, w) int16: per mask cell (a mask pixel and its right, lower and lower-right neighbours,
    the edges clamped), the class that wins every pixel bilinear interpolation mixes from those four,
    -1 where none is sure. Interpolation is a convex combination and the sigmoid is monotone, so a
    query's mask probability there lies between the sigmoids of its lowest and highest corner; a
    class whose lowest score beats every other class's highest by SURE_MARGIN wins there."""
    low, high = torch.minimum(masks, _shifted(masks, 1)), torch.maximum(masks, _shifted(masks, 1))
    low, high = torch.minimum(low, _shifted(low, 2)), torch.maximum(high, _shifted(high, 2))
    lowest = class_probs.T @ low.sigmoid().flatten(1)  # (K, h * w)
    highest = class_probs.T @ high.sigmoid().flatten(1) if len(lowest) > 1 else lowest
    return _sure_labels(lowest, highest).view(masks.shape[1:])


def _agreeing(labels: torch.Tensor) -> torch.Tensor:
    """(h, w) int16: each pixel's label where it, its right, lower and lower-right neighbours (the
    edges clamped) have that same label, -1 elsewhere (or where the label is -1)."""
    cell = torch.where(labels == _shifted(labels, 0), labels, -1)
    return torch.where(cell == _shifted(cell, 1), cell, -1)


def _sure_labels(least: torch.Tensor, greatest: torch.Tensor) -> torch.Tensor:
    """Per column of (K, N) class scores known to lie between `least` and `greatest` (the same tensor
    for exact scores): int16, the class best by `least` where that beats every other class's
    `greatest` by more than SURE_MARGIN, else -1."""
    first, best = least.max(0)
    if len(least) > 1:
        rival = greatest.scatter(0, best[None], float("-inf")).max(0).values
        best = torch.where(first - rival > SURE_MARGIN, best, -1)
    return best.to(torch.int16)


class _Scores(NamedTuple):
    """Class scores at POSTPROCESS_SIZE where they are needed: `dense` (K, 384, 384), computed (as
    `transformers` computes them) at the pixels chosen and zero elsewhere; `labels` (384, 384) int16,
    the sure label per pixel (-1 where no class is sure)."""

    dense: torch.Tensor
    labels: torch.Tensor

    @staticmethod
    def around_unsure(class_probs, masks, cells: torch.Tensor, grid: _Grid) -> _Scores:
        """Scores at the pixels of unsure cells, at the pixels that border a pixel of another label
        and at their neighbours: every pixel that an output pixel not among sure pixels of one class
        mixes (its four source pixels are neighbours)."""
        labels = cells.index_select(0, grid.rows.low)[:, grid.cols.low]
        seed = (labels < 0) | (labels != _shifted(labels, 0)) | (labels != _shifted(labels, 1))
        needed = _dilated(_dilated(seed, 0), 1)
        dense = torch.zeros(len(class_probs.T), *POSTPROCESS_SIZE, device=masks.device)
        pixels = torch.nonzero(needed.flatten()).flatten()
        if len(pixels):
            values = _scores_at(class_probs, masks, grid, pixels)
            dense.view(len(dense), -1)[:, pixels] = values
            flat = labels.view(-1)
            flat[pixels] = torch.where(flat[pixels] < 0, _sure_labels(values, values), flat[pixels])
        return _Scores(dense, labels)


def _scores_at(class_probs, masks, grid: _Grid, pixels: torch.Tensor) -> torch.Tensor:
    """(K, N) class scores at N flat POSTPROCESS_SIZE `pixels`: the masks resized along their rows
    (torch's kernel: the first of its two passes), then down the columns at these pixels only
    (`_mixed`'s arithmetic), sigmoid, the sum over queries weighted by class probability."""
    width = POSTPROCESS_SIZE[1]
    across = F.interpolate(masks[None], size=(masks.shape[1], width), mode="bilinear", align_corners=False)[0]
    rows, cols = pixels // width, pixels % width
    flat = across.flatten(1)
    top = flat.index_select(1, grid.rows.low[rows] * width + cols)
    bottom = flat.index_select(1, grid.rows.high[rows] * width + cols)
    weight = grid.rows.weight[rows]
    logits = torch.addcmul(bottom * weight, top, 1 - weight)
    return class_probs.T @ logits.sigmoid()


def _interpolated_labels(scores: torch.Tensor, grid: _Grid, pixels: torch.Tensor) -> torch.Tensor:
    """The argmax of the bilinearly interpolated class scores (K, h, w) at output `pixels` (flat)."""
    rows, cols = pixels // len(grid.cols.low), pixels % len(grid.cols.low)
    y = (grid.rows.low[rows], grid.rows.high[rows])
    x = (grid.cols.low[cols], grid.cols.high[cols])
    flat, width = scores.flatten(1), scores.shape[2]
    corners = {(i, j): flat.index_select(1, y[i] * width + x[j]) for i in (0, 1) for j in (0, 1)}
    return _mixed(corners, grid.rows.weight[rows], grid.cols.weight[cols]).max(0).indices.to(torch.int16)
