"""Committing one video: its chunks' parts -> frames and masks tables with global ids -> commit record.

Runs as a Ray task once every chunk of the video is written (`pipelines.nightly` submits it), so
that no mask passes through the driver. Parts are read one at a time and appended to the two
tables, which appear whole when written (docs/output.md); the commit record comes last, then the
parts are removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import one_line
from .output import FRAMES_SCHEMA, MASKS_SCHEMA
from .storage import atomic_writer, filesystem, join, write_atomic


@dataclass(frozen=True)
class CommitPlan:
    """What committing a video needs: its chunks' parts in frame order, each with its id mapping."""

    video_id: str
    uri: str
    parts: list[dict]  # {"frames": path, "masks": path, "ids": {local id: global id}} per chunk
    record: dict  # the commit record, less the counts the tables give


def commit_video(output: str, endpoint_url: str | None, plan: CommitPlan) -> tuple[int, int, str]:
    """(frames, masks, "") once committed, or (0, 0, why not). The frames must be 0..N-1 exactly once."""
    fs, root = filesystem(output, endpoint_url)
    try:
        frames = _merge(
            fs,
            [part["frames"] for part in plan.parts],
            None,
            FRAMES_SCHEMA,
            join(root, "frames", f"{plan.video_id}.parquet"),
        )
        expected = int(plan.record["frames"])
        if frames != list(range(expected)):
            missing, duplicated = len(set(range(expected)) - set(frames)), len(frames) - len(set(frames))
            return 0, 0, f"{plan.uri}: not committed: {missing} of {expected} frames missing, {duplicated} duplicated"
        masks = _merge(
            fs,
            [part["masks"] for part in plan.parts],
            [part["ids"] for part in plan.parts],
            MASKS_SCHEMA,
            join(root, "masks", f"{plan.video_id}.parquet"),
        )
        write_atomic(
            fs,
            join(root, "_commits", f"{plan.video_id}.json"),
            json.dumps(dict(plan.record, masks=len(masks))).encode(),
        )
    except Exception as error:  # storage (after its retries), or any other: this video fails, the others go on
        return 0, 0, f"{plan.uri}: not committed: {type(error).__name__}: {one_line(error)}"
    try:
        fs.rm(join(root, "_parts", plan.video_id), recursive=True)
    except Exception:  # noqa: BLE001 (left-over parts are harmless: a rerun or `validate` sees them)
        pass
    return len(frames), len(masks), ""


def _merge(fs, paths: list[str], id_maps: list[dict] | None, schema: pa.Schema, target: str) -> list:
    """Append the parts to one Parquet file at `target` (ids mapped where given); returns the frame
    index of every row written."""
    indices = []
    with atomic_writer(fs, target) as sink, pq.ParquetWriter(sink, schema) as writer:
        for n, path in enumerate(paths):
            table = pq.read_table(path, filesystem=fs, schema=schema)
            if id_maps is not None and len(table):
                table = _global_ids(table, id_maps[n])
            writer.write_table(table)
            indices += table.column("frame_index").to_pylist()
    return indices


def _global_ids(table: pa.Table, ids: dict) -> pa.Table:
    """The part's local instance ids replaced by the video's global ids (semantic rows stay null)."""
    local = table.column("instance_id").to_pylist()
    mapped = [None if i is None else int(ids[str(i)] if str(i) in ids else ids[i]) for i in local]
    column = pa.array(mapped, pa.int32())
    return table.set_column(table.schema.get_field_index("instance_id"), "instance_id", column)
