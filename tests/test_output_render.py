"""Parquet output tables and rendering, fed with ground truth as if it were a run's results."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipelines.generate import write_generated
from pipelines.output import (
    FRAMES_SCHEMA,
    MASKS_SCHEMA,
    decode_frames,
    frame_row,
    mask_row,
    read_masks,
    timestamp_of,
    write_table,
)
from pipelines.render import frame_masks, overlay, render
from pipelines.video_io import open_video
from tca_core import rle
from tca_core.synthetic import CATEGORIES, SyntheticVideo


def _truth_rows(seed, num_frames, fps):
    """Mask and frame rows of a generated video's ground truth, as a run would write them."""
    video = SyntheticVideo(seed, num_frames)
    _, objects = video.frames()
    masks, frames = [], []
    for t, frame in enumerate(objects):
        fields = ("v.mp4", "v.mp4", t, timestamp_of(t, fps), video.height, video.width)
        rows = [
            mask_row(*fields, rle.encode(o.mask)["counts"], o.track_id, o.category_id, CATEGORIES[o.category_id], 1.0)
            for o in frame
        ]
        masks += rows
        frames.append(frame_row("v.mp4", "v.mp4", t, timestamp_of(t, fps), len(rows), None, None))
    return masks, frames, objects


def test_tables_and_render(tmp_path):
    write_generated(tmp_path / "in", [21], num_frames=8, fps=8)
    path = tmp_path / "in" / "videos" / "21.mp4"
    mask_rows, frame_rows, objects = _truth_rows(21, 8, fps=8)
    write_table(mask_rows, MASKS_SCHEMA, tmp_path / "masks.parquet")
    write_table(frame_rows, FRAMES_SCHEMA, tmp_path / "frames.parquet")

    masks = read_masks(tmp_path / "masks.parquet")
    assert masks.schema.equals(MASKS_SCHEMA)
    assert pq.read_table(tmp_path / "frames.parquet").schema.equals(FRAMES_SCHEMA)
    decoded = decode_frames(masks)
    for t, frame in enumerate(objects):
        assert sorted((i, c) for i, c, _, _, _ in decoded[t].instances) == sorted(
            (o.track_id, o.category_id) for o in frame
        )
        for instance_id, _, _, _, mask in decoded[t].instances:
            truth = next(o for o in frame if o.track_id == instance_id)
            assert np.array_equal(mask, truth.mask)
    for row in masks.to_pylist():
        ys, xs = np.nonzero(rle.decode({"size": [row["height"], row["width"]], "counts": row["rle_counts"]}))
        assert row["area"] == len(ys)
        assert row["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]

    video_out, sheet_out = render(path, masks, tmp_path / "render", sheet_frames=4)
    assert open_video(video_out).info.frames == 8
    assert Image.open(sheet_out).size == (4 * 336, 224 + 14)


def test_overlay_colors_only_the_masks():
    frame = np.full((20, 30, 3), 100, dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 10:20] = True
    drawn = overlay(frame, [(mask, 3, "")])
    changed = np.any(drawn != frame, axis=-1)
    assert np.array_equal(changed, mask)


def test_semantic_rows_render_without_background():
    label_map = np.zeros((224, 336), dtype=np.int32)
    label_map[:10, :10] = 2
    rows = [
        mask_row("v", "v", 0, 0.0, 224, 336, rle.encode(label_map == c)["counts"], None, c, CATEGORIES[c], None)
        for c in (0, 2)
    ]
    table = pa.Table.from_pylist(rows, schema=MASKS_SCHEMA)
    frame = decode_frames(table)[0]
    assert np.array_equal(frame.label_map(224, 336), label_map)
    assert [caption for _, _, caption in frame_masks(table)[0]] == ["square"]
