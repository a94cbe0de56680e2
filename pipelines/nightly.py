"""The nightly batch job: a video archive in object storage -> COCO-RLE masks in Parquet.

    python -m pipelines.nightly --input s3://bucket/videos/ --output s3://bucket/masks-run/
    ray job submit --working-dir . -- python -m pipelines.nightly --input ... --output ...

Ray Data streams the videos through four stages (pipelines/stages.py): probe (header and index
only; CPU tasks), decode (the byte ranges of each segment, from a key frame; CPU tasks), segment
(an actor pool holding the model and a cluster memory per video; GPUs when asked for) and write
(COCO RLE, each chunk's Parquet parts under the output prefix; CPU tasks). The driver sees only a
small row per written chunk: it links instance ids across each video's chunks from their boundary
summaries and, once a video's chunks are all written, submits a task that commits it
(pipelines/commit.py): frames table, masks table (each appearing whole), then a commit record. A
rerun skips videos committed with the same model and settings. Output layout: docs/output.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version

import pyarrow as pa
from tqdm import tqdm

from tca_core.allocator import INFERENCE_ENV
from tca_core.checkpoint_digest import checkpoint_identity
from tca_core.model import image_processing, tuned_acceleration

from .commit import CommitPlan, commit_video
from .errors import one_line, redact
from .linking import IdLinker
from .options import CLIPS_PER_PASS, JOB_KNOBS, MODEL_KNOBS, problems
from .stages import VIDEO_SCHEMA, Chunking, SegmentActor, decode_segment, probe_video, video_row, write_chunk
from .storage import Output, VideoRef, list_videos, read_manifest, write_atomic

# Videos travel in blocks (one probe task, one decode task, one write task per block): small files
# share blocks, so that an archive of clips does not pay a task per stage per clip; a block holds at
# most GROUP_BYTES of video (a large file travels alone) and GROUP_VIDEOS videos, and there are at
# least GROUPS_PER_CPU blocks per CPU of the cluster, so that every core has work.
GROUP_BYTES = 64 * 2**20
GROUP_VIDEOS = 32
GROUPS_PER_CPU = 4
# Ray Data cuts a task's output into blocks of about this size (its default is 128 MB): one decoded
# chunk of any real video (64 frames of 320x240 are 14 MB) fills a block, so chunks flow to the actor
# and the writer one by one, rather than a whole low-resolution video at once.
BLOCK_BYTES = 2**20

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
        ("windows_computed", pa.float64()),  # window reuse: mean share of the blocks' windows computed; null: off
        ("frames_reused", pa.int64()),  # frame reuse: frames that took an earlier frame's results
        ("code_version", pa.string()),
    ]
)


@dataclass
class JobConfig:
    """The nightly job's parameters; pipelines/options.py declares each one (its default, meaning and
    range), and `parse_args` maps the command line's options onto them. Invalid values raise
    ValueError naming the field and the reason.

    Input: `input` (a prefix to list) or `manifest` (a file of URIs; `input` is then the prefix the
    video ids are relative to), filtered by the `include` and `exclude` globs. Model and results:
    MODEL_KNOBS plus `chunk_frames` and `overlap` (the resume signature covers them). Resources:
    `actors`, `cpus_per_actor`, `gpus_per_actor`, `torch_threads`, `ray_address`."""

    input: str | None = JOB_KNOBS["input"].field()
    output: str = JOB_KNOBS["output"].field()
    manifest: str | None = JOB_KNOBS["manifest"].field()
    include: list[str] = JOB_KNOBS["include"].field()
    exclude: list[str] = JOB_KNOBS["exclude"].field()
    endpoint_url: str | None = JOB_KNOBS["endpoint_url"].field()
    model: str = MODEL_KNOBS["model"].field()
    method: str = MODEL_KNOBS["method"].field()
    task: str = MODEL_KNOBS["task"].field()
    score_threshold: float = MODEL_KNOBS["score_threshold"].field()
    short_side: int | None = MODEL_KNOBS["short_side"].field()
    acceleration: str | None = MODEL_KNOBS["acceleration"].field()
    chunk_frames: int = JOB_KNOBS["chunk_frames"].field()
    overlap: int = JOB_KNOBS["overlap"].field()
    clip_frames: int = MODEL_KNOBS["clip_frames"].field()
    actors: int = JOB_KNOBS["actors"].field()
    cpus_per_actor: float = JOB_KNOBS["cpus_per_actor"].field()
    torch_threads: int | None = JOB_KNOBS["torch_threads"].field()
    gpus_per_actor: float = JOB_KNOBS["gpus_per_actor"].field()
    clips_per_pass: int | None = JOB_KNOBS["clips_per_pass"].field()
    max_actor_restarts: int = JOB_KNOBS["max_actor_restarts"].field()
    max_task_retries: int = JOB_KNOBS["max_task_retries"].field()
    force: bool = JOB_KNOBS["force"].field()
    run_id: str | None = JOB_KNOBS["run_id"].field()
    ray_address: str | None = JOB_KNOBS["ray_address"].field()
    kill_actor_once: str | None = JOB_KNOBS["kill_actor_once"].field()
    verbose: bool = JOB_KNOBS["verbose"].field()

    def __post_init__(self):
        found = problems(self)
        if found:
            raise ValueError("job settings: " + "; ".join(found))

    def settings(self) -> dict:
        """Everything that changes the output of a video (its resume signature covers these)."""
        return dict(
            acceleration=tuned_acceleration(self.model, self.method, self.acceleration).to_dict(),
            task=self.task,
            score_threshold=self.score_threshold,
            short_side=self.short_side,
            processing=processing_size(self.model, self.short_side),
            chunk_frames=self.chunk_frames,
            overlap=self.overlap,
            clip_frames=self.clip_frames,
        )

    def signature(self) -> str:
        """The resume signature: a hash of the checkpoint's content (`checkpoint_identity`: its config
        files and the sha256 of its weights, not its path) and of `settings()`. A rerun skips the
        videos committed with the same signature and takes the chunks an interrupted run wrote with
        it; the same checkpoint at another path, or a hub id and its cached snapshot, sign alike."""
        identity = dict(model=checkpoint_identity(self.model), settings=self.settings())
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def processing_size(model: str, short_side: int | None) -> dict:
    """The size frames are resized to for the model: `short_side` when given, else what the checkpoint's
    image processor config says (recorded in the manifest's settings)."""
    processing = image_processing(model)
    if short_side is not None:
        processing = processing.with_short_side(short_side)
    return dict(
        shortest_edge=processing.shortest_edge,
        longest_edge=processing.longest_edge,
        height=processing.height,
        width=processing.width,
        size_divisor=processing.size_divisor,
        image_mean=list(processing.image_mean),  # normalisation changes the output too: in the signature
        image_std=list(processing.image_std),
    )


def videos_to_process(config: JobConfig) -> list[VideoRef]:
    if config.manifest:
        return read_manifest(config.manifest, config.input, config.endpoint_url)
    if not config.input:
        raise ValueError("give --input (a prefix) or --manifest")
    return list_videos(config.input, config.include, config.exclude, config.endpoint_url)


class VideoLedger:
    """The driver's account of one video in flight: which chunks are written (the first written
    attempt of each counts; a retried one is ignored), ids linked in frame order as the chunks
    line up, and the parts to commit. It holds no masks: paths, id maps and one boundary."""

    def __init__(self, row: dict):
        self.video_id, self.uri = row["video_id"], row["uri"]
        self.fps, self.height, self.width = float(row["fps"]), int(row["height"]), int(row["width"])
        self.frames_total = int(row["frames_total"])  # stages.UNKNOWN until the last chunk for unindexed files
        self.estimated = int(row["estimated_frames"]) or self.frames_total
        self.waiting: dict[int, dict] = {}  # written chunks ahead of the next frame to link
        self.parts: list[dict] = []
        self.linker = IdLinker(self.height, self.width)
        self.next_frame, self.error, self.ended, self.correction = 0, "", False, 0
        self.timings = dict(decode=0.0, inference=0.0)
        self.reuse = Reuse()
        self.started = time.perf_counter()

    def add(self, row: dict) -> bool:
        """Take a written chunk (or a failure); True once the video is complete or failed."""
        if row["error"]:
            self.error = self.error or str(row["error"])
            return True
        start = int(row["start"])
        if start < self.next_frame or start in self.waiting:
            return False  # a retried chunk, written again: the first attempt counts
        self.waiting[start] = row
        while self.next_frame in self.waiting:
            self._link(self.waiting.pop(self.next_frame))
        return self.ended

    def _link(self, row: dict):
        boundary = json.loads(row["boundary"])
        ids = self.linker.link(row["lineage"], boundary["ids"], boundary["head"], boundary["tail"])
        self.parts.append(dict(json.loads(row["parts"]), ids=ids))
        self.timings["decode"] += float(row["decode_seconds"])
        self.timings["inference"] += float(row["inference_seconds"])
        self.reuse.add(row)
        self.next_frame = int(row["stop"])
        if row["last"]:
            self.frames_total, self.ended = int(row["frames_total"]), True
            self.correction = self.frames_total - self.estimated  # the progress total, now exact

    def plan(self, record: dict) -> CommitPlan:
        record = dict(
            record,
            video_id=self.video_id,
            uri=self.uri,
            frames=self.frames_total,
            fps=self.fps,
            height=self.height,
            width=self.width,
        )
        return CommitPlan(self.video_id, self.uri, self.parts, record)


@dataclass
class Reuse:
    """What window and frame reuse saved, summed over written chunks (of a video, or of the run)."""

    windows_sum: float = 0.0
    window_frames: int = 0
    frames_reused: int = 0

    def add(self, row: dict):
        self.windows_sum += float(row["windows_computed_sum"])
        self.window_frames += int(row["windows_frames"])
        self.frames_reused += int(row["frames_reused"])

    def fields(self) -> dict:
        """windows_computed: the mean share of the blocks' windows computed (None: no window reuse);
        frames_reused: the frames that took an earlier frame's results."""
        windows = self.windows_sum / self.window_frames if self.window_frames else None
        return dict(windows_computed=windows, frames_reused=self.frames_reused)


@dataclass
class RunState:
    """What the driver keeps for the whole run: per video in flight, its ledger; the manifest rows;
    the commit tasks under way; the totals the summary reports."""

    run_id: str
    config: JobConfig
    settings: dict  # config.settings(), resolved once (it reads the checkpoint's files)
    signature: str
    manifest: list[dict] = field(default_factory=list)
    ledgers: dict[str, VideoLedger | None] = field(default_factory=dict)  # None: done
    commits: dict = field(default_factory=dict)  # Ray object ref -> ledger
    frames_done: int = 0
    reassigned: list[float] = field(default_factory=lambda: [0.0, 0])  # sum, frames
    token_ratio: list[float] = field(default_factory=lambda: [0.0, 0])
    first_output: float = 0.0
    frames_resumed: int = 0  # frames taken from an interrupted run's chunks
    reuse: Reuse = field(default_factory=lambda: Reuse())

    def record(self, ledger: VideoLedger, status: str, frames: int, reason: str):
        wall = time.perf_counter() - ledger.started
        timings = dict(wall=wall, decode=ledger.timings["decode"], inference=ledger.timings["inference"])
        self.add_row(ledger.video_id, ledger.uri, status, frames=frames, fps=ledger.fps, error=reason, **timings)
        self.manifest[-1].update(ledger.reuse.fields())
        self.frames_done += frames

    def add_row(self, video_id: str, uri: str, status: str, frames=0, fps=0.0, error="", **seconds: float):
        """A manifest row (MANIFEST_SCHEMA); `seconds`: wall, decode and inference, 0 when not given."""
        self.manifest.append(
            dict(
                run_id=self.run_id,
                video_id=video_id,
                video_uri=uri,
                status=status,
                frames=frames,
                fps=fps,
                error=redact(error),
                model=self.config.model,
                method=self.config.method,
                settings=json.dumps(self.settings),
                signature=self.signature,
                **{f"{kind}_seconds": seconds.get(kind, 0.0) for kind in ("wall", "decode", "inference")},
                **Reuse().fields(),
                code_version=_code_version(),
            )
        )


class Console:
    """One progress bar: frames done of the total known so far (known as probes finish), an ETA,
    frames/s, videos ok and failed."""

    def __init__(self, enabled: bool, videos: int):
        self.bar = tqdm(total=0, unit="frame", desc="segmenting", disable=not enabled, dynamic_ncols=True)
        self.videos, self.ok, self.failed = videos, 0, 0

    def grow(self, frames: int):
        self.bar.total += frames
        self.bar.refresh()

    def advance(self, frames: int):
        self.bar.update(frames)

    def video_done(self, ok: bool):
        self.ok, self.failed = self.ok + ok, self.failed + (not ok)
        self.bar.set_postfix_str(f"videos {self.ok} ok, {self.failed} failed of {self.videos}")

    def close(self):
        self.bar.close()


def _code_version() -> str:
    try:
        return version("tca-video")
    except Exception:  # not installed as a distribution (e.g. a bare working dir on a cluster)
        return "unknown"


def run_job(config: JobConfig, progress: bool = True) -> dict:
    """Run the job; returns the summary (also written next to the run manifest)."""
    import ray

    state = RunState(config.run_id or _new_run_id(), config, config.settings(), config.signature())
    output = Output(config.output, config.endpoint_url)
    todo = _videos_to_do(config, output, state)
    begin = time.perf_counter()
    started_ray = bool(todo) and not ray.is_initialized()
    if started_ray:
        _start_ray(config)
    try:
        if todo:
            _configure_ray_data(config)
            console = Console(progress, len(todo))
            done = _resume(output, todo, state, console)
            streamed = [ref for ref in todo if state.ledgers.get(ref.video_id, True) is not None]
            unfinished = _stream(_dataset(state, streamed, done), output, state, console, begin)
            _wait_for_commits(state, console)
            console.close()
            _report_unfinished(todo, state, unfinished)
        # The job's time ends with its last commit; stopping a Ray it started (about a second) is not work.
        return _write_summary(output, state, time.perf_counter() - begin)
    finally:
        if started_ray:  # leave the process as it was (the demo and the tests run jobs in-process)
            ray.shutdown()


def _start_ray(config: JobConfig):
    """Connect to the cluster at config.ray_address (None: Ray's own search), or start a local one
    ("local"), without Ray's dashboard (a second or two of start-up) unless --verbose."""
    import ray

    # Ray refuses include_dashboard when it connects to a cluster, which None may do.
    dashboard = {"include_dashboard": config.verbose} if config.ray_address == "local" else {}
    ray.init(
        address=config.ray_address, log_to_driver=config.verbose, logging_level=_ray_log_level(config), **dashboard
    )


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _videos_to_do(config: JobConfig, output: Output, state: RunState) -> list[VideoRef]:
    """The videos to process; those committed with the same signature are recorded as skipped.
    The commit records are listed once (one listing, not one request per video)."""
    committed = set() if config.force else output.committed_ids()
    todo = []
    for ref in videos_to_process(config):
        record = output.committed(ref.video_id) if ref.video_id in committed else None
        if record and record.get("signature") == state.signature:
            state.add_row(ref.video_id, ref.uri, "skipped", frames=record["frames"], fps=record["fps"])
        else:
            todo.append(ref)
    return todo


def _configure_ray_data(config: JobConfig):
    """Ray Data's block size (BLOCK_BYTES); its per-operator progress bars and log lines off, unless
    --verbose."""
    import ray

    if not config.verbose:  # Ray's deprecation notices about its own arguments are not the user's business
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
    context = ray.data.DataContext.get_current()
    context.target_max_block_size = BLOCK_BYTES
    context.enable_progress_bars = config.verbose
    context.print_on_execution_start = config.verbose
    if not config.verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        logging.getLogger("ray").setLevel(logging.ERROR)


def _ray_log_level(config: JobConfig) -> int:
    return logging.INFO if config.verbose else logging.ERROR


def _dataset(state: RunState, todo: list[VideoRef], done: dict[str, list]):
    """The stream: videos -> segments -> chunks -> segmented chunks -> written chunks (small rows);
    `done`: per video, the chunks an interrupted run already wrote (not segmented again)."""
    import ray

    config, settings = state.config, state.settings
    chunking = Chunking(config.chunk_frames, config.overlap)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    blocks = [pa.Table.from_pylist(group, schema=VIDEO_SCHEMA) for group in video_groups(todo, cpus, done)]
    return (
        ray.data.from_arrow(blocks)
        # Probing reads a header and an index: I/O, a quarter of a CPU.
        .flat_map(
            probe_video,
            fn_kwargs=dict(chunking=chunking, endpoint_url=config.endpoint_url),
            num_cpus=0.25,
        )
        # Decoding is single-threaded: half a CPU per task. The distinct resource request also keeps
        # Ray Data from fusing decoding into the inference actor.
        .flat_map(
            decode_segment,
            fn_kwargs=dict(chunking=chunking, endpoint_url=config.endpoint_url),
            num_cpus=0.5,
        )
        .map_batches(
            SegmentActor,
            fn_constructor_kwargs=dict(
                model=config.model,
                settings=settings,
                torch_threads=_torch_threads(config),
                kill_once=config.kill_actor_once,
                clips_per_pass=_clips_per_pass(config),
            ),
            batch_size=_clips_per_pass(config),  # chunks per call: of different videos, side by side
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.actors),
            num_cpus=config.cpus_per_actor,
            num_gpus=config.gpus_per_actor,
            # Ray restarts a dead actor and retries its batches. The restarts are bounded (Ray Data's
            # default restarts forever, which would loop on a batch that kills its actor every time);
            # the retries are not, since a lost node's actor is unreachable for a while before Ray
            # declares it dead, and every try in that window counts. Ray 2.60 takes these only as
            # ray_remote_args.
            max_restarts=config.max_actor_restarts,
            max_task_retries=-1 if config.max_actor_restarts else 0,
            runtime_env={"env_vars": INFERENCE_ENV},  # its process reuses freed memory (tca_core/allocator.py)
        )
        # RLE encoding and writing the parts: light, a quarter of a CPU, so it interleaves with decoding.
        .map(
            write_chunk,
            fn_kwargs=dict(
                output=config.output,
                labels=_labels(config.model),
                overlap=config.overlap,
                signature=state.signature,
                endpoint_url=config.endpoint_url,
            ),
            num_cpus=0.25,
        )
    )


