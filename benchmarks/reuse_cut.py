"""What window reuse's whole-frame cut protects and what it costs: the shipped default on each held-out
set with the cut (`tca_core.config.REUSE_CUT_SHARE`: a frame at least that share of whose first-block
windows changed is computed whole) at several shares, against `none` on the same clips: label-map
fidelity mIoU, the mean share of windows computed and the frames computed whole (docs/benchmarks.md,
"Reuse"). These do not depend on timing; no speed is reported.

    python -m benchmarks.reuse_cut --shares 0.5 0.8 1.01 --out out/bench/reuse_cut.json   # ~10 minutes

Parameters: --shares (1.01: never cut), --videos per held-out set, --frames per video, --out.
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.report import write_report
from pipelines.sweep import SHORT_SIDE
from tca_core import reuse
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.evaluation import ConfusionMatrix
from tca_core.model import tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import HELD_OUT_SETS, held_out_videos

CLIP_FRAMES = 8  # as the bench runs its clips


@contextlib.contextmanager
def cut_share(share: float):
    """The reuse module's whole-frame cut at `share` while the block runs (an experiment's setting,
    not a knob: the shipped value is REUSE_CUT_SHARE)."""
    shipped = reuse.REUSE_CUT_SHARE
    reuse.REUSE_CUT_SHARE = share
    try:
        yield
    finally:
        reuse.REUSE_CUT_SHARE = shipped


def run_video(segmenter: VideoSegmenter, config: AccelerationConfig, frames: np.ndarray) -> tuple[list, list]:
    """One video through the segmenter at `config`, in clips: its label maps and frame stats."""
    segmenter.acceleration = config
    maps, stats = [], []
    for start in range(0, len(frames), CLIP_FRAMES):
        results = segmenter.process([Clip("cut", start, frames[start : start + CLIP_FRAMES])])[0]
        maps += [r.label_map for r in results]
        stats += [r.stats for r in results]
    segmenter.drop("cut")
    return maps, stats


def measure_set(segmenter: VideoSegmenter, set_name: str, shares: list[float], videos: int, frames: int) -> dict:
    """Per share: fidelity mIoU to `none`, mean windows computed and frames computed whole."""
    default = tuned_acceleration(EMBEDDED_MODEL, "tca")
    confusion = {share: ConfusionMatrix(len(segmenter.labels)) for share in shares}
    windows, whole = {share: [] for share in shares}, dict.fromkeys(shares, 0)
    for video in tqdm(held_out_videos(set_name, videos, frames), desc=set_name, unit="video"):
        pixels = video.frames()[0]
        reference, _ = run_video(segmenter, AccelerationConfig(method="none"), pixels)
        for share in shares:
            with cut_share(share):
                maps, stats = run_video(segmenter, default, pixels)
            for mine, theirs in zip(maps, reference):
                confusion[share].update(mine, theirs)
            windows[share] += [s.windows_computed for s in stats]
            whole[share] += sum(s.reuse_reset is not None for s in stats)
    return {
        str(share): dict(
            fidelity_miou=confusion[share].miou(),
            windows_computed=float(np.mean(windows[share])),
            frames_computed_whole=whole[share],
            frames=len(windows[share]),
        )
        for share in shares
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.8, 1.01])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("out/bench/reuse_cut.json"))
    args = parser.parse_args(argv)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="semantic", short_side=SHORT_SIDE)
    report = dict(date=date.today().isoformat(), shipped_share=reuse.REUSE_CUT_SHARE, sets={})
    for set_name in HELD_OUT_SETS:
        report["sets"][set_name] = measure_set(segmenter, set_name, args.shares, args.videos, args.frames)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
