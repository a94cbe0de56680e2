"""TCA's per-window fallback, ablated: label-map fidelity to the full model of per-frame clustering
(residual reconstruction, as TCA's) and of TCA with the fallback rule before and after the margin
for windows in which a token changed (`tca_core.clustering.CHANGED_MARGIN`: 0, the earlier rule,
against the shipped value), on each held-out set, pooled over the videos and per 8-frame span, at
the most aggressive shape the bench sweeps (alpha 0, h' 2) or at --alpha/--grid.

    python -m benchmarks.tca_fallback --videos 8 --frames 32     # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import torch

from tca_core import clustering
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.evaluation import ConfusionMatrix, segment_video
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import CATEGORIES, HELD_OUT_SETS, held_out_videos

SPAN = 8  # frames per span of the per-span columns


@contextmanager
def changed_margin(value: float):
    """TCA's margin for changed windows set to `value` for the duration (the ablation's only lever)."""
    shipped = clustering.CHANGED_MARGIN
    clustering.CHANGED_MARGIN = value
    try:
        yield
    finally:
        clustering.CHANGED_MARGIN = shipped


def label_maps(segmenter: VideoSegmenter, config: AccelerationConfig, videos) -> list[list]:
    """Per video, its frames' label maps under `config` (each video from a fresh memory)."""
    segmenter.acceleration = config
    maps = []
    for i, video in enumerate(videos):
        results = segment_video(segmenter, f"fallback-{i}", video)
        segmenter.drop(f"fallback-{i}")
        maps.append([r.label_map for r in results])
    return maps


def fidelity(reference: list[list], maps: list[list], frames: range) -> float:
    """mIoU of `maps` against `reference` over `frames` of every video."""
    confusion = ConfusionMatrix(len(CATEGORIES))
    for truth, predicted in zip(reference, maps):
        for t in frames:
            confusion.update(predicted[t], truth[t])
    return confusion.miou()


def variants(shipped_margin: float, shape: dict) -> list[tuple[str, AccelerationConfig, float]]:
    return [
        ("clustering (residual)", AccelerationConfig(method="clustering", reconstruction="residual", **shape), 0.0),
        ("tca, margin 0 (earlier)", AccelerationConfig(method="tca", **shape), 0.0),
        (f"tca, margin {shipped_margin:g} (shipped)", AccelerationConfig(method="tca", **shape), shipped_margin),
    ]


def main(argv: list[str] | None = None) -> int:
    """--videos and --frames per held-out set (8, 32); --alpha and --grid, the clustered shape (0, 2);
    the bench's temperature (256), radius (1) and top-k (4)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=0)
    parser.add_argument("--grid", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    segmenter = VideoSegmenter.from_pretrained(EMBEDDED_MODEL, task="semantic")
    shape = dict(alpha=args.alpha, grid=args.grid, temperature=256.0, radius=1, topk=4)
    spans = [range(k, min(k + SPAN, args.frames)) for k in range(0, args.frames, SPAN)]
    print("| set | method | fidelity mIoU | " + " | ".join(f"frames {s.start}-{s.stop - 1}" for s in spans) + " |")
    print("|---|---|---|" + "---|" * len(spans))
    for set_name in HELD_OUT_SETS:
        videos = [video.frames()[0] for video in held_out_videos(set_name, args.videos, args.frames)]
        reference = label_maps(segmenter, AccelerationConfig(method="none"), videos)
        for name, config, margin in variants(clustering.CHANGED_MARGIN, shape):
            with changed_margin(margin):
                maps = label_maps(segmenter, config, videos)
            whole = fidelity(reference, maps, range(args.frames))
            parts = " | ".join(f"{fidelity(reference, maps, span):.3f}" for span in spans)
            print(f"| {set_name} | {name} | {whole:.3f} | {parts} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
