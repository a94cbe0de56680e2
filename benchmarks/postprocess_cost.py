"""What a frame costs outside the model at a video's own size: pre-processing, post-processing and the
writer's RLE encoding, ours against the reference way, side by side frame by frame (docs/benchmarks.md,
"At the video's own size").

Frames of a sample video are resized to each size (as a 720p or 1080p recording would decode); the
shipped model runs on them at its processing size (short side 224) with its shipped default. Per frame,
in turn:
- pre-processing: the uint8 resize the segmenter runs on a CPU against resizing float pixels;
- post-processing: `tca_core.postprocess` (label map and instance masks, as the segmenter calls it)
  against the same computation done plainly (every query scored, everything resized to the frame's
  size: the segmenter's until 2026-12-03) and against `transformers`' own `post_process_semantic_segmentation` and
  `post_process_instance_segmentation` on the same outputs, with their agreement;
- the whole segmenter call per frame, and the writer's encoding of the frame's rows.

    python -m benchmarks.postprocess_cost --frames 24 --out out/bench/postprocess_cost.json

Parameters: --video (a file in ../shared/data/videos), --frames (per size), --sizes (HxW ...).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoImageProcessor

from benchmarks.report import write_report
from pipelines.stages import ChunkWriter, _frame_fields, _rles
from pipelines.sweep import SHARED_VIDEOS, machine_description
from pipelines.video_io import open_video
from tca_core.config import EMBEDDED_MODEL
from tca_core.head import deformable_attention
from tca_core.model import tuned_acceleration
from tca_core.postprocess import instance_scores, postprocess_logits, resized_masks, semantic_label_map
from tca_core.segmenter import Clip, VideoSegmenter

CLIP, THRESHOLD = 8, 0.5


def _timed(work, *args):
    """(seconds, result) of one call of `work`."""
    begin = time.perf_counter()
    result = work(*args)
    return time.perf_counter() - begin, result


def _seconds(work, *args) -> float:
    return _timed(work, *args)[0]


def _resized_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False).clamp(0, 255).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _float_resize(segmenter: VideoSegmenter, frames: np.ndarray) -> torch.Tensor:
    """The reference pre-processing: the frames as float pixels, then resized."""
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    size = segmenter.processing_size(*frames.shape[1:3])
    return F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)


def _ours(class_logits, mask_logits, size):
    labels = semantic_label_map(class_logits, mask_logits, size)
    scored = instance_scores(class_logits, mask_logits, least=THRESHOLD)
    kept = torch.nonzero((scored.scores >= THRESHOLD) & (scored.area > 0)).flatten()
    return labels, resized_masks(scored.binary[scored.rows[kept]], size)


def _plain(class_logits, mask_logits, size):
    """The same computation done plainly (the segmenter's until 2026-12-03): every query scored, the
    class scores and the masks resized whole to the frame's size."""
    logits = postprocess_logits(mask_logits)
    probabilities = logits.sigmoid()
    class_probs = class_logits.softmax(-1)[:, :-1]
    scores = (class_probs.T @ probabilities.flatten(1)).view(-1, *probabilities.shape[1:])
    labels = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0].max(0).indices
    binary = (logits > 0).float()
    area = binary.flatten(1).sum(1)
    mean_inside = (probabilities * binary).flatten(1).sum(1) / (area + 1e-6)
    kept = torch.nonzero((class_probs.max(-1).values * mean_inside >= THRESHOLD) & (area > 0)).flatten()
    masks = F.interpolate(binary[kept][None], size=size, mode="nearest")[0].bool()
    return labels.to(torch.int32).numpy(), masks.numpy()


def _theirs(processor, outputs, size):
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    found = processor.post_process_instance_segmentation(
        outputs, threshold=THRESHOLD, target_sizes=[size], return_binary_maps=True
    )[0]
    return labels.numpy(), found["segmentation"]


