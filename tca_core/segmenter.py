"""`VideoSegmenter`: a Swin Mask2Former with TCA that keeps a memory per video.

It takes clips (consecutive frames of a video), runs the whole batch through the network at once
(only TCA's clustering step loops over frames), and returns per-frame results: tracked instances
(video instance segmentation) or a label map (semantic segmentation).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .config import TASKS, AccelerationConfig
from .head import deformable_attention
from .memory import MemoryBank, VideoMemory
from .model import IMAGENET_MEAN, IMAGENET_STD, ImageProcessing, accelerate, image_processing, load_model
from .postprocess import Scored, instance_scores, resized_masks, semantic_label_map
from .reuse import frames_to_compute, patch_means
from .swin import FrameStats, FrameStream
from .tracking import track_frame

STUFF_NAMES = ("background",)  # categories never reported as instances


@dataclass
class Clip:
    """`frames` (T, H, W, 3) uint8 RGB are frames start .. start+T-1 of video `video_id`;
    `lineage`, when given, the stream (`StreamStart.lineage`) the clip continues: `process` refuses
    it with `StreamLost` if the video's memory has since been dropped or replaced."""

    video_id: str
    start: int
    frames: np.ndarray
    lineage: str | None = None

    def __post_init__(self):
        frames = self.frames
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            shape = getattr(frames, "shape", type(frames).__name__)
            raise ValueError(f"clip of video {self.video_id!r}: frames must be (T>0, H, W, 3), got {shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"clip of video {self.video_id!r}: frames must be uint8, got {frames.dtype}")
        if self.start < 0:
            raise ValueError(f"clip of video {self.video_id!r}: start must be >= 0, got {self.start}")


class StreamLost(ValueError):
    """A clip's stream is gone: its video's memory was dropped (evicted beyond `max_videos`, or
    dropped by its caller) after `start_stream`; the video has to start again."""


@dataclass(frozen=True)
class StreamStart:
    """Where a video's frames begin (`VideoSegmenter.start_stream`): segment from frame `first`
    on; `continued` says whether the video's memory went on from an earlier clip (then `first` is
    the requested start) or started afresh (then the warm-up frames come first); the results carry
    instance ids of the tracker named `lineage`."""

    video_id: str
    first: int
    lineage: str
    continued: bool


@dataclass
class Instance:
    id: int  # stable across the frames of a video
    category_id: int
    category: str
    score: float
    mask: np.ndarray  # (H, W) bool at the frame's size


@dataclass
class FrameResult:
    video_id: str
    frame_index: int
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)  # task "instance" or "both"
    label_map: np.ndarray | None = None  # task "semantic" or "both": (H, W) category ids
    stats: FrameStats | None = None  # what the clustering step did (accelerated methods)


