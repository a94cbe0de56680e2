"""The accuracy-speed sweep of per-frame `clustering` and `tca` against the full model (`none`).

Sweeps operating points (alpha, grid h', iterations; tau for TCA) on a model over (a) the held-out
sets of generated videos with ground truth (`HELD_OUT_SETS`: a static and a moving camera), each
measured on its own, and (b) the real sample videos. Every clip is run by `none` first
and then by every operating point, one after the other, so that the timing ratios to `none` are
measured interleaved on the same frames in the same machine state; each point keeps its own cluster
memory and tracks (its own video ids).

Per point: backbone and whole-model GFLOPs per frame (torch.utils.flop_counter) and, per held-out
set (columns suffixed `_static`, `_moving`) and pooled over both (no suffix): backbone and
whole-model speedup over `none` (none's time over the point's, summed over the clips run side by
side), fidelity to `none` (semantic mIoU of the label maps, mean IoU of `none`'s instance masks with
their best match, cosine similarity of the backbone's output features in the stages clustering
touches), accuracy against the ground truth (mIoU, video AP) and what reuse saved (share of windows
computed, of frames reused); on the real videos (suffix `_real`) feature cosine, label-map
agreement, speedups and reuse's shares. `choose_default` picks the point a checkpoint's acceleration file carries (label-map
fidelity on every held-out set); `run` writes results, report, plots and that file
(docs/benchmarks.md).

    tca-segment bench --quick --out out/bench-quick     # a few minutes
    tca-segment bench --out out/bench                   # the full sweep
"""

from __future__ import annotations

import functools
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tca_core.allocator import reuse_freed_memory
from tca_core.config import EMBEDDED_MODEL, TUNED_SETTINGS, AccelerationConfig, write_acceleration_file
from tca_core.evaluation import ConfusionMatrix, Scoreboard, paired_difference
from tca_core.flops import flops_by_module
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import CATEGORIES, HELD_OUT_SEED, HELD_OUT_SETS, SyntheticVideo

from .video_io import open_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
FIDELITY_FOR_DEFAULT = 0.97
GENERATED_VIDEOS = 4  # generated videos per held-out set of the full sweep (x 32 frames)
SWEEP_TEMPERATURE = 256.0  # soft enough to stay differentiable, hard enough that centers don't merge (docs/tca.md)
# Neighbourhood and reconstruction top-k of every point: those the study in docs/benchmarks.md measured
# (the generic defaults before they became Expedit's, docs/tca.md); the shipped acceleration.json has them.
SWEEP_NEIGHBOURHOOD = dict(radius=1, topk=4)
SHORT_SIDE = 224  # frames run at this short side (the shipped model's training size)


@dataclass(frozen=True)
class SweepData:
    """The videos a sweep runs on."""

    # Held-out set name (a key of HELD_OUT_SETS) -> seeds of its generated videos, each run with the
    # set's camera: fidelity, feature cosine and accuracy against ground truth, per set.
    sets: dict[str, list[int]]
    real_names: list[str]  # sample videos in SHARED_VIDEOS: feature cosine and label agreement
    num_frames: int  # frames of each generated video
    real_frames: int  # frames read from each real video (at most)
    clip_frames: int  # frames per clip

    @classmethod
    def for_run(cls, quick: bool) -> SweepData:
        """The full sweep's data (GENERATED_VIDEOS per held-out set), or `--quick`'s: 1 generated
        video per set and 2 real videos, fewer frames."""
        real_names = sorted(p.name for p in SHARED_VIDEOS.glob("*") if p.suffix in (".mp4", ".mkv"))
        count = 1 if quick else GENERATED_VIDEOS
        sets = {name: [HELD_OUT_SEED + i for i in range(count)] for name in HELD_OUT_SETS}
        if quick:
            return cls(sets, real_names[:2], 16, 8, 8)
        return cls(sets, real_names, 32, 16, 8)

    @property
    def clips(self) -> int:
        generated = sum(len(seeds) for seeds in self.sets.values()) * self.num_frames
        return (generated + len(self.real_names) * self.real_frames) // self.clip_frames


def set_suffix(set_name: str) -> str:
    """The row columns' suffix of a held-out set: "static-camera" -> "static"."""
    return set_name.split("-")[0]


# choose_default's columns: label-map fidelity on every held-out set.
DEFAULT_KEYS = tuple(f"fidelity_miou_{set_suffix(name)}" for name in HELD_OUT_SETS)


# The sweep's shapes as fractions of the clustered stage's depth (alpha) and of the window (h'): on
# the shipped model (depth 18, window 7) alpha 0 / 3 / 9 and h' 2 / 3 / 5; --quick: alpha 2 / 9, h' 3 / 5.
ALPHA_FRACTIONS, GRID_FRACTIONS = (0, 1 / 6, 1 / 2), (2 / 7, 3 / 7, 5 / 7)
QUICK_ALPHA_FRACTIONS, QUICK_GRID_FRACTIONS = (1 / 9, 1 / 2), (3 / 7, 5 / 7)


