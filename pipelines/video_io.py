"""Reading videos (decord) and writing H.264 MP4 (PyAV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass
class VideoInfo:
    frames: int
    fps: float
    height: int
    width: int


def open_video(source):
    """A decord VideoReader (RGB) on a path or a binary file object; ValueError when it can't decode."""
    import decord

    path = str(source) if isinstance(source, (str, Path)) else getattr(source, "path", "file object")
    try:
        reader = decord.VideoReader(str(source) if isinstance(source, (str, Path)) else source, ctx=decord.cpu(0))
    except Exception as error:  # decord raises its own DECORDError and RuntimeError
        raise ValueError(f"cannot decode video {path}: {error}") from error
    if len(reader) == 0:
        raise ValueError(f"video {path} has no frames")
    return reader


def probe(reader) -> VideoInfo:
    height, width = reader[0].shape[:2]
    return VideoInfo(len(reader), float(reader.get_avg_fps()), height, width)


def read_frames(reader, start: int, stop: int) -> np.ndarray:
    """Frames start..stop-1 as (T, H, W, 3) uint8."""
    return reader.get_batch(list(range(start, stop))).asnumpy()


def write_mp4(path: str | Path, frames, fps: float = 24.0, crf: int = 18):
    """Write (H, W, 3) uint8 RGB frames as H.264 (yuv420p; odd sizes are padded by one pixel)."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[0] + first.shape[0] % 2, first.shape[1] + first.shape[1] % 2
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in (first, *frames):
            if frame.shape[:2] != (height, width):
                frame = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
