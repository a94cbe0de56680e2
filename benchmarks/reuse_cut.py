"""What window reuse's whole-frame cut protects and what it costs: the shipped default on each held-out
set under several cut rules (a frame is computed whole when at least a share of its first block's
windows changed, `tca_core.config.REUSE_CUT_SHARE`, and, with "+camera", when the camera moved,
`tca_core.reuse.camera_moved`), against `none` on the same clips: label-map fidelity mIoU, the mean
share of windows computed and the frames computed whole (docs/benchmarks.md, "Reuse"). These do not
depend on timing; no speed is reported.

    python -m benchmarks.reuse_cut --rules 0.5 0.8+camera 0.8 1.01 --out out/bench/reuse_cut.json   # ~3 minutes

Parameters: --rules (a share, 1.01: never; "+camera" adds the camera test), --videos per held-out
set, --frames per video, --out.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CutRule:
    """When a frame is computed whole besides resets and refreshes: at least `share` of its first
    block's windows changed, or (with `camera`) the camera moved (`reuse.camera_moved`)."""

    share: float
    camera: bool

    @classmethod
    def parse(cls, text: str) -> CutRule:
        """ "0.5" (the share alone) or "0.8+camera"."""
        share, _, camera = text.partition("+")
        if camera not in ("", "camera"):
            raise ValueError(f"a cut rule is a share, optionally followed by +camera; got {text!r}")
        return cls(float(share), camera == "camera")

    @property
    def name(self) -> str:
        return f"{self.share:g}+camera" if self.camera else f"{self.share:g}"

    @contextlib.contextmanager
    def applied(self):
        """The reuse module's cut as this rule while the block runs (an experiment's setting, not a
        knob: the shipped rule is REUSE_CUT_SHARE with the camera test)."""
        shipped = reuse.REUSE_CUT_SHARE, reuse.CAMERA_MOTION_GAIN
        reuse.REUSE_CUT_SHARE = self.share
        reuse.CAMERA_MOTION_GAIN = shipped[1] if self.camera else 0.0  # 0: no fit ever counts as motion
        try:
            yield
        finally:
            reuse.REUSE_CUT_SHARE, reuse.CAMERA_MOTION_GAIN = shipped


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


def measure_set(segmenter: VideoSegmenter, set_name: str, rules: list[CutRule], videos: int, frames: int) -> dict:
    """Per rule: fidelity mIoU to `none`, mean windows computed and frames computed whole."""
    default = tuned_acceleration(EMBEDDED_MODEL, "tca")
    confusion = {rule: ConfusionMatrix(len(segmenter.labels)) for rule in rules}
    windows, whole = {rule: [] for rule in rules}, dict.fromkeys(rules, 0)
    for video in tqdm(held_out_videos(set_name, videos, frames), desc=set_name, unit="video"):
        pixels = video.frames()[0]
        reference, _ = run_video(segmenter, AccelerationConfig(method="none"), pixels)
        for rule in rules:
            with rule.applied():
                maps, stats = run_video(segmenter, default, pixels)
            for mine, theirs in zip(maps, reference):
                confusion[rule].update(mine, theirs)
            windows[rule] += [s.windows_computed for s in stats]
            whole[rule] += sum(s.reuse_reset is not None for s in stats)
    return {
        rule.name: dict(
            fidelity_miou=confusion[rule].miou(),
            windows_computed=float(np.mean(windows[rule])),
            frames_computed_whole=whole[rule],
            frames=len(windows[rule]),
        )
        for rule in rules
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rules", nargs="+", default=["0.5", "0.8+camera", "0.8", "1.01"], help="cut rules (CutRule.parse)"
    )
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("out/bench/reuse_cut.json"))
    args = parser.parse_args(argv)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="semantic", short_side=SHORT_SIDE)
    rules = [CutRule.parse(text) for text in args.rules]
    report = dict(date=date.today().isoformat(), shipped=CutRule(reuse.REUSE_CUT_SHARE, True).name, sets={})
    for set_name in HELD_OUT_SETS:
        report["sets"][set_name] = measure_set(segmenter, set_name, rules, args.videos, args.frames)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
