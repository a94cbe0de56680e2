"""Parquet output tables and rendering, fed with ground truth as if it were a run's results."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import export
from pipelines import render as render_module
from pipelines import validate as validate_module
from pipelines.export import write_youtube_vis_results, youtube_vis_results
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
from pipelines.render import contact_sheet, frame_masks, overlay, render
from pipelines.validate import validate
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
        frames.append(frame_row("v.mp4", "v.mp4", t, timestamp_of(t, fps), len(rows)))
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

    video_out, sheet_out = render(path, tmp_path / "masks.parquet", tmp_path / "render", sheet_frames=4)
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


def _write_chunked(path, schema, rows, chunks, extra=()):
    """Write `rows` as the commit task does, one ParquetWriter.write_table (a row group) per chunk of
    frames, `chunks` being (first, stop) frame ranges, then the `extra` rows as a last row group;
    returns the file's row groups."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for first, stop in chunks:
            chunk = [row for row in rows if first <= row["frame_index"] < stop]
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        if extra:
            writer.write_table(pa.Table.from_pylist(list(extra), schema=schema))
    return pq.ParquetFile(path).num_row_groups


def test_readers_stream_a_table_of_many_row_groups(tmp_path, monkeypatch):
    for module in (validate_module, export, render_module):  # record batches that split frames' rows too
        monkeypatch.setattr(module, "MASK_BATCH", 5)
    monkeypatch.setattr(validate_module, "FRAME_BATCH", 5)
    write_generated(tmp_path / "in", [21], num_frames=12, fps=8)
    video_path = tmp_path / "in" / "videos" / "21.mp4"
    mask_rows, frame_rows, objects = _truth_rows(21, 12, fps=8)
    height, width = mask_rows[0]["height"], mask_rows[0]["width"]
    out, chunks = tmp_path / "out", [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert _write_chunked(out / "masks" / "v.mp4.parquet", MASKS_SCHEMA, mask_rows, chunks) == 4
    assert _write_chunked(out / "frames" / "v.mp4.parquet", FRAMES_SCHEMA, frame_rows, chunks) == 4
    record = dict(video_id="v.mp4", frames=12, height=height, width=width, masks=len(mask_rows), run_id="r")
    (out / "_commits").mkdir()
    (out / "_commits" / "v.mp4.json").write_text(json.dumps(record))

    report = validate(str(out))
    assert report.ok, report.text()
    assert (report.videos, report.frames, report.masks) == (1, 12, len(mask_rows))

    first_seen = list(dict.fromkeys(o.track_id for frame in objects for o in frame))
    expected = []
    for track_id in first_seen:
        masks = [next((o for o in frame if o.track_id == track_id), None) for frame in objects]
        category = next(o.category_id for o in masks if o is not None)
        segmentations = [o and {"size": [height, width], "counts": rle.encode(o.mask)["counts"]} for o in masks]
        expected.append(dict(video_id=1, category_id=category, score=1.0, segmentations=segmentations))
    exported = youtube_vis_results(str(out))
    assert exported == dict(videos=[dict(id=1, name="v.mp4", length=12, width=width, height=height)], results=expected)
    text = io.StringIO()
    assert write_youtube_vis_results(str(out), text) == (1, len(expected))
    assert text.getvalue() == json.dumps(exported)

    _, sheet_path = render(video_path, out / "masks" / "v.mp4.parquet", tmp_path / "render", sheet_frames=4)
    by_frame, video = frame_masks(read_masks(out / "masks" / "v.mp4.parquet")), open_video(video_path)
    picked = [0, 4, 7, 11]
    whole = contact_sheet(
        [overlay(video.read(t, t + 1)[0][0], by_frame.get(t, [])) for t in picked], [f"frame {t}" for t in picked]
    )
    assert np.array_equal(np.asarray(Image.open(sheet_path)), np.asarray(whole))  # as drawn from the whole table

    # frame 6 listed twice and frame 8 not at all, each across a row-group boundary; a mask of frame 0
    # (its id repeated) in the last row group
    _write_chunked(out / "frames" / "v.mp4.parquet", FRAMES_SCHEMA, frame_rows, [(0, 3), (3, 7), (6, 8), (9, 12)])
    assert _write_chunked(out / "masks" / "v.mp4.parquet", MASKS_SCHEMA, mask_rows, chunks, mask_rows[:1]) == 5
    (out / "_commits" / "v.mp4.json").write_text(json.dumps(dict(record, masks=len(mask_rows) + 1)))
    report = validate(str(out))
    assert (report.frames_lost, report.frames_duplicated) == (1, 1)
    assert report.problems == [
        "v.mp4: frames table: 1 of 12 frames missing, 1 duplicated, 0 outside 0..11",
        f"v.mp4: {len(objects[8])} masks of frames not in the frames table (first at frame 8)",
        "v.mp4: 1 instance ids repeated within a frame or without a score (first at frame 0)",
        "v.mp4: num_masks disagrees with the masks table on 1 frames",
    ], report.text()
    with pytest.raises(ValueError, match="v.mp4.parquet: masks of frame 0 come after frame 11"):
        render(video_path, out / "masks" / "v.mp4.parquet", tmp_path / "render")
