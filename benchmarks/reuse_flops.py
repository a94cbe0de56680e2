"""GFLOPs per frame of the full model, the shipped default and the bench's reuse points, counted as
`tca-segment bench` counts them (`pipelines.sweep.CostVideos`: a reusing point on each held-out
set's videos, in the sweep's clips, over one refresh period), without the sweep's timed runs.

    .venv/bin/python -m benchmarks.reuse_flops --out out/bench-full/reuse_flops.json   # ~10 min here

Parameters: --out, the JSON file written: per point, the bench rows' GFLOPs-per-frame columns
(`gflops_backbone`, `gflops_model`, and the same suffixed by each held-out set).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from pipelines.sweep import CostVideos, SweepData, cost_columns, reuse_points, setting_name
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.model import tuned_acceleration
from tca_core.segmenter import VideoSegmenter


def shipped_with_and_without_reuse() -> tuple[AccelerationConfig, AccelerationConfig]:
    """The shipped default without its window and frame reuse, and as shipped."""
    shipped = tuned_acceleration(EMBEDDED_MODEL, "tca")
    return replace(shipped, window_reuse=None, frame_reuse=False), shipped


def points() -> dict[str, AccelerationConfig]:
    """The full model, the shipped default with and without its reuse, and the full bench's
    window-reuse points, by name (a point named twice is counted once)."""
    chosen = [AccelerationConfig(method="none"), *shipped_with_and_without_reuse()]
    chosen += [p for p in reuse_points(quick=False) if not p.frame_reuse]
    return {f"{p.method} {setting_name(p)}": p for p in chosen}


def count(segmenter: VideoSegmenter, config: AccelerationConfig, videos: CostVideos) -> dict:
    """One point's GFLOPs columns, as the bench's rows have them (`pipelines.sweep.cost_columns`)."""
    columns = cost_columns(segmenter, config, videos)
    return {key: round(value, 3) for key, value in columns.items() if key.startswith("gflops_")}


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
