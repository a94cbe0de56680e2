"""The nightly batch job: a video archive in object storage -> COCO-RLE masks in Parquet.

    python -m pipelines.nightly --input s3://bucket/videos/ --output s3://bucket/masks-run/
    ray job submit --working-dir . -- python -m pipelines.nightly --input ... --output ...

The driver plans (probes each video and splits it into ordered, overlapping chunks, in threads);
Ray Data streams the chunks through three stages: decode (decord through fsspec; CPU tasks),
segment (an actor pool holding the model and a cluster memory per video; GPUs when asked for) and
encode (COCO RLE; CPU tasks). The driver links instance ids across each video's chunks and commits each video on its own:
frames table, masks table (one object each, written whole), then a commit record. A rerun skips
videos committed with the same model and settings. Output layout and schema: docs/output.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import version

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from tca_core.model import EMBEDDED_MODEL, tuned_acceleration

from .errors import one_line, redact
from .linking import IdLinker
from .output import FRAMES_SCHEMA, MASKS_SCHEMA, frame_row, mask_row
from .stages import SegmentActor, decode_chunk, encode_masks, plan_video
from .storage import VideoRef, filesystem, join, list_videos, read_manifest, write_atomic

PROBE_THREADS = 16  # videos probed at once while planning (object-store latency, not CPU)

MANIFEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("video_id", pa.string()),
        ("video_uri", pa.string()),
        ("status", pa.string()),  # ok, failed or skipped
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("error", pa.string()),
        ("model", pa.string()),
        ("method", pa.string()),
        ("settings", pa.string()),  # JSON: acceleration, task, thresholds, chunking
        ("signature", pa.string()),
        ("wall_seconds", pa.float64()),
        ("decode_seconds", pa.float64()),
        ("inference_seconds", pa.float64()),
        ("code_version", pa.string()),
    ]
)


@dataclass
class JobConfig:
    input: str | None = None
    output: str = "out/nightly"
    manifest: str | None = None
    include: list[str] = field(default_factory=lambda: ["*.mp4", "*.mkv", "*.mov", "*.avi", "*.webm", "*.m4v"])
    exclude: list[str] = field(default_factory=list)
    endpoint_url: str | None = None
    model: str = str(EMBEDDED_MODEL)
    method: str = "tca"
    task: str = "instance"
    score_threshold: float = 0.5
    short_side: int | None = None
    chunk_frames: int = 64
    overlap: int = 4
    clip_frames: int = 8
    actors: int = 1
    cpus_per_actor: float = 1.0
    torch_threads: int | None = None  # CPU inference threads per actor; None: Ray's (the declared CPUs)
    gpus_per_actor: float = 0.0
    # An inference actor that dies (lost node, out of memory) is restarted and its batches retried,
    # this many times each; beyond that the job stops and reports its unfinished videos failed.
    max_actor_restarts: int = 3
    max_task_retries: int = 3
    force: bool = False
    ray_address: str | None = None
    kill_actor_once: str | None = None  # fault injection, "N:MARKER" (stages.SegmentActor); off by default

    def settings(self) -> dict:
        """Everything that changes the output of a video (its resume signature covers these)."""
        return dict(
            acceleration=tuned_acceleration(self.model, self.method).to_dict(),
            task=self.task,
            score_threshold=self.score_threshold,
            short_side=self.short_side,
            chunk_frames=self.chunk_frames,
            overlap=self.overlap,
            clip_frames=self.clip_frames,
        )

    def signature(self) -> str:
        text = json.dumps(dict(model=self.model, settings=self.settings()), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def videos_to_process(config: JobConfig) -> list[VideoRef]:
    if config.manifest:
        return read_manifest(config.manifest, config.input, config.endpoint_url)
    if not config.input:
        raise ValueError("give --input (a prefix) or --manifest")
    return list_videos(config.input, config.include, config.exclude, config.endpoint_url)


class Output:
    """The run's output prefix: per-video tables, commit records and run manifests."""

    def __init__(self, uri: str, endpoint_url=None):
        self.uri = uri
        self.fs, self.root = filesystem(uri, endpoint_url)

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def committed(self, video_id: str) -> dict | None:
        path = self.path("_commits", f"{video_id}.json")
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def write_table(self, rows: list[dict], schema: pa.Schema, *parts: str):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
        write_atomic(self.fs, self.path(*parts), sink.getvalue().to_pybytes())

    def commit(self, video_id: str, record: dict):
        write_atomic(self.fs, self.path("_commits", f"{video_id}.json"), json.dumps(record).encode())