def operating_points(quick: bool, depth: int = 18, window: int = 7) -> list[AccelerationConfig]:
    """The sweep for a clustered stage of `depth` blocks and windows of `window` tokens: every
    (alpha, grid) for clustering and for TCA at temperature 256, plus per-frame clustering with TCA's
    residual reconstruction (an ablation: what TCA gains from reconstruction alone), and at the most
    aggressive shape axes of temperature, k-means rounds and tau."""
    alpha_fractions, grid_fractions = (
        (QUICK_ALPHA_FRACTIONS, QUICK_GRID_FRACTIONS) if quick else (ALPHA_FRACTIONS, GRID_FRACTIONS)
    )
    alphas = sorted({min(depth - 1, round(f * depth)) for f in alpha_fractions})
    grids = sorted({max(1, round(f * window)) for f in grid_fractions})
    points = []
    for alpha in alphas:
        for grid in grids:
            shape = dict(alpha=alpha, grid=grid, temperature=SWEEP_TEMPERATURE, **SWEEP_NEIGHBOURHOOD)
            points.append(AccelerationConfig(method="clustering", **shape))
            points.append(AccelerationConfig(method="tca", **shape))
            points.append(AccelerationConfig(method="clustering", reconstruction="residual", **shape))
    if not quick:
        shape = dict(alpha=0, grid=grids[0], **SWEEP_NEIGHBOURHOOD)
        points += [
            AccelerationConfig(method=m, temperature=t, **shape) for t in (1.0, 16.0) for m in ("clustering", "tca")
        ]
        shape["temperature"] = SWEEP_TEMPERATURE
        points += [AccelerationConfig(method="clustering", iters=iters, **shape) for iters in (2, 3)]
        points += [AccelerationConfig(method="tca", tca_iters=iters, **shape) for iters in (1, 2)]
        points += [AccelerationConfig(method="tca", tau=tau, **shape) for tau in (0.6, 0.97)]
    return points + reuse_points(quick, depth, window)


# Window reuse thresholds of the sweep's reuse points (docs/tca.md, "Reuse"), the full model's and
# TCA's at the sweep's middle shape; with frame reuse at the default pixel change, and without.
REUSE_THRESHOLDS = (0.1, 0.25)


def reuse_points(quick: bool, depth: int = 18, window: int = 7) -> list[AccelerationConfig]:
    """Window and frame reuse on the full model and on TCA (alpha 1/6 of the depth, h' 3/7 of the
    window); --quick: TCA with both reuses at the first threshold."""
    shape = dict(
        alpha=min(depth - 1, round(depth / 6)),
        grid=max(1, round(3 * window / 7)),
        temperature=SWEEP_TEMPERATURE,
        **SWEEP_NEIGHBOURHOOD,
    )
    if quick:
        return [AccelerationConfig(method="tca", window_reuse=REUSE_THRESHOLDS[0], frame_reuse=True, **shape)]
    points = []
    for threshold in REUSE_THRESHOLDS:
        points.append(AccelerationConfig(method="none", window_reuse=threshold))
        points.append(AccelerationConfig(method="tca", window_reuse=threshold, **shape))
    points.append(AccelerationConfig(method="none", window_reuse=REUSE_THRESHOLDS[0], frame_reuse=True))
    points.append(AccelerationConfig(method="tca", window_reuse=REUSE_THRESHOLDS[0], frame_reuse=True, **shape))
    return points


def stage_shape(segmenter: VideoSegmenter) -> tuple[int, int]:
    """(depth of the clustered stage, window size) of the segmenter's backbone: what
    `operating_points` scales the sweep's shapes to."""
    backbone = segmenter.backbone
    return backbone.depths[AccelerationConfig.stage - 1], backbone.window


def machine_description() -> str:
    """The machine a sweep ran on, as its report and the acceleration file's `chosen_by` say it."""
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"


def setting_name(config: AccelerationConfig) -> str:
    reuse = f" +reuse w={config.window_reuse:g}" if config.window_reuse is not None else ""
    reuse += f" +frames p={config.pixel_change:g}" if config.frame_reuse else ""
    return _shape_name(config) + reuse


def modified(config: AccelerationConfig) -> bool:
    """Whether a point differs from the full model (clusters tokens or reuses results)."""
    return config.accelerated or config.reusing


def _shape_name(config: AccelerationConfig) -> str:
    if not config.accelerated:
        return "full model"
    if config.method == "tca":
        name = (
            f"alpha={config.alpha} h'={config.grid} iters={config.tca_iters} T={config.temperature:g} tau={config.tau}"
        )
    else:
        name = f"alpha={config.alpha} h'={config.grid} iters={config.iters} T={config.temperature:g}"
    return name + (" +residual" if config.method == "clustering" and config.reconstruction == "residual" else "")


class Measured(NamedTuple):
    """One point's run of one clip."""

    results: list  # FrameResult per frame
    seconds: float  # the whole model's
    backbone_seconds: float
    features: tuple  # the backbone's output feature maps of the clip's last forward pass


@dataclass
class KindStats:
    """What one operating point accumulates over one kind of video: a held-out set's or the real ones."""

    fidelity: ConfusionMatrix  # label maps against `none`'s
    instance_ious: list[float] = field(default_factory=list)  # `none`'s instance masks' best-match IoUs
    windows_computed: list[float] = field(default_factory=list)  # per frame, window reuse's share computed
    frames_reused: list[bool] = field(default_factory=list)  # per frame, whether frame reuse took it
    cosines: list[float] = field(default_factory=list)  # backbone output features against `none`'s, per clip
    # per clip, (none's seconds, this point's), the whole model's and the backbone's: speedups are
    # ratios of their sums (frames/s over the clips; a clip whose frames were all reused ran no backbone)
    model_seconds: list[tuple[float, float]] = field(default_factory=list)
    backbone_seconds: list[tuple[float, float]] = field(default_factory=list)
    board: Scoreboard = field(default_factory=lambda: Scoreboard(CATEGORIES))  # vs ground truth (held-out sets)

    @classmethod
    def pooled(cls, parts: list[KindStats], classes: int) -> KindStats:
        """The kinds `parts` together, as if one kind (a model of `classes` labels)."""
        pool = cls(ConfusionMatrix(classes))
        for part in parts:
            pool.fidelity.counts += part.fidelity.counts
            pool.instance_ious += part.instance_ious
            pool.windows_computed += part.windows_computed
            pool.frames_reused += part.frames_reused
            pool.cosines += part.cosines
            pool.model_seconds += part.model_seconds
            pool.backbone_seconds += part.backbone_seconds
            pool.board.videos += part.board.videos
            pool.board.video_ids += part.board.video_ids
        return pool