def _encode(writer: ChunkWriter, result, size: tuple[int, int]):
    """The writer's work on one frame's results: the masks' and the label map's RLE rows."""
    fields = dict(_frame_fields(result), timestamp=0.0, warm=False)
    chunk = dict(video_id="cost", uri="cost", height=size[0], width=size[1])
    writer._mask_rows(chunk, fields, _rles(fields, *size), *size)


class _Frame:
    """One frame's model outputs, in the shape the image processor's post-processing takes."""

    def __init__(self, outputs, row: int):
        self.class_queries_logits = outputs.class_queries_logits[row : row + 1].float()
        self.masks_queries_logits = outputs.masks_queries_logits[row : row + 1].float()


def measure_size(segmenter: VideoSegmenter, processor, frames: np.ndarray, writer: ChunkWriter) -> dict:
    """Per-frame milliseconds of each part at the frames' size, and our label maps' agreement."""
    size = tuple(frames.shape[1:3])
    parts = ("pre_uint8", "pre_float", "post_ours", "post_plain", "post_transformers", "call", "encode")
    times = {k: [] for k in parts}
    agree, pixels, instances = 0, 0, 0
    for start in range(0, len(frames), CLIP):
        clip = frames[start : start + CLIP]
        times["pre_uint8"].append(_seconds(segmenter._resized, clip) / len(clip))
        times["pre_float"].append(_seconds(_float_resize, segmenter, clip) / len(clip))
        with torch.inference_mode(), deformable_attention():
            outputs = segmenter.model(pixel_values=segmenter._preprocess(clip))
        for row in range(len(clip)):
            frame = _Frame(outputs, row)
            args = (frame.class_queries_logits[0], frame.masks_queries_logits[0], size)
            seconds, (labels, masks) = _timed(_ours, *args)
            times["post_ours"].append(seconds)
            times["post_plain"].append(_seconds(_plain, *args))
            seconds, (reference, _) = _timed(_theirs, processor, frame, size)
            times["post_transformers"].append(seconds)
            agree, pixels, instances = (
                agree + int((labels == reference).sum()),
                pixels + labels.size,
                instances + len(masks),
            )
        begin = time.perf_counter()
        (results,) = segmenter.process([Clip("cost", start, clip)])
        times["call"].append((time.perf_counter() - begin) / len(clip))
        times["encode"] += [_seconds(_encode, writer, result, size) for result in results]
    segmenter.drop("cost")
    report = {f"{k}_ms": 1000 * statistics.median(v) for k, v in times.items()}
    for reference in ("plain", "transformers"):
        pairs = zip(times[f"post_{reference}"], times["post_ours"])
        report[f"post_speedup_vs_{reference}"] = statistics.median(t / o for t, o in pairs)
    report["pre_speedup"] = statistics.median(f / u for f, u in zip(times["pre_float"], times["pre_uint8"]))
    report.update(label_agreement=agree / pixels, instances=instances, frames=len(frames))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="car-detection.mp4")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--sizes", nargs="+", default=["360x640", "720x1280", "1080x1920"])
    parser.add_argument("--out", type=Path, default=Path("out/bench/postprocess_cost.json"))
    args = parser.parse_args(argv)
    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), task="both", score_threshold=THRESHOLD)
    segmenter.acceleration = tuned_acceleration(EMBEDDED_MODEL, "tca")
    processor = AutoImageProcessor.from_pretrained(str(EMBEDDED_MODEL))
    writer = ChunkWriter(str(args.out.parent / "unused"), segmenter.labels, 0, "")
    source = open_video(SHARED_VIDEOS / args.video).read(0, args.frames)[0]
    report = dict(date=date.today().isoformat(), machine=machine_description(), video=args.video, sizes={})
    for text in tqdm(args.sizes, desc="sizes", unit="size"):
        height, width = (int(v) for v in text.split("x"))
        report["sizes"][text] = measure_size(segmenter, processor, _resized_frames(source, (height, width)), writer)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