class VideoAssembly:
    """The rows of one video gathered from the stream until every chunk has all its frames.

    Idempotent: a chunk may arrive more than once (a retried task, a restarted actor). Rows are kept
    per attempt at a chunk (an attempt is one tracker lineage, so its instance ids agree) and per
    frame, so a repeated row replaces itself; the first attempt holding every frame of its chunk is
    the one used.
    """

    def __init__(self, row: dict):
        self.video_id, self.uri = row["video_id"], row["uri"]
        self.num_chunks, self.frames_total, self.fps = (
            int(row["num_chunks"]),
            int(row["frames_total"]),
            float(row["fps"]),
        )
        self.height, self.width = int(row["height"]), int(row["width"])
        self.attempts: dict[tuple[int, str], dict[int, dict]] = {}  # (chunk, lineage) -> frame -> row
        self.chunks: dict[int, dict[int, dict]] = {}  # chunk -> the rows of its first complete attempt
        self.error = ""
        self.started = time.perf_counter()

    def add(self, row: dict) -> bool:
        """Add a row; True when the video is complete (or failed)."""
        if row["error"]:
            self.error = self.error or str(row["error"])
            return True
        chunk = int(row["chunk_index"])
        if chunk not in self.chunks:
            rows = self.attempts.setdefault((chunk, row["lineage"]), {})
            rows[int(row["frame_index"])] = row
            if all(f in rows and not rows[f]["warm"] for f in range(int(row["start"]), int(row["stop"]))):
                self.chunks[chunk] = rows
                self.attempts = {key: value for key, value in self.attempts.items() if key[0] != chunk}
        return len(self.chunks) == self.num_chunks

    def tables(self, labels: dict[int, str]) -> tuple[list[dict], list[dict]]:
        """(mask rows, frame rows) with instance ids linked across chunks."""
        linker = IdLinker(self.height, self.width)
        masks, frames = [], []
        for index in range(self.num_chunks):
            rows = sorted(self.chunks[index].values(), key=lambda r: r["frame_index"])
            ids_per_frame = iter(linker.link_chunk(rows))
            for row in rows:
                if row["warm"]:
                    continue
                ids, frame, timestamp = next(ids_per_frame), int(row["frame_index"]), float(row["timestamp"])
                fields = (self.video_id, self.uri, frame, timestamp, self.height, self.width)
                rows_here = [
                    mask_row(*fields, counts, global_id, int(category), str(name), float(score))
                    for counts, global_id, category, name, score in zip(
                        row["rles"], ids, row["category_ids"], row["category_names"], row["scores"]
                    )
                ]
                rows_here += [
                    mask_row(*fields, counts, None, int(c), labels.get(int(c), str(c)), None)
                    for c, counts in zip(row["semantic_ids"], row["semantic_rles"])
                ]
                masks += rows_here
                frames.append(
                    frame_row(
                        self.video_id,
                        self.uri,
                        frame,
                        timestamp,
                        len(rows_here),
                        row["tca_reset"],
                        row["tca_reassigned"],
                    )
                )
        return masks, frames

    def seconds(self, key: str) -> float:
        return float(sum(r.get(key, 0.0) or 0.0 for rows in self.chunks.values() for r in rows.values()))


def _code_version() -> str:
    try:
        return version("tca-video")
    except Exception:  # not installed as a distribution (e.g. a bare working dir on a cluster)
        return "unknown"


