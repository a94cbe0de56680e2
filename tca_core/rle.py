"""COCO run-length encoding of masks, through pycocotools."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode(mask: np.ndarray) -> dict:
    """A (H, W) boolean mask as COCO RLE {"size": [H, W], "counts": str}."""
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    if mask.dtype == bool:  # the same bytes as uint8 0/1: a view, no copy
        mask = mask.view(np.uint8)
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """The (H, W) boolean mask of a COCO RLE (counts as str or bytes)."""
    return coco_mask.decode(_coco(rle)).astype(bool)


def area(rle: dict) -> int:
    """Number of mask pixels."""
    return int(coco_mask.area(_coco(rle)))


def bbox(rle: dict) -> list[float]:
    """[x, y, width, height] of the mask (zeros for an empty mask)."""
    return [float(v) for v in coco_mask.toBbox(_coco(rle))]


def _coco(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