@dataclass
class PointStats:
    """What one operating point accumulates over the run: per kind of video (a held-out set's name
    or "real", as `run_points`'s videos name them), and its token ratios over all clips."""

    config: AccelerationConfig
    classes: int  # the model's labels (the fidelity confusion matrices' size)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    token_ratios: list[float] = field(default_factory=list)

    def kind(self, name: str) -> KindStats:
        """The accumulator of videos of kind `name` (empty until a clip of that kind is added)."""
        return self.kinds.setdefault(name, KindStats(ConfusionMatrix(self.classes)))

    def add_clip(self, reference: Measured, mine: Measured, kind: str, first_stage: int):
        """This point's run of a clip of kind `kind` against `none`'s (`reference`); `first_stage`:
        the clustered stage."""
        stats = self.kind(kind)
        stats.model_seconds.append((reference.seconds, mine.seconds))
        stats.backbone_seconds.append((reference.backbone_seconds, mine.backbone_seconds))
        self.token_ratios += [r.stats.token_ratio for r in mine.results if r.stats]
        for result in mine.results:
            window_share = result.stats.windows_computed if result.stats else None
            stats.windows_computed.append(1.0 if window_share is None else window_share)
            stats.frames_reused.append(bool(result.stats and result.stats.frame_reused))
        for ours, theirs in zip(mine.results, reference.results):
            stats.fidelity.update(ours.label_map, theirs.label_map)
            stats.instance_ious += _best_match_ious(theirs.instances, ours.instances)
        computed = [i for i, r in enumerate(mine.results) if not (r.stats and r.stats.frame_reused)]
        if computed:  # the frames the backbone ran on (frame reuse skips the others)
            chosen = [features[computed] for features in reference.features]
            stats.cosines.append(_feature_cosine(chosen, mine.features, first_stage))


class BackboneProbe:
    """Times the backbone's forward passes and keeps its last output feature maps."""

    def __init__(self, backbone: torch.nn.Module):
        self.seconds, self.features, self._begin = 0.0, None, 0.0
        backbone.register_forward_pre_hook(self._before)
        backbone.register_forward_hook(self._after)

    def _before(self, module, args):
        self._begin = time.perf_counter()

    def _after(self, module, args, output):
        self.seconds += time.perf_counter() - self._begin
        self.features = output.feature_maps


def _best_match_ious(reference, candidate) -> list[float]:
    """For each reference instance, the IoU of the best candidate of the same category (0 if none)."""
    ious = []
    for ref in reference:
        best = 0.0
        for other in candidate:
            if other.category_id == ref.category_id:
                union = np.logical_or(ref.mask, other.mask).sum()
                best = max(best, np.logical_and(ref.mask, other.mask).sum() / union if union else 1.0)
        ious.append(float(best))
    return ious


def _feature_cosine(reference, features, first_stage: int) -> float:
    """Mean per-position cosine similarity over the feature maps of the clustered stages."""
    values = [F.cosine_similarity(a.float(), b.float(), dim=1).mean() for a, b in zip(reference, features)]
    return float(torch.stack(values[first_stage - 1 :]).mean())


def _timed(segmenter: VideoSegmenter, probe: BackboneProbe, clip: Clip) -> Measured:
    probe.seconds, probe.features = 0.0, None
    begin = time.perf_counter()
    results = segmenter.process([clip])[0]
    return Measured(results, time.perf_counter() - begin, probe.seconds, probe.features)


def _videos(data: SweepData):
    """(kind, video id, frames, ground-truth objects or None) for the generated videos, kind their
    held-out set's name, then the real videos, kind "real"."""
    for set_name, seeds in data.sets.items():
        for seed in seeds:
            frames, objects = SyntheticVideo(seed, data.num_frames, camera=HELD_OUT_SETS[set_name]).frames()
            yield set_name, f"{set_name}/{seed}", frames, objects
    for name in data.real_names:
        reader = open_video(SHARED_VIDEOS / name)
        yield "real", name, reader.read(0, min(data.real_frames, reader.info.frames))[0], None


def sweep(
    segmenter: VideoSegmenter, points: list[AccelerationConfig], data: SweepData
) -> tuple[list[dict], list[dict[str, Scoreboard]]]:
    """One row per point (the full model first) and, aligned with the rows, each point's accuracy
    Scoreboards per held-out set name (for paired comparisons)."""
    stats = run_points(segmenter, points, _videos(data), data.clips, data.clip_frames)
    videos = CostVideos.of_sweep(data)
    counting = tqdm(stats, desc="counting each point's FLOPs", unit="point")  # minutes: the counter is slow
    rows = [_summarise(segmenter, point, videos) for point in counting]
    return rows, [{name: point.kind(name).board for name in data.sets} for point in stats]


