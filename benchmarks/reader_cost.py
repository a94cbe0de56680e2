"""Reading cost of the two video readers, the way the nightly job reads: one chunk per opening.

Each reader opens the video afresh for every chunk (the job's decode tasks do) and reads the chunk
with its warm-up frames; the frames are checked equal. Both readers run in one invocation, in turn,
`--repeats` times; the best time of each is reported.

    python benchmarks/reader_cost.py                       # the sample videos in ../shared/data/videos
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipelines.video_io import AVReader, DecordReader

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def read_by_chunks(reader_class, path: Path, chunk_frames: int, overlap: int) -> tuple[float, list[np.ndarray]]:
    """(seconds, chunks) to read the whole video chunk by chunk, opening it for each chunk."""
    begin, chunks = time.perf_counter(), []
    frames = reader_class(path).info.frames
    for start in range(0, frames, chunk_frames):
        reader = reader_class(path)
        chunks.append(reader.read(max(0, start - overlap), min(start + chunk_frames, frames))[0])
    return time.perf_counter() - begin, chunks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path, help="default: the .mp4 and .mkv sample videos")
    parser.add_argument("--chunk-frames", type=int, default=64, help="the job's default")
    parser.add_argument("--overlap", type=int, default=4, help="the job's default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = args.videos or sorted([*SHARED_VIDEOS.glob("*.mp4"), *SHARED_VIDEOS.glob("*.mkv")])
    print(f"{'video':24} {'frames':>6} {'decord s':>9} {'PyAV s':>8} {'PyAV/decord':>11}")
    for path in paths:
        seconds, chunks = {DecordReader: [], AVReader: []}, {}
        for _ in range(args.repeats):
            for reader_class in seconds:
                took, chunks[reader_class] = read_by_chunks(reader_class, path, args.chunk_frames, args.overlap)
                seconds[reader_class].append(took)
        if not all(np.array_equal(a, b) for a, b in zip(chunks[DecordReader], chunks[AVReader], strict=True)):
            raise SystemExit(f"{path.name}: the readers decode different frames")
        frames = sum(len(chunk) for chunk in chunks[DecordReader])
        decord_s, pyav_s = min(seconds[DecordReader]), min(seconds[AVReader])
        print(f"{path.name:24} {frames:>6} {decord_s:>9.2f} {pyav_s:>8.2f} {pyav_s / decord_s:>11.2f}")


if __name__ == "__main__":
    main()