def run_job(config: JobConfig, progress: bool = True) -> dict:
    """Run the job; returns the summary (also written next to the run manifest)."""
    import ray

    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    output = Output(config.output, config.endpoint_url)
    refs = videos_to_process(config)
    signature, settings = config.signature(), config.settings()
    manifest, todo = [], []
    for ref in refs:
        record = None if config.force else output.committed(ref.video_id)
        if record and record.get("signature") == signature:
            manifest.append(
                _manifest_row(run_id, config, ref.video_id, ref.uri, "skipped", record["frames"], record["fps"], "")
            )
        else:
            todo.append(ref)

    begin = time.perf_counter()
    frames_done, reassigned, token_ratios, first_output = 0, [], [], 0.0
    started_ray = bool(todo) and not ray.is_initialized()
    if started_ray:
        ray.init(address=config.ray_address, log_to_driver=False)
    try:
        if todo:
            if progress:  # our own bar counts frames; Ray Data's per-operator log lines would drown it
                logging.getLogger("ray.data").setLevel(logging.WARNING)
            labels = _labels(config.model)
            # Planning (probing every video: I/O, in threads of the driver) comes first, so that the
            # streaming dataset can hold one block per chunk: each chunk is then decoded, segmented and
            # handed back on its own instead of waiting for the other chunks of a shared block.
            plan = partial(
                plan_video, chunk_frames=config.chunk_frames, overlap=config.overlap, endpoint_url=config.endpoint_url
            )
            with ThreadPoolExecutor(PROBE_THREADS) as pool:
                chunks = [
                    c
                    for planned in pool.map(plan, [{"video_id": r.video_id, "uri": r.uri} for r in todo])
                    for c in planned
                ]
            dataset = (
                ray.data.from_items(chunks, override_num_blocks=len(chunks))
                # Decoding is mostly I/O and single-threaded: half a CPU per task. The distinct resource
                # request also keeps Ray Data from fusing decoding into the inference actor.
                .map(decode_chunk, fn_kwargs=dict(endpoint_url=config.endpoint_url), num_cpus=0.5)
                .map_batches(
                    SegmentActor,
                    fn_constructor_kwargs=dict(
                        model=config.model,
                        acceleration=settings["acceleration"],
                        task=config.task,
                        clip_frames=config.clip_frames,
                        score_threshold=config.score_threshold,
                        short_side=config.short_side,
                        torch_threads=config.torch_threads,
                        kill_once=config.kill_actor_once,
                    ),
                    batch_size=1,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=config.actors),
                    num_cpus=config.cpus_per_actor,
                    num_gpus=config.gpus_per_actor,
                    # Ray restarts a dead actor and retries its batches; Ray Data's defaults retry forever,
                    # which would loop on a batch that kills its actor every time. Ray 2.60 takes these only
                    # as ray_remote_args, and warns that those are deprecated (removed in 2.64).
                    max_restarts=config.max_actor_restarts,
                    max_task_retries=config.max_task_retries,
                )
                # Light work too: half a CPU, so it interleaves with decoding instead of waiting for a whole
                # free CPU (which, on a 2-CPU machine, would hold every output back until decoding ends).
                .map(encode_masks, num_cpus=0.5)
            )
            assemblies: dict[str, VideoAssembly | None] = {}
            bar = tqdm(total=None, unit="frame", desc="segmenting", disable=not progress)
            unfinished = "not every frame came out of the job's stream"
            try:
                for row in dataset.iter_rows():
                    first_output = first_output or time.perf_counter() - begin
                    video_id = row["video_id"]
                    if video_id not in assemblies:
                        assemblies[video_id] = VideoAssembly(row)
                    assembly = assemblies[video_id]
                    if assembly is None:
                        continue  # already committed or failed
                    if not row["error"] and not row["warm"]:
                        bar.update(1)
                        if row["tca_reassigned"] is not None and row["tca_reset"] is None:
                            reassigned.append(float(row["tca_reassigned"]))
                        token_ratios.append(float(row["token_ratio"]))
                    if assembly.add(row):
                        frames_done += _finish(output, assembly, labels, config, run_id, signature, manifest)
                        assemblies[video_id] = None
            except Exception as error:  # e.g. an actor that kept dying: report what is unfinished, keep the rest
                unfinished = f"the job's stream stopped before this video was done: {one_line(error)}"
            bar.close()
            for ref in todo:
                if assemblies.get(ref.video_id, False) is not None:  # never seen, or not complete
                    reason = f"{ref.uri}: {unfinished}"
                    manifest.append(_manifest_row(run_id, config, ref.video_id, ref.uri, "failed", 0, 0.0, reason))
    finally:
        if started_ray:  # leave the process as it was (the demo and the tests run jobs in-process)
            ray.shutdown()
    seconds = time.perf_counter() - begin
    output.write_table(manifest, MANIFEST_SCHEMA, "manifests", f"{run_id}.parquet")
    statuses = [row["status"] for row in manifest]
    summary = dict(
        run_id=run_id,
        output=config.output,
        videos_ok=statuses.count("ok"),
        videos_failed=statuses.count("failed"),
        videos_skipped=statuses.count("skipped"),
        frames=frames_done,
        seconds=seconds,
        frames_per_second=frames_done / seconds if frames_done else 0.0,
        first_output_seconds=first_output,  # start-up: Ray, planning, loading the model
        token_ratio=sum(token_ratios) / len(token_ratios) if token_ratios else 1.0,
        tca_reassigned=sum(reassigned) / len(reassigned) if reassigned else None,
        failures={row["video_id"]: row["error"] for row in manifest if row["status"] == "failed"},
    )
    write_atomic(output.fs, output.path("manifests", f"{run_id}.summary.json"), json.dumps(summary, indent=2).encode())
    return summary


