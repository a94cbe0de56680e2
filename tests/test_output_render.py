"""Parquet output tables and rendering, fed with ground truth as if it were a run's results."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipelines.generate import write_generated
from pipelines.output import FRAMES_SCHEMA, MASKS_SCHEMA, read_masks, result_rows
from pipelines.render import frame_masks, overlay, render
from pipelines.segment import write_outputs
from pipelines.video_io import open_video, probe
from tca_core import rle
from tca_core.segmenter import FrameResult, Instance
from tca_core.synthetic import CATEGORIES, SyntheticVideo


def _truth_as_results(seed, num_frames):
    video = SyntheticVideo(seed, num_frames)
    _, objects = video.frames()
    results = [
        FrameResult(
            "v.mp4",
            t,
            video.height,
            video.width,
            instances=[Instance(o.track_id, o.category_id, CATEGORIES[o.category_id], 1.0, o.mask) for o in frame],
        )
        for t, frame in enumerate(objects)
    ]
    return results, objects


def test_tables_and_render(tmp_path):
    write_generated(tmp_path / "in", [21], num_frames=8, fps=8)
    path = tmp_path / "in" / "videos" / "21.mp4"
    results, objects = _truth_as_results(21, 8)
    info = probe(open_video(path))
    masks_path, frames_path = write_outputs(tmp_path / "out", "v.mp4", str(path), info, results, CATEGORIES)

    masks = read_masks(masks_path)
    assert masks.schema.equals(MASKS_SCHEMA)
    assert pq.read_table(frames_path).schema.equals(FRAMES_SCHEMA)
    assert masks.num_rows == sum(len(frame) for frame in objects)
    for row in masks.to_pylist():
        truth = next(o for o in objects[row["frame_index"]] if o.track_id == row["instance_id"])
        decoded = rle.decode({"size": [row["height"], row["width"]], "counts": row["rle_counts"]})
        assert np.array_equal(decoded, truth.mask)
        assert row["area"] == truth.mask.sum() and row["timestamp"] == row["frame_index"] / 8
    frames = pq.read_table(frames_path).to_pylist()
    assert [f["frame_index"] for f in frames] == list(range(8))
    assert [f["num_masks"] for f in frames] == [len(frame) for frame in objects]

    video_out, sheet_out = render(path, masks, tmp_path / "render", sheet_frames=4)
    assert probe(open_video(video_out)).frames == 8
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
    semantic = [FrameResult("v", 0, 224, 336, label_map=label_map)]
    rows, _ = result_rows("v", "v", 10.0, semantic, CATEGORIES)
    assert sorted(r["category_name"] for r in rows) == ["background", "square"]
    assert all(r["instance_id"] is None and r["score"] is None for r in rows)
    by_frame = frame_masks(pa.Table.from_pylist(rows, schema=MASKS_SCHEMA))
    assert [caption for _, _, caption in by_frame[0]] == ["square"]
