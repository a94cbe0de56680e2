"""Awkward and broken input files, generated small: the reliability tests' input matrix."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.video_io import write_mp4
from tca_core.synthetic import moving_disc_clip


def _frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A moving disc on a plain background, resized to any size (the generator wants >= 64x96)."""
    frames, _ = moving_disc_clip(count, max(height, 64), max(width, 96), seed=seed)
    rows = np.linspace(0, frames.shape[1] - 1, height).astype(int)
    cols = np.linspace(0, frames.shape[2] - 1, width).astype(int)
    return np.ascontiguousarray(frames[:, rows][:, :, cols])


def _encode(
    path: Path, frames, codec="libx264", pix_fmt="yuv420p", pts=None, rotation=None, options=None, faststart=False
):
    """Encode RGB frames with any codec and pixel format; `pts` in milliseconds for irregular timing."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options or {}
        if rotation is not None:
            stream.set_display_rotation(rotation)  # display matrix, as phone cameras record it
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


def _still_image(path: Path):
    from PIL import Image

    Image.fromarray(_frames(1, 64, 96)[0]).save(path, format="JPEG")


def write_bad_inputs(directory: Path) -> dict[str, str]:
    """Write the matrix into `directory`; {file name: what it is}."""
    directory.mkdir(parents=True, exist_ok=True)
    made = {}

    def add(name, what, make):
        make(directory / name)
        made[name] = what

    good = directory / "_good.mp4"
    write_mp4(good, _frames(12, 64, 96, seed=1), fps=10)
    whole = good.read_bytes()
    good.unlink()
    add("zero-bytes.mp4", "an empty file", lambda p: p.write_bytes(b""))
    add("truncated.mp4", "an MP4 cut mid-stream (index at the end)", lambda p: p.write_bytes(whole[: len(whole) // 2]))
    add(
        "truncated-faststart.mp4",
        "an MP4 cut mid-stream (index at the front)",
        lambda p: (
            _encode(p, _frames(30, 64, 96, seed=2), faststart=True),
            p.write_bytes(p.read_bytes()[: p.stat().st_size * 7 // 10]),
        ),
    )
    add("random-bytes.mp4", "random bytes named .mp4", lambda p: p.write_bytes(np.random.default_rng(0).bytes(20_000)))
    add("audio-only.mp4", "an MP4 with an AAC track and no video", _audio_only)
    add("still.jpg", "a JPEG image", _still_image)
    add("one-frame.mp4", "a video of one frame", lambda p: write_mp4(p, _frames(1, 64, 96, seed=3)))
    add("tiny-16x16.mp4", "16x16 frames", lambda p: _encode(p, _frames(3, 16, 16, seed=4)))
    add("large-3840x2160.mp4", "3840x2160 frames", lambda p: _encode(p, _frames(2, 2160, 3840, seed=5)))
    add(
        "odd-45x67.mp4",
        "45x67 frames (odd, not multiples of 32)",
        lambda p: _encode(p, _frames(4, 45, 67), pix_fmt="yuv444p"),
    )
    add("size-100x150.mp4", "100x150 frames (not multiples of 32)", lambda p: _encode(p, _frames(4, 100, 150, seed=6)))
    add(
        "rotated-90.mp4",
        "display rotation 90 degrees in the track matrix",
        lambda p: _encode(p, _frames(4, 64, 96, seed=7), rotation=90),
    )
    add(
        "variable-fps.mp4",
        "variable frame rate (irregular timestamps)",
        lambda p: _encode(p, _frames(8, 64, 96, seed=8), pts=[0, 40, 80, 300, 340, 700, 720, 1000]),
    )
    add("gray.mp4", "grayscale H.264", lambda p: _encode(p, _frames(4, 64, 96, seed=9), pix_fmt="gray"))
    add(
        "10bit.mp4",
        "10-bit H.264 (yuv420p10le)",
        lambda p: _encode(p, _frames(4, 64, 96, seed=10), pix_fmt="yuv420p10le"),
    )
    add(
        "10bit-hevc.mkv",
        "10-bit HEVC",
        lambda p: _encode(
            p,
            _frames(4, 64, 96, seed=11),
            codec="libx265",
            pix_fmt="yuv420p10le",
            options={"x265-params": "log-level=error"},
        ),
    )
    return made
