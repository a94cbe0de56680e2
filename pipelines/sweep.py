"""The accuracy-speed sweep of per-frame `clustering` and `tca` against the full model (`none`).

Sweeps operating points (alpha, grid h', iterations; tau for TCA) on a model over (a) held-out
generated videos with ground truth and (b) the real sample videos. Every clip is run by `none` first
and then by every operating point, one after the other, so that the timing ratios to `none` are
measured interleaved on the same frames in the same machine state; each point keeps its own cluster
memory and tracks (its own video ids).

Per point: backbone and whole-model GFLOPs per frame (torch.utils.flop_counter), backbone and
whole-model speedup over `none` (median of per-clip time ratios), fidelity to `none` (semantic
mIoU of the label maps, mean IoU of `none`'s instance masks with their best match), accuracy against
the ground truth (mIoU, video AP) and, on the real videos, the cosine similarity of the backbone's
output features (the stages clustering touches) besides label-map agreement. `choose_default`
picks the point a checkpoint's acceleration file carries; `run` writes results, report, plots and
that file (docs/benchmarks.md).

    tca-segment bench --quick --out out/bench-quick     # a few minutes
    tca-segment bench --out out/bench                   # the full sweep
"""

from __future__ import annotations

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

from tca_core.config import EMBEDDED_MODEL, TUNED_SETTINGS, AccelerationConfig, write_acceleration_file
from tca_core.evaluation import ConfusionMatrix, Scoreboard, paired_difference
from tca_core.flops import flops_by_module
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import CATEGORIES, HELD_OUT_SEED, SyntheticVideo

from .video_io import open_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
FIDELITY_FOR_DEFAULT = 0.97
GENERATED_VIDEOS = 12  # held-out generated videos of the full sweep (x 32 frames)
SWEEP_TEMPERATURE = 256.0  # soft enough to stay differentiable, hard enough that centers don't merge (docs/tca.md)
# Neighbourhood and reconstruction top-k of every point: those the study in docs/benchmarks.md measured
# (the generic defaults before they became Expedit's, docs/tca.md); the shipped acceleration.json has them.
SWEEP_NEIGHBOURHOOD = dict(radius=1, topk=4)
SHORT_SIDE = 224  # frames run at this short side (the shipped model's training size)


@dataclass(frozen=True)
class SweepData:
    """The videos a sweep runs on."""

    seeds: list[int]  # held-out generated videos: fidelity, feature cosine and accuracy against ground truth
    real_names: list[str]  # sample videos in SHARED_VIDEOS: feature cosine and label agreement
    num_frames: int  # frames of each generated video
    real_frames: int  # frames read from each real video (at most)
    clip_frames: int  # frames per clip

    @classmethod
    def for_run(cls, quick: bool) -> SweepData:
        """The full sweep's data, or `--quick`'s: 2 generated and 2 real videos, fewer frames."""
        real_names = sorted(p.name for p in SHARED_VIDEOS.glob("*") if p.suffix in (".mp4", ".mkv"))
        if quick:
            return cls([HELD_OUT_SEED + i for i in range(2)], real_names[:2], 16, 8, 8)
        return cls([HELD_OUT_SEED + i for i in range(GENERATED_VIDEOS)], real_names, 32, 16, 8)

    @property
    def clips(self) -> int:
        return (len(self.seeds) * self.num_frames + len(self.real_names) * self.real_frames) // self.clip_frames


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
class PointStats:
    """What one operating point accumulates over the run."""

    config: AccelerationConfig
    fidelity: ConfusionMatrix  # label maps against `none`'s, generated videos
    fidelity_real: ConfusionMatrix  # the same on the real videos
    backbone_ratio: list[float] = field(default_factory=list)  # t_none / t_point per clip
    model_ratio: list[float] = field(default_factory=list)
    instance_ious: list[float] = field(default_factory=list)  # generated videos
    instance_ious_real: list[float] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)  # backbone output features against `none`'s, generated
    cosines_real: list[float] = field(default_factory=list)  # the same on the real videos
    token_ratios: list[float] = field(default_factory=list)
    board: Scoreboard = field(default_factory=lambda: Scoreboard(CATEGORIES))

    def add_clip(self, reference: Measured, mine: Measured, generated: bool, first_stage: int):
        """This point's run of a clip against `none`'s (`reference`); `first_stage`: the clustered stage."""
        self.model_ratio.append(reference.seconds / mine.seconds)
        self.backbone_ratio.append(reference.backbone_seconds / mine.backbone_seconds)
        self.token_ratios += [r.stats.token_ratio for r in mine.results if r.stats]
        for ours, theirs in zip(mine.results, reference.results):
            (self.fidelity if generated else self.fidelity_real).update(ours.label_map, theirs.label_map)
            ious = _best_match_ious(theirs.instances, ours.instances)
            if generated:
                self.instance_ious += ious
            else:
                self.instance_ious_real += ious
        cosine = _feature_cosine(reference.features, mine.features, first_stage)
        (self.cosines if generated else self.cosines_real).append(cosine)


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
    probe.seconds = 0.0
    begin = time.perf_counter()
    results = segmenter.process([clip])[0]
    return Measured(results, time.perf_counter() - begin, probe.seconds, probe.features)