@dataclass(frozen=True)
class CostVideos:
    """The videos a point's GFLOPs per frame are counted on, each run in clips of `clip_frames` as
    the sweep runs it: `short` for points whose work does not depend on what the video shows, and
    per held-out set (by column suffix) its own videos for points that reuse (their work does)."""

    short: list[np.ndarray]
    sets: dict[str, list[np.ndarray]]
    clip_frames: int

    @classmethod
    def of_sweep(cls, data: SweepData) -> CostVideos:
        """The first held-out set's first video, 2 clips long; every set's videos of the sweep, each
        cut to one refresh period of the default (its first `refresh` frames: the share of frames
        computed whole is a long run's, at half the counting time of 32 frames; the counter costs
        about 1 s per frame)."""

        def generated(name: str, seed: int, frames: int) -> np.ndarray:
            return SyntheticVideo(seed, frames, camera=HELD_OUT_SETS[name]).frames()[0]

        first_set, seeds = next(iter(data.sets.items()))
        short = [generated(first_set, seeds[0], 2 * data.clip_frames)]
        counted = min(data.num_frames, AccelerationConfig().refresh)
        sets = {
            set_suffix(name): [generated(name, s, data.num_frames)[:counted] for s in seeds]
            for name, seeds in data.sets.items()
        }
        return cls(short, sets, data.clip_frames)


def run_points(
    segmenter: VideoSegmenter,
    points: list[AccelerationConfig],
    videos,
    total_clips: int,
    clip_frames: int,
    deadline: float | None = None,
) -> list[PointStats]:
    """Every clip of every video through `none` and then each point, side by side; the points'
    PointStats, `none`'s first. `videos` yields (kind, video id, frames, ground-truth objects or
    None), kind a held-out set's name (generated videos, with objects) or "real". With `deadline` (a
    time.monotonic() value) the run stops after the clip that passes it."""
    probe = BackboneProbe(segmenter.backbone)
    classes = len(segmenter.labels)
    full = AccelerationConfig(method="none")
    stats = [PointStats(c, classes) for c in [full, *points]]
    bar = tqdm(total=total_clips, desc=f"sweeping {len(points)} operating points", unit="clip")
    for kind, video_id, frames, objects in videos:
        results = {id(s): [] for s in stats}
        for start in range(0, len(frames), clip_frames):
            _run_clip(segmenter, probe, stats, (kind, video_id, start, frames[start : start + clip_frames]), results)
            bar.update(1)
            if deadline is not None and time.monotonic() > deadline:
                break
        for point in stats:
            segmenter.drop(_stream_id(point.config, video_id))
            if objects is not None:
                point.kind(kind).board.add_results(video_id, results[id(point)], objects, frames.shape[1:3])
        if deadline is not None and time.monotonic() > deadline:
            break
    bar.close()
    return stats


def _run_clip(segmenter, probe, stats: list[PointStats], clip: tuple, results: dict):
    """One clip (kind, video id, first frame, pixels) through every point, `none` (the first) the reference."""
    kind, video_id, start, pixels = clip
    reference = None
    for point in stats:
        segmenter.acceleration = point.config
        mine = _timed(segmenter, probe, Clip(_stream_id(point.config, video_id), start, pixels))
        if reference is None:
            reference = mine
        else:
            point.add_clip(reference, mine, kind, segmenter.backbone.acceleration.stage)
        results[id(point)] += mine.results


def _stream_id(config: AccelerationConfig, video_id: str) -> str:
    """Each operating point runs a video under its own id: its own cluster memory and tracks."""
    return f"{setting_name(config)}/{config.method}/{video_id}"


def _flops_per_frame(segmenter: VideoSegmenter, config: AccelerationConfig, videos, clip_frames: int):
    """(backbone, whole model) GFLOPs per frame over `videos` (frame arrays), each run in clips of
    `clip_frames` with its memory carried from clip to clip."""
    segmenter.acceleration = config

    def run():
        for number, video in enumerate(videos):
            video_id = _stream_id(config, f"flops/{number}")
            for start in range(0, len(video), clip_frames):
                segmenter.process([Clip(video_id, start, video[start : start + clip_frames])])
            segmenter.drop(video_id)

    counts = flops_by_module(run)
    frames = sum(len(video) for video in videos)
    backbone = next(v for k, v in counts.items() if k.endswith("pixel_level_module.encoder"))
    return backbone / frames / 1e9, counts["Global"] / frames / 1e9


def cost_columns(segmenter: VideoSegmenter, config: AccelerationConfig, videos: CostVideos) -> dict:
    """What a point is and its GFLOPs per frame. A point that reuses is counted on each held-out
    set's videos (columns suffixed by the set), its unsuffixed GFLOPs their mean: the cost the
    default's rule compares; any other point once, on `videos.short`."""
    count = functools.partial(_flops_per_frame, segmenter, config, clip_frames=videos.clip_frames)
    shared = None if config.reusing and videos.sets else count(videos.short)
    per_set = {suffix: shared or count(set_videos) for suffix, set_videos in videos.sets.items()}
    backbone, model = shared or tuple(statistics.mean(c[part] for c in per_set.values()) for part in (0, 1))
    resolved = config.resolved(segmenter.backbone.window, segmenter.backbone.depths) if config.accelerated else config
    return dict(
        method=config.method,
        setting=setting_name(config),
        config=resolved.to_dict(),
        gflops_backbone=backbone,
        gflops_model=model,
        **{f"gflops_backbone_{suffix}": c[0] for suffix, c in per_set.items()},
        **{f"gflops_model_{suffix}": c[1] for suffix, c in per_set.items()},
    )


def _cost(segmenter: VideoSegmenter, point: PointStats, videos: CostVideos) -> dict:
    """The part of a point's row that needs no video kind: `cost_columns` and its token ratio."""
    token_ratio = statistics.mean(point.token_ratios) if point.token_ratios else 1.0
    return dict(cost_columns(segmenter, point.config, videos), token_ratio=token_ratio)


