"""`tca-segment`: the project's command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tca_core.config import AccelerationConfig
from tca_core.evaluation import Scoreboard, evaluate_generated
from tca_core.model import EMBEDDED_MODEL
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import CATEGORIES, SyntheticVideo
from tca_core.train import HELD_OUT_SEED

from .generate import write_generated
from .output import read_masks
from .render import render
from .segment import segment_video, write_outputs


def _segmenter(args, task: str) -> VideoSegmenter:
    return VideoSegmenter.from_pretrained(args.model, acceleration=AccelerationConfig(method=args.method), task=task)


def _progress(description: str):
    bar = tqdm(desc=description, unit="frame")

    def update(done: int, total: int):
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def demo(args) -> int:
    """Generate (or take) a video, segment it with the shipped model, write Parquet, render, summarise."""
    out: Path = args.out
    seed = None
    if args.input is None:
        seed = HELD_OUT_SEED + args.seed
        write_generated(out / "input", [seed], num_frames=args.frames)
        path = out / "input" / "videos" / f"{seed}.mp4"
        print(f"generated a held-out video (seed {seed}): {path}")
    else:
        path = args.input
    segmenter = _segmenter(args, "both")
    video_id = Path(path).name
    bar, update = _progress(f"segmenting {video_id}")
    begin = time.perf_counter()
    info, results = segment_video(segmenter, path, video_id, args.clip_frames, update)
    seconds = time.perf_counter() - begin
    bar.close()
    masks_path, frames_path = write_outputs(out, video_id, str(path), info, results, segmenter.labels)
    overlay_path, sheet_path = render(path, read_masks(masks_path), out)

    setting = segmenter.acceleration
    print(f"frames: {len(results)} of {info.width}x{info.height} at {info.fps:.1f} fps")
    print(f"speed: {len(results) / seconds:.2f} frames/s ({args.method}, whole model, this machine)")
    if setting.accelerated:
        stats = [r.stats for r in results]
        continued = [s.reassigned for s in stats if s.reset is None]
        print(
            f"token reduction: stage {setting.stage} blocks {setting.alpha}+ run on "
            f"{stats[0].token_ratio:.0%} of the tokens (h'={setting.grid})"
        )
        if continued:
            print(f"TCA reassigned {np.mean(continued):.1%} of tokens per continued frame")
    if seed is not None:
        accuracy = _accuracy_against_truth(seed, args.frames, results)
        print(f"accuracy on this generated video: mIoU {accuracy['miou']:.3f}, video AP {accuracy['ap']:.3f}")
    print(f"output: {masks_path}, {frames_path}")
    print(f"rendered: {overlay_path}, {sheet_path}")
    return 0


def _accuracy_against_truth(seed: int, num_frames: int, results) -> dict:
    video = SyntheticVideo(seed, num_frames)
    board = Scoreboard(CATEGORIES)
    board.add_video(str(seed), results, video.frames()[1], (video.height, video.width))
    return board.metrics()


def evaluate(args) -> int:
    """mIoU and video AP of the model on held-out generated videos."""
    segmenter = _segmenter(args, "both")
    seeds = [HELD_OUT_SEED + i for i in range(args.videos)]
    bar = tqdm(total=len(seeds), desc=f"evaluating {args.method}", unit="video")
    metrics = evaluate_generated(segmenter, seeds, args.frames, args.clip_frames, lambda done, _: bar.update(1))
    bar.close()
    metrics.update(method=args.method, setting=segmenter.acceleration.to_dict(), videos=len(seeds))
    print(json.dumps(metrics, indent=2))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2))
    return 0


def generate(args) -> int:
    """Write generated videos (MP4) and their YouTube-VIS ground truth."""
    seeds = [args.seed + i for i in range(args.videos)]
    path = write_generated(args.out, seeds, args.frames, args.fps)
    print(f"{len(seeds)} videos and {path}")
    return 0


def render_command(args) -> int:
    """Draw a run's masks (a masks Parquet file) over its video."""
    overlay_path, sheet_path = render(args.video, read_masks(args.masks), args.out, args.name)
    print(f"rendered: {overlay_path}, {sheet_path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tca-segment", description="Video segmentation with Temporal Cluster Assignment")
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(sub):
        sub.add_argument("--model", default=str(EMBEDDED_MODEL), help="checkpoint directory or hub id")
        sub.add_argument("--method", choices=["none", "clustering", "tca"], default="tca")
        sub.add_argument("--clip-frames", type=int, default=8, help="frames per clip")

    sub = commands.add_parser("demo", help="segment a generated (or given) video end to end")
    sub.add_argument("--out", type=Path, default=Path("out/demo"))
    sub.add_argument("--input", type=Path, help="a video file instead of a generated one")
    sub.add_argument("--frames", type=int, default=48, help="frames of the generated video")
    sub.add_argument("--seed", type=int, default=0, help="which held-out generated video")
    model_options(sub)
    sub.set_defaults(handler=demo)

    sub = commands.add_parser("evaluate", help="mIoU and video AP on held-out generated videos")
    sub.add_argument("--videos", type=int, default=16)
    sub.add_argument("--frames", type=int, default=48)
    sub.add_argument("--json", type=Path, help="also write the metrics here")
    model_options(sub)
    sub.set_defaults(handler=evaluate)

    sub = commands.add_parser("generate", help="write generated videos with YouTube-VIS ground truth")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--videos", type=int, default=4)
    sub.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    sub.add_argument("--frames", type=int, default=48)
    sub.add_argument("--fps", type=float, default=12.0)
    sub.set_defaults(handler=generate)

    sub = commands.add_parser("render", help="draw a run's masks over its video (MP4 and PNG)")
    sub.add_argument("--video", type=Path, required=True)
    sub.add_argument("--masks", type=Path, required=True, help="the video's masks Parquet file")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--name", default="overlay")
    sub.set_defaults(handler=render_command)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
