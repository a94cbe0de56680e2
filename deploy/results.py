"""The service's JSON form of segmentation results: COCO RLE masks per frame."""

from __future__ import annotations

import numpy as np

from tca_core import rle
from tca_core.segmenter import FrameResult


def mask_json(mask: np.ndarray) -> dict:
    """A (H, W) bool mask as {"rle": {"size", "counts"}, "area", "bbox": [x, y, w, h]}."""
    encoded = rle.encode(mask)
    return {"rle": encoded, "area": rle.area(encoded), "bbox": rle.bbox(encoded)}


def frame_json(result: FrameResult, labels: dict[int, str]) -> dict:
    """One frame: tracked instances and, for semantic tasks, one mask per category present."""
    frame = {
        "frame_index": result.frame_index,
        "instances": [
            {
                "id": instance.id,
                "category_id": instance.category_id,
                "category": instance.category,
                "score": instance.score,
                **mask_json(instance.mask),
            }
            for instance in result.instances
        ],
    }
    if result.label_map is not None:
        frame["semantic"] = [
            {"category_id": int(c), "category": labels.get(int(c), str(c)), **mask_json(result.label_map == c)}
            for c in np.unique(result.label_map)
        ]
    return frame
