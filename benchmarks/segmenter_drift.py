"""Does the segmenter slow down over a long video? One `VideoSegmenter` at the shipped default runs a
sample video's frames looped for `--frames` frames, in clips of 8 as the job's
actor runs them (one torch thread, as the job's actor has on 2 CPUs), and prints the time per frame
and the process's peak RSS every 640 frames (docs/benchmarks.md, "Archive scale"). Run it under
the actor's allocator settings (`tca_core/allocator.py`) to match the job:

    env MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=268435456 \\
        MALLOC_TRIM_THRESHOLD_=536870912 .venv/bin/python -m benchmarks.segmenter_drift --frames 6400

Parameters: --video (a file in ../shared/data/videos), --frames, --short-side.
The video's frames are decoded into memory once, so the RSS includes them.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from pipelines.sweep import SHARED_VIDEOS
from pipelines.video_io import open_video
from tca_core.config import EMBEDDED_MODEL
from tca_core.model import tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter

CLIP, REPORT_EVERY = 8, 640


def looped(frames: np.ndarray, start: int, count: int) -> np.ndarray:
    """`count` frames from position `start` of the video played in a loop."""
    return frames[np.arange(start, start + count) % len(frames)]


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="bottle-detection.mp4")
    parser.add_argument("--frames", type=int, default=6400)
    parser.add_argument("--short-side", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reader = open_video(SHARED_VIDEOS / args.video)
    frames = reader.read(0, reader.info.frames)[0]
    segmenter = VideoSegmenter.from_pretrained(EMBEDDED_MODEL, task="both", short_side=args.short_side)
    segmenter.acceleration = tuned_acceleration(EMBEDDED_MODEL, "tca")
    begin = time.perf_counter()
    for index in range(0, args.frames, CLIP):
        segmenter.process([Clip("long", index, looped(frames, index, CLIP))])
        done = index + CLIP
        if done % REPORT_EVERY == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            spent, begin = time.perf_counter() - begin, time.perf_counter()
            print(f"frames {done}: {1000 * spent / REPORT_EVERY:.1f} ms/frame, peak RSS {peak:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
