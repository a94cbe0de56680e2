"""Accuracy against ground truth: semantic mIoU and YouTube-VIS-style video AP."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.linalg import block_diag

from .segmenter import Clip

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0, 1, 101)


class ConfusionMatrix:
    """Pixel counts of (truth, prediction) pairs over any number of label maps."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, truth: np.ndarray):
        if prediction.shape != truth.shape:
            raise ValueError(f"label maps differ in shape: {prediction.shape} vs {truth.shape}")
        index = truth.astype(np.int64).ravel() * self.num_classes + prediction.astype(np.int64).ravel()
        self.counts += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        inter = np.diag(self.counts).astype(float)
        union = self.counts.sum(0) + self.counts.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return inter / union

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))


@dataclass
class Track:
    """An instance over a whole video: masks (T, H, W) bool, all False where it is absent."""

    video: str
    category_id: int
    masks: np.ndarray
    score: float = 1.0


def video_iou(a: np.ndarray, b: np.ndarray) -> float:
    """YouTube-VIS video IoU: intersections over unions, each summed over all frames."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def tracks_from_frames(video: str, frames: list[list[tuple[int, int, float, np.ndarray]]], shape) -> list[Track]:
    """Tracks from per-frame (instance id, category id, score, mask) lists of one video.

    A track's category is its most frequent per-frame category, its score the mean of its frames'.
    """
    masks, categories, scores = {}, {}, {}
    for t, instances in enumerate(frames):
        for instance_id, category_id, score, mask in instances:
            if instance_id not in masks:
                masks[instance_id] = np.zeros((len(frames), *shape), dtype=bool)
                categories[instance_id], scores[instance_id] = Counter(), []
            masks[instance_id][t] = mask
            categories[instance_id][category_id] += 1
            scores[instance_id].append(score)
    return [Track(video, categories[i].most_common(1)[0][0], masks[i], float(np.mean(scores[i]))) for i in masks]


@dataclass
class VideoScore:
    """What AP and mIoU need from one video: its confusion counts, its true tracks' categories, and
    per predicted track the category, score and video IoU with each true track."""

    confusion: np.ndarray  # (K, K) pixel counts (truth, prediction); empty (0, 0) when not scored
    truth_categories: np.ndarray  # (G,)
    prediction_categories: np.ndarray  # (P,)
    scores: np.ndarray  # (P,)
    ious: np.ndarray  # (P, G)

    @classmethod
    def from_tracks(cls, truth: list[Track], predictions: list[Track], confusion=None) -> VideoScore:
        ious = np.array([[video_iou(p.masks, g.masks) for g in truth] for p in predictions]).reshape(
            len(predictions), len(truth)
        )
        return cls(
            confusion=np.zeros((0, 0), np.int64) if confusion is None else confusion,
            truth_categories=np.array([g.category_id for g in truth], dtype=np.int64),
            prediction_categories=np.array([p.category_id for p in predictions], dtype=np.int64),
            scores=np.array([p.score for p in predictions], dtype=float),
            ious=ious,
        )


def video_ap(truth: list[Track], predictions: list[Track]) -> dict:
    """Mean AP over IoU 0.50:0.05:0.95 and the categories present in `truth` (COCO 101-point AP)."""
    videos = sorted({t.video for t in truth} | {p.video for p in predictions})
    return pooled_ap(
        [
            VideoScore.from_tracks([t for t in truth if t.video == v], [p for p in predictions if p.video == v])
            for v in videos
        ]
    )


def pooled_ap(videos: list[VideoScore]) -> dict:
    """`video_ap` over the tracks of `videos` (a video may appear several times, e.g. in a bootstrap
    sample: each appearance counts as its own video). Tracks of different videos never match."""
    categories = sorted({int(c) for v in videos for c in v.truth_categories})
    per_category = {}
    for category in categories:
        rows = [v.prediction_categories == category for v in videos]
        columns = [v.truth_categories == category for v in videos]
        # Block-diagonal: a prediction only overlaps the truth of its own video.
        ious = block_diag(*(v.ious[r][:, c] for v, r, c in zip(videos, rows, columns)))
        scores = np.concatenate([v.scores[r] for v, r in zip(videos, rows)])
        ious = ious[np.argsort(-scores, kind="stable")]
        per_category[category] = [_average_precision(ious, ious.shape[1], threshold) for threshold in IOU_THRESHOLDS]
    if not per_category:
        return dict(ap=float("nan"), ap50=float("nan"), ap75=float("nan"), per_category={})
    table = np.array(list(per_category.values()))  # (categories, thresholds)
    return dict(
        ap=float(table.mean()),
        ap50=float(table[:, 0].mean()),
        ap75=float(table[:, 5].mean()),
        per_category={c: float(np.mean(v)) for c, v in per_category.items()},
    )


def _average_precision(ious: np.ndarray, num_truth: int, threshold: float) -> float:
    """Greedy matching in score order (each truth matched once), then interpolated precision."""
    matched = np.zeros(num_truth, dtype=bool)
    hits = []
    for row in ious:
        candidates = np.where(~matched & (row >= threshold), row, -1.0) if len(row) else np.array([])
        best = int(np.argmax(candidates)) if len(candidates) and candidates.max() >= 0 else -1
        if best >= 0:
            matched[best] = True
        hits.append(best >= 0)
    if not hits:
        return 0.0
    true_positives = np.cumsum(hits)
    recall = true_positives / num_truth
    precision = true_positives / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # interpolated: best precision at >= recall
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in index]))


class Scoreboard:
    """Accumulates a segmenter's frame results (task "both") against ground truth, video by video.

    Each video is kept as a `VideoScore`, so the metrics can be taken over any selection of the
    videos (`metrics(videos=...)`), e.g. to bootstrap a paired comparison of two segmenters."""

    def __init__(self, categories: dict[int, str]):
        self.categories = categories
        self.videos: list[VideoScore] = []
        self.video_ids: list[str] = []

    def add_video(self, video_id: str, label_maps, instances, objects, shape: tuple[int, int]):
        """A video's predicted label maps and per-frame instances [(id, category id, score, mask)]
        against its per-frame ground-truth ObjectTruth lists."""
        from .synthetic import semantic_map

        confusion = ConfusionMatrix(len(self.categories))
        for label_map, frame_objects in zip(label_maps, objects, strict=True):
            confusion.update(label_map, semantic_map(frame_objects, *shape))
        true = [[(o.track_id, o.category_id, 1.0, o.mask) for o in frame_objects] for frame_objects in objects]
        truth = tracks_from_frames(video_id, true, shape)
        predictions = tracks_from_frames(video_id, list(instances), shape)
        self.videos.append(VideoScore.from_tracks(truth, predictions, confusion.counts))
        self.video_ids.append(video_id)

    def add_results(self, video_id: str, results, objects, shape: tuple[int, int]):
        """`add_video` for a video's `FrameResult`s (task "both"), in frame order."""
        instances = [[(i.id, i.category_id, i.score, i.mask) for i in r.instances] for r in results]
        self.add_video(video_id, [r.label_map for r in results], instances, objects, shape)

    def metrics(self, videos: list[int] | None = None) -> dict:
        """mIoU, per-class IoU and video AP over the videos at indices `videos` (default: all)."""
        selected = self.videos if videos is None else [self.videos[i] for i in videos]
        confusion = ConfusionMatrix(len(self.categories))
        for video in selected:
            confusion.counts += video.confusion
        ap = pooled_ap(selected)
        per_class = {self.categories[c]: float(v) for c, v in enumerate(confusion.iou())}
        return dict(miou=confusion.miou(), per_class_iou=per_class, ap=ap["ap"], ap50=ap["ap50"], ap75=ap["ap75"])


