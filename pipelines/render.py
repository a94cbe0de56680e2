"""Drawing a run's masks over its video: an overlay MP4 and a PNG contact sheet."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from .output import decode_frames
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


def frame_masks(table: pa.Table) -> dict[int, list[tuple[np.ndarray, int, str]]]:
    """(mask, color key, caption) per frame: the instances if the run has any, else the semantic
    segments other than background."""
    frames = decode_frames(table)
    with_instances = any(f.instances for f in frames.values())
    drawn = {}
    for index, frame in frames.items():
        if with_instances:
            drawn[index] = [(mask, i, f"{name} #{i}") for i, _, name, _, mask in frame.instances]
        else:
            drawn[index] = [(mask, c, name) for c, name, mask in frame.semantic if name != "background"]
    return drawn


def render(video_path: str | Path, masks: pa.Table, out_dir: Path, name: str = "overlay", sheet_frames: int = 12):
    """Write OUT/name.mp4 (every frame) and OUT/name.png (up to `sheet_frames` evenly spaced)."""
    reader = open_video(video_path)
    by_frame = frame_masks(masks)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = reader.info.frames
    picked = sorted({round(i * (total - 1) / max(sheet_frames - 1, 1)) for i in range(min(sheet_frames, total))})
    sheet, captions = [], []

    def overlays():
        for start in range(0, total, 32):
            for offset, frame in enumerate(reader.read(start, min(start + 32, total))[0]):
                index = start + offset
                drawn = overlay(frame, by_frame.get(index, []))
                if index in picked:
                    sheet.append(drawn)
                    captions.append(f"frame {index}")
                yield drawn

    video_out, sheet_out = out_dir / f"{name}.mp4", out_dir / f"{name}.png"
    write_mp4(video_out, overlays(), fps=reader.info.fps or 24.0)
    contact_sheet(sheet, captions).save(sheet_out)
    return video_out, sheet_out