class VideoSegmenter:
    """Owns the model and one memory per video id (cluster memory and instance tracks).

    Frames are resized for the model as `processing` says (`processing_size`); masks and label maps
    come back at the frame's own size. Built directly, `processing` is `short_side` (None: native
    size) with `image_mean` and `image_std`; `from_pretrained` takes it from the checkpoint.

    Parameters: `model`, a `Mask2FormerForUniversalSegmentation` with a Swin backbone (its device
    and dtype are the segmenter's); `acceleration`, how the backbone is accelerated
    (`AccelerationConfig`: method "none", "clustering" or "tca" and their settings);
    `task`, one of TASKS: "instance" (tracked instances with masks), "semantic" (a label map per
    frame) or "both"; `score_threshold` (0..1), the least score of an instance to report;
    `max_videos` (>= 1), video memories kept, the least recently used dropped beyond it;
    `processing`, an `ImageProcessing` given whole instead of `short_side`, `image_mean` and
    `image_std`."""

    def __init__(
        self,
        model,
        acceleration: AccelerationConfig = AccelerationConfig(),
        task: str = "instance",
        score_threshold: float = 0.5,
        short_side: int | None = None,
        max_videos: int = 64,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        processing: ImageProcessing | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if processing is None:
            processing = ImageProcessing(shortest_edge=short_side, image_mean=image_mean, image_std=image_std)
        elif short_side is not None:
            raise ValueError("pass either short_side or processing, not both")
        self.model = model.eval()
        self.backbone = accelerate(model, acceleration)
        self.task = task
        self.score_threshold = score_threshold
        self.processing = processing
        self.memories = MemoryBank(max_videos)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mean = torch.tensor(processing.image_mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(processing.image_std, device=self.device).view(1, 3, 1, 1)
        self.labels = {int(k): v for k, v in model.config.id2label.items()}
        thing = [name not in STUFF_NAMES for _, name in sorted(self.labels.items())]
        self.thing = torch.tensor(thing, device=self.device)

    @classmethod
    def from_pretrained(
        cls,
        source,
        device="cpu",
        dtype=torch.float32,
        short_side: int | None = None,
        native_size: bool = False,
        **kwargs,
    ) -> VideoSegmenter:
        """Load a checkpoint (local directory or hub id); its preprocessor config (`image_processing`)
        gives the processing size and normalisation.

        source: a checkpoint directory in Hugging Face's layout or a hub id. device, dtype: where
        and in what precision the model runs (torch.float16 on CUDA for half precision; clustering
        computes in float32 whatever the dtype). short_side: None runs frames at the checkpoint's
        size; an int overrides it (that short side, no long-side cap). native_size: run frames at
        their own size. `image_mean` and `image_std` override the checkpoint's normalisation; the
        other keyword arguments (`acceleration`, `task`, `score_threshold`, `max_videos`) are the
        constructor's."""
        model = load_model(source, device, dtype)
        processing = image_processing(source)
        if native_size or short_side is not None:
            processing = processing.with_short_side(None if native_size else short_side)
        overrides = {key: kwargs.pop(key) for key in ("image_mean", "image_std") if key in kwargs}
        return cls(model, processing=replace(processing, **overrides), **kwargs)

    @property
    def short_side(self) -> int | None:
        """The short side frames are resized to (before `long_side_cap`); None: no such resize."""
        return self.processing.shortest_edge

    @property
    def long_side_cap(self) -> int | None:
        """The long side a resized frame may not exceed (its short side shrinks instead); None: no cap."""
        return self.processing.longest_edge

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the model runs at for frames of (height, width)."""
        return self.processing.size(height, width)

    @property
    def acceleration(self) -> AccelerationConfig:
        return self.backbone.acceleration

    @acceleration.setter
    def acceleration(self, config: AccelerationConfig):
        self.backbone.acceleration = config

    # --- video streams ------------------------------------------------------------------------

    def start_stream(self, video_id: str, start: int, warmup: int = 0) -> StreamStart:
        """Where to begin segmenting a video's frames from `start` on, with `warmup` frames before
        it available: where the video's memory ends just before `start`, it continues (no warm-up
        frames, same lineage); otherwise a fresh memory with a new lineage starts, on the warm-up
        frames. Clips from `first` on, in order, then go to `process`."""
        if not 0 <= warmup <= start:
            raise ValueError(f"{warmup} warm-up frames before frame {start}: need 0 <= warm-up <= start")
        if video_id in self.memories:
            memory = self.memories.get(video_id)
            if memory.next_frame == start:
                return StreamStart(video_id, start, memory.lineage, continued=True)
        memory = VideoMemory(lineage=uuid.uuid4().hex)
        self.memories.put(video_id, memory)
        return StreamStart(video_id, start - warmup, memory.lineage, continued=False)

    def holds_stream(self, video_id: str, lineage: str) -> bool:
        """Whether the video's memory is still the one of the stream named `lineage`."""
        return video_id in self.memories and self.memories.get(video_id).lineage == lineage

    def drop(self, video_id: str):
        """Forget a video (its last clip is done, or it failed)."""
        self.memories.drop(video_id)

    @property
    def videos_in_memory(self) -> int:
        """How many videos' memories this segmenter holds (at most `max_videos`)."""
        return len(self.memories)

    def export_memory(self, video_id: str) -> bytes:
        """The video's memory as bytes (safetensors), to continue it elsewhere with `import_memory`."""
        return self.memories.get(video_id).to_bytes()

    def import_memory(self, video_id: str, data: bytes):
        self.memories.put(video_id, VideoMemory.from_bytes(data, device=self.device))

    # --- inference ----------------------------------------------------------------------------

    @torch.inference_mode()
    def process(self, clips: list[Clip]) -> list[list[FrameResult]]:
        """Segment clips of one or several videos (at most one clip per video) in one forward pass
        per frame size; returns the frames' results per clip, in order. Each clip continues its
        video's memory (a video without one starts afresh; `start_stream` says where a video's
        frames should begin), and the memory then ends after the clip's last frame."""
        ids = [clip.video_id for clip in clips]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a call may hold one clip per video, got video ids {ids}")
        lost = [
            clip.video_id
            for clip in clips
            if clip.lineage is not None and not self.holds_stream(clip.video_id, clip.lineage)
        ]
        if lost:
            raise StreamLost(
                f"the memory of video(s) {lost} was dropped after their stream started (more videos in flight "
                f"than max_videos={self.memories.max_videos}?): start them again"
            )
        results: list[list[FrameResult] | None] = [None] * len(clips)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, clip in enumerate(clips):
            by_size.setdefault(clip.frames.shape[1:3], []).append(i)
        for indices in by_size.values():
            group = [clips[i] for i in indices]
            for i, frames in zip(indices, self._process_same_size(group)):
                results[i] = frames
        return results

    def _process_same_size(self, clips: list[Clip]) -> list[list[FrameResult]]:
        memories = [self.memories.get(clip.video_id) for clip in clips]
        pixels = self._resized(np.concatenate([clip.frames for clip in clips]))
        patches = patch_means(pixels) if self.acceleration.reusing else None
        plans, streams, computed, row = [], [], [], 0
        for clip, memory in zip(clips, memories):
            clip_patches = None if patches is None else patches[row : row + len(clip.frames)]
            plan, stream = self._reuse_plan(clip, memory, clip_patches)
            computed += [row + k for k, source in enumerate(plan) if source is None]
            plans.append(plan)
            streams.append(stream)
            row += len(clip.frames)
        outputs, stats = self._forward(pixels[computed], streams)
        computed_patches = None if patches is None else patches[computed]

        height, width = clips[0].frames.shape[1:3]
        results, next_row = [], 0
        for clip, memory, plan in zip(clips, memories, plans):
            memory.next_frame = clip.start + len(clip.frames)
            frames, rows = [], {}  # clip position of a computed frame -> its row in the outputs
            for position, source in enumerate(plan):
                frame_index = clip.start + position
                if source is None:
                    rows[position] = next_row
                    frame_outputs, frame_stats = _frame_outputs(outputs, next_row), stats[next_row]
                    next_row += 1
                else:
                    earlier = memory.reuse.result if source < 0 else frames[source]
                    frames.append(self._reused_result(earlier, memory, clip.video_id, frame_index, (height, width)))
                    continue
                result = FrameResult(clip.video_id, frame_index, height, width, stats=frame_stats)
                self._postprocess(result, memory, frame_outputs)
                frames.append(result)
            self._keep_reference(memory, plan, computed_patches, outputs, rows, frames)
            results.append(frames)
        return results

    def _reuse_plan(self, clip: Clip, memory: VideoMemory, patches: torch.Tensor | None):
        """Frame reuse's plan for a clip (`reuse.frames_to_compute` on its frames' patch means; all
        computed when it is off) and the stream of the frames to compute. A clip that does not
        continue its video's memory clears the reuse cache (a seek or a gap)."""
        cfg = self.acceleration
        if memory.next_frame != clip.start:
            memory.reuse.clear()
        if cfg.frame_reuse:
            plan = frames_to_compute(patches, memory.reuse, cfg.pixel_change)
        else:
            plan = [None] * len(clip.frames)
        positions = [k for k, source in enumerate(plan) if source is None]
        indices = [clip.start + k for k in positions]
        bridged = frozenset(clip.start + k for k, source in enumerate(plan) if source is not None)
        if cfg.window_reuse is None:
            return plan, FrameStream(memory.cluster, indices, bridged=bridged)
        return plan, FrameStream(memory.cluster, indices, memory.reuse, bridged, patches[positions])

    def _forward(self, pixels: torch.Tensor, streams: list[FrameStream]):
        """The model on the frames to compute (none: no forward), and each one's stats."""
        if len(pixels) == 0:
            return None, []
        with self.backbone.streaming([s for s in streams if s.frame_indices]), deformable_attention():
            outputs = self.model(pixel_values=self._normalized(pixels))
        stats = self.backbone.last_stats or [None] * len(pixels)
        if self.acceleration.reusing and not self.backbone.last_stats:
            stats = FrameStats.unclustered(len(pixels))
        return outputs, stats

    def _reused_result(self, earlier: FrameResult | None, memory: VideoMemory, video_id: str, frame_index: int, size):
        """Frame reuse: frame `frame_index` takes the results (label map, instances and their ids,
        shared, not copied) of the last computed frame `earlier`; where that frame's results are not
        at hand (the memory was imported), they are post-processed again from its kept outputs."""
        cfg = self.backbone.acceleration
        ratio = (cfg.grid / self.backbone.window) ** 2 if cfg.accelerated else 1.0
        stats = FrameStats(None, None, ratio, 0.0 if cfg.window_reuse is not None else None, None, True)
        result = FrameResult(video_id, frame_index, *size, stats=stats)
        if earlier is None:
            self._postprocess(result, memory, memory.reuse.outputs)
        else:
            result.instances, result.label_map = list(earlier.instances), earlier.label_map
        return result

    def _keep_reference(self, memory: VideoMemory, plan, patches, outputs, rows: dict[int, int], frames):
        """After a clip: frame reuse keeps its last computed frame's patch means (`patches`: of the
        batch's computed frames), outputs and results (`rows`: clip position -> row of the clip's computed
        frames; `frames`: the clip's results); the memories then continue through the frames
        reused after it."""
        if not self.acceleration.frame_reuse:
            return
        if rows:
            last = max(rows)
            memory.reuse.patches = patches[rows[last]].clone()
            memory.reuse.outputs = {k: v.clone() for k, v in _frame_outputs(outputs, rows[last]).items()}
            memory.reuse.result = frames[last]
        if plan and plan[-1] is not None:  # the clip ends on reused frames: its memories end there too
            last = memory.next_frame - 1
            if memory.cluster.tokens is not None:
                memory.cluster.frame_index = last
            if memory.reuse.blocks:
                memory.reuse.frame_index = last

    def _postprocess(self, result: FrameResult, memory: VideoMemory, outputs: dict[str, torch.Tensor]):
        """A frame's label map and instances (as the task says) from its model outputs."""
        class_logits, masks = outputs["class"].float(), outputs["masks"].float()
        size = (result.height, result.width)
        if self.task in ("semantic", "both"):
            result.label_map = semantic_label_map(class_logits, masks, size)
        if self.task in ("instance", "both"):
            # A query's score is at most its class probability: below the threshold, its mask is not scored.
            scored = instance_scores(class_logits, masks, least=self.score_threshold)
            result.instances = self._instances(memory, scored, outputs["embeddings"], size)

    def _resized(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames as (T, 3, h, w) pixels in 0..1 at `processing_size(H, W)`.
        On a CPU the resize runs on the uint8 pixels (channels last, as they are decoded): a tenth
        of the time of resizing floats at 1080p, within one grey level of it."""
        pixels = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)
        height, width = pixels.shape[-2:]
        size = self.processing_size(height, width)
        if size == (height, width):
            return pixels.float() / 255.0
        resize = dict(size=size, mode="bilinear", antialias=size[0] < height or size[1] < width, align_corners=False)
        if self.device.type == "cpu":
            return F.interpolate(pixels, **resize).float() / 255.0
        return F.interpolate(pixels.float() / 255.0, **resize)

    def _normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((pixels - self.mean) / self.std).to(self.dtype)

    def _preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames as normalised pixel values at `processing_size(H, W)`."""
        return self._normalized(self._resized(frames))

    def _instances(self, memory: VideoMemory, scored: Scored, embeddings, size) -> list[Instance]:
        """Mask2Former instances as `transformers` post-processes them (`scored`: `instance_scores`'
        labels, scores, areas and binary masks), then tracked ids from the query slots. Queries whose
        best class is a stuff category (e.g. "background") are not instances."""
        scores = scored.scores * self.thing[scored.labels]
        detected = (scores >= self.score_threshold) & (scored.area > 0)
        order, ids = track_frame(memory.tracks, embeddings, detected)
        slots = [k for k in range(len(order)) if detected[order[k]]]
        if not slots:
            return []
        queries = order[slots]
        masks = resized_masks(scored.binary[scored.rows[queries]], size)
        instances = []
        for n, (slot, query) in enumerate(zip(slots, queries.tolist())):
            label = int(scored.labels[query])
            instances.append(
                Instance(int(ids[slot]), label, self.labels.get(label, str(label)), float(scores[query]), masks[n])
            )
        return instances


def _frame_outputs(outputs, row: int) -> dict[str, torch.Tensor]:
    """What post-processing needs of one frame's model outputs (row `row` of the batch)."""
    return {
        "class": outputs.class_queries_logits[row],
        "masks": outputs.masks_queries_logits[row],
        "embeddings": outputs.transformer_decoder_last_hidden_state[row],
    }
