"""How stable the full model's label maps are on the real sample videos: the label-map mIoU of each
frame against the frame before it (`none`, every frame computed). Where the model itself flickers,
a fidelity-to-`none` measure has that as its floor (docs/benchmarks.md, "Reuse").

    python -m benchmarks.self_agreement --frames 32 --out out/bench/self_agreement.json
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.report import write_report
from pipelines.sweep import SHARED_VIDEOS, SHORT_SIDE
from pipelines.video_io import open_video
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.evaluation import ConfusionMatrix
from tca_core.segmenter import Clip, VideoSegmenter


def self_agreement(segmenter: VideoSegmenter, name: str, frames: int, clip_frames: int = 8) -> dict:
    """Label-map mIoU of frame t against frame t-1, pooled over the first `frames` frames of video
    `name`, the classes it shows and the share of pixels not background."""
    pixels = open_video(SHARED_VIDEOS / name).read(0, frames)[0]
    maps = []
    for start in range(0, len(pixels), clip_frames):
        maps += [r.label_map for r in segmenter.process([Clip(name, start, pixels[start : start + clip_frames])])[0]]
    segmenter.drop(name)
    confusion = ConfusionMatrix(len(segmenter.labels))
    for later, earlier in zip(maps[1:], maps[:-1]):
        confusion.update(later, earlier)
    stacked = np.stack(maps)
    return dict(
        frames=len(maps),
        miou_to_previous_frame=confusion.miou(),
        classes=sorted(int(c) for c in np.unique(stacked)),
        foreground_share=float((stacked != 0).mean()),
    )


def main(argv: list[str] | None = None) -> int:
    """--frames N (per video, default 32), --out FILE (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("out/bench/self_agreement.json"))
    args = parser.parse_args(argv)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="semantic", short_side=SHORT_SIDE)
    segmenter.acceleration = AccelerationConfig(method="none")
    names = sorted(p.name for p in SHARED_VIDEOS.glob("*") if p.suffix in (".mp4", ".mkv"))
    report = {"date": date.today().isoformat(), "videos": {}}
    for name in tqdm(names, desc="label maps against the frame before", unit="video"):
        report["videos"][name] = self_agreement(segmenter, name, args.frames)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
