"""GFLOPs per frame of the full model, the shipped default and the bench's reuse points, counted as
`tca-segment bench` counts them (`pipelines.sweep.CostVideos`: a reusing point on each held-out
set's videos, in the sweep's clips, over one refresh period), without the sweep's timed runs.

    .venv/bin/python -m benchmarks.reuse_flops --out out/bench-full/reuse_flops.json   # ~10 min here

Parameters: --out, the JSON file written (GFLOPs per frame, backbone and whole model, per point and
per set; "short" is the one video a point whose work does not depend on the video is counted on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from pipelines.sweep import CostVideos, SweepData, flops_per_frame, reuse_points, setting_name
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.model import tuned_acceleration
from tca_core.segmenter import VideoSegmenter


def points() -> dict[str, AccelerationConfig]:
    """The full model, the shipped default and the full bench's window-reuse points, by name."""
    chosen = [AccelerationConfig(method="none"), tuned_acceleration(EMBEDDED_MODEL, "tca")]
    chosen += [p for p in reuse_points(quick=False) if not p.frame_reuse]
    return {f"{p.method} {setting_name(p)}": p for p in chosen}


def count(segmenter: VideoSegmenter, config: AccelerationConfig, videos: CostVideos) -> dict:
    """{set: {"backbone": GFLOPs, "model": GFLOPs}} per frame of one point."""
    by_set = videos.sets if config.reusing else {"short": videos.short}
    costs = {name: flops_per_frame(segmenter, config, v, videos.clip_frames) for name, v in by_set.items()}
    return {name: {"backbone": round(b, 3), "model": round(m, 3)} for name, (b, m) in costs.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-full/reuse_flops.json"))
    args = parser.parse_args(argv)
    segmenter = VideoSegmenter.from_pretrained(EMBEDDED_MODEL, task="both")
    videos = CostVideos.of_sweep(SweepData.for_run(quick=False))
    results = {name: count(segmenter, config, videos) for name, config in tqdm(points().items(), unit="point")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for name, costs in results.items():
        print(name, costs)
    return results


if __name__ == "__main__":
    main()
