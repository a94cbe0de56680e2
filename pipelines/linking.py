"""Video-wide instance ids from chunks processed independently.

Each chunk's ids are local to the tracker that produced them (its `lineage`). A chunk that continued
its predecessor's tracker shares its lineage, so the same mapping applies. A chunk that started a
fresh tracker on warm-up frames is linked by matching its warm-up masks with the global masks already
assigned on those same frames (video IoU over the overlap, Hungarian matching).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask
from scipy.optimize import linear_sum_assignment

MIN_LINK_IOU = 0.3


class IdLinker:
    """Assigns global ids to one video's chunks from their boundary summaries, fed in frame order.

    A summary (pipelines.stages.ChunkWriter) holds a chunk's lineage, its local ids in order of first
    appearance, its warm-up frames (`head`) and its last frames (`tail`), each frame as
    [frame index, local ids, RLE counts]. Only the previous chunk's tail is kept."""

    def __init__(self, height: int, width: int):
        self.size = [height, width]
        self.next_id = 1
        self.maps: dict[str, dict[int, int]] = {}  # lineage -> local id -> global id
        self.assigned: dict[int, list[tuple[int, bytes]]] = {}  # previous chunk's tail: frame -> [(global id, rle)]

    def link(self, lineage: str, ids: list[int], head: list, tail: list) -> dict[int, int]:
        """local id -> global id for every id of a chunk."""
        mapping = self.maps.setdefault(lineage, {})
        if head and not mapping:
            mapping.update(self._match([dict(frame_index=f, instance_ids=i, rles=r) for f, i, r in head]))
        for local in ids:
            if local not in mapping:
                mapping[local] = self.next_id
                self.next_id += 1
        self.assigned = {frame: [(mapping[i], c) for i, c in zip(locals_, rles)] for frame, locals_, rles in tail}
        return {local: mapping[local] for local in ids}

    def _match(self, warm_rows: list[dict]) -> dict[int, int]:
        """local id -> global id for instances that overlap enough on the warm-up frames."""
        intersection, union = {}, {}
        for row in warm_rows:
            previous = self.assigned.get(row["frame_index"], [])
            if not previous or not row["instance_ids"]:
                continue
            ours = [self._rle(c) for c in row["rles"]]
            theirs = [self._rle(c) for _, c in previous]
            ious = coco_mask.iou(ours, theirs, [0] * len(theirs))
            ours_area, theirs_area = coco_mask.area(ours), coco_mask.area(theirs)
            for i, local in enumerate(row["instance_ids"]):
                for j, (global_id, _) in enumerate(previous):
                    iou = ious[i, j]
                    inter = iou * (ours_area[i] + theirs_area[j]) / (1 + iou)
                    key = (local, global_id)
                    intersection[key] = intersection.get(key, 0.0) + inter
                    union[key] = union.get(key, 0.0) + ours_area[i] + theirs_area[j] - inter
        if not intersection:
            return {}
        locals_ = sorted({k[0] for k in intersection})
        globals_ = sorted({k[1] for k in intersection})
        score = np.zeros((len(locals_), len(globals_)))
        for (local, global_id), inter in intersection.items():
            score[locals_.index(local), globals_.index(global_id)] = inter / max(union[(local, global_id)], 1e-9)
        rows, cols = linear_sum_assignment(score, maximize=True)
        return {locals_[r]: globals_[c] for r, c in zip(rows, cols) if score[r, c] >= MIN_LINK_IOU}

    def _rle(self, counts) -> dict:
        return {"size": self.size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
