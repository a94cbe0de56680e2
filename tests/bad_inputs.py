"""Awkward and broken input files, generated small, with what a correct reader must make of each.

python tests/bad_inputs.py DIR      # writes the matrix into DIR (docs/reliability.md)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.video_io import write_mp4
from tca_core.synthetic import moving_disc_clip


@dataclass(frozen=True)
class Input:
    name: str
    what: str
    frames: int = 0  # a readable video: its frames, and their display size
    height: int = 0
    width: int = 0
    times: tuple[float, ...] = ()  # presentation times in seconds, when irregular
    reason: str = ""  # an unreadable file: a phrase its error must contain

    @property
    def readable(self) -> bool:
        return not self.reason


VFR_MILLISECONDS = (0, 40, 80, 300, 340, 700, 720, 1000)

MATRIX = [
    Input("zero-bytes.mp4", "an empty file", reason="empty"),
    Input("truncated.mp4", "an MP4 cut in half (its index is at the end)", reason="truncated"),
    Input("truncated-faststart.mp4", "an MP4 cut at 70% (index at the front, frames cut)", reason="truncated"),
    Input("random-bytes.mp4", "20 kB of random bytes named .mp4", reason="not a video"),
    Input("audio-only.mp4", "an MP4 holding only an AAC track", reason="no video stream"),
    Input("notes.txt", "a text file (FFmpeg would render it as frames of text)", reason="not a video"),
    Input("still.jpg", "a JPEG image", 1, 64, 96),
    Input("one-frame.mp4", "a video of one frame", 1, 64, 96),
    Input("tiny-16x16.mp4", "16x16 frames (decord cannot copy them out)", 3, 16, 16),
    Input("large-3840x2160.mp4", "3840x2160 frames", 2, 2160, 3840),
    Input("odd-45x67.mp4", "45x67 frames (odd sizes, yuv444p)", 4, 45, 67),
    Input("size-100x150.mp4", "100x150 frames (not multiples of 32)", 4, 100, 150),
    Input("rotated-90.mp4", "96x64 stored, display matrix rotated 90 degrees", 4, 96, 64),
    Input("variable-fps.mp4", "variable frame rate", 8, 64, 96, tuple(t / 1000 for t in VFR_MILLISECONDS)),
    Input(
        "trimmed.mp4", "an edit list trims 3 of 20 frames off the start", 17, 64, 96, tuple(i / 10 for i in range(17))
    ),
    Input("gray.mp4", "grayscale H.264", 4, 64, 96),
    Input("10bit.mp4", "10-bit H.264 (yuv420p10le)", 4, 64, 96),
    Input("10bit-hevc.mkv", "10-bit HEVC in Matroska", 4, 64, 96),
]


def _frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A moving disc on a plain background, resampled to any size."""
    frames, _ = moving_disc_clip(count, max(height, 64), max(width, 96), seed=seed)
    rows = np.linspace(0, frames.shape[1] - 1, height).astype(int)
    cols = np.linspace(0, frames.shape[2] - 1, width).astype(int)
    return np.ascontiguousarray(frames[:, rows][:, :, cols])


def _encode(path: Path, frames, codec="libx264", pix_fmt="yuv420p", pts=None, rotation=None, faststart=False, gop=None):
    """Encode RGB frames with a codec and pixel format; `pts` in milliseconds for irregular timing,
    `gop` frames between key frames (the encoder's default where None)."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
        if gop is not None:
            stream.options = {**stream.options, "g": str(gop)}
        if rotation is not None:
            stream.set_display_rotation(rotation)  # the display matrix, as phone cameras write it
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if pts is not None:
                video_frame.pts, video_frame.time_base = pts[index], Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _audio_only(path: Path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_faststart(path: Path, frames: int = 30) -> list[int]:
    """An MP4 with its index at the front; returns the byte offset where each packet ends, in file order."""
    _encode(path, _frames(frames, 64, 96, seed=2), faststart=True)
    with av.open(str(path)) as container:
        return sorted(packet.pos + packet.size for packet in container.demux(video=0) if packet.size)


def write_trimmed(path: Path, frames: int = 30, frames_off: int = 3, gop: int | None = None) -> np.ndarray:
    """An MP4 whose edit list starts the video `frames_off` frames in, as a stream copy cut from mid-GOP
    is; returns the frames a player shows, decoded from the whole encoding. The frames are encoded,
    then stream-copied with every time shifted that much earlier, and the muxer writes the edit list."""
    whole = path.with_suffix(".whole.mp4")
    _encode(whole, _frames(frames, 64, 96, seed=9), gop=gop)
    with av.open(str(whole)) as source, av.open(str(path), "w") as copy:
        stream = source.streams.video[0]
        target = copy.add_stream_from_template(stream)
        shift = round(frames_off / 10 / stream.time_base)  # _encode's 10 frames/s
        for packet in source.demux(stream):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, target
                copy.mux(packet)
    with av.open(str(whole)) as source:
        shown = np.stack([frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)][frames_off:])
    whole.unlink()
    return shown


def _cut(path: Path, fraction: float):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])


def _write(name: str, path: Path):
    if name == "zero-bytes.mp4":
        path.write_bytes(b"")
    elif name == "truncated.mp4":
        write_mp4(path, _frames(12, 64, 96, seed=1), fps=10)
        _cut(path, 0.5)
    elif name == "truncated-faststart.mp4":
        write_faststart(path)
        _cut(path, 0.7)  # inside a packet or, as x264's output varies from run to run, between two
    elif name == "random-bytes.mp4":
        path.write_bytes(np.random.default_rng(0).bytes(20_000))
    elif name == "audio-only.mp4":
        _audio_only(path)
    elif name == "notes.txt":
        path.write_text("".join(f"day {day}: segmented the night's recordings\n" for day in range(200)))
    elif name == "still.jpg":
        from PIL import Image

        Image.fromarray(_frames(1, 64, 96)[0]).save(path, format="JPEG")
    elif name == "rotated-90.mp4":
        _encode(path, _frames(4, 64, 96, seed=7), rotation=90)
    elif name == "trimmed.mp4":
        write_trimmed(path, frames=20, frames_off=3)
    elif name == "variable-fps.mp4":
        _encode(path, _frames(8, 64, 96, seed=8), pts=VFR_MILLISECONDS)
    else:
        item = next(i for i in MATRIX if i.name == name)
        codec, pix_fmt = "libx264", "yuv420p"
        if name == "odd-45x67.mp4":
            pix_fmt = "yuv444p"  # 4:2:0 needs even sizes
        elif name == "gray.mp4":
            pix_fmt = "gray"
        elif name.startswith("10bit"):
            codec, pix_fmt = ("libx265" if name.endswith(".mkv") else "libx264"), "yuv420p10le"
        _encode(path, _frames(item.frames, item.height, item.width, seed=len(name)), codec, pix_fmt)


def write_bad_inputs(directory: Path) -> list[Input]:
    """Write every input of `MATRIX` into `directory`; returns `MATRIX`."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in MATRIX:
        _write(item.name, directory / item.name)
    return MATRIX


if __name__ == "__main__":
    for item in write_bad_inputs(Path(sys.argv[1])):
        print(f"{item.name}: {item.what}")