def _finish(output: Output, assembly: VideoAssembly, labels, config, run_id, signature, manifest) -> int:
    """Commit a complete video or record its failure in the manifest; the frames committed."""
    wall = time.perf_counter() - assembly.started
    timings = (wall, assembly.seconds("decode_seconds"), assembly.seconds("inference_seconds"))
    frames, reason = (
        (0, assembly.error) if assembly.error else _commit(output, assembly, labels, config, run_id, signature)
    )
    status = "failed" if reason else "ok"
    manifest.append(
        _manifest_row(run_id, config, assembly.video_id, assembly.uri, status, frames, assembly.fps, reason, *timings)
    )
    return frames


def _commit(output: Output, assembly: VideoAssembly, labels, config, run_id, signature) -> tuple[int, str]:
    """Write frames, masks, then the commit record: (frames, "") or (0, why the video is not committed).

    Only a video with every frame exactly once is written. A storage error (after the storage
    client's retries) leaves the video without a commit record, so not committed: a rerun redoes it.
    """
    video_id, uri = assembly.video_id, assembly.uri
    try:
        masks, frames = assembly.tables(labels)
        indices = [row["frame_index"] for row in frames]
        if indices != list(range(assembly.frames_total)):
            missing = len(set(range(assembly.frames_total)) - set(indices))
            duplicated = len(indices) - len(set(indices))
            return (
                0,
                f"{uri}: not committed: {missing} of {assembly.frames_total} frames missing, {duplicated} duplicated",
            )
        output.write_table(frames, FRAMES_SCHEMA, "frames", f"{video_id}.parquet")
        output.write_table(masks, MASKS_SCHEMA, "masks", f"{video_id}.parquet")
        record = dict(
            video_id=video_id,
            uri=uri,
            frames=len(frames),
            fps=assembly.fps,
            height=assembly.height,
            width=assembly.width,
            masks=len(masks),
            signature=signature,
            model=config.model,
            settings=config.settings(),
            run_id=run_id,
        )
        output.commit(video_id, record)
    except Exception as error:  # storage (or any other) error: this video fails, the others go on
        return 0, f"{uri}: not committed: {type(error).__name__}: {one_line(error)}"
    return len(frames), ""


