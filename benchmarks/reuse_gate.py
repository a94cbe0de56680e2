"""What window reuse's gate costs: the shipped default (TCA with window reuse) against the same TCA
point without reuse, and with reuse at the bench's other threshold, video by video, side by side
on each held-out set, with the full model beside them (docs/benchmarks.md, "Reuse"). It reports
each point's speed over TCA alone's and over the full model's (`speed_vs_none`: the whole model's
speedup), and why its frames were computed whole (`FrameStats.reuse_reset`), so a moving camera shows how
often the gate turned reuse off and what that cost.

    .venv/bin/python -m benchmarks.reuse_gate --rounds 3 --out out/bench-full/reuse_gate.json   # ~8 min

Parameters: --videos per held-out set, --frames per video, --rounds timed after one warm-up round,
--out the JSON file written (per set and point: seconds, the ratio to TCA alone, frames by reason,
the mean share of windows computed in the frames that gathered windows).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

from tqdm import tqdm

from benchmarks.reuse_device import run_video  # clips of 8, as the bench runs them
from benchmarks.reuse_flops import shipped_with_and_without_reuse
from pipelines.sweep import SHORT_SIDE
from tca_core.allocator import reuse_freed_memory
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import HELD_OUT_SETS, held_out_videos

OTHER_THRESHOLD = 0.1  # the bench's other window-reuse threshold


def points() -> dict[str, AccelerationConfig]:
    """The full model, TCA alone, the shipped default and the default at the other threshold, by name."""
    alone, shipped = shipped_with_and_without_reuse()
    return {
        "none": AccelerationConfig(method="none"),
        "tca": alone,
        f"tca +reuse {shipped.window_reuse}": shipped,
        f"tca +reuse {OTHER_THRESHOLD}": replace(shipped, window_reuse=OTHER_THRESHOLD),
    }


def summary(seconds: float, stats: list, alone_seconds: float, full_seconds: float) -> dict:
    """One point's record on one set: its speed over TCA alone's and over the full model's."""
    stats = [s for s in stats if s is not None]  # the full model keeps no frame stats
    gathered = [s.windows_computed for s in stats if s.windows_computed is not None and s.windows_computed < 1.0]
    return dict(
        seconds=round(seconds, 2),
        speed_vs_tca=round(alone_seconds / seconds, 3),
        speed_vs_none=round(full_seconds / seconds, 3),
        frames_by_reason=dict(Counter(s.reuse_reset or "not computed whole" for s in stats)),
        frames_gathered=len(gathered),
        windows_computed_when_gathered=round(statistics.mean(gathered), 3) if gathered else None,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench-full/reuse_gate.json"))
    args = parser.parse_args(argv)
    reuse_freed_memory()  # timed as the job's actors run the model (tca_core/allocator.py)
    segmenter = VideoSegmenter.from_pretrained(EMBEDDED_MODEL, task="both", short_side=SHORT_SIDE)
    named = points()
    report = dict(date=date.today().isoformat(), videos=args.videos, frames=args.frames, rounds=args.rounds, sets={})
    videos = {s: held_out_videos(s, args.videos, args.frames) for s in HELD_OUT_SETS}
    runs = [(s, i, video.frames()[0]) for s, listed in videos.items() for i, video in enumerate(listed)]
    seconds = {(s, n): 0.0 for s in HELD_OUT_SETS for n in named}
    stats = {key: [] for key in seconds}
    for round_index in tqdm(range(args.rounds + 1), desc="rounds (the first is a warm-up)", unit="round"):
        for set_name, index, frames in runs:
            for name, config in named.items():  # side by side: every point on the same video in turn
                segmenter.acceleration = config
                spent, frame_stats = run_video(segmenter, frames, f"{set_name}-{index}-{name}")
                if round_index:
                    seconds[set_name, name] += spent
                if round_index == 1:  # the stats do not depend on the round: one timed round's
                    stats[set_name, name] += frame_stats
    for set_name in HELD_OUT_SETS:
        alone, full = seconds[set_name, "tca"], seconds[set_name, "none"]
        report["sets"][set_name] = {n: summary(seconds[set_name, n], stats[set_name, n], alone, full) for n in named}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["sets"], indent=1))
    return report


if __name__ == "__main__":
    main()