def _videos(data: SweepData):
    """(kind, video id, frames, ground-truth objects or None) for the generated, then the real videos."""
    for seed in data.seeds:
        frames, objects = SyntheticVideo(seed, data.num_frames).frames()
        yield "generated", f"generated/{seed}", frames, objects
    for name in data.real_names:
        reader = open_video(SHARED_VIDEOS / name)
        yield "real", name, reader.read(0, min(data.real_frames, reader.info.frames))[0], None


def sweep(
    segmenter: VideoSegmenter, points: list[AccelerationConfig], data: SweepData
) -> tuple[list[dict], list[Scoreboard]]:
    """One row per point (the full model first) and, aligned with the rows, each point's accuracy
    Scoreboard over the generated videos (for paired comparisons)."""
    stats = run_points(segmenter, points, _videos(data), data.clips, data.clip_frames)
    flops_video = SyntheticVideo(data.seeds[0], 2 * data.clip_frames).frames()[0]
    return [_summarise(segmenter, point, flops_video) for point in stats], [point.board for point in stats]


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
    None), kind "generated" or "real". With `deadline` (a time.monotonic() value) the run stops
    after the clip that passes it."""
    probe = BackboneProbe(segmenter.backbone)
    classes = len(segmenter.labels)
    full = AccelerationConfig(method="none")
    stats = [PointStats(c, ConfusionMatrix(classes), ConfusionMatrix(classes)) for c in [full, *points]]
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
                point.board.add_results(video_id, results[id(point)], objects, frames.shape[1:3])
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
            point.add_clip(reference, mine, kind == "generated", segmenter.backbone.acceleration.stage)
        results[id(point)] += mine.results


def _stream_id(config: AccelerationConfig, video_id: str) -> str:
    """Each operating point runs a video under its own id: its own cluster memory and tracks."""
    return f"{setting_name(config)}/{config.method}/{video_id}"


def _flops_per_frame(segmenter: VideoSegmenter, config: AccelerationConfig, video: np.ndarray) -> tuple[float, float]:
    """(backbone, whole model) GFLOPs per frame over a generated video, TCA's memory carried along."""
    segmenter.acceleration = config
    video_id = _stream_id(config, "flops")
    counts = flops_by_module(segmenter.process, [Clip(video_id, 0, video)])
    segmenter.drop(video_id)
    backbone = next(v for k, v in counts.items() if k.endswith("pixel_level_module.encoder"))
    return backbone / len(video) / 1e9, counts["Global"] / len(video) / 1e9


