"""Window reuse on a GPU (issue 18; docs/benchmarks.md, "Reuse on a GPU"): do gathered windows pay
off there, not only in FLOPs? The held-out sets' frames through the shipped model and through a
Swin-L-sized Mask2Former with random weights (cost only: its reuse decisions follow its own
features), at `--dtype`, with and without window reuse, the points interleaved video by video over
several rounds; whole-model and backbone seconds (CUDA-synchronised), the windows computed.

The device machine has neither the sample videos nor PyAV, so the frames are saved here first and
carried; this module imports only tca_core (not pipelines).

    .venv/bin/python -m benchmarks.reuse_device --save .gpu/held_out.npz                  # here, ~1 min
    python3 -m benchmarks.reuse_device --frames .gpu/held_out.npz --device cuda --dtype float16 \\
        --out $OUT/reuse_device.json                                                     # there

Parameters: --save FILE (write the held-out frames and stop), --videos and --frame-count per set
(with --save), --frames FILE (the saved frames), --models (embedded, large), --large-side (the
short side the large model runs at), --rounds timed after a warm-up, --device, --dtype, --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.model import build_model, swin_mask2former_config, tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter

from .gpu_check import Timer  # CUDA-synchronised backbone seconds

SETS = ("static-camera", "moving-camera")
CLIP_FRAMES = 8
SHORT_SIDE = 224  # the bench's (pipelines.sweep.SHORT_SIDE; not imported: pipelines needs PyAV)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save(path: Path, videos: int, frames: int):
    """The held-out sets' first `videos` videos of `frames` frames, as uint8 arrays in one .npz."""
    from tca_core.synthetic import held_out_videos

    arrays = {
        f"{s}.{i}": v.frames()[0][:frames] for s in SETS for i, v in enumerate(held_out_videos(s, videos, frames))
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def points(model: str) -> dict[str, AccelerationConfig]:
    """The full model and TCA, each with and without window reuse 0.25: on the embedded model the
    shipped default and its TCA point; on the large one TCA at the generic defaults."""
    if model == "embedded":
        shipped = tuned_acceleration(EMBEDDED_MODEL, "tca")
        alone = replace(shipped, window_reuse=None, frame_reuse=False)
    else:
        alone = AccelerationConfig(method="tca")
        shipped = replace(alone, window_reuse=0.25)
    full = AccelerationConfig(method="none")
    return {
        "none": full,
        "none +reuse 0.25": replace(full, window_reuse=0.25),
        "tca": alone,
        "tca +reuse 0.25": shipped,
    }


def segmenter(model: str, args) -> VideoSegmenter:
    """The shipped model (labels and instances), or Swin-L-sized random weights (label maps only)."""
    dtype = DTYPES[args.dtype]
    if model == "embedded":
        return VideoSegmenter.from_pretrained(EMBEDDED_MODEL, args.device, dtype, task="both", short_side=SHORT_SIDE)
    network = build_model(swin_mask2former_config("large"), seed=0).to(args.device, dtype)
    return VideoSegmenter(network, task="semantic", short_side=args.large_side)


def run_video(seg: VideoSegmenter, frames: np.ndarray, video_id: str) -> tuple[float, list]:
    """One video in clips: seconds in `process` (its results are on the host: synchronised) and stats."""
    seconds, stats = 0.0, []
    for start in range(0, len(frames), CLIP_FRAMES):
        begin = time.perf_counter()
        results = seg.process([Clip(video_id, start, frames[start : start + CLIP_FRAMES])])[0]
        seconds += time.perf_counter() - begin
        stats += [r.stats for r in results]
    seg.drop(video_id)
    return seconds, stats


def measure(model: str, videos: dict[str, np.ndarray], args) -> dict:
    """Per set and point: model and backbone seconds over the timed rounds, ratios to `none` and to
    `tca`, and the share of windows computed."""
    seg, named = segmenter(model, args), points(model)
    timer = Timer(seg.backbone, seg.device)
    totals = {(s, n): [0.0, 0.0] for s in SETS for n in named}
    windows = {key: [] for key in totals}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for name_key, frames in videos.items():
            set_name = name_key.split(".")[0]
            for name, config in named.items():
                seg.acceleration = config
                before = timer.backbone_seconds
                seconds, stats = run_video(seg, frames, f"{model}-{name_key}-{name}-{round_index}")
                if round_index:
                    totals[set_name, name][0] += seconds
                    totals[set_name, name][1] += timer.backbone_seconds - before
                if round_index == 1:
                    windows[set_name, name] += [
                        s.windows_computed for s in stats if s and s.windows_computed is not None
                    ]
    report = {}
    for set_name in SETS:
        none, tca = totals[set_name, "none"], totals[set_name, "tca"]
        report[set_name] = {
            name: dict(
                model_seconds=round(totals[set_name, name][0], 3),
                backbone_seconds=round(totals[set_name, name][1], 3),
                model_vs_none=round(none[0] / totals[set_name, name][0], 3),
                backbone_vs_none=round(none[1] / totals[set_name, name][1], 3),
                model_vs_tca=round(tca[0] / totals[set_name, name][0], 3),
                windows_computed=round(statistics.mean(windows[set_name, name]), 3)
                if windows[set_name, name]
                else None,
            )
            for name in named
        }
    return report


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frame-count", type=int, default=32)
    parser.add_argument("--frames", type=Path, default=Path(".gpu/held_out.npz"))
    parser.add_argument("--models", nargs="+", default=["embedded", "large"], choices=["embedded", "large"])
    parser.add_argument("--large-side", type=int, default=448)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    parser.add_argument("--out", type=Path, default=Path("out/reuse_device.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1 (the ratios need a timed round)")
    if args.save:
        save(args.save, args.videos, args.frame_count)
        return None
    with np.load(args.frames) as saved:
        videos = {key: saved[key] for key in saved.files}
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    report = dict(date=date.today().isoformat(), device=device_name, dtype=args.dtype, rounds=args.rounds,
                  torch=torch.__version__, videos=len(videos), models={})  # fmt: skip
    for model in args.models:
        report["models"][model] = measure(model, videos, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps({model: report["models"][model]}, indent=1), flush=True)
    return report


if __name__ == "__main__":
    main()