def _fidelity_and_speed(stats: KindStats, accelerated: bool, suffix: str = "") -> dict:
    """Speedups, fidelity to `none` and what reuse saved (the share of windows computed and of frames
    reused) over one kind of video (or a pool), columns named + `suffix`."""
    columns = dict(
        speedup_backbone=_speedup(stats.backbone_seconds) if accelerated else 1.0,
        speedup_model=_speedup(stats.model_seconds) if accelerated else 1.0,
        fidelity_miou=stats.fidelity.miou() if accelerated else 1.0,
        fidelity_instance_iou=statistics.mean(stats.instance_ious) if stats.instance_ious else 1.0,
        feature_cosine=statistics.mean(stats.cosines) if stats.cosines else 1.0,
        windows_computed=statistics.mean(stats.windows_computed) if stats.windows_computed else 1.0,
        frames_reused=statistics.mean(stats.frames_reused) if stats.frames_reused else 0.0,
    )
    return {name + suffix: value for name, value in columns.items()}


def _speedup(seconds: list[tuple[float, float]]) -> float:
    """`none`'s time over a point's, summed over the clips both ran side by side (1.0: no clips)."""
    mine = sum(point for _, point in seconds)
    return sum(reference for reference, _ in seconds) / mine if mine > 0 else 1.0


def _generated_columns(stats: KindStats, accelerated: bool, suffix: str = "") -> dict:
    """`_fidelity_and_speed` plus accuracy against the ground truth (mIoU, video AP)."""
    gt = stats.board.metrics()
    return dict(
        _fidelity_and_speed(stats, accelerated, suffix), **{"gt_miou" + suffix: gt["miou"], "gt_ap" + suffix: gt["ap"]}
    )


def _summarise(segmenter, point: PointStats, videos: CostVideos) -> dict:
    """A point's row: cost; per held-out set (suffixed) and pooled over the sets (unsuffixed)
    speedups, fidelity and accuracy; the real videos' feature cosine and label agreement."""
    accelerated = modified(point.config)
    sets = [name for name in HELD_OUT_SETS if name in point.kinds]
    row = _cost(segmenter, point, videos)
    pooled = KindStats.pooled([point.kinds[name] for name in sets], point.classes)
    row.update(_generated_columns(pooled, accelerated))
    for name in sets:
        row.update(_generated_columns(point.kinds[name], accelerated, "_" + set_suffix(name)))
    real = _fidelity_and_speed(point.kind("real"), accelerated, "_real")
    kept = ("fidelity_miou", "feature_cosine", "speedup_model", "speedup_backbone", "windows_computed", "frames_reused")
    return dict(row, **{f"{key}_real": real[f"{key}_real"] for key in kept})


def label_free_row(segmenter: VideoSegmenter, point: PointStats, clip: np.ndarray) -> dict:
    """A point's row from the real (unlabelled) videos alone: cost (counted on `clip`, frames of the
    input), speedups and fidelity to `none` (label maps, instance masks, backbone features);
    `tca-segment tune`'s rows."""
    cost = _cost(segmenter, point, CostVideos([clip], {}, len(clip)))
    return dict(cost, **_fidelity_and_speed(point.kind("real"), modified(point.config)))


def choose_default(
    rows: list[dict], target: float = FIDELITY_FOR_DEFAULT, keys: tuple[str, ...] = DEFAULT_KEYS
) -> dict | None:
    """The fastest TCA point whose fidelity reaches at least `target` on every column of `keys`
    (default: the label-map mIoU to `none` on each held-out set; `tca-segment tune`'s label-free
    rows: ("fidelity_miou",)).

    Fastest by backbone GFLOPs, not by the measured speedup: points of equal FLOPs (e.g. differing
    only in temperature) differ in wall-clock by a few percent of noise on a shared CPU, which would
    make the choice a coin toss. Points within 1% of the lowest cost count as equal; among them
    the one with the highest fidelity (its lowest over `keys`) wins."""
    eligible = [r for r in rows if r["method"] == "tca" and all(r[key] >= target for key in keys)]
    if not eligible:
        return None
    cheapest = min(r["gflops_backbone"] for r in eligible)
    tied = [r for r in eligible if r["gflops_backbone"] <= 1.01 * cheapest]
    return max(tied, key=lambda r: min(r[key] for key in keys))


def curve(row: dict) -> str:
    """Which curve of the plot a row belongs to."""
    config = row["config"]
    if config.get("window_reuse") is not None or config.get("frame_reuse"):
        return row["method"] + "+reuse"
    if row["method"] == "clustering" and config["reconstruction"] == "residual":
        return "clustering+residual"
    return row["method"]


BASELINES = ("clustering", "clustering+residual")  # the curves TCA is checked against


def claim_check(rows: list[dict], boards: list[dict[str, Scoreboard]], resamples: int = 1000) -> list[dict]:
    """TCA against per-frame clustering (TCA.md's baseline) and against the residual-reconstruction
    ablation, at the same (alpha, h', temperature), on each held-out set (`boards`: per row, its
    Scoreboards by set name): one record per set, setting and baseline with fidelity and accuracy
    differences, the accuracy ones with 95% paired-bootstrap intervals over that set's videos
    (`paired_difference`)."""
    rounds = AccelerationConfig.iters  # the baselines run the default k-means rounds (not the rounds axis)
    baselines = {
        (curve(r), _shape(r)): i for i, r in enumerate(rows) if curve(r) in BASELINES and r["config"]["iters"] == rounds
    }
    pairs = [
        (set_name, index, baselines[name, _shape(row)])
        for set_name in boards[0]
        for index, row in enumerate(rows)
        for name in (BASELINES if curve(row) == "tca" else ())
        if (name, _shape(row)) in baselines
    ]
    checks = []
    # Minutes in the full bench: each pair bootstraps both boards' metrics `resamples` times.
    for set_name, index, base in tqdm(pairs, desc="checking TCA against the baselines", unit="pair"):
        accuracy = paired_difference(boards[index][set_name], boards[base][set_name], resamples)
        checks.append(_claim_record(rows[index], rows[base], set_name, accuracy))
    return checks


