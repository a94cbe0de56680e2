"""The nightly job's Ray Data stages: probe, decode, segment (actor), write.

    probe_video   one video -> its segments     (reads the header and index only)
    decode_segment a segment -> its chunks      (reads the segment's byte ranges, decodes its frames)
    SegmentActor  a chunk -> its frames' results (the model and a cluster memory per video)
    ChunkWriter   results -> Parquet parts under the output prefix, and a small `written` row

A segment is a decode unit: it starts at a key frame, so segments decode independently, and no
frame is decoded twice except each segment's `overlap` warm-up frames. A chunk is an inference unit
of at most `chunk_frames` frames with `overlap` warm-up frames before it. A video without an index
is one segment, decoded in one streaming pass. Every stage turns a failure into an `error` on its
row instead of raising, so one bad video never stops the job; the driver reports it.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from botocore.exceptions import BotoCoreError

from tca_core import rle
from tca_core.config import AccelerationConfig

# tca_core.segmenter (torch, transformers: seconds and hundreds of MB per process) is imported by the
# inference actor only: the probe, decode and write tasks run in Ray workers that never need it.
from .errors import one_line
from .output import FRAMES_SCHEMA, MASKS_SCHEMA, frame_row, mask_row
from .storage import filesystem, join, write_atomic, write_parquet
from .video_io import ByteSource, PacketTable, StreamParams, decode_frames, decoder_message, probe
from .video_io import stream_frames as _stream_frames

UNKNOWN = -1  # frames_total of a video without an index, until its last chunk


@dataclass(frozen=True)
class Chunking:
    """How videos are cut: chunks of at most `chunk_frames` frames, each after `overlap` warm-up frames."""

    chunk_frames: int = 64
    overlap: int = 4


# --- rows that cross stage boundaries ---------------------------------------------------------


VIDEO_SCHEMA = pa.schema([("video_id", pa.string()), ("uri", pa.string()), ("done", pa.string())])


def video_row(video_id: str, uri: str, done: list[list[int]] | None = None) -> dict:
    """Into probe_video: a video to process (VIDEO_SCHEMA); `done`: the [start, stop) of its chunks
    already written by an earlier, interrupted run with the same settings (not segmented again)."""
    return dict(video_id=video_id, uri=uri, done=json.dumps(done or []))


def segment_row(video: dict, error: str = "", **fields) -> dict:
    """probe_video -> decode_segment: frames [first, stop) of a video to decode, [start, stop) its own
    (first..start-1 warm up its first chunk); `table` the packets to decode and, as `wanted`, the
    presentation times of frames first..stop-1 (JSON; empty: stream the whole file); `done` the
    [start, stop) of its chunks already written (JSON), decoded for their frames but not segmented."""
    row = dict(
        video_id=video["video_id"],
        uri=video["uri"],
        source_bytes=0,
        done="[]",
        first=0,
        start=0,
        stop=UNKNOWN,
        frames_total=UNKNOWN,
        estimated_frames=0,
        fps=0.0,
        height=0,
        width=0,
        params="",
        table="",
        error=error,
    )
    row.update(fields)
    return row


def chunk_row(segment: dict, warm_start: int, start: int, stop: int, frames: np.ndarray, times: list[float]) -> dict:
    """decode_segment -> SegmentActor: frames warm_start..stop-1 (uint8 THWC), start..stop-1 its own."""
    keys = ("video_id", "uri", "source_bytes", "frames_total", "estimated_frames", "fps", "height", "width", "error")
    return dict(
        {key: segment[key] for key in keys},
        warm_start=warm_start,
        start=start,
        stop=stop,
        last=False,
        frames=frames,
        times=times,
        decode_seconds=0.0,
    )


# --- probe --------------------------------------------------------------------------------------


def _source(uri: str, endpoint_url: str | None) -> ByteSource:
    fs, path = filesystem(uri, endpoint_url)
    try:
        return ByteSource(path, fs)
    except (OSError, BotoCoreError) as error:  # s3fs raises OSError, or botocore's own on HTTP client faults
        raise ValueError(f"cannot read: {one_line(error)}") from error


def _failure(error: Exception) -> str:
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, (OSError, BotoCoreError)):
        return f"cannot read: {one_line(error)}"
    return decoder_message(error)


class VideoProber:
    """Probes a video (header and index only) and plans its segments around its key frames."""

    def __init__(self, chunking: Chunking, endpoint_url: str | None = None):
        self.chunking, self.endpoint_url = chunking, endpoint_url

    def __call__(self, video: dict) -> list[dict]:
        try:
            source = _source(video["uri"], self.endpoint_url)
            found = probe(source)
        except Exception as error:  # any failure is this video's, reported and not raised
            return [segment_row(video, error=f"{video['uri']}: cannot decode: {_failure(error)}")]
        info = found.info
        common = dict(
            source_bytes=source.size,
            fps=info.fps,
            height=info.height,
            width=info.width,
            estimated_frames=info.estimated_frames,
            params=json.dumps(_params_dict(found.params)),
        )
        done = json.loads(video["done"] or "[]")
        if found.table is None:  # one segment, streamed: its written chunks are decoded, not segmented
            return [segment_row(video, done=json.dumps(sorted(done)), **common)]
        common["frames_total"] = info.frames
        rows = []
        segments = _to_redo(plan_segments(found.table, info.frames, self.chunking), done)
        cuts = found.table.cuts([(first, stop) for first, _, stop, _ in segments])
        for (first, start, stop, written), (table, wanted) in zip(segments, cuts):
            rows.append(
                segment_row(
                    video,
                    first=first,
                    start=start,
                    stop=stop,
                    table=json.dumps(table.to_dict() | {"wanted": wanted}),
                    done=json.dumps(written),
                    **common,
                )
            )
        return rows


def plan_segments(table: PacketTable, frames: int, chunking: Chunking) -> list[tuple[int, int, int]]:
    """(first, start, stop) of each segment: each starts decoding at a key frame K (first = K's frame)
    and owns frames from K + overlap on, with at least `chunk_frames` of them; the first segment owns
    from frame 0. The overlap frames are the only frames decoded twice."""
    cuts = [0]
    for _, frame in table.key_frames():
        owned_from = frame + chunking.overlap
        if frame > 0 and owned_from - (cuts[-1] + (chunking.overlap if len(cuts) > 1 else 0)) >= chunking.chunk_frames:
            if owned_from < frames:
                cuts.append(frame)
    segments = []
    for i, key in enumerate(cuts):
        start = 0 if i == 0 else key + chunking.overlap
        stop = frames if i + 1 == len(cuts) else cuts[i + 1] + chunking.overlap
        segments.append((key, start, stop))
    return segments


def _to_redo(segments: list[tuple[int, int, int]], done: list[list[int]]) -> list[tuple]:
    """(first, start, stop, its chunks already written) of each segment with frames still to segment;
    the segments whose own frames were all written are left out (all are kept if every one was, so
    that the video still comes through the stream)."""
    planned = []
    for first, start, stop in segments:
        inside = sorted({(a, b) for a, b in done if start <= a < b <= stop})
        covered = sum(b - a for a, b in inside) == stop - start  # written chunks never overlap
        planned.append((first, start, stop, inside, covered))
    if all(covered for *_, covered in planned):
        return [(first, start, stop, []) for first, start, stop, _, _ in planned]
    return [(first, start, stop, inside) for first, start, stop, inside, covered in planned if not covered]


def _params_dict(params: StreamParams) -> dict:
    return dict(
        codec=params.codec,
        extradata=params.extradata.hex(),
        time_base=list(params.time_base),
        origin=params.origin,
        rotation=params.rotation,
    )


def _params(text: str) -> StreamParams:
    data = json.loads(text)
    return StreamParams(
        data["codec"], bytes.fromhex(data["extradata"]), tuple(data["time_base"]), data["origin"], data["rotation"]
    )


# --- decode -------------------------------------------------------------------------------------


class SegmentDecoder:
    """Decodes a segment and yields its chunks as they fill (a generator: a long segment never sits
    in memory whole); an error becomes a row of its own, after the chunks that decoded."""

    def __init__(self, chunking: Chunking, endpoint_url: str | None = None):
        self.chunking, self.endpoint_url = chunking, endpoint_url

    def __call__(self, segment: dict):
        if segment["error"]:
            yield chunk_row(segment, 0, 0, 0, np.zeros((0, 1, 1, 3), np.uint8), [])
            return
        begin = time.perf_counter()
        chunks = _Chunker(segment, self.chunking)
        try:
            for frame, seconds in self._frames(segment):
                if frame.shape[:2] != (segment["height"], segment["width"]):
                    raise ValueError(f"frame size changed mid-video to {frame.shape[1]}x{frame.shape[0]}")
                yield from chunks.add(frame, seconds, begin)
            yield from chunks.finish(begin)
        except Exception as error:  # the video's failure, reported in the manifest
            where = f"decoding frames from {chunks.next_frame}"
            failed = dict(segment, error=f"{segment['uri']}: {where}: {_failure(error)}")
            yield chunk_row(failed, 0, 0, 0, np.zeros((0, 1, 1, 3), np.uint8), [])

    def _frames(self, segment: dict):
        source, params = _source(segment["uri"], self.endpoint_url), _params(segment["params"])
        if not segment["table"]:
            return _stream_frames(source, params)
        data = json.loads(segment["table"])
        table = PacketTable.from_dict(data)
        return decode_frames(source, params, table, segment["first"], segment["stop"], wanted=data["wanted"])


class _Chunker:
    """Cuts a segment's decoded frames into chunks: at most chunk_frames own frames each, after up to
    `overlap` warm-up frames (the segment's first chunk: its own warm-up frames; later chunks: the
    frames just before)."""

    def __init__(self, segment: dict, chunking: Chunking):
        self.segment, self.chunking = segment, chunking
        self.next_frame = segment["first"]
        self.warm: list[tuple[np.ndarray, float]] = []  # frames before the chunk being filled
        self.own: list[tuple[np.ndarray, float]] = []
        self.pending: dict | None = None  # a full chunk held back until it is known not to be the last
        self.done = {tuple(span) for span in json.loads(segment.get("done") or "[]")}  # written before

    def add(self, frame: np.ndarray, seconds: float, begin: float):
        index = self.next_frame
        self.next_frame += 1
        if index < self.segment["start"]:
            self.warm.append((frame, seconds))
            return
        self.own.append((frame, seconds))
        if len(self.own) == self.chunking.chunk_frames:
            yield from self._release(begin)
            self.pending = self._chunk()
            self.warm = (self.warm + self.own)[-self.chunking.overlap :] if self.chunking.overlap else []
            self.own = []

    def _chunk(self) -> dict:
        pairs = self.warm + self.own
        stop = self.next_frame
        start = stop - len(self.own)
        frames = np.stack([frame for frame, _ in pairs])
        return chunk_row(self.segment, start - len(self.warm), start, stop, frames, [s for _, s in pairs])

    def _release(self, begin: float):
        """Yield the chunk held back, unless an earlier run wrote it (the next chunk warms up afresh)."""
        if self.pending is not None:
            self.pending["decode_seconds"] = time.perf_counter() - begin
            if (self.pending["start"], self.pending["stop"]) not in self.done:
                yield self.pending
            self.pending = None

    def finish(self, begin: float):
        """The rest; the video's last chunk says so, and carries the frame count when it was unknown."""
        if self.own:
            yield from self._release(begin)
            self.pending = self._chunk()
        if self.pending is None:
            raise ValueError("the segment decoded no frames")
        expected = self.segment["stop"]
        if expected != UNKNOWN and self.next_frame != expected:
            raise ValueError(f"frames up to {expected - 1} expected, decoding ended after frame {self.next_frame - 1}")
        frames_total = self.segment["frames_total"]
        if expected == UNKNOWN or expected == frames_total:
            self.pending.update(last=True, frames_total=self.next_frame)
        yield from self._release(begin)


# --- segment --------------------------------------------------------------------------------------


class SegmentActor:
    """Holds the model and a cluster memory per video; segments decoded chunks clip by clip.

    A chunk whose video this actor processed up to the frame before continues that memory and skips
    its warm-up frames; otherwise it starts a fresh memory on the warm-up frames. Its output row holds
    every processed frame's results, masks packed; `lineage` names the tracker whose local ids they use.
    The chunks of one call that belong to different videos run side by side, one clip of each per
    forward pass, at most `clips_per_pass` clips in a pass; a video's own chunks run in order.

    `kill_once` ("N:MARKER", fault injection for tests and drills, off by default): the actor's
    process exits after segmenting its N-th batch, before returning it, unless the file MARKER
    exists; it creates MARKER first, so only one actor dies once however often Ray restarts it.
    """

    def __init__(
        self,
        model: str,
        settings: dict,
        torch_threads: int | None = None,
        kill_once: str | None = None,
        clips_per_pass: int = 1,
    ):
        from tca_core.segmenter import VideoSegmenter

        from .devices import placement

        where = placement()  # the GPU Ray assigned this actor, else the CPU
        options = dict(
            acceleration=AccelerationConfig(**settings["acceleration"]),
            task=settings["task"],
            score_threshold=settings["score_threshold"],
        )
        if settings.get("short_side") is not None:
            options["short_side"] = settings["short_side"]
        self.segmenter = VideoSegmenter.from_pretrained(model, device=where.device, dtype=where.dtype, **options)
        self.clip_frames, self.clips_per_pass = settings["clip_frames"], clips_per_pass
        self.torch_threads = torch_threads
        self.kill_once, self.calls = kill_once, 0

    def __call__(self, batch: dict) -> pa.Table:
        if self.torch_threads:  # per call: OpenMP's thread count belongs to the calling thread
            import torch

            torch.set_num_threads(self.torch_threads)
        chunks = [{key: batch[key][i] for key in batch} for i in range(len(batch["video_id"]))]
        rows = _BatchRun(self, chunks).run()
        self.calls += 1
        if self.kill_once:
            _kill_once(self.kill_once, self.calls)
        return pa.Table.from_pylist(rows, schema=SEGMENTED_CHUNK_SCHEMA)


@dataclass
class _Lane:
    """A chunk being segmented: its stream (a StreamStart), its frames and times from the stream's
    first frame on, the results so far and its share of the forward passes' seconds."""

    index: int
    chunk: dict
    stream: object
    frames: np.ndarray
    times: list[float]
    results: list = field(default_factory=list)
    seconds: float = 0.0

    def next_clip(self, clip_frames: int):
        from tca_core.segmenter import Clip

        done = len(self.results)
        pixels = np.ascontiguousarray(self.frames[done : done + clip_frames])
        return Clip(self.stream.video_id, self.stream.first + done, pixels, lineage=self.stream.lineage)

    @property
    def finished(self) -> bool:
        return len(self.results) >= len(self.frames)


class _BatchRun:
    """One actor call: its chunks' rows, in the batch's order. Each video has at most one chunk in
    progress (a lane); every pass takes the next clip of up to `clips_per_pass` lanes."""

    def __init__(self, actor: SegmentActor, chunks: list[dict]):
        self.actor, self.segmenter, self.chunks = actor, actor.segmenter, chunks
        self.rows: list[dict | None] = [None] * len(chunks)
        self.waiting: dict[str, deque] = {}
        self.lanes: dict[str, _Lane] = {}

    def run(self) -> list[dict]:
        for index, chunk in enumerate(self.chunks):
            if chunk["error"]:
                self.rows[index] = _error_row(chunk, str(chunk["error"]))
            else:
                self.waiting.setdefault(chunk["video_id"], deque()).append(index)
        for video_id in list(self.waiting):
            self._open_next(video_id)
        while self.lanes:
            self._pass(list(self.lanes.values())[: self.actor.clips_per_pass])
        return self.rows

    def _open_next(self, video_id: str):
        """Start the video's next waiting chunk, or close its lane when none is left."""
        queue = self.waiting[video_id]
        if not queue:
            self.lanes.pop(video_id, None)
            return
        index = queue.popleft()
        chunk = self.chunks[index]
        start, warm_start = int(chunk["start"]), int(chunk["warm_start"])
        stream = self.segmenter.start_stream(video_id, start, warmup=start - warm_start)
        skip = stream.first - warm_start
        times = [float(t) for t in chunk["times"]][skip:]
        self.lanes[video_id] = _Lane(index, chunk, stream, np.asarray(chunk["frames"])[skip:], times)

    def _pass(self, lanes: list[_Lane]):
        """One forward pass over the next clip of each lane; a lane whose chunk is done (or failed)
        gives its row and makes room for its video's next chunk."""
        begin = time.perf_counter()
        outcomes = self._forward(lanes)
        share = (time.perf_counter() - begin) / len(lanes)
        for lane, outcome in zip(lanes, outcomes):
            lane.seconds += share
            if isinstance(outcome, Exception):
                self._finish(lane, f"{lane.chunk['uri']}: inference: {one_line(outcome)}")
                continue
            lane.results += outcome
            if lane.finished:
                self._finish(lane)

    def _forward(self, lanes: list[_Lane]) -> list:
        """Each lane's next clip's results (or the exception that stopped it), in one `process` call;
        where that call fails, each clip alone again, so that only the clip that fails (a frame the
        model cannot take, out of memory on a huge frame) fails."""
        outcomes: list = [None] * len(lanes)
        clips = []
        for position, lane in enumerate(lanes):
            try:
                clips.append((position, lane.next_clip(self.actor.clip_frames)))
            except Exception as error:  # noqa: BLE001 (any failure of one video must spare the others)
                outcomes[position] = error
        if not clips:
            return outcomes
        try:
            results = self.segmenter.process([clip for _, clip in clips])
        except Exception as error:  # noqa: BLE001
            results = [error] if len(clips) == 1 else [self._forward([lanes[p]])[0] for p, _ in clips]
        for (position, _), result in zip(clips, results):
            outcomes[position] = result
        return outcomes

    def _finish(self, lane: _Lane, error: str = ""):
        chunk, video_id = lane.chunk, lane.chunk["video_id"]
        if error or chunk["last"]:
            self.segmenter.drop(video_id)  # a failed video, or its last chunk: free its memory
        if error:
            row = _error_row(chunk, error)
        else:
            start = int(chunk["start"])
            frames = [
                dict(_frame_fields(r), timestamp=t, warm=r.frame_index < start)
                for r, t in zip(lane.results, lane.times)
            ]
            row = dict(_meta(chunk), lineage=lane.stream.lineage, frames=frames, error="")
        self.rows[lane.index] = dict(row, inference_seconds=lane.seconds)
        if error:  # the video's later chunks in this call would continue a memory that is gone
            for index in self.waiting[video_id]:
                self.rows[index] = _error_row(self.chunks[index], error)
            self.waiting[video_id].clear()
        self._open_next(video_id)


def _error_row(chunk: dict, error: str) -> dict:
    """The output row of a chunk that failed (`error` says why): no frames, no lineage."""
    return dict(_meta(chunk), lineage="", frames=[], error=error, inference_seconds=0.0)


def _meta(chunk: dict) -> dict:
    """The chunk's fields that its output row carries as they are."""
    meta = {key: chunk[key] for key in SEGMENTED_CHUNK_SCHEMA.names if key in chunk and key != "frames"}
    meta["last"] = bool(meta["last"])
    return meta


SEGMENTED_FRAME = pa.struct(
    [
        ("frame_index", pa.int64()),
        ("timestamp", pa.float64()),  # presentation time, seconds
        ("warm", pa.bool_()),  # a warm-up frame: used only to link ids
        ("instance_ids", pa.list_(pa.int64())),  # local to the chunk's lineage
        ("category_ids", pa.list_(pa.int64())),
        ("category_names", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("masks", pa.binary()),  # np.packbits of the (instances, height, width) masks
        ("label_map", pa.binary()),  # int32 (height, width), empty for instance-only runs
        ("tca_reset", pa.string()),
        ("tca_reassigned", pa.float64()),
        ("token_ratio", pa.float64()),
        ("windows_computed", pa.float64()),  # null without window reuse
        ("frame_reused", pa.bool_()),
    ]
)

SEGMENTED_CHUNK_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("source_bytes", pa.int64()),
        ("warm_start", pa.int64()),
        ("start", pa.int64()),
        ("stop", pa.int64()),
        ("last", pa.bool_()),
        ("frames_total", pa.int64()),
        ("estimated_frames", pa.int64()),
        ("fps", pa.float64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("decode_seconds", pa.float64()),
        ("lineage", pa.string()),
        ("frames", pa.list_(SEGMENTED_FRAME)),
        ("error", pa.string()),
        ("inference_seconds", pa.float64()),
    ]
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
        windows_computed=result.stats.windows_computed if result.stats else None,
        frame_reused=bool(result.stats and result.stats.frame_reused),
    )


# --- write ----------------------------------------------------------------------------------------


def written_row(chunk: dict, **fields) -> dict:
    """ChunkWriter -> driver: a chunk written as parts (no masks: paths, counts, the boundary summary)."""
    keys = ("video_id", "uri", "source_bytes", "start", "stop", "last", "frames_total", "estimated_frames", "fps")
    row = {key: chunk[key] for key in (*keys, "height", "width")}
    row.update(
        lineage=chunk.get("lineage", ""),
        parts="",  # JSON: {"frames": path, "masks": path}
        boundary="",  # JSON: Boundary.to_dict()
        frames_written=0,
        masks_written=0,
        reassigned=None,  # sum over continued frames, and their count
        reassigned_frames=0,
        token_ratio_sum=0.0,
        windows_computed_sum=0.0,  # window reuse: the share computed, summed over its frames
        windows_frames=0,
        frames_reused=0,
        decode_seconds=float(chunk.get("decode_seconds") or 0.0),
        inference_seconds=float(chunk.get("inference_seconds") or 0.0),
        error=chunk.get("error", ""),
    )
    row.update(fields)
    return row


class ChunkWriter:
    """COCO-RLE encodes a segmented chunk and writes its own frames as two Parquet parts (frames,
    masks; instance ids still local to its lineage) under <output>/_parts/<video_id>/; returns the
    chunk's boundary summary (its warm-up frames and its last `overlap` frames: local ids and
    RLEs), from which the driver links ids across chunks. The same row, with the run's `signature`,
    is written last as the chunk's record (_parts/<video_id>/chunks/), from which a rerun after an
    interruption takes the chunk instead of segmenting it again."""

    def __init__(self, output: str, labels: dict[int, str], overlap: int, signature: str, endpoint_url=None):
        self.fs, self.root = filesystem(output, endpoint_url)
        self.labels, self.overlap, self.signature = labels, overlap, signature

    def __call__(self, chunk: dict) -> dict:
        if chunk["error"]:
            return written_row(chunk)
        try:
            return self._write(chunk)
        except Exception as error:  # storage (after its retries), or any other: this video fails
            return written_row(chunk, error=f"{chunk['uri']}: not committed: {type(error).__name__}: {one_line(error)}")

    def _write(self, chunk: dict) -> dict:
        height, width = int(chunk["height"]), int(chunk["width"])
        masks, frames, boundary, stats = [], [], {"ids": [], "head": [], "tail": []}, _Stats()
        for frame in chunk["frames"]:
            instances = _rles(frame, height, width)
            summary = [int(frame["frame_index"]), [int(i) for i in frame["instance_ids"]], [c for c, *_ in instances]]
            if frame["warm"]:
                boundary["head"].append(summary)
                continue
            boundary["tail"] = (boundary["tail"] + [summary])[-max(self.overlap, 1) :]
            boundary["ids"] += [i for i in summary[1] if i not in boundary["ids"]]
            rows = self._mask_rows(chunk, frame, instances, height, width)
            masks += rows
            frames.append(
                frame_row(
                    chunk["video_id"],
                    chunk["uri"],
                    int(frame["frame_index"]),
                    float(frame["timestamp"]),
                    len(rows),
                    tca_reset=frame["tca_reset"],
                    tca_reassigned=frame["tca_reassigned"],
                    windows_computed=frame["windows_computed"],
                    frame_reused=frame["frame_reused"],
                )
            )
            stats.add(frame)
        name = f"{int(chunk['start']):010d}-{chunk['lineage']}"
        parts = {kind: join(self.root, "_parts", chunk["video_id"], kind, f"{name}.parquet") for kind in PART_KINDS}
        write_parquet(self.fs, parts["frames"], frames, FRAMES_SCHEMA)
        write_parquet(self.fs, parts["masks"], masks, MASKS_SCHEMA)  # instance ids local until committed
        written = written_row(
            chunk,
            parts=json.dumps(parts),
            boundary=json.dumps(boundary),
            frames_written=len(frames),
            masks_written=len(masks),
            **stats.fields(),
        )
        record = json.dumps(dict(written, signature=self.signature), default=_plain).encode()
        write_atomic(self.fs, join(self.root, "_parts", chunk["video_id"], "chunks", f"{name}.json"), record)
        return written

    def _mask_rows(self, chunk: dict, frame: dict, instances: list, height: int, width: int) -> list[dict]:
        fields = (chunk["video_id"], chunk["uri"], int(frame["frame_index"]), float(frame["timestamp"]), height, width)
        rows = [
            mask_row(*fields, counts, local, category, name, score)
            for counts, local, category, name, score in instances
        ]
        label_map = frame["label_map"]
        if label_map:
            # Column-major, as COCO's RLE runs: each class's mask then encodes without a copy.
            labels = np.asfortranarray(np.frombuffer(label_map, np.int32).reshape(height, width))
            for c in np.flatnonzero(np.bincount(labels.ravel(order="K"))):  # the classes present, in order
                counts = rle.encode(labels == c)["counts"]
                rows.append(mask_row(*fields, counts, None, int(c), self.labels.get(int(c), str(c)), None))
        return rows


PART_KINDS = ("frames", "masks")


def _plain(value):
    """A numpy scalar (as rows from Ray Data's batches hold) as the Python value JSON can write."""
    return value.item()


def _rles(frame: dict, height: int, width: int) -> list[tuple]:
    """(RLE counts, local id, category id, name, score) of each instance of a frame."""
    count = len(frame["instance_ids"])
    bits = np.unpackbits(np.frombuffer(frame["masks"], np.uint8), count=count * height * width)
    masks = bits.reshape(count, height, width).astype(bool)
    return [
        (rle.encode(mask)["counts"], int(local), int(category), str(name), float(score))
        for mask, local, category, name, score in zip(
            masks, frame["instance_ids"], frame["category_ids"], frame["category_names"], frame["scores"]
        )
    ]


class _Stats:
    """The per-frame statistics of a chunk (TCA's and reuse's), summed."""

    def __init__(self):
        self.reassigned, self.continued, self.token_ratio = 0.0, 0, 0.0
        self.windows, self.window_frames, self.reused = 0.0, 0, 0

    def add(self, frame: dict):
        if frame["tca_reassigned"] is not None and frame["tca_reset"] is None:
            self.reassigned += float(frame["tca_reassigned"])
            self.continued += 1
        self.token_ratio += float(frame["token_ratio"])
        if frame["windows_computed"] is not None:
            self.windows += float(frame["windows_computed"])
            self.window_frames += 1
        self.reused += bool(frame["frame_reused"])

    def fields(self) -> dict:
        return dict(
            reassigned=self.reassigned if self.continued else None,
            reassigned_frames=self.continued,
            token_ratio_sum=self.token_ratio,
            windows_computed_sum=self.windows,
            windows_frames=self.window_frames,
            frames_reused=self.reused,
        )


# Ray Data runs these three stages as tasks (callable classes would need actors): one call per row.


def probe_video(video: dict, chunking: Chunking, endpoint_url: str | None = None) -> list[dict]:
    return VideoProber(chunking, endpoint_url)(video)


def decode_segment(segment: dict, chunking: Chunking, endpoint_url: str | None = None):
    yield from SegmentDecoder(chunking, endpoint_url)(segment)


def write_chunk(chunk: dict, output: str, labels: dict, overlap: int, signature: str, endpoint_url=None) -> dict:
    return ChunkWriter(output, labels, overlap, signature, endpoint_url)(chunk)
