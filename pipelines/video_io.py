"""Reading videos (decord, PyAV where decord fails) and writing H.264 MP4 (PyAV).

Both readers have `info` (a VideoInfo) and `read(start, stop)`: frames as RGB uint8 in display
orientation (rotation metadata applied) and presentation order, with each frame's presentation time,
so variable frame rates are exact.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

_AVERROR_INVALIDDATA = 1094995529  # FFmpeg's "invalid data found when processing input"


@dataclass
class VideoInfo:
    frames: int
    fps: float
    height: int
    width: int


def open_video(source):
    """A reader (`.info`, `.read`) on a path or a binary file object; ValueError naming the reason when
    nothing decodes it.

    decord first (fast seeking); PyAV where decord cannot (still images, frame widths such as 16
    or 48 pixels where decord's frame copy fails, and MP4s whose edit list trims the start).
    """
    if not isinstance(source, (str, Path)):
        source = io.BytesIO(source.read())  # what decord does with a file object anyway
    if (Path(source).stat().st_size if isinstance(source, (str, Path)) else source.getbuffer().nbytes) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        return DecordReader(source)
    except Exception:  # decord raises its own DECORDError, RuntimeError and AssertionError
        return AVReader(source)  # the same FFmpeg underneath, and clearer errors


@contextmanager
def _container(source):
    """The file opened with PyAV (a path, or a BytesIO read from its start); ValueError without a video stream."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    with av.open(str(source) if isinstance(source, (str, Path)) else source) as container:
        if container.format.name == "tty":  # FFmpeg renders .txt, .nfo, .asc ... files as frames of text
            raise ValueError("a text file, not a video")
        if not container.streams.video:
            raise ValueError("no video stream (audio only, or not a video)")
        yield container


def _check_complete(listed: int, packets: int):
    """ValueError when the file holds fewer packets than its container's index lists (0: no index).

    A file cut at a packet boundary demuxes and decodes without an error; only this count shows the
    loss. The index may list more frames than decode (an edit list trimming the start), never more
    packets than a whole file holds.
    """
    if packets < listed:
        raise ValueError(f"truncated: the container's index lists {listed} frames, the file holds {packets}")


class DecordReader:
    """decord's reader, on the files it reads right."""

    def __init__(self, source):
        import decord

        self._reader = decord.VideoReader(str(source) if isinstance(source, (str, Path)) else source, ctx=decord.cpu(0))
        packets = len(self._reader)  # decord counts the packets it finds
        with _container(source) as container:
            _check_complete(container.streams.video[0].frames, packets)
        self._times = self._reader.get_frame_timestamp(list(range(packets)))[:, 0]
        if self._times[0] < 0:  # decord's frames of the first group of pictures are then shifted
            raise ValueError("an edit list trims the start: decord misplaces the frames around it")
        height, width = self._reader.get_batch([0]).shape[1:3]  # decord opens some files it cannot copy out
        self.info = VideoInfo(packets, float(self._reader.get_avg_fps()), height, width)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[float]]:
        """(frames, presentation times in seconds) of frames start..stop-1, as (T, H, W, 3) uint8 RGB."""
        indices = list(range(start, stop))
        return self._reader.get_batch(indices).asnumpy(), [float(t) for t in self._times[start:stop]]


def decoder_message(error: Exception) -> str:
    """A decoder error in a line: without decord's source locations, FFmpeg's error codes named."""
    lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    text = re.sub(r"^(\[[\d:]+\] \S+:\d+: )+", "", lines[0]).strip()  # nested: one per C++ frame
    if str(_AVERROR_INVALIDDATA) in text:
        text += " (invalid data: the file is truncated or corrupt)"
    return text[:300]


class AVReader:
    """Reads the first video stream with PyAV: for the files decord cannot read right.

    Opening demuxes the whole file without decoding it (as decord's reader does) and decodes the
    first frame; a read seeks to the key frame before its first frame and decodes from there, keeping
    the frames by presentation time. Packets an edit list discards are not frames.
    """

    def __init__(self, source):
        self.source = source
        packets, self._pts, first, opened = 0, [], None, False
        try:
            with self._open() as (container, stream):
                opened = True
                for packet in container.demux(stream):
                    packets += packet.size > 0  # the last, empty packet only flushes the decoder
                    if packet.size and not packet.is_discard:
                        self._pts.append(packet.pts)
                fps, listed, self._origin, self._time_base = (
                    float(stream.average_rate or stream.guessed_rate or 0),
                    stream.frames,
                    stream.start_time or 0,
                    stream.time_base,
                )
                container.seek(0)
                first = next((self._array(frame) for frame in container.decode(stream)), None)
        except av.FFmpegError as error:
            if not opened:
                raise ValueError(
                    f"not a video file FFmpeg can read: {error.strerror} (corrupt, truncated or not a video)"
                ) from None
            raise ValueError(f"reading failed after {packets} packets: {_reason(error)}") from None
        if first is None or not self._pts:
            raise ValueError("the video stream has no frames")
        _check_complete(listed, packets)
        self._seekable = None not in self._pts  # else reads decode from the start, counting frames
        self._pts = sorted(self._pts) if self._seekable else self._pts
        self.info = VideoInfo(len(self._pts), fps, first.shape[0], first.shape[1])

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[float]]:
        """(frames, presentation times in seconds) of frames start..stop-1, as (T, H, W, 3) uint8 RGB."""
        wanted, frames, pts = self._pts[start:stop], [], []
        try:
            with self._open() as (container, stream):
                if self._seekable and start > 0:
                    container.seek(wanted[0], stream=stream)  # backwards, to the key frame at or before it
                for index, frame in enumerate(container.decode(stream)):
                    before = (frame.pts is None or frame.pts < wanted[0]) if self._seekable else index < start
                    if before:
                        continue
                    frames.append(self._array(frame))
                    pts.append(frame.pts)
                    if len(frames) == len(wanted):
                        break
        except av.FFmpegError as error:
            raise ValueError(f"decoding failed after {start + len(frames)} frames: {_reason(error)}") from None
        if len(frames) != stop - start:
            raise ValueError(f"frames {start}-{stop - 1} requested, the stream ended after {start + len(frames)}")
        if self._seekable and pts != wanted:
            raise ValueError(f"frames {start}-{stop - 1} decode at other times than the file's packets list")
        seconds = [float((t - self._origin) * self._time_base) if t is not None else 0.0 for t in pts]
        return np.stack(frames), seconds

    @contextmanager
    def _open(self):
        """(container, its first video stream)."""
        with _container(self.source) as container:
            yield container, container.streams.video[0]

    @staticmethod
    def _array(frame) -> np.ndarray:
        """RGB, turned upright as the display matrix says (as decord does)."""
        return np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=round(frame.rotation / 90) % 4))


def _reason(error: av.FFmpegError) -> str:
    hint = " (the file is truncated or corrupt)" if isinstance(error, av.InvalidDataError) else ""
    return f"{error.strerror}{hint}"


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