def _claim_record(row: dict, base: dict, set_name: str, accuracy: dict) -> dict:
    """One claim-check record: TCA's `row` minus the baseline's `base` on held-out set `set_name`
    (`accuracy`: their `paired_difference` on that set)."""
    suffix = "_" + set_suffix(set_name)
    return dict(
        set=set_name,
        setting=row["setting"],
        against=curve(base),
        gflops_tca=row["gflops_backbone"],
        gflops_other=base["gflops_backbone"],
        fidelity_gain=row["fidelity_miou" + suffix] - base["fidelity_miou" + suffix],
        instance_gain=row["fidelity_instance_iou" + suffix] - base["fidelity_instance_iou" + suffix],
        feature_cosine_gain=row["feature_cosine" + suffix] - base["feature_cosine" + suffix],
        feature_cosine_real_gain=row["feature_cosine_real"] - base["feature_cosine_real"],
        gt_miou_gain=accuracy["miou"]["difference"],
        gt_miou_interval=[accuracy["miou"]["low"], accuracy["miou"]["high"]],
        gt_ap_gain=accuracy["ap"]["difference"],
        gt_ap_interval=[accuracy["ap"]["low"], accuracy["ap"]["high"]],
    )


# The claim summary's tests of one record (one setting on one set).
CLAIM_TESTS = {
    "fidelity_at_least": lambda c: c["fidelity_gain"] >= 0 and c["feature_cosine_gain"] >= 0,
    "accuracy_not_lower": lambda c: c["gt_miou_interval"][1] >= 0 and c["gt_ap_interval"][1] >= 0,
    "accuracy_higher": lambda c: c["gt_miou_interval"][0] > 0 or c["gt_ap_interval"][0] > 0,
}


def claim_summary(rows: list[dict], checks: list[dict]) -> dict:
    """Per baseline: at how many settings TCA's fidelity is at least the baseline's (label maps and
    features), its accuracy is not significantly lower (both 95% intervals reach 0 or above), and
    its accuracy is significantly higher (an interval entirely above 0), each on every held-out set;
    then the curves: at how many of the baseline's points some TCA point of at most the same cost
    (+1%) reaches at least its fidelity mIoU on every set. `by_set`: the same counts per set."""
    summary = {}
    sets = list(dict.fromkeys(c["set"] for c in checks))
    every_set = tuple(f"fidelity_miou_{set_suffix(name)}" for name in sets)
    for against in sorted({c["against"] for c in checks}):
        mine = [c for c in checks if c["against"] == against]
        summary[against] = dict(_claim_counts(mine), **_curve_counts(rows, against, every_set))
        summary[against]["by_set"] = {
            name: dict(
                _claim_counts([c for c in mine if c["set"] == name]),
                **_curve_counts(rows, against, (f"fidelity_miou_{set_suffix(name)}",)),
            )
            for name in sets
        }
    return summary


def _claim_counts(checks: list[dict]) -> dict:
    """The settings among `checks` and, per CLAIM_TESTS test, those whose records all pass it."""
    by_setting = {}
    for check in checks:
        by_setting.setdefault(check["setting"], []).append(check)
    counts = {
        name: sum(all(test(c) for c in group) for group in by_setting.values()) for name, test in CLAIM_TESTS.items()
    }
    return dict(settings=len(by_setting), **counts)


def _curve_counts(rows: list[dict], against: str, keys: tuple[str, ...]) -> dict:
    """The points of curve `against` and at how many a TCA point as cheap (+1%) reaches at least
    their fidelity on every column of `keys`."""
    tca = [r for r in rows if curve(r) == "tca"]
    others = [r for r in rows if curve(r) == against]
    reached = sum(
        any(t["gflops_backbone"] <= 1.01 * r["gflops_backbone"] and all(t[k] >= r[k] for k in keys) for t in tca)
        for r in others
    )
    return dict(curve_points=len(others), curve_at_least=reached)


def plot_claim(checks: list[dict], out: Path):
    """TCA minus each baseline at every setting, one row of panels per held-out set: accuracy
    differences with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(c["setting"] for c in checks))
    sets = list(dict.fromkeys(c["set"] for c in checks))
    height = 0.4 * len(settings) + 1.5
    figure, axes = plt.subplots(len(sets), 2, figsize=(13, height * len(sets) + 0.8), sharey=True, squeeze=False)
    for row_axes, set_name in zip(axes, sets):
        for axis, key, label in ((row_axes[0], "gt_miou", "mIoU"), (row_axes[1], "gt_ap", "video AP")):
            _claim_panel(axis, [c for c in checks if c["set"] == set_name], settings, key)
            axis.set_title(f"{set_name}: {label}", fontsize=10)
            axis.set_xlabel(f"TCA minus baseline, {label} vs ground truth (95% paired bootstrap)", fontsize=9)
        row_axes[0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0][0].invert_yaxis()
    figure.suptitle("Accuracy of TCA against the baselines at equal settings, per held-out set of generated videos")
    figure.tight_layout()
    figure.savefig(out / "claim.png", dpi=110)
    plt.close(figure)


def _claim_panel(axis, checks: list[dict], settings: list[str], key: str):
    """One panel of `plot_claim`: `checks`' differences on `key` ("gt_miou" or "gt_ap") per setting."""
    for offset, (against, color) in enumerate(zip(BASELINES, ("tab:orange", "tab:gray"))):
        mine = [c for c in checks if c["against"] == against]
        y = [settings.index(c["setting"]) + 0.15 * (offset * 2 - 1) for c in mine]
        gain = [c[f"{key}_gain"] for c in mine]
        errors = [
            [g - c[f"{key}_interval"][0] for g, c in zip(gain, mine)],
            [c[f"{key}_interval"][1] - g for g, c in zip(gain, mine)],
        ]
        axis.errorbar(gain, y, xerr=errors, fmt="o", color=color, capsize=3, label=f"TCA - {against}")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def _shape(row: dict) -> tuple:
    config = row["config"]
    return config["alpha"], config["grid"], config["temperature"]


