"""Where the whole model's time goes: backbone, pixel decoder, transformer decoder and the rest (pre-
and post-processing) of the full model (`none`), TCA alone and the shipped default (TCA with window
reuse) on held-out static-camera videos, side by side video by video; and the model alone with the
pixel decoder's deformable attention as `transformers` computes it and as
`tca_core.head.summed_forward` does, side by side, clip by clip (docs/benchmarks.md, "Where the time
goes"). Per point it reports two bounds on its whole-model speedup over `none`: the ceiling were
its backbone free (`none`'s call over the point's call less its backbone), and the bound were its
backbone as fast per FLOP as `none`'s (its backbone GFLOPs counted on the same videos' first 16
frames, `pipelines.sweep.cost_columns`).

    python -m benchmarks.time_split --videos 4 --out out/bench/time_split.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.report import write_report
from benchmarks.reuse_device import CLIP_FRAMES, run_video  # clips of 8, as the bench runs them
from benchmarks.reuse_flops import shipped_with_and_without_reuse
from pipelines.sweep import CostVideos, cost_columns
from tca_core.allocator import reuse_freed_memory
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.head import deformable_attention
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import held_out_videos

PARTS = {  # part name -> the module timed, under Mask2FormerForUniversalSegmentation
    "backbone": "model.pixel_level_module.encoder",
    "pixel_decoder": "model.pixel_level_module.decoder",
    "transformer_decoder": "model.transformer_module",
}


class PartTimer:
    """Seconds spent in each of PARTS' modules since `reset` (forward hooks)."""

    def __init__(self, model: torch.nn.Module):
        self.seconds = dict.fromkeys(PARTS, 0.0)
        for name, path in PARTS.items():
            module = model.get_submodule(path)
            module.register_forward_pre_hook(lambda *_, n=name: self._add(n, -time.perf_counter()))
            module.register_forward_hook(lambda *_, n=name: self._add(n, time.perf_counter()))

    def _add(self, name: str, seconds: float):
        self.seconds[name] += seconds

    def reset(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)


def _process(segmenter: VideoSegmenter, timer: PartTimer, frames, video_id: str) -> dict:
    """One video through the segmenter as the job runs it (`reuse_device.run_video`: clips of 8, its
    memory continued from clip to clip, then dropped): seconds per part, the rest being the calls'
    remainder."""
    timer.reset()
    total, _ = run_video(segmenter, frames, video_id)
    return dict(timer.seconds, total=total, rest=total - sum(timer.seconds.values()), frames=len(frames))


def points() -> dict[str, AccelerationConfig]:
    """The full model, TCA alone at the shipped default's shape, and the shipped default (with its reuse)."""
    alone, shipped = shipped_with_and_without_reuse()
    return {"none": AccelerationConfig(method="none"), "tca": alone, "default": shipped}


@torch.inference_mode()
def _forward(segmenter: VideoSegmenter, timer: PartTimer, pixels: torch.Tensor, ours: bool) -> dict:
    """The model alone on pre-processed pixels, with `transformers`' deformable attention or ours."""
    timer.reset()
    begin = time.perf_counter()
    with deformable_attention() if ours else contextlib.nullcontext():
        segmenter.model(pixel_values=pixels)
    return dict(timer.seconds, total=time.perf_counter() - begin, frames=len(pixels))


def _timed(segmenter: VideoSegmenter, timer: PartTimer, named: dict, videos: list) -> dict[str, list[dict]]:
    """Per run kind, its timings: each point's segmenter calls over whole videos, side by side video
    by video ("process NAME"), and the model alone on each clip with `transformers`' deformable
    attention and with ours ("transformers", "summed")."""
    runs = {"transformers": [], "summed": [], **{f"process {name}": [] for name in named}}
    warm = held_out_videos("static-camera", 1, CLIP_FRAMES)[0].frames()[0]
    for name, config in named.items():  # first calls pay for allocations
        segmenter.acceleration = config
        _process(segmenter, timer, warm, f"split/warm-up/{name}")
    for number, frames in enumerate(tqdm(videos, desc="timing the model's parts", unit="video")):
        for name, config in named.items():  # side by side: every point on the same video in turn
            segmenter.acceleration = config
            runs[f"process {name}"].append(_process(segmenter, timer, frames, f"split/{number}/{name}"))
        segmenter.acceleration = named["none"]
        for start in range(0, len(frames), CLIP_FRAMES):
            pixels = segmenter._preprocess(frames[start : start + CLIP_FRAMES])
            for name in ("transformers", "summed"):
                runs[name].append(_forward(segmenter, timer, pixels, name == "summed"))
    return runs


def main(argv: list[str] | None = None) -> int:
    """--videos N (held-out static-camera videos of 32 frames, clips of 8), --out FILE (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("out/bench/time_split.json"))
    args = parser.parse_args(argv)
    reuse_freed_memory()  # timed as the job's actors run the model (tca_core/allocator.py)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="both", short_side=224)
    timer = PartTimer(segmenter.model)
    named = points()
    videos = [video.frames()[0] for video in held_out_videos("static-camera", args.videos, 32)]
    runs = _timed(segmenter, timer, named, videos)
    counted = CostVideos([videos[0][:16]], {"static": [frames[:16] for frames in videos]}, CLIP_FRAMES)
    gflops = {}
    for name, config in tqdm(named.items(), desc="counting backbone FLOPs", unit="point"):  # ~1 s per frame
        gflops[name] = cost_columns(segmenter, config, counted)["gflops_backbone"]
    report = _report(runs, args.videos, gflops)
    write_report(args.out, report)
    print(
        json.dumps(
            {k: v for k, v in report.items() if k.startswith(("process", "ceiling", "speedup", "bound", "gflops"))},
            indent=1,
        )
    )
    return 0


def _report(runs: dict, videos: int, gflops: dict[str, float]) -> dict:
    """Per run kind, milliseconds per frame per part and each part's share; per point (`gflops`: its
    backbone GFLOPs per frame), its whole-model speedup over `none` and the bounds of that speedup
    with a free backbone and with one as fast per FLOP as `none`'s; the speedups of the pixel
    decoder and of the model alone with `summed_forward` (medians of the clips' ratios)."""
    report = dict(
        date=date.today().isoformat(),
        videos=videos,
        clip_frames=CLIP_FRAMES,
        threads=torch.get_num_threads(),
        gflops_backbone=gflops,
    )
    for name, clips in runs.items():
        total = sum(c["total"] for c in clips)
        frames = sum(c["frames"] for c in clips)
        report[name] = {
            part: {
                "ms_per_frame": 1000 * sum(c[part] for c in clips) / frames,
                "share": sum(c[part] for c in clips) / total,
            }
            for part in clips[0]
            if part != "frames"
        }
    full = report["process none"]
    for point in gflops:
        parts = {part: value["ms_per_frame"] for part, value in report[f"process {point}"].items()}
        rest = parts["total"] - parts["backbone"]
        flop_proportional = full["backbone"]["ms_per_frame"] * gflops[point] / gflops["none"]
        report[f"speedup {point}"] = full["total"]["ms_per_frame"] / parts["total"]
        report[f"ceiling {point}"] = full["total"]["ms_per_frame"] / rest
        report[f"bound per FLOP {point}"] = full["total"]["ms_per_frame"] / (rest + flop_proportional)
    pairs = list(zip(runs["transformers"], runs["summed"]))
    report["pixel_decoder_speedup"] = statistics.median(a["pixel_decoder"] / b["pixel_decoder"] for a, b in pairs)
    report["model_alone_speedup"] = statistics.median(a["total"] / b["total"] for a, b in pairs)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
