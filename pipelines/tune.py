"""`tca-segment tune`: label-free calibration of a checkpoint's acceleration settings on a sample of
the user's own videos.

It runs the sweep of `tca-segment bench` (`pipelines.sweep`: the same operating points, each clip
through `none` and then every point, side by side) over segments spread through the videos, at the
checkpoint's own processing size. There are no labels: a point is scored by its fidelity to `none`
(label maps as mIoU, instance masks as best-match IoU, backbone output features as cosine). The
fastest TCA point (backbone GFLOPs) whose label-map fidelity reaches the target is written as an
acceleration file, which the job, the endpoint and `evaluate` take with `--acceleration FILE`.

    tca-segment tune --model CKPT --input VIDEOS --out tuned.json [--target 0.97] [--budget MINUTES]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tca_core.config import AccelerationConfig, write_acceleration_file
from tca_core.segmenter import VideoSegmenter

from .storage import VideoRef, filesystem, list_videos
from .sweep import (
    FIDELITY_FOR_DEFAULT,
    choose_default,
    label_free_row,
    machine_description,
    operating_points,
    run_points,
    stage_shape,
)
from .video_io import open_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneSample:
    """Which frames of the user's videos the sweep runs on."""

    segments: int = 3  # per video, spread evenly through it (its start only when it has no index)
    segment_frames: int = 16  # each segment's frames; TCA's memory starts afresh at each segment
    clip_frames: int = 8  # frames per model call

    def __post_init__(self):
        if min(self.segments, self.segment_frames, self.clip_frames) < 1:
            raise ValueError(f"segments, segment frames and clip frames must be at least 1: {self}")


@dataclass(frozen=True)
class TuneRequest:
    """What `tune` calibrates, on what, and to which target."""

    model: str  # a checkpoint directory or hub id
    input: str  # a video file, or a directory or prefix (local or s3://) of videos
    out: Path  # the acceleration file written
    short_side: int | None = None  # the frames' short side before the model (None: the checkpoint's size)
    target: float = FIDELITY_FOR_DEFAULT  # label-map fidelity mIoU to `none` the chosen point must reach
    budget_minutes: float | None = None  # stop sweeping after the clip that passes this
    quick: bool = False  # bench --quick's few points instead of the full sweep
    sample: TuneSample = TuneSample()
    endpoint_url: str | None = None  # an S3-compatible store's endpoint


def video_refs(source: str, endpoint_url: str | None = None) -> list[VideoRef]:
    """The videos of `source`: one file, or those under a directory or prefix."""
    fs, path = filesystem(source, endpoint_url)
    if fs.isfile(path):
        return [VideoRef(Path(path).name, source)]
    refs = list_videos(source, endpoint_url=endpoint_url)
    if not refs:
        raise ValueError(f"input {source}: no videos found")
    return refs


def segments(refs: list[VideoRef], sample: TuneSample, endpoint_url: str | None = None):
    """("real", "<video id>@<first frame>", frames, None) for each segment of each readable video; a
    video that cannot be read is skipped with a warning that names it and the reason."""
    for ref in refs:
        fs, path = filesystem(ref.uri, endpoint_url)
        try:
            reader = open_video(path, fs)
            total = reader.info.frames
            length = min(sample.segment_frames, total) if total else sample.segment_frames
            for start in _segment_starts(total, sample):
                yield "real", f"{ref.video_id}@{start}", reader.read(start, start + length)[0], None
        except ValueError as error:
            log.warning("tune: skipping %s: %s", ref.uri, error)


def _segment_starts(total: int | None, sample: TuneSample) -> list[int]:
    if not total or total <= sample.segment_frames:
        return [0]
    span = total - sample.segment_frames
    count = min(sample.segments, span + 1)
    return sorted({round(span * (k + 0.5) / count) for k in range(count)})


def tune(request: TuneRequest) -> dict:
    """Sweep, choose and write; the report (rows, chosen point or None, what ran on)."""
    refs = video_refs(request.input, request.endpoint_url)
    segmenter = VideoSegmenter.from_pretrained(request.model, task="both", short_side=request.short_side)
    points = operating_points(request.quick, *stage_shape(segmenter))
    sample = request.sample
    clips = len(refs) * sample.segments * -(-sample.segment_frames // sample.clip_frames)
    deadline = time.monotonic() + 60 * request.budget_minutes if request.budget_minutes else None
    seen = _Seen()
    stats = run_points(
        segmenter, points, seen.count(segments(refs, sample, request.endpoint_url)), clips, sample.clip_frames, deadline
    )
    if seen.first is None:
        raise ValueError(f"input {request.input}: none of its {len(refs)} videos could be read")
    rows = [label_free_row(segmenter, point, seen.first[: sample.clip_frames]) for point in stats]
    chosen = choose_default(rows, request.target, keys=("fidelity_miou",))
    report = dict(
        date=date.today().isoformat(),
        machine=machine_description(),
        model=request.model,
        input=request.input,
        videos=len(refs),
        segments=seen.segments,
        frames=seen.frames,
        target=request.target,
        chosen=chosen,
        rows=rows,
    )
    request.out.parent.mkdir(parents=True, exist_ok=True)
    if chosen:
        rule = f"fastest (backbone GFLOPs) TCA point with label-map fidelity mIoU >= {request.target} to none"
        on = f"{report['frames']} frames of {report['segments']} segments of {request.input}"
        chosen_by = f"tca-segment tune, {report['date']}, {report['machine']}: {rule}, on {on}"
        write_acceleration_file(request.out, AccelerationConfig(**chosen["config"]), chosen_by)
    request.out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


class _Seen:
    """Counts the segments that pass and keeps the first one's frames (for FLOP counting)."""

    def __init__(self):
        self.first, self.segments, self.frames = None, 0, 0

    def count(self, videos):
        for kind, video_id, frames, objects in videos:
            self.first = frames if self.first is None else self.first
            self.segments += 1
            self.frames += len(frames)
            yield kind, video_id, frames, objects