# The trade-off plot's panel rows: (x column, y column, x label, y label); both columns take the
# set's suffix (the GFLOPs differ between the sets for points that reuse).
PANELS = (
    ("gflops_backbone", "fidelity_miou", "backbone GFLOPs / frame", "fidelity to the full model (mIoU)"),
    ("speedup_backbone", "fidelity_miou", "backbone speedup over none (CPU)", "fidelity to the full model (mIoU)"),
    ("speedup_model", "fidelity_miou", "whole-model speedup over none (CPU)", "fidelity to the full model (mIoU)"),
    ("gflops_backbone", "feature_cosine", "backbone GFLOPs / frame", "backbone feature cosine to the full model"),
    ("gflops_backbone", "fidelity_instance_iou", "backbone GFLOPs / frame", "instance mask IoU to the full model"),
    ("gflops_backbone", "gt_miou", "backbone GFLOPs / frame", "accuracy: mIoU vs ground truth"),
    ("gflops_backbone", "gt_ap", "backbone GFLOPs / frame", "accuracy: video AP vs ground truth"),
)
CURVES = (  # (curve, colour, line style, legend)
    ("clustering", "tab:orange", "-", "clustering"),
    ("clustering+residual", "tab:gray", "--", "clustering + residual reconstruction (ablation)"),
    ("tca", "tab:blue", "-", "TCA"),
    ("tca+reuse", "tab:green", ":", "TCA + window/frame reuse"),
    ("none+reuse", "tab:purple", ":", "full model + window/frame reuse"),
)


def plot(rows: list[dict], out: Path):
    """Cost against fidelity and against accuracy, one curve (Pareto front) per method: one column
    of panels per held-out set, the panels of a row on the same y scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = _row_sets(rows)
    figure, axes = plt.subplots(len(PANELS), len(sets), figsize=(6 * len(sets), 3.8 * len(PANELS)), sharey="row")
    axes = np.asarray(axes).reshape(len(PANELS), len(sets))
    for panel_axes, (x, y, xlabel, ylabel) in zip(axes, PANELS):
        for axis, (set_name, suffix) in zip(panel_axes, sets):
            _tradeoff_panel(axis, rows, f"{x}_{suffix}", f"{y}_{suffix}")
            axis.set_title(set_name, fontsize=10)
            axis.set_xlabel(xlabel)
        panel_axes[0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, 0.982))
    figure.suptitle("TCA vs per-frame clustering on the shipped model, per held-out set of generated videos", y=0.997)
    figure.tight_layout(rect=(0, 0, 1, 0.965))
    figure.savefig(out / "tradeoff.png", dpi=110)
    plt.close(figure)


REUSE_KINDS = (("static", "static camera (generated)"), ("moving", "moving camera (generated)"))
REUSE_KINDS += (("real", "real sample videos"),)


def plot_reuse(rows: list[dict], out: Path):
    """reuse.png: per kind of footage, each reuse point's whole-model speedup and its label-map
    fidelity to `none`, beside TCA and clustering at the reuse points' shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reused = [r for r in rows if curve(r).endswith("+reuse")]
    if not reused:
        return
    shape = next(_shape(r) for r in reused if r["method"] == "tca")
    chosen = [r for r in rows if curve(r) in ("tca", "clustering") and _shape(r) == shape] + reused
    chosen = [r for r in chosen if r["config"]["iters"] == AccelerationConfig.iters]
    names = [f"{r['method']}: {r['setting']}" for r in chosen]
    figure, axes = plt.subplots(2, len(REUSE_KINDS), figsize=(5.5 * len(REUSE_KINDS), 0.45 * len(chosen) * 2 + 2))
    for column, (suffix, title) in enumerate(REUSE_KINDS):
        for row, (key, label) in enumerate(
            (("speedup_model", "whole-model speedup over none"), ("fidelity_miou", "fidelity mIoU to none"))
        ):
            axis = axes[row][column]
            axis.barh(
                range(len(chosen)), [r[f"{key}_{suffix}"] for r in chosen], color=[_bar_colour(r) for r in chosen]
            )
            axis.set_yticks(range(len(chosen)), names if column == 0 else [""] * len(chosen), fontsize=7)
            axis.invert_yaxis()
            axis.set_title(f"{title}: {label}", fontsize=9)
            axis.axvline(1.0 if key == "speedup_model" else FIDELITY_FOR_DEFAULT, color="black", linewidth=0.8)
            axis.grid(alpha=0.3, axis="x")
    figure.suptitle("Window and frame reuse against TCA and clustering, per kind of footage (CPU, side by side)")
    figure.tight_layout()
    figure.savefig(out / "reuse.png", dpi=110)
    plt.close(figure)


