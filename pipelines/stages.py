"""The nightly job's Ray Data stages: plan (probe and split), decode, segment (actor), encode.

Every stage turns a failure into an `error` on the row instead of raising, so one bad video never
stops the job; the driver reports it in the manifest.
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pyarrow as pa
from botocore.exceptions import BotoCoreError

from tca_core import rle
from tca_core.config import AccelerationConfig
from tca_core.segmenter import Clip, VideoSegmenter

from .errors import one_line
from .storage import filesystem
from .video_io import decoder_message, open_video


def _open(uri: str, endpoint_url: str | None):
    """A video reader on the file, read through fsspec (s3fs retries transient storage errors)."""
    fs, path = filesystem(uri, endpoint_url)
    try:
        with fs.open(path, "rb") as handle:
            return open_video(handle)
    except ValueError as error:
        raise ValueError(f"cannot decode: {error}") from error
    except (OSError, BotoCoreError) as error:  # s3fs raises OSError, or botocore's own on HTTP client faults
        raise ValueError(f"cannot read: {one_line(error)}") from error


def plan_video(row: dict, chunk_frames: int, overlap: int, endpoint_url=None) -> list[dict]:
    """Probe a video and split it into ordered chunks, each warmed up by `overlap` earlier frames."""
    base = dict(video_id=row["video_id"], uri=row["uri"])
    try:
        info = _open(row["uri"], endpoint_url).info
    except Exception as error:  # any failure is this video's, reported and not raised
        reason = error if isinstance(error, ValueError) else decoder_message(error)
        return [
            dict(
                base,
                chunk_index=-1,
                num_chunks=0,
                start=0,
                stop=0,
                warm_start=0,
                frames_total=0,
                fps=0.0,
                height=0,
                width=0,
                error=f"{row['uri']}: {reason}",
            )
        ]
    starts = list(range(0, info.frames, chunk_frames))
    return [
        dict(
            base,
            chunk_index=index,
            num_chunks=len(starts),
            start=start,
            stop=min(start + chunk_frames, info.frames),
            warm_start=max(0, start - overlap),
            frames_total=info.frames,
            fps=info.fps,
            height=info.height,
            width=info.width,
            error="",
        )
        for index, start in enumerate(starts)
    ]


def decode_chunk(row: dict, endpoint_url=None) -> dict:
    """Add `frames` (warm_start..stop-1 as (T, H, W, 3) uint8) and their `times` (seconds) to a planned chunk."""
    frames, times = np.zeros((0, 1, 1, 3), dtype=np.uint8), []
    if not row["error"]:
        begin = time.perf_counter()
        try:
            reader = _open(row["uri"], endpoint_url)
            frames, times = reader.read(row["warm_start"], row["stop"])
            if frames.shape[1:3] != (row["height"], row["width"]):
                raise ValueError(f"frame size changed mid-video to {frames.shape[2]}x{frames.shape[1]}")
        except Exception as error:  # the video's failure, reported in the manifest
            reason = error if isinstance(error, ValueError) else decoder_message(error)
            row = dict(row, error=f"{row['uri']}: decoding frames {row['warm_start']}-{row['stop'] - 1}: {reason}")
        row = dict(row, decode_seconds=time.perf_counter() - begin)
    return dict(row, frames=frames, times=times, decode_seconds=row.get("decode_seconds", 0.0))


class SegmentActor:
    """Holds the model and a cluster memory per video; segments decoded chunks frame by frame.

    A chunk whose video this actor processed up to the frame before continues that memory and skips
    its warm-up frames; otherwise it starts a fresh memory on the warm-up frames. Output rows (one per
    processed frame) carry packed masks; `lineage` names the tracker whose local ids they use.

    `kill_once` ("N:MARKER", fault injection for tests and drills, off by default): the actor's
    process exits after segmenting its N-th batch, before returning it, unless the file MARKER
    exists; it creates MARKER first, so only one actor dies once however often Ray restarts it.
    """

    def __init__(
        self,
        model: str,
        acceleration: dict,
        task: str,
        clip_frames: int,
        score_threshold: float,
        short_side: int | None,
        torch_threads: int | None = None,
        device: str = "auto",
        kill_once: str | None = None,
    ):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.segmenter = VideoSegmenter.from_pretrained(
            model,
            device=device,
            dtype=dtype,
            acceleration=AccelerationConfig(**acceleration),
            task=task,
            score_threshold=score_threshold,
            short_side=short_side,
        )
        self.clip_frames = clip_frames
        self.torch_threads = torch_threads
        self.lineages: dict[str, str] = {}
        self.kill_once, self.calls = kill_once, 0

    def __call__(self, batch: dict) -> pa.Table:
        if self.torch_threads:  # per call: OpenMP's thread count belongs to the calling thread
            import torch

            torch.set_num_threads(self.torch_threads)
        rows = []
        for i in range(len(batch["video_id"])):
            chunk = {key: batch[key][i] for key in batch}
            rows += self._chunk(chunk)
        self.calls += 1
        if self.kill_once:
            _kill_once(self.kill_once, self.calls)
        # A fixed schema: inferred types would differ between frames with and without masks.
        return pa.Table.from_pylist(rows, schema=SEGMENTED_FRAME_SCHEMA)

    def _chunk(self, chunk: dict) -> list[dict]:
        video_id, start, warm_start = chunk["video_id"], int(chunk["start"]), int(chunk["warm_start"])
        meta = {
            k: chunk[k]
            for k in (
                "video_id",
                "uri",
                "chunk_index",
                "num_chunks",
                "start",
                "stop",
                "frames_total",
                "fps",
                "height",
                "width",
                "decode_seconds",
            )
        }
        if chunk["error"]:
            return [dict(meta, **_EMPTY_FRAME, error=str(chunk["error"]))]
        memory = self.segmenter.memories.get(video_id)
        continued = memory.cluster.frame_index == start - 1 and video_id in self.lineages
        if not continued:
            self.segmenter.drop(video_id)
            self.lineages[video_id] = uuid.uuid4().hex
        first = start if continued else warm_start
        frames = np.asarray(chunk["frames"])[first - warm_start :]
        times = [float(t) for t in chunk["times"]]
        rows, begin = [], time.perf_counter()
        try:
            for offset in range(0, len(frames), self.clip_frames):
                clip = Clip(video_id, first + offset, np.ascontiguousarray(frames[offset : offset + self.clip_frames]))
                for result in self.segmenter.process([clip])[0]:
                    rows.append(
                        dict(
                            meta,
                            **_frame_fields(result),
                            timestamp=times[result.frame_index - warm_start],
                            warm=result.frame_index < start,
                            lineage=self.lineages[video_id],
                            error="",
                        )
                    )
        except Exception as error:  # e.g. out of memory on a huge frame: this video fails, others go on
            self.segmenter.drop(video_id)
            return [dict(meta, **_EMPTY_FRAME, error=f"{chunk['uri']}: inference: {one_line(error)}")]
        seconds = time.perf_counter() - begin
        if int(chunk["stop"]) == int(chunk["frames_total"]):
            self.segmenter.drop(video_id)  # the video's last chunk: free its memory
            self.lineages.pop(video_id, None)
        for row in rows:
            row["inference_seconds"] = seconds / len(rows)
        return rows


SEGMENTED_FRAME_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("chunk_index", pa.int64()),
        ("num_chunks", pa.int64()),
        ("start", pa.int64()),
        ("stop", pa.int64()),
        ("frames_total", pa.int64()),
        ("fps", pa.float64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("decode_seconds", pa.float64()),
        ("frame_index", pa.int64()),
        ("timestamp", pa.float64()),  # presentation time, seconds
        ("instance_ids", pa.list_(pa.int64())),
        ("category_ids", pa.list_(pa.int64())),
        ("category_names", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("masks", pa.binary()),  # np.packbits of the (instances, height, width) masks
        ("label_map", pa.binary()),  # int32 (height, width), empty for instance-only runs
        ("tca_reset", pa.string()),
        ("tca_reassigned", pa.float64()),
        ("token_ratio", pa.float64()),
        ("warm", pa.bool_()),
        ("lineage", pa.string()),
        ("error", pa.string()),
        ("inference_seconds", pa.float64()),
    ]
)

_EMPTY_FRAME = dict(
    frame_index=-1,
    timestamp=None,
    warm=False,
    lineage="",
    instance_ids=[],
    category_ids=[],
    category_names=[],
    scores=[],
    masks=b"",
    label_map=b"",
    tca_reset=None,
    tca_reassigned=None,
    token_ratio=1.0,
    inference_seconds=0.0,
)


def _kill_once(setting: str, calls: int):
    """Fault injection: exit this process at its N-th call unless the marker file exists (then create it)."""
    count, marker = setting.split(":", 1)
    if calls == int(count):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


def _frame_fields(result) -> dict:
    masks = np.stack([i.mask for i in result.instances]) if result.instances else np.zeros((0, 0, 0), bool)
    return dict(
        frame_index=result.frame_index,
        instance_ids=[i.id for i in result.instances],
        category_ids=[i.category_id for i in result.instances],
        category_names=[i.category for i in result.instances],
        scores=[i.score for i in result.instances],
        masks=np.packbits(masks).tobytes(),
        label_map=b"" if result.label_map is None else result.label_map.astype(np.int32).tobytes(),
        tca_reset=result.stats.reset if result.stats else None,
        tca_reassigned=result.stats.reassigned if result.stats else None,
        token_ratio=result.stats.token_ratio if result.stats else 1.0,
    )


def encode_masks(row: dict) -> dict:
    """Unpack a frame's masks and COCO-RLE encode them (on CPU, off the inference actor)."""
    row = dict(row)
    height, width = int(row["height"]), int(row["width"])
    count = len(row["instance_ids"])
    masks = np.unpackbits(np.frombuffer(row.pop("masks"), np.uint8), count=count * height * width)
    masks = masks.reshape(count, height, width).astype(bool)
    row["rles"] = [rle.encode(mask)["counts"] for mask in masks]
    label_map = row.pop("label_map")
    semantic = []
    if label_map:
        labels = np.frombuffer(label_map, np.int32).reshape(height, width)
        semantic = [(int(c), rle.encode(labels == c)["counts"]) for c in np.unique(labels)]
    row["semantic_ids"] = [c for c, _ in semantic]
    row["semantic_rles"] = [counts for _, counts in semantic]
    return row
