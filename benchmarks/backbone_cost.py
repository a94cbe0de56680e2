"""Backbone cost of `none`, `clustering` and `tca` on real-size Swin Mask2Former configs.

Clustering and TCA are measured at the generic defaults and at an aggressive setting (see
`operating_points`).

For each preset (random weights: cost does not depend on trained weights) it counts backbone GFLOPs
per frame with torch.utils.flop_counter (clustering and reconstruction included) and times the
backbone on clips of a slowly moving scene, the methods interleaved round by round so that they share
the machine's state; speedups are medians of the per-round ratios to `none`.

    python -m benchmarks.backbone_cost --presets tiny large --size 480 640 --out out/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from tca_core.config import AccelerationConfig
from tca_core.flops import flops_by_module
from tca_core.memory import ClusterMemory
from tca_core.model import accelerate, build_model, swin_mask2former_config
from tca_core.swin import FrameStream


def drifting_scene(num_frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(T, 3, H, W) normalised frames of a smooth texture panning 4 pixels per frame."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, height // 16 + 1, (width + 4 * num_frames) // 16 + 1, generator=generator)
    scene = F.interpolate(coarse, scale_factor=16, mode="bicubic", align_corners=False)[0]
    return torch.stack([scene[:, :height, 4 * t : 4 * t + width] for t in range(num_frames)])


def operating_points(window: int) -> dict[str, AccelerationConfig]:
    """`none`, and clustering and TCA at the generic defaults and at an aggressive setting scaled from the
    shipped model's chosen point (alpha 0, h' 2 of window 7, radius 1, top-4) to the preset's window."""
    aggressive = dict(alpha=0, grid=max(1, round(window * 2 / 7)), temperature=16.0, radius=1, topk=4)
    points = {"none": AccelerationConfig(method="none")}
    for method in ("clustering", "tca"):
        points[f"{method} (default)"] = AccelerationConfig(method=method)
        points[f"{method} (aggressive)"] = AccelerationConfig(method=method, **aggressive)
    return points


def measure(preset: str, size: tuple[int, int], clip_frames: int, rounds: int) -> list[dict]:
    backbone = accelerate(build_model(swin_mask2former_config(preset)), AccelerationConfig())
    clip = drifting_scene(clip_frames * (rounds + 1), *size)
    configs = operating_points(backbone.window)
    memories = {label: ClusterMemory() for label in configs}

    def run(label: str, round_index: int):
        backbone.acceleration = configs[label]
        start = round_index * clip_frames
        frames = clip[start : start + clip_frames]
        with backbone.streaming([FrameStream(memories[label], list(range(start, start + clip_frames)))]):
            backbone(frames)
        return backbone.last_stats

    rows = []
    with torch.inference_mode():
        for label, config in configs.items():
            flops = flops_by_module(run, label, 0)["Global"] / clip_frames
            setting = backbone.acceleration.to_dict()
            rows.append(dict(preset=preset, method=config.method, label=label, setting=setting, gflops=flops / 1e9))
        seconds = {label: [] for label in configs}
        reassigned = {label: [] for label in configs}
        run("none", 0)  # warm-up
        for round_index in range(1, rounds + 1):
            for label in configs:
                begin = time.perf_counter()
                stats = run(label, round_index)
                seconds[label].append(time.perf_counter() - begin)
                reassigned[label] += [s.reassigned for s in stats if s.reset is None]
    for row in rows:
        label = row["label"]
        row["frames_per_s"] = clip_frames / statistics.median(seconds[label])
        row["speedup"] = statistics.median(n / m for n, m in zip(seconds["none"], seconds[label]))
        row["gflops_ratio"] = row["gflops"] / rows[0]["gflops"]
        if row["method"] == "tca":
            row["tca_reassigned_fraction"] = statistics.mean(reassigned[label]) if reassigned[label] else None
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| config | method | alpha | h' | T | backbone GFLOPs/frame | GFLOPs vs none | frames/s | speedup vs none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        setting = row["setting"]
        accelerated = row["method"] != "none"
        lines.append(
            f"| Swin-{row['preset'][0].upper()} | {row['label']} | {setting['alpha'] if accelerated else '-'} "
            f"| {setting['grid'] if accelerated else '-'} | {setting['temperature'] if accelerated else '-'} "
            f"| {row['gflops']:.1f} | {row['gflops_ratio']:.2f} "
            f"| {row['frames_per_s']:.2f} | {row['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "large"])
    parser.add_argument("--size", nargs=2, type=int, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--clip-frames", type=int, default=2, help="frames per backbone call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, methods interleaved")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)

    rows = []
    for preset in args.presets:
        print(f"measuring Swin-{preset} Mask2Former backbone at {args.size[0]}x{args.size[1]} ...", flush=True)
        rows += measure(preset, tuple(args.size), args.clip_frames, args.rounds)
    report = dict(
        date=date.today().isoformat(),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        size=args.size,
        rows=rows,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backbone_cost.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(rows)
    (args.out / "backbone_cost.md").write_text(table + "\n")
    print(table)
    for row in rows:
        if row.get("tca_reassigned_fraction") is not None:
            fraction = row["tca_reassigned_fraction"]
            label = f"Swin-{row['preset']} {row['label']}"
            print(f"{label}: {fraction:.1%} of tokens reassigned per frame (changed, or in a fallen-back window)")


if __name__ == "__main__":
    main()
