"""The output tables: masks and frames as Parquet, one file per video (docs/output.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tca_core import rle

MASKS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("video_uri", pa.string()),
        ("frame_index", pa.int32()),
        ("timestamp", pa.float64()),
        ("instance_id", pa.int32()),  # null for semantic rows
        ("category_id", pa.int32()),
        ("category_name", pa.string()),
        ("score", pa.float32()),  # null for semantic rows
        ("bbox", pa.list_(pa.float32(), 4)),  # x, y, width, height in pixels
        ("area", pa.int64()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("rle_counts", pa.string()),  # COCO compressed RLE of a (height, width) mask
    ]
)

FRAMES_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("video_uri", pa.string()),
        ("frame_index", pa.int32()),
        ("timestamp", pa.float64()),
        ("num_masks", pa.int32()),
        ("tca_reset", pa.string()),  # why TCA re-clustered this frame from scratch, null if it continued
        ("tca_reassigned", pa.float32()),  # fraction of tokens (re)assigned; null for method "none"
        ("windows_computed", pa.float32()),  # window reuse: share of the blocks' windows computed; null: off
        ("frame_reused", pa.bool_()),  # frame reuse: the results are those of an earlier frame
    ]
)


def mask_row(video_id, video_uri, frame_index, timestamp, height, width, counts, instance_id, category_id, name, score):
    """One masks-table row; area and bbox come from the RLE `counts`."""
    encoded = {"size": [height, width], "counts": counts}
    return dict(
        video_id=video_id,
        video_uri=video_uri,
        frame_index=frame_index,
        timestamp=timestamp,
        instance_id=instance_id,
        category_id=category_id,
        category_name=name,
        score=score,
        bbox=rle.bbox(encoded),
        area=rle.area(encoded),
        height=height,
        width=width,
        rle_counts=counts,
    )


def frame_row(video_id, video_uri, frame_index, timestamp, num_masks, **stats):
    """One frames-table row; `stats`: tca_reset, tca_reassigned, windows_computed (None where not
    given) and frame_reused (False)."""
    return dict(
        video_id=video_id,
        video_uri=video_uri,
        frame_index=frame_index,
        timestamp=timestamp,
        num_masks=num_masks,
        tca_reset=stats.get("tca_reset"),
        tca_reassigned=stats.get("tca_reassigned"),
        windows_computed=stats.get("windows_computed"),
        frame_reused=bool(stats.get("frame_reused", False)),
    )


def timestamp_of(frame_index: int, fps: float) -> float:
    return frame_index / fps if fps > 0 else float("nan")


def write_table(rows: list[dict], schema: pa.Schema, path: str | Path, filesystem=None):
    """Write rows as one Parquet file (an empty table keeps the schema)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, str(path), filesystem=filesystem)


def read_masks(path: str | Path, filesystem=None) -> pa.Table:
    return pq.read_table(str(path), schema=MASKS_SCHEMA, filesystem=filesystem)


@dataclass
class FrameMasks:
    """One frame's decoded masks: instances (id, category id, name, score, mask) and semantic segments."""

    instances: list[tuple[int, int, str, float, np.ndarray]] = field(default_factory=list)
    semantic: list[tuple[int, str, np.ndarray]] = field(default_factory=list)

    def label_map(self, height: int, width: int) -> np.ndarray:
        labels = np.zeros((height, width), dtype=np.int32)
        for category_id, _, mask in self.semantic:
            labels[mask] = category_id
        return labels


def decode_frames(table: pa.Table) -> dict[int, FrameMasks]:
    """A masks table decoded frame by frame."""
    frames: dict[int, FrameMasks] = {}
    for r in table.to_pylist():
        mask = rle.decode({"size": [r["height"], r["width"]], "counts": r["rle_counts"]})
        frame = frames.setdefault(r["frame_index"], FrameMasks())
        if r["instance_id"] is None:
            frame.semantic.append((r["category_id"], r["category_name"], mask))
        else:
            frame.instances.append((r["instance_id"], r["category_id"], r["category_name"], r["score"], mask))
    return frames
