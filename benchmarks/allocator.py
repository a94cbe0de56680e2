"""Inference memory: frames/s and page faults of the model under glibc's default allocator settings
and under tca_core/allocator.py's INFERENCE_ENV, side by side in one invocation.

Each setting runs in a fresh Python process (glibc reads the settings when a process starts): the
shipped model (TCA at its tuned settings, or --method) at --short-side, clips of 8 frames of a real
video, on a thread that is not the process's first, as Ray calls an actor. The first --warm-up
frames are not timed. The settings alternate over --rounds rounds, so that a slower spell of a
shared machine falls on both.

    python -m benchmarks.allocator --out out/bench     # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tca_core.allocator import INFERENCE_ENV
from tca_core.config import METHODS

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"

CHILD = """
import json, resource, sys, threading, time
import torch
from pipelines.video_io import open_video
from tca_core.config import EMBEDDED_MODEL
from tca_core.model import tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter

video, method, short_side, frames_n, warm, threads = sys.argv[1:7]
frames_n, warm, threads = int(frames_n), int(warm), int(threads)
segmenter = VideoSegmenter.from_pretrained(
    EMBEDDED_MODEL, acceleration=tuned_acceleration(EMBEDDED_MODEL, method), short_side=int(short_side)
)
frames = open_video(video).read(0, warm + frames_n)[0]
out = {}

def run():
    torch.set_num_threads(threads)
    for start in range(0, warm, 8):
        segmenter.process([Clip("video", start, frames[start : start + 8])])
    faults, begin = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for start in range(warm, warm + frames_n, 8):
        segmenter.process([Clip("video", start, frames[start : start + 8])])
    out.update(seconds=time.perf_counter() - begin, faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)

thread = threading.Thread(target=run)
thread.start()
thread.join()
print(json.dumps(out))
"""


def one_run(args, env: dict) -> dict:
    """Frames/s and page faults per frame of one fresh process with `env` added."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    command = [sys.executable, "-c", CHILD, str(args.video), args.method, str(args.short_side)]
    command += [str(args.frames), str(args.warm_up), str(args.torch_threads)]
    done = subprocess.run(command, env=base | env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(fps=args.frames / result["seconds"], faults_per_frame=result["faults"] / args.frames)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=SHARED_VIDEOS / "bottle-detection.mp4")
    parser.add_argument("--method", default="tca", choices=METHODS)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--frames", type=int, default=128, help="frames timed per run (a multiple of 8)")
    parser.add_argument("--warm-up", type=int, default=16, help="frames run first, not timed")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)

    settings = {"glibc defaults": {}, "INFERENCE_ENV": INFERENCE_ENV}
    runs = {name: [] for name in settings}
    for round_ in range(args.rounds):
        for name, env in settings.items():
            runs[name].append(one_run(args, env))
            print(f"round {round_ + 1}/{args.rounds}, {name}: {runs[name][-1]}", flush=True)
    report = dict(
        video=args.video.name,
        method=args.method,
        short_side=args.short_side,
        frames=args.frames,
        torch_threads=args.torch_threads,
        **{
            name: dict(
                fps_median=statistics.median(r["fps"] for r in found),
                faults_per_frame_median=statistics.median(r["faults_per_frame"] for r in found),
                runs=found,
            )
            for name, found in runs.items()
        },
    )
    report["speedup"] = report["INFERENCE_ENV"]["fps_median"] / report["glibc defaults"]["fps_median"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allocator.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
