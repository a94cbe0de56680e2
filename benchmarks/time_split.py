"""Where the whole model's time goes: backbone, pixel decoder, transformer decoder and the rest (pre-
and post-processing) of the full model (`none`) on held-out static-camera clips; and the model alone
with the pixel decoder's deformable attention as `transformers` computes it and as
`tca_core.head.summed_forward` does, side by side, clip by clip (docs/benchmarks.md, "Where the time
goes").

    python -m benchmarks.time_split --videos 4 --out out/bench/time_split.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.report import write_report
from tca_core.allocator import reuse_freed_memory
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.head import deformable_attention
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import held_out_videos

PARTS = {  # part name -> the module timed, under Mask2FormerForUniversalSegmentation
    "backbone": "model.pixel_level_module.encoder",
    "pixel_decoder": "model.pixel_level_module.decoder",
    "transformer_decoder": "model.transformer_module",
}
CLIP_FRAMES = 8


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


def _process(segmenter: VideoSegmenter, timer: PartTimer, clip: Clip) -> dict:
    """One clip through the segmenter: seconds per part, the rest being the call's remainder."""
    timer.reset()
    begin = time.perf_counter()
    segmenter.process([clip])
    total = time.perf_counter() - begin
    segmenter.drop(clip.video_id)
    return dict(timer.seconds, total=total, rest=total - sum(timer.seconds.values()))


@torch.inference_mode()
def _forward(segmenter: VideoSegmenter, timer: PartTimer, pixels: torch.Tensor, ours: bool) -> dict:
    """The model alone on pre-processed pixels, with `transformers`' deformable attention or ours."""
    timer.reset()
    begin = time.perf_counter()
    with deformable_attention() if ours else contextlib.nullcontext():
        segmenter.model(pixel_values=pixels)
    return dict(timer.seconds, total=time.perf_counter() - begin)


def main(argv: list[str] | None = None) -> int:
    """--videos N (held-out static-camera videos of 32 frames, clips of 8), --out FILE (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("out/bench/time_split.json"))
    args = parser.parse_args(argv)
    reuse_freed_memory()  # timed as the job's actors run the model (tca_core/allocator.py)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="both", short_side=224)
    segmenter.acceleration = AccelerationConfig(method="none")
    timer = PartTimer(segmenter.model)
    runs = {"process": [], "transformers": [], "summed": []}
    warm = held_out_videos("static-camera", 1, CLIP_FRAMES)[0].frames()[0]
    _process(segmenter, timer, Clip("split/warm-up", 0, warm))  # first calls pay for allocations
    for video in tqdm(held_out_videos("static-camera", args.videos, 32), desc="timing the model's parts", unit="video"):
        frames = video.frames()[0]
        for start in range(0, len(frames), CLIP_FRAMES):
            clip = Clip(f"split/{video.seed}", start, frames[start : start + CLIP_FRAMES])
            runs["process"].append(_process(segmenter, timer, clip))
            pixels = segmenter._preprocess(clip.frames)
            for name in ("transformers", "summed"):
                runs[name].append(_forward(segmenter, timer, pixels, name == "summed"))
    report = _report(runs, args.videos)
    write_report(args.out, report)
    return 0


def _report(runs: dict, videos: int) -> dict:
    """Per run kind, milliseconds per frame per part and each part's share; the speedups of the pixel
    decoder and of the model alone with `summed_forward` (medians of the clips' ratios)."""
    report = dict(
        date=date.today().isoformat(), videos=videos, clip_frames=CLIP_FRAMES, threads=torch.get_num_threads()
    )
    for name, clips in runs.items():
        total, frames = sum(c["total"] for c in clips), CLIP_FRAMES * len(clips)
        report[name] = {
            part: {
                "ms_per_frame": 1000 * sum(c[part] for c in clips) / frames,
                "share": sum(c[part] for c in clips) / total,
            }
            for part in clips[0]
        }
    pairs = list(zip(runs["transformers"], runs["summed"]))
    report["pixel_decoder_speedup"] = statistics.median(a["pixel_decoder"] / b["pixel_decoder"] for a, b in pairs)
    report["model_alone_speedup"] = statistics.median(a["total"] / b["total"] for a, b in pairs)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