def _cost_and_speed(segmenter: VideoSegmenter, point: PointStats, flops_video: np.ndarray) -> dict:
    """The part of a point's row that needs no fidelity: what it is, its GFLOPs and its speedups."""
    config = point.config
    accelerated = config.accelerated
    gflops_backbone, gflops_model = _flops_per_frame(segmenter, config, flops_video)
    resolved = config.resolved(segmenter.backbone.window, segmenter.backbone.depths) if accelerated else config
    return dict(
        method=config.method,
        setting=setting_name(config),
        config=resolved.to_dict(),
        gflops_backbone=gflops_backbone,
        gflops_model=gflops_model,
        speedup_backbone=statistics.median(point.backbone_ratio) if accelerated else 1.0,
        speedup_model=statistics.median(point.model_ratio) if accelerated else 1.0,
        token_ratio=statistics.mean(point.token_ratios) if point.token_ratios else 1.0,
    )


def _summarise(segmenter, point: PointStats, flops_video: np.ndarray) -> dict:
    gt = point.board.metrics()
    accelerated = point.config.accelerated
    return dict(
        _cost_and_speed(segmenter, point, flops_video),
        fidelity_miou=point.fidelity.miou() if accelerated else 1.0,
        fidelity_instance_iou=statistics.mean(point.instance_ious) if point.instance_ious else 1.0,
        fidelity_miou_real=point.fidelity_real.miou() if accelerated else 1.0,
        feature_cosine=statistics.mean(point.cosines) if point.cosines else 1.0,
        feature_cosine_real=statistics.mean(point.cosines_real) if point.cosines_real else 1.0,
        gt_miou=gt["miou"],
        gt_ap=gt["ap"],
    )


def label_free_row(segmenter: VideoSegmenter, point: PointStats, flops_video: np.ndarray) -> dict:
    """A point's row from the real (unlabelled) videos alone: cost, speedups and fidelity to `none`
    (label maps, instance masks, backbone features); `tca-segment tune`'s rows."""
    return dict(
        _cost_and_speed(segmenter, point, flops_video),
        fidelity_miou=point.fidelity_real.miou() if point.config.accelerated else 1.0,
        fidelity_instance_iou=statistics.mean(point.instance_ious_real) if point.instance_ious_real else 1.0,
        feature_cosine=statistics.mean(point.cosines_real) if point.cosines_real else 1.0,
    )


def choose_default(rows: list[dict], target: float = FIDELITY_FOR_DEFAULT, key: str = "fidelity_miou") -> dict | None:
    """The fastest TCA point whose fidelity (the rows' column `key`, label-map mIoU to `none`) is at
    least `target`.

    Fastest by backbone GFLOPs, not by the measured speedup: points of equal FLOPs (e.g. differing
    only in temperature) differ in wall-clock by a few percent of noise on a shared CPU, which would
    make the choice a coin toss. Points within 1% of the lowest cost count as equal; among them
    the one with the highest fidelity wins."""
    eligible = [r for r in rows if r["method"] == "tca" and r[key] >= target]
    if not eligible:
        return None
    cheapest = min(r["gflops_backbone"] for r in eligible)
    return max((r for r in eligible if r["gflops_backbone"] <= 1.01 * cheapest), key=lambda r: r[key])


def curve(row: dict) -> str:
    """Which curve of the plot a row belongs to."""
    if row["method"] == "clustering" and row["config"]["reconstruction"] == "residual":
        return "clustering+residual"
    return row["method"]


def claim_check(rows: list[dict], boards: list[Scoreboard], resamples: int = 1000) -> list[dict]:
    """TCA against per-frame clustering (TCA.md's baseline) and against the residual-reconstruction
    ablation, at the same (alpha, h', temperature): fidelity and accuracy differences, the accuracy
    ones with 95% paired-bootstrap intervals over the generated videos (`paired_difference`)."""
    rounds = AccelerationConfig.iters  # the baselines run the default k-means rounds (not the rounds axis)
    baselines = {
        (curve(r), _shape(r)): i
        for i, r in enumerate(rows)
        if curve(r) in ("clustering", "clustering+residual") and r["config"]["iters"] == rounds
    }
    checks = []
    for index, row in enumerate(rows):
        if row["method"] != "tca":
            continue
        for name in ("clustering", "clustering+residual"):
            base_index = baselines.get((name, _shape(row)))
            if base_index is None:
                continue
            base = rows[base_index]
            accuracy = paired_difference(boards[index], boards[base_index], resamples)
            checks.append(
                dict(
                    setting=row["setting"],
                    against=name,
                    gflops_tca=row["gflops_backbone"],
                    gflops_other=base["gflops_backbone"],
                    fidelity_gain=row["fidelity_miou"] - base["fidelity_miou"],
                    instance_gain=row["fidelity_instance_iou"] - base["fidelity_instance_iou"],
                    feature_cosine_gain=row["feature_cosine"] - base["feature_cosine"],
                    feature_cosine_real_gain=row["feature_cosine_real"] - base["feature_cosine_real"],
                    gt_miou_gain=accuracy["miou"]["difference"],
                    gt_miou_interval=[accuracy["miou"]["low"], accuracy["miou"]["high"]],
                    gt_ap_gain=accuracy["ap"]["difference"],
                    gt_ap_interval=[accuracy["ap"]["low"], accuracy["ap"]["high"]],
                )
            )
    return checks