def _bar_colour(row: dict) -> str:
    return {"tca": "tab:blue", "clustering": "tab:orange", "tca+reuse": "tab:green"}.get(curve(row), "tab:purple")


def _row_sets(rows: list[dict]) -> list[tuple[str, str]]:
    """(set name, column suffix) of the held-out sets the rows have columns for."""
    named = [(name, set_suffix(name)) for name in HELD_OUT_SETS]
    return [(name, suffix) for name, suffix in named if f"fidelity_miou_{suffix}" in rows[0]]


def _tradeoff_panel(axis, rows: list[dict], x: str, y: str):
    """One panel of `plot`: every point's (x, y), each curve's Pareto front and the full model."""
    for name, color, style, label in CURVES:
        points = [(r[x], r[y]) for r in rows if curve(r) == name]
        if not points:
            continue
        axis.scatter(*zip(*points), color=color, alpha=0.35, s=18)
        front = _pareto(points, cost_is_low=x.startswith("gflops"))
        axis.plot(*zip(*front), color=color, linestyle=style, marker="o", label=f"{label} (Pareto front)")
    full = next(r for r in rows if curve(r) == "none")
    axis.scatter([full[x]], [full[y]], color="black", marker="*", s=160, label="full model (none)", zorder=5)
    axis.grid(alpha=0.3)


def _pareto(points, cost_is_low: bool):
    """Points not beaten on both axes (lower cost or higher speedup, and higher quality), sorted by x."""
    ordered = sorted(points, key=lambda p: p[0] if cost_is_low else -p[0])
    front, best = [], -np.inf
    for point in ordered:
        if point[1] > best:
            front.append(point)
            best = point[1]
    return sorted(front)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table: cost and pooled speedups, then per held-out set the backbone's
    cost, fidelity to the full model and accuracy against the ground truth, then the real videos'."""
    per_set = (("gflops_backbone", "backbone GFLOPs"), ("fidelity_miou", "fidelity mIoU"))
    per_set += (("fidelity_instance_iou", "fidelity inst. IoU"),)
    per_set += (("feature_cosine", "feature cos"), ("gt_miou", "GT mIoU"), ("gt_ap", "GT AP"))
    per_set += (("speedup_model", "model speedup"), ("windows_computed", "windows computed"))
    per_set += (("frames_reused", "frames reused"),)
    set_columns = [(f"{key}_{suffix}", f"{suffix}: {label}") for _, suffix in _row_sets(rows) for key, label in per_set]
    header = ["method", "setting", "backbone GFLOPs", "model GFLOPs", "backbone speedup", "model speedup"]
    header += [label for _, label in set_columns] + ["real: feature cos", "real: label agreement"]
    header += ["real: model speedup", "real: windows computed", "real: frames reused"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["method"], r["setting"], f"{r['gflops_backbone']:.3f}", f"{r['gflops_model']:.3f}"]
        cells += [f"{r['speedup_backbone']:.2f}x", f"{r['speedup_model']:.2f}x"]
        cells += [f"{r[key]:.3f}" for key, _ in set_columns]
        cells += [f"{r['feature_cosine_real']:.3f}", f"{r['fidelity_miou_real']:.3f}"]
        cells += [
            f"{r['speedup_model_real']:.2f}x",
            f"{r['windows_computed_real']:.2f}",
            f"{r['frames_reused_real']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(quick: bool, out: Path, model: str = str(EMBEDDED_MODEL)) -> dict:
    """Run the sweep and write its results under `out` (`write_results`); the report with the rows.

    quick: a few points on little data (`operating_points`, `SweepData.for_run`).
    out: the directory written.
    model: a checkpoint directory or hub id."""
    # Timed as the job's actors run the model; the quick smoke run (CI, inside the test process) keeps
    # the process's allocator as it is.
    allocator = "INFERENCE_ENV" if not quick and reuse_freed_memory() else "C library defaults"
    data = SweepData.for_run(quick)
    segmenter = VideoSegmenter.from_pretrained(model, task="both", short_side=SHORT_SIDE)
    rows, boards = sweep(segmenter, operating_points(quick, *stage_shape(segmenter)), data)
    claim = claim_check(rows, boards, resamples=200 if quick else 1000)
    report = dict(
        date=date.today().isoformat(),
        machine=machine_description(),
        allocator=allocator,
        model=model,
        generated_videos=dict(sets=data.sets, cameras=HELD_OUT_SETS, frames=data.num_frames),
        real_videos=dict(names=data.real_names, frames=data.real_frames, short_side=SHORT_SIDE),
        clip_frames=data.clip_frames,
        default=choose_default(rows),
        default_keys=list(DEFAULT_KEYS),
        claim=claim,
        claim_summary=claim_summary(rows, claim),
    )
    write_results(out, rows, report)
    return dict(report, rows=rows)


def write_results(out: Path, rows: list[dict], report: dict):
    """results.json (the rows), report.json, results.md (the table), tradeoff.png, claim.png and, when
    a point qualifies, the chosen default as an acceleration file (to copy beside the checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown_table(rows) + "\n")
    plot(rows, out)
    plot_reuse(rows, out)
    plot_claim(report["claim"], out)
    default = report["default"]
    if default:
        rule = (
            f"fastest (backbone GFLOPs) TCA point with fidelity_miou >= {FIDELITY_FOR_DEFAULT} on every held-out set"
            f" ({', '.join(DEFAULT_KEYS)})"
        )
        chosen_by = f"tca-segment bench, {report['date']}, {report['machine']}: {rule}"
        write_acceleration_file(out / TUNED_SETTINGS, AccelerationConfig(**default["config"]), chosen_by)