BOOTSTRAP_KEYS = ("miou", "ap")


def _resampled(boards: list[Scoreboard], resamples: int, seed: int):
    """Per bootstrap draw (videos with replacement, the same draw for every board): each board's
    metrics on the drawn videos."""
    rng = np.random.default_rng(seed)
    count = len(boards[0].videos)
    for _ in range(resamples):
        videos = rng.integers(0, count, count).tolist()
        yield [board.metrics(videos) for board in boards]


def paired_difference(board: Scoreboard, baseline: Scoreboard, resamples: int = 1000, seed: int = 0) -> dict:
    """`board` minus `baseline` on mIoU and AP, with 95% bootstrap intervals over videos.

    Both boards must hold the same videos in the same order (the same frames run by two
    segmenters): each bootstrap sample draws videos with replacement and scores both on it, so the
    interval reflects how much the difference depends on which videos were drawn."""
    if board.video_ids != baseline.video_ids:
        raise ValueError("paired comparison needs the same videos in the same order on both boards")
    samples = {key: [] for key in BOOTSTRAP_KEYS}
    for mine, theirs in _resampled([board, baseline], resamples, seed):
        for key in samples:
            samples[key].append(mine[key] - theirs[key])
    mine, theirs = board.metrics(), baseline.metrics()
    result = {}
    for key, values in samples.items():
        low, high = np.percentile(values, [2.5, 97.5])
        result[key] = dict(difference=mine[key] - theirs[key], low=float(low), high=float(high))
    return result