def claim_summary(rows: list[dict], checks: list[dict]) -> dict:
    """Per baseline: how many settings TCA's fidelity is at least the baseline's (label maps and
    features), its accuracy is not significantly lower (both 95% intervals reach 0 or above), and
    its accuracy is significantly higher (an interval entirely above 0). Then the curves: at how
    many of the baseline's points some TCA point of at most the same cost (+1%) reaches at least
    its fidelity mIoU."""
    summary = {}
    tca = [r for r in rows if r["method"] == "tca"]
    for against in sorted({c["against"] for c in checks}):
        mine = [c for c in checks if c["against"] == against]
        summary[against] = dict(
            settings=len(mine),
            fidelity_at_least=sum(c["fidelity_gain"] >= 0 and c["feature_cosine_gain"] >= 0 for c in mine),
            accuracy_not_lower=sum(c["gt_miou_interval"][1] >= 0 and c["gt_ap_interval"][1] >= 0 for c in mine),
            accuracy_higher=sum(c["gt_miou_interval"][0] > 0 or c["gt_ap_interval"][0] > 0 for c in mine),
        )
        others = [r for r in rows if curve(r) == against]
        summary[against]["curve_points"] = len(others)
        summary[against]["curve_at_least"] = sum(
            any(
                t["gflops_backbone"] <= 1.01 * r["gflops_backbone"] and t["fidelity_miou"] >= r["fidelity_miou"]
                for t in tca
            )
            for r in others
        )
    return summary


