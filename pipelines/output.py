"""The output tables: masks and frames as Parquet, one file per video (docs/output.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tca_core import rle
from tca_core.segmenter import FrameResult

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


def frame_row(video_id, video_uri, frame_index, timestamp, num_masks, tca_reset, tca_reassigned):
    return dict(
        video_id=video_id,
        video_uri=video_uri,
        frame_index=frame_index,
        timestamp=timestamp,
        num_masks=num_masks,
        tca_reset=tca_reset,
        tca_reassigned=tca_reassigned,
    )


def timestamp_of(frame_index: int, fps: float) -> float:
    return frame_index / fps if fps > 0 else float("nan")


def result_rows(video_id: str, video_uri: str, fps: float, results: list[FrameResult], labels: dict[int, str]):
    """(mask rows, frame rows) of one video's frame results: instances, or one row per class present."""
    masks, frames = [], []
    for r in results:
        timestamp = timestamp_of(r.frame_index, fps)

        def row(mask, *fields):
            counts = rle.encode(mask)["counts"]
            return mask_row(video_id, video_uri, r.frame_index, timestamp, r.height, r.width, counts, *fields)

        rows = [row(i.mask, i.id, i.category_id, i.category, i.score) for i in r.instances]
        if r.label_map is not None:
            for category in np.unique(r.label_map).tolist():
                rows.append(row(r.label_map == category, None, category, labels.get(category, str(category)), None))
        masks += rows
        stats = r.stats
        frames.append(
            frame_row(video_id, video_uri, r.frame_index, timestamp, len(rows),
                      stats.reset if stats else None, stats.reassigned if stats else None)
        )
    return masks, frames


def write_table(rows: list[dict], schema: pa.Schema, path: str | Path, filesystem=None):
    """Write rows as one Parquet file (an empty table keeps the schema)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, str(path), filesystem=filesystem)


def read_masks(path: str | Path, filesystem=None) -> pa.Table:
    return pq.read_table(str(path), schema=MASKS_SCHEMA, filesystem=filesystem)