def bootstrap_interval(board: Scoreboard, resamples: int = 1000, seed: int = 0) -> dict:
    """95% bootstrap intervals of mIoU and video AP over the board's videos (drawn with replacement)."""
    samples = {key: [] for key in BOOTSTRAP_KEYS}
    for (metrics,) in _resampled([board], resamples, seed):
        for key in samples:
            samples[key].append(metrics[key])
    return {key: [float(v) for v in np.percentile(values, [2.5, 97.5])] for key, values in samples.items()}


def segment_video(segmenter, video_id: str, frames: np.ndarray, clip_frames: int = 8) -> list:
    """A whole video's `FrameResult`s, clip by clip as the job runs it; the video's memory is then dropped."""
    results = []
    for start in range(0, len(frames), clip_frames):
        results += segmenter.process([Clip(video_id, start, frames[start : start + clip_frames])])[0]
    segmenter.drop(video_id)
    return results


def score_generated(segmenter, videos, clip_frames: int = 8, progress=None):
    """Run `segmenter` (task "both") on generated videos (`SyntheticVideo`s), clip by clip, against
    their ground truth. Returns (Scoreboard, seconds spent segmenting); `progress(done, total)` after
    every video."""
    from .synthetic import CATEGORIES

    if segmenter.task != "both":
        raise ValueError(f"evaluation needs a segmenter with task 'both', got {segmenter.task!r}")
    board, seconds = Scoreboard(CATEGORIES), 0.0
    for done, video in enumerate(videos, 1):
        frames, objects = video.frames()
        video_id = f"generated/{video.camera_kind}/{video.seed}"
        begin = time.perf_counter()
        results = segment_video(segmenter, video_id, frames, clip_frames)
        seconds += time.perf_counter() - begin
        board.add_results(video_id, results, objects, (video.height, video.width))
        if progress:
            progress(done, len(videos))
    return board, seconds


def evaluate_generated(segmenter, videos, clip_frames: int = 8, progress=None) -> dict:
    """mIoU and video AP of `segmenter` (task "both") on generated videos, with 95% bootstrap
    intervals over the videos (`interval`), plus frames and seconds."""
    board, seconds = score_generated(segmenter, videos, clip_frames, progress)
    frames = sum(video.num_frames for video in videos)
    return dict(board.metrics(), interval=bootstrap_interval(board), frames=frames, seconds=seconds)