def plot_claim(checks: list[dict], out: Path):
    """TCA minus each baseline at every setting: accuracy differences with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(c["setting"] for c in checks))
    figure, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(settings) + 2), sharey=True)
    for axis, key, label in ((axes[0], "gt_miou", "mIoU"), (axes[1], "gt_ap", "video AP")):
        for offset, (against, color) in enumerate((("clustering", "tab:orange"), ("clustering+residual", "tab:gray"))):
            mine = [c for c in checks if c["against"] == against]
            y = [settings.index(c["setting"]) + 0.15 * (offset * 2 - 1) for c in mine]
            gain = [c[f"{key}_gain"] for c in mine]
            errors = [
                [g - c[f"{key}_interval"][0] for g, c in zip(gain, mine)],
                [c[f"{key}_interval"][1] - g for g, c in zip(gain, mine)],
            ]
            axis.errorbar(gain, y, xerr=errors, fmt="o", color=color, capsize=3, label=f"TCA - {against}")
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_xlabel(f"TCA minus baseline, {label} vs ground truth (95% paired bootstrap)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle("Accuracy of TCA against the baselines at equal settings (held-out generated videos)")
    figure.tight_layout()
    figure.savefig(out / "claim.png", dpi=110)
    plt.close(figure)


def _shape(row: dict) -> tuple:
    config = row["config"]
    return config["alpha"], config["grid"], config["temperature"]


def plot(rows: list[dict], out: Path):
    """Cost against fidelity and against accuracy, one curve (Pareto front) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("gflops_backbone", "fidelity_miou", "backbone GFLOPs / frame", "fidelity to the full model (mIoU)"),
        ("speedup_backbone", "fidelity_miou", "backbone speedup over none (CPU)", "fidelity to the full model (mIoU)"),
        ("gflops_backbone", "feature_cosine", "backbone GFLOPs / frame", "backbone feature cosine to the full model"),
        ("gflops_backbone", "fidelity_instance_iou", "backbone GFLOPs / frame", "instance mask IoU to the full model"),
        ("gflops_backbone", "gt_miou", "backbone GFLOPs / frame", "accuracy: mIoU vs ground truth"),
        ("gflops_backbone", "gt_ap", "backbone GFLOPs / frame", "accuracy: video AP vs ground truth"),
    ]
    curves = (
        ("clustering", "tab:orange", "-", "clustering"),
        ("clustering+residual", "tab:gray", "--", "clustering + residual reconstruction (ablation)"),
        ("tca", "tab:blue", "-", "TCA"),
    )
    figure, axes = plt.subplots(3, 2, figsize=(12, 13))
    for axis, (x, y, xlabel, ylabel) in zip(axes.flat, panels):
        for name, color, style, label in curves:
            points = [(r[x], r[y]) for r in rows if curve(r) == name]
            if not points:
                continue
            axis.scatter(*zip(*points), color=color, alpha=0.35, s=18)
            front = _pareto(points, cost_is_low=x.startswith("gflops"))
            axis.plot(*zip(*front), color=color, linestyle=style, marker="o", label=f"{label} (Pareto front)")
        full = next(r for r in rows if r["method"] == "none")
        axis.scatter([full[x]], [full[y]], color="black", marker="*", s=160, label="full model (none)", zorder=5)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("TCA vs per-frame clustering on the shipped model (held-out generated videos)")
    figure.tight_layout()
    figure.savefig(out / "tradeoff.png", dpi=110)
    plt.close(figure)


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
    lines = [
        "| method | setting | backbone GFLOPs | model GFLOPs | backbone speedup | model speedup | fidelity mIoU "
        "| fidelity inst. IoU | feature cos | GT mIoU | GT AP | real: feature cos | real: label agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['gflops_backbone']:.3f} | {r['gflops_model']:.3f} "
            f"| {r['speedup_backbone']:.2f}x | {r['speedup_model']:.2f}x | {r['fidelity_miou']:.3f} "
            f"| {r['fidelity_instance_iou']:.3f} | {r['feature_cosine']:.3f} | {r['gt_miou']:.3f} | {r['gt_ap']:.3f} "
            f"| {r['feature_cosine_real']:.3f} | {r['fidelity_miou_real']:.3f} |"
        )
    return "\n".join(lines)


def run(quick: bool, out: Path, model: str = str(EMBEDDED_MODEL)) -> dict:
    """Run the sweep and write its results under `out` (`write_results`); the report with the rows.

    quick: a few points on little data (`operating_points`, `SweepData.for_run`).
    out: the directory written.
    model: a checkpoint directory or hub id."""
    data = SweepData.for_run(quick)
    segmenter = VideoSegmenter.from_pretrained(model, task="both", short_side=SHORT_SIDE)
    rows, boards = sweep(segmenter, operating_points(quick, *stage_shape(segmenter)), data)
    claim = claim_check(rows, boards, resamples=200 if quick else 1000)
    report = dict(
        date=date.today().isoformat(),
        machine=machine_description(),
        model=model,
        generated_videos=dict(seeds=data.seeds, frames=data.num_frames),
        real_videos=dict(names=data.real_names, frames=data.real_frames, short_side=SHORT_SIDE),
        clip_frames=data.clip_frames,
        default=choose_default(rows),
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
    plot_claim(report["claim"], out)
    default = report["default"]
    if default:
        rule = f"fastest (backbone GFLOPs) TCA point with fidelity_miou >= {FIDELITY_FOR_DEFAULT}"
        chosen_by = f"tca-segment bench, {report['date']}, {report['machine']}: {rule}"
        write_acceleration_file(out / TUNED_SETTINGS, AccelerationConfig(**default["config"]), chosen_by)
