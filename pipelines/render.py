"""Drawing a run's masks over its video: an overlay MP4 and a PNG contact sheet."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from tca_core import rle

from .video_io import open_video, write_mp4


def color_of(key: int) -> np.ndarray:
    """A distinct, stable RGB color per instance id (or category id)."""
    hue = (key * 0.618033988749895) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 1.0)) * 255


def overlay(frame: np.ndarray, masks: list[tuple[np.ndarray, int, str]], alpha: float = 0.45) -> np.ndarray:
    """`frame` with each (mask, color key, caption) blended in, outlined and captioned."""
    image = frame.astype(np.float32)
    for mask, key, _ in masks:
        color = color_of(key)
        image[mask] = (1 - alpha) * image[mask] + alpha * color
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        image[edge] = color
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for mask, key, caption in masks:
        ys, xs = np.nonzero(mask)
        if len(ys):
            draw.text((int(xs.min()), max(0, int(ys.min()) - 11)), caption, fill=tuple(int(c) for c in color_of(key)))
    return np.asarray(picture)


def contact_sheet(frames: list[np.ndarray], captions: list[str], columns: int = 4) -> Image.Image:
    """Frames in a grid, each captioned (e.g. with its frame index)."""
    height, width = frames[0].shape[:2]
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * width, rows * (height + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (frame, caption) in enumerate(zip(frames, captions)):
        x, y = (n % columns) * width, (n // columns) * (height + 14)
        sheet.paste(Image.fromarray(frame), (x, y + 14))
        draw.text((x + 2, y + 1), caption, fill="black")
    return sheet


MASK_BATCH = 4_096  # masks-table rows per record batch
DRAW_COLUMNS = ["frame_index", "instance_id", "category_id", "category_name", "height", "width", "rle_counts"]
Drawn = list[tuple[np.ndarray, int, str]]  # (mask, color key, caption) of one frame


def render(
    video_path: str | Path,
    masks: str | Path | pq.ParquetFile,
    out_dir: Path,
    name: str = "overlay",
    sheet_frames: int = 12,
    filesystem=None,
) -> tuple[Path, Path]:
    """Write OUT/name.mp4 (every frame, its masks drawn) and OUT/name.png (up to `sheet_frames` evenly
    spaced frames); returns their paths. `masks` is the video's masks Parquet file: a path (on the
    fsspec `filesystem` when given) or a pq.ParquetFile. The video is decoded once, in order, and the
    table read by record batches alongside, decoding only the current frame's masks; ValueError naming
    the file when its rows are not in frame order."""
    reader = open_video(video_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = reader.info.frames
    picked = {round(i * (total - 1) / max(sheet_frames - 1, 1)) for i in range(min(sheet_frames, total))}
    video_out, sheet_out, sheet = out_dir / f"{name}.mp4", out_dir / f"{name}.png", []
    with ExitStack() as stack:
        table = _parquet_file(masks, filesystem, stack)
        with_instances = has_instances(table)
        groups = frame_rows(table, with_instances, str(masks) if isinstance(masks, (str, Path)) else "masks table")
        drawn = _overlays(reader.frames(), groups, with_instances, picked, sheet)
        write_mp4(video_out, drawn, fps=reader.info.fps or 24.0)
    contact_sheet([frame for frame, _ in sheet], [caption for _, caption in sheet]).save(sheet_out)
    return video_out, sheet_out


def _overlays(frames, groups: Iterator, with_instances: bool, picked: set, sheet: list) -> Iterator[np.ndarray]:
    """Each of the video's `frames` ((frame, seconds) in order) with its masks drawn, taken from the
    `frame_rows` groups walked alongside; appends (drawn frame, caption) of the `picked` ones to `sheet`."""
    pending = next(groups, None)
    for index, (frame, _) in enumerate(frames):
        while pending is not None and pending[0] < index:  # masks of no frame of the video (index < 0)
            pending = next(groups, None)
        rows = []
        if pending is not None and pending[0] == index:
            rows, pending = pending[1], next(groups, None)
        drawn = overlay(frame, decode_drawn(rows, with_instances))
        if index in picked:
            sheet.append((drawn, f"frame {index}"))
        yield drawn


def _parquet_file(masks, filesystem, stack: ExitStack) -> pq.ParquetFile:
    """`masks` as a pq.ParquetFile, its file (opened through `filesystem` when given) closed with `stack`."""
    if isinstance(masks, pq.ParquetFile):
        return masks
    handle = filesystem.open(str(masks), "rb") if filesystem is not None else open(masks, "rb")  # noqa: SIM115
    stack.enter_context(handle)
    return pq.ParquetFile(handle)


def has_instances(table: pq.ParquetFile) -> bool:
    """Whether any row of the masks table is an instance (has an instance id): reads the instance_id
    column only, and stops at the first batch with one."""
    for batch in table.iter_batches(batch_size=65_536, columns=["instance_id"]):
        if batch.column(0).null_count < batch.num_rows:
            return True
    return False


def frame_rows(table: pq.ParquetFile, with_instances: bool, source: str) -> Iterator[tuple[int, list[dict]]]:
    """(frame index, rows to draw) of each frame with some, in frame order, the table read by record
    batches: the instance rows if `with_instances`, else the semantic rows other than background.
    ValueError naming `source` when a frame's rows come after a later frame's."""
    current, rows = None, []
    for batch in table.iter_batches(batch_size=MASK_BATCH, columns=DRAW_COLUMNS):
        for row in batch.to_pylist():
            frame = row["frame_index"]
            if frame is None or not _is_drawn(row, with_instances):
                continue
            if current is not None and frame < current:
                raise ValueError(
                    f"{source}: masks of frame {frame} come after frame {current}; rendering reads the "
                    "masks in frame order, as the job writes them"
                )
            if frame != current:
                if rows:
                    yield current, rows
                current, rows = frame, []
            rows.append(row)
    if rows:
        yield current, rows


def _is_drawn(row: dict, with_instances: bool) -> bool:
    """Whether a masks-table row is drawn: an instance in a run with instances, else a semantic
    segment other than background."""
    if with_instances:
        return row["instance_id"] is not None
    return row["instance_id"] is None and row["category_name"] != "background"


def decode_drawn(rows: list[dict], with_instances: bool) -> Drawn:
    """(mask, color key, caption) of one frame's rows to draw, their masks decoded: key and caption are
    the instance id and "name #id" for instances, the category id and name for semantic segments."""
    drawn = []
    for row in rows:
        mask = rle.decode({"size": [row["height"], row["width"]], "counts": row["rle_counts"]})
        if with_instances:
            drawn.append((mask, row["instance_id"], f"{row['category_name']} #{row['instance_id']}"))
        else:
            drawn.append((mask, row["category_id"], row["category_name"]))
    return drawn


def frame_masks(table: pa.Table) -> dict[int, Drawn]:
    """(mask, color key, caption) per frame of a whole masks table in memory (small tables: it decodes
    every mask at once; `render` streams instead): the instances if the table has any, else the
    semantic segments other than background. Every frame with rows is a key."""
    with_instances = table.column("instance_id").null_count < len(table)
    rows: dict[int, list[dict]] = {}
    for row in table.select(DRAW_COLUMNS).to_pylist():
        frame = rows.setdefault(row["frame_index"], [])
        if _is_drawn(row, with_instances):
            frame.append(row)
    return {index: decode_drawn(frame, with_instances) for index, frame in rows.items()}


def truth_and_prediction_sheet(frames, truth, predicted, categories: dict[int, str], columns: int = 4) -> Image.Image:
    """Generated frames with their ground truth beside the model's instances: `truth` and
    `predicted` per frame are lists of (mask, category id), drawn in the category's colour and
    captioned with its name. Each row pair: truth above, prediction below."""
    tiles, captions = [], []
    for start in range(0, len(frames), columns):
        for label, source in (("truth", truth), ("model", predicted)):
            for t in range(start, min(start + columns, len(frames))):
                drawn = [(mask, c, categories[c]) for mask, c in source[t]]
                tiles.append(overlay(frames[t], drawn))
                captions.append(f"frame {t}: {label}")
    return contact_sheet(tiles, captions, columns)