def _manifest_row(
    run_id, config, video_id, uri, status, frames, fps, error, wall=0.0, decode=0.0, inference=0.0
) -> dict:
    return dict(
        run_id=run_id,
        video_id=video_id,
        video_uri=uri,
        status=status,
        frames=frames,
        fps=fps,
        error=redact(error),
        model=config.model,
        method=config.method,
        settings=json.dumps(config.settings()),
        signature=config.signature(),
        wall_seconds=wall,
        decode_seconds=decode,
        inference_seconds=inference,
        code_version=_code_version(),
    )


def _labels(model: str) -> dict[int, str]:
    from transformers import AutoConfig

    return {int(k): v for k, v in AutoConfig.from_pretrained(model).id2label.items()}


def parse_args(argv=None) -> JobConfig:
    defaults = JobConfig()
    parser = argparse.ArgumentParser(prog="pipelines.nightly", description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="prefix to list: s3://bucket/prefix/ or a local directory")
    parser.add_argument("--output", required=True, help="output prefix: s3://bucket/prefix/ or a local directory")
    parser.add_argument("--manifest", help="CSV, JSONL or Parquet file with a 'uri' column, instead of listing")
    parser.add_argument("--include", nargs="+", default=defaults.include, help="globs on the relative path")
    parser.add_argument("--exclude", nargs="+", default=defaults.exclude)
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (credentials: standard AWS chain)")
    parser.add_argument("--model", default=defaults.model, help="checkpoint directory or hub id")
    parser.add_argument("--method", choices=["none", "clustering", "tca"], default=defaults.method)
    parser.add_argument("--task", choices=["instance", "semantic", "both"], default=defaults.task)
    parser.add_argument("--score-threshold", type=float, default=defaults.score_threshold)
    parser.add_argument("--short-side", type=int, help="resize frames so the short side is this (masks stay full size)")
    parser.add_argument("--chunk-frames", type=int, default=defaults.chunk_frames)
    parser.add_argument("--overlap", type=int, default=defaults.overlap, help="warm-up frames before each chunk")
    parser.add_argument("--clip-frames", type=int, default=defaults.clip_frames, help="frames per model call")
    parser.add_argument("--actors", type=int, default=defaults.actors, help="inference actors")
    parser.add_argument("--cpus-per-actor", type=float, default=defaults.cpus_per_actor)
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="CPU inference threads per actor (default: the declared CPUs); on a CPU-only machine with one "
        "actor, its core count lets inference use the cores that decoding leaves idle",
    )
    parser.add_argument("--gpus-per-actor", type=float, default=defaults.gpus_per_actor, help="fractions allowed")
    parser.add_argument("--force", action="store_true", help="recompute videos already committed")
    parser.add_argument(
        "--kill-actor-once",
        metavar="N:MARKER",
        help="fault injection (tests, drills): an inference actor's process exits after its N-th batch, "
        "once: unless the file MARKER exists, which it creates (docs/reliability.md)",
    )
    parser.add_argument(
        "--ray-address",
        help="a cluster to join (default: the submitted job's cluster, one started on this machine, or a new local one)",
    )
    args = parser.parse_args(argv)
    if args.chunk_frames < 1 or args.overlap < 0 or args.clip_frames < 1:
        parser.error("--chunk-frames and --clip-frames must be >= 1, --overlap >= 0")
    return JobConfig(**vars(args))


def main(argv=None) -> int:
    config = parse_args(argv)
    summary = run_job(config)
    print(
        f"videos: {summary['videos_ok']} ok, {summary['videos_failed']} failed, {summary['videos_skipped']} skipped; "
        f"frames: {summary['frames']} in {summary['seconds']:.1f} s ({summary['frames_per_second']:.2f} frames/s); "
        f"clustered blocks on {summary['token_ratio']:.0%} of tokens"
        + (
            f"; TCA reassigned {summary['tca_reassigned']:.1%} per frame"
            if summary["tca_reassigned"] is not None
            else ""
        )
    )
    for video_id, error in summary["failures"].items():
        print(f"FAILED {video_id}: {error}", file=sys.stderr)
    print(f"output: {config.output} (manifest manifests/{summary['run_id']}.parquet)")
    return 1 if summary["videos_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