def video_groups(todo: list[VideoRef], cpus: int, done: dict[str, list] | None = None) -> list[list[dict]]:
    """The videos to process as blocks of rows (`video_row`, with the chunks in `done` already
    written), in order: consecutive videos share a block while it holds at most GROUP_BYTES (sizes
    unknown count as 0) and a share of the videos that leaves GROUPS_PER_CPU blocks per CPU, and
    never more than GROUP_VIDEOS."""
    done = done or {}
    most = max(1, min(GROUP_VIDEOS, len(todo) // max(cpus * GROUPS_PER_CPU, 1)))
    groups, size = [], 0
    for ref in todo:
        bytes_ = ref.size or 0
        if not groups or len(groups[-1]) >= most or size + bytes_ > GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(video_row(ref.video_id, ref.uri, done.get(ref.video_id)))
        size += bytes_
    return groups


def _clips_per_pass(config: JobConfig) -> int:
    """--clips-per-pass, else the default of the actors' device (CLIPS_PER_PASS)."""
    if config.clips_per_pass is not None:
        return config.clips_per_pass
    return CLIPS_PER_PASS["cuda" if config.gpus_per_actor > 0 else "cpu"]


def _torch_threads(config: JobConfig) -> int | None:
    """CPU inference threads per actor: as given; on a cluster without GPUs, the CPUs the other stages
    leave idle, shared among the actors; else Ray's default (the declared CPUs)."""
    import ray

    if config.torch_threads or config.gpus_per_actor:
        return config.torch_threads
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, (cpus - 1) // max(config.actors, 1)) if not ray.cluster_resources().get("GPU") else None


def _stream(dataset, output: Output, state: RunState, console: Console, begin: float) -> str:
    """Consume the written-chunk rows: account for each, commit the videos that complete. Returns why
    the videos left unfinished are (the stream ended early, or the job's stream stopped)."""
    try:
        for row in dataset.iter_rows():
            state.first_output = state.first_output or time.perf_counter() - begin
            _take(row, output, state, console)
            _collect_commits(state, console, timeout=0)
    except Exception as error:  # e.g. an actor that kept dying: report what is unfinished, keep the rest
        return f"the job's stream stopped before this video was done: {one_line(error)}"
    return "not every frame came out of the job's stream"


RECORDS_PER_READ = 512  # chunk records read at once when resuming (a few KB each)


def _resume(output: Output, todo: list[VideoRef], state: RunState, console: Console) -> dict[str, list]:
    """Take the chunks that an interrupted run with the same signature wrote (their records under
    _parts/, one listing): they enter their videos' ledgers as if just written, and a video they
    complete is committed now. Returns, per video still to stream, the [start, stop) of its chunks
    already written."""
    sizes, done = {ref.video_id: ref.size for ref in todo}, {}
    for video_id, paths in output.chunk_records().items():
        if video_id not in sizes:
            continue
        for start in range(0, len(paths), RECORDS_PER_READ):
            for row in _usable(output.fs.cat(paths[start : start + RECORDS_PER_READ]), state, sizes[video_id]):
                state.frames_resumed += int(row["frames_written"])
                _take(row, output, state, console)
                done.setdefault(video_id, []).append([int(row["start"]), int(row["stop"])])
    return done


def _usable(records: dict[str, bytes], state: RunState, size: int | None) -> list[dict]:
    """The chunk records written with this run's signature, of the same file (its size, when the
    listing gave it), one per chunk (a retried chunk's first record), in frame order."""
    rows: dict[int, dict] = {}
    for _, data in sorted(records.items()):
        row = json.loads(data)
        if row.get("signature") == state.signature and size in (None, row.get("source_bytes")):
            rows.setdefault(int(row["start"]), row)
    return [rows[start] for start in sorted(rows)]


def _take(row: dict, output: Output, state: RunState, console: Console):
    """One written chunk into its video's ledger; a complete video's commit task is submitted."""
    import ray

    video_id = row["video_id"]
    if video_id not in state.ledgers:
        state.ledgers[video_id] = VideoLedger(row)
        console.grow(state.ledgers[video_id].estimated if not row["error"] else 0)
    ledger = state.ledgers[video_id]
    if ledger is None:
        return  # already committed or failed
    console.advance(int(row["frames_written"]))
    if row["reassigned"] is not None:
        state.reassigned[0] += float(row["reassigned"])
        state.reassigned[1] += int(row["reassigned_frames"])
    state.token_ratio[0] += float(row["token_ratio_sum"])
    state.token_ratio[1] += int(row["frames_written"])
    state.reuse.add(row)
    if not ledger.add(row):
        return
    console.grow(ledger.correction)
    state.ledgers[video_id] = None
    if ledger.error:
        state.record(ledger, "failed", 0, ledger.error)
        console.video_done(False)
        return
    record = dict(signature=state.signature, model=state.config.model, settings=state.settings, run_id=state.run_id)
    task = ray.remote(num_cpus=0.25, max_retries=state.config.max_task_retries)(commit_video)
    state.commits[task.remote(state.config.output, state.config.endpoint_url, ledger.plan(record))] = ledger


def _collect_commits(state: RunState, console: Console, timeout: float | None):
    """Record the commit tasks that finished (all of them, waiting, when timeout is None)."""
    import ray

    while state.commits:
        done, _ = ray.wait(list(state.commits), num_returns=1, timeout=timeout)
        if not done:
            return
        ledger = state.commits.pop(done[0])
        try:
            frames, _, reason = ray.get(done[0])
        except Exception as error:  # the task itself failed (its node lost past the retries)
            frames, reason = 0, f"{ledger.uri}: not committed: {one_line(error)}"
        state.record(ledger, "failed" if reason else "ok", frames, reason)
        console.video_done(not reason)


def _wait_for_commits(state: RunState, console: Console):
    _collect_commits(state, console, timeout=None)


def _report_unfinished(todo: list[VideoRef], state: RunState, unfinished: str):
    for ref in todo:
        if state.ledgers.get(ref.video_id, False) is not None:  # never seen, or not complete
            state.add_row(ref.video_id, ref.uri, "failed", error=f"{ref.uri}: {unfinished}")


def _write_summary(output: Output, state: RunState, seconds: float) -> dict:
    output.write_table(state.manifest, MANIFEST_SCHEMA, "manifests", f"{state.run_id}.parquet")
    statuses = [row["status"] for row in state.manifest]
    summary = dict(
        run_id=state.run_id,
        output=state.config.output,
        videos_ok=statuses.count("ok"),
        videos_failed=statuses.count("failed"),
        videos_skipped=statuses.count("skipped"),
        frames=state.frames_done,
        frames_resumed=state.frames_resumed,
        seconds=seconds,
        frames_per_second=state.frames_done / seconds if state.frames_done else 0.0,
        first_output_seconds=state.first_output,  # start-up: Ray, probing, loading the model, the first chunk
        token_ratio=state.token_ratio[0] / state.token_ratio[1] if state.token_ratio[1] else 1.0,
        tca_reassigned=state.reassigned[0] / state.reassigned[1] if state.reassigned[1] else None,
        **state.reuse.fields(),
        failures={row["video_id"]: row["error"] for row in state.manifest if row["status"] == "failed"},
    )
    write_atomic(
        output.fs, output.path("manifests", f"{state.run_id}.summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


def reuse_line(summary: dict) -> str:
    """The console's words for what reuse saved ("" when it was off)."""
    words = []
    if summary["windows_computed"] is not None:
        words.append(f"{summary['windows_computed']:.0%} of windows computed")
    if summary["frames_reused"]:
        words.append(f"{summary['frames_reused']} frames reused")
    return "; reuse: " + ", ".join(words) if words else ""


def _labels(model: str) -> dict[int, str]:
    from transformers import AutoConfig

    return {int(k): v for k, v in AutoConfig.from_pretrained(model).id2label.items()}


def parse_args(argv=None) -> JobConfig:
    """The job's settings from its command line (`--help`: every knob of pipelines/options.py)."""
    parser = argparse.ArgumentParser(prog="pipelines.nightly", description=__doc__.splitlines()[0])
    for knob in (*JOB_KNOBS.values(), *MODEL_KNOBS.values()):
        knob.add_to(parser, **({"required": True} if knob.name == "output" else {}))
    args = parser.parse_args(argv)
    try:
        return JobConfig(**vars(args))
    except ValueError as error:
        parser.error(str(error))


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
        + reuse_line(summary)
    )
    for video_id, error in summary["failures"].items():
        print(f"FAILED {video_id}: {error}", file=sys.stderr)
    print(f"output: {config.output} (manifest manifests/{summary['run_id']}.parquet)")
    return 1 if summary["videos_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
