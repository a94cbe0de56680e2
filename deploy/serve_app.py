"""Ray Serve application: segment clips over HTTP, and start nightly batch jobs.

    serve run deploy/serve_config.yaml        # a laptop: starts Ray and Serve, port 8000
    serve deploy deploy/serve_config.yaml     # a running cluster (docs/deploy.md)

Endpoints (schema at /openapi.json, browsable at /docs):
    POST /segment          a clip named by URI (local path or s3:// under an allowed prefix)
    POST /segment/upload   a clip as the request body (video file bytes); fields as query parameters
    POST /jobs             the nightly job over an archive prefix; GET /jobs/{job_id} its state
    GET  /healthz, /stats  liveness and the replica's recent batch sizes

Batching: each request's frames go through `SegmentService.infer` in clips of `clip_frames`;
`@serve.batch` gathers the clips of concurrent requests into one `VideoSegmenter.process` call.

Video memory: a request with a `video_id` continues the cluster memory and instance tracks that
the replica kept for that video when its `start_frame` is the frame after the video's previous
request there. Otherwise (first clip, another replica served the previous one, a gap, an evicted
memory) the replica starts a fresh memory, running the request's `warmup_frames` leading frames
first to warm it up; their results are not returned. `continued` says which happened and
`lineage` names the instance-id sequence: ids are comparable between responses with the same
lineage only. Clips of one video must be sent one after another (a second concurrent request for
the same video gets 409).
"""

import asyncio
import io
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from pipelines.nightly import JobConfig
from pipelines.storage import filesystem
from pipelines.video_io import decoder_message, open_video
from tca_core.allocator import INFERENCE_ENV
from tca_core.model import EMBEDDED_MODEL, tuned_acceleration
from tca_core.segmenter import Clip, FrameResult, VideoSegmenter

from .jobs import NightlyJobs
from .results import frame_json
from .uris import ForbiddenURI, resolve


class ServiceOptions(BaseModel):
    """The application's arguments (`args:` of the application in deploy/serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(str(EMBEDDED_MODEL), description="checkpoint directory or hub id")
    method: Literal["none", "clustering", "tca"] = "tca"
    task: Literal["instance", "semantic", "both"] = "instance"
    score_threshold: float = Field(0.5, ge=0, le=1)
    short_side: int | None = Field(None, ge=16, description="resize frames for the model (masks stay full size)")
    device: str = Field("auto", description="auto: cuda when the replica has a GPU, else cpu")
    torch_threads: int | None = Field(None, ge=1, description="CPU inference threads per replica")
    clip_frames: int = Field(8, ge=1, description="frames of one request per batched item")
    max_batch_size: int = Field(4, ge=1, description="clips (of different requests) per forward pass")
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    max_videos: int = Field(64, ge=1, description="video memories a replica keeps (least recently used dropped)")
    max_upload_bytes: int = Field(32 * 2**20, ge=1, description="largest uploaded or referenced video file")
    max_frames: int = Field(64, ge=1, description="frames per request, warm-up frames included")
    max_pixels: int = Field(1920 * 1080, ge=1, description="pixels per frame")
    input_prefixes: list[str] = Field([], description="where clips and job inputs may be read from")
    output_prefixes: list[str] = Field([], description="where jobs may write")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (default: AWS)")
    job: dict = Field({}, description="further JobConfig settings of submitted jobs (actors, gpus_per_actor, ...)")
    max_running_jobs: int = Field(2, ge=1)


# --- the HTTP API's schema ---------------------------------------------------------------------


class ClipFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9._:/=-]+$",
        description="continue this video's memory across requests (omit for a one-off clip)",
    )
    start_frame: int = Field(0, ge=0, description="video frame index of the first frame to segment")
    warmup_frames: int = Field(
        0,
        ge=0,
        description="leading frames of the clip (start_frame - warmup_frames ..) that only warm up a fresh memory",
    )
    last: bool = Field(False, description="the video's last clip: free its memory afterwards")


class SegmentRequest(ClipFields):
    uri: str = Field(description="the clip: /allowed/dir/clip.mp4, file:///... or s3://bucket/prefix/clip.mp4")


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE")


class Mask(BaseModel):
    category_id: int
    category: str
    area: int
    bbox: list[float] = Field(description="[x, y, width, height]")
    rle: RLE


class InstanceMask(Mask):
    id: int = Field(description="instance id, stable across the frames of one lineage")
    score: float


class FrameMasks(BaseModel):
    frame_index: int
    instances: list[InstanceMask]
    semantic: list[Mask] | None = Field(None, description="one mask per category present (semantic tasks)")


class SegmentResponse(BaseModel):
    video_id: str | None
    lineage: str = Field(description="instance ids are comparable between responses of the same lineage")
    continued: bool = Field(description="whether the video's memory from its previous request was continued")
    height: int
    width: int
    frames: list[FrameMasks]
    batch_sizes: list[int] = Field(description="clips in each forward pass this request's frames went through")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="archive prefix to list (s3://bucket/videos/ or a local directory)")
    output: str = Field(description="output prefix (docs/output.md)")
    include: list[str] | None = Field(None, description="globs on the relative path (default: video extensions)")
    exclude: list[str] = []
    force: bool = Field(False, description="recompute videos already committed")


class JobStatus(BaseModel):
    job_id: str
    state: Literal["running", "succeeded", "failed"]
    submitted_at: float
    finished_at: float | None
    input: str
    output: str
    summary: dict | None = Field(None, description="pipelines.nightly.run_job's summary, once finished")
    error: str | None


class Stats(BaseModel):
    batches: int
    batch_sizes: list[int] = Field(description="clips per forward pass, most recent last (up to 1000)")
    batch_frames: list[int] = Field(description="frames per forward pass")
    max_batch_size: int
    videos_in_memory: int


def _reject(status: int, loc: tuple[str, ...], message: str, headers: dict | None = None) -> HTTPException:
    """An error in FastAPI's own validation format: the field it concerns and why."""
    return HTTPException(status, detail=[{"loc": list(loc), "msg": message}], headers=headers)


@dataclass
class _Work:
    clip: Clip
    reset: bool  # start a fresh memory for the video first
    release: bool  # forget the video afterwards


api = FastAPI(
    title="tca-video",
    description="Video instance and semantic segmentation (Swin Mask2Former with Temporal Cluster Assignment).",
)


@serve.deployment(
    # Its process reuses freed memory between forward passes (tca_core/allocator.py). A config file's
    # ray_actor_options replace these whole, so deploy/serve_config.yaml and the RayService repeat it.
    ray_actor_options={"num_cpus": 1, "runtime_env": {"env_vars": INFERENCE_ENV}},
    max_ongoing_requests=8,
    max_queued_requests=16,
    backpressure_config={"status_code": 503, "retry_after_s": 2},
)
@serve.ingress(api)
class SegmentService:
    """The HTTP ingress: holds a `VideoSegmenter` (the model and a memory per video) per replica."""

    def __init__(self, options: ServiceOptions, jobs: DeploymentHandle):
        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.segmenter = VideoSegmenter.from_pretrained(
            options.model,
            device=device,
            dtype=torch.float16 if device.startswith("cuda") else torch.float32,
            acceleration=tuned_acceleration(options.model, options.method),
            task=options.task,
            score_threshold=options.score_threshold,
            short_side=options.short_side,
            max_videos=options.max_videos,
        )
        self.options, self.jobs, self.device = options, jobs, device
        self.inference = ThreadPoolExecutor(1)  # the only thread that runs the model or touches its memories
        self.positions: dict[str, tuple[int, str]] = {}  # video id -> (next frame, lineage)
        self.busy: set[str] = set()  # videos with a request in progress
        self.batch_sizes, self.batch_frames = deque(maxlen=1000), deque(maxlen=1000)
        self.infer.set_max_batch_size(options.max_batch_size)
        self.infer.set_batch_wait_timeout_s(options.batch_wait_timeout_s)

    # --- endpoints ----------------------------------------------------------------------------

    @api.post("/segment", response_model=SegmentResponse)
    async def segment_uri(self, request: SegmentRequest) -> dict:
        """Segment a clip read from a URI under an allowed prefix."""
        uri = self._allowed(request.uri, self.options.input_prefixes, ("body", "uri"))
        frames = await asyncio.to_thread(self._read_uri, uri)
        return await self._segment(frames, request)

    @api.post(
        "/segment/upload",
        response_model=SegmentResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def segment_upload(self, request: Request, fields: Annotated[ClipFields, Query()]) -> dict:
        """Segment a clip sent as the request body: the bytes of a video file (mp4, mkv, webm, ...)."""
        body = await self._read_body(request)
        frames = await asyncio.to_thread(self._decode, io.BytesIO(body), ("body",))
        return await self._segment(frames, fields)

    @api.post("/jobs", status_code=202, response_model=JobStatus)
    async def submit_job(self, request: JobRequest) -> dict:
        """Start the nightly job (pipelines.nightly) over an archive prefix; poll GET /jobs/{job_id}."""
        settings = dict(
            self.options.job,
            input=self._allowed(request.input, self.options.input_prefixes, ("body", "input")),
            output=self._allowed(request.output, self.options.output_prefixes, ("body", "output")),
            exclude=request.exclude,
            force=request.force,
            model=self.options.model,
            method=self.options.method,
            task=self.options.task,
            score_threshold=self.options.score_threshold,
            short_side=self.options.short_side,
            endpoint_url=self.options.endpoint_url,
        )
        if request.include is not None:
            settings["include"] = request.include
        job_id = await self.jobs.submit.remote(JobConfig(**settings))
        if job_id is None:
            raise _reject(
                503, ("body",), f"{self.options.max_running_jobs} jobs are running already", {"Retry-After": "60"}
            )
        return await self.jobs.status.remote(job_id)

    @api.get("/jobs/{job_id}", response_model=JobStatus)
    async def job_status(self, job_id: str) -> dict:
        """A job's state; its summary (videos ok/failed, frames, throughput) once finished."""
        status = await self.jobs.status.remote(job_id)
        if status is None:
            raise _reject(404, ("path", "job_id"), f"no job {job_id!r}")
        return status

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """The replica is up and its model loaded."""
        options = self.options
        return dict(status="ok", model=options.model, method=options.method, task=options.task, device=self.device)

    @api.get("/stats", response_model=Stats)
    async def stats(self) -> dict:
        """This replica's recent forward passes: how many clips and frames each batched."""
        return dict(
            batches=len(self.batch_sizes),
            batch_sizes=list(self.batch_sizes),
            batch_frames=list(self.batch_frames),
            max_batch_size=self.options.max_batch_size,
            videos_in_memory=len(self.segmenter.memories),
        )

    # --- batched inference --------------------------------------------------------------------

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def infer(self, work: list[_Work]) -> list[tuple[list[FrameResult], int]]:
        """Segment the clips of concurrent requests in one forward pass; (results, batch size) each."""
        self.batch_sizes.append(len(work))
        self.batch_frames.append(sum(len(item.clip.frames) for item in work))
        results = await asyncio.get_running_loop().run_in_executor(self.inference, self._process, work)
        return [(result, len(work)) for result in results]

    def _process(self, work: list[_Work]) -> list[list[FrameResult]]:
        for item in work:
            if item.reset:
                self.segmenter.drop(item.clip.video_id)
        try:
            return self.segmenter.process([item.clip for item in work])
        finally:
            for item in work:
                if item.release:
                    self.segmenter.drop(item.clip.video_id)

    async def _segment(self, frames: np.ndarray, fields: ClipFields) -> dict:
        """Segment decoded frames, continuing the video's memory when this replica has it."""
        where = "body" if isinstance(fields, SegmentRequest) else "query"
        warmup, start = fields.warmup_frames, fields.start_frame
        if warmup >= len(frames):
            raise _reject(422, (where, "warmup_frames"), f"{warmup} warm-up frames leave none of the {len(frames)}")
        if warmup > start:
            raise _reject(422, (where, "warmup_frames"), f"{warmup} warm-up frames precede start_frame {start}")
        video_id = fields.video_id or f"#request-{uuid.uuid4().hex}"  # not a valid client id: no collision
        if video_id in self.busy:
            raise _reject(409, (where, "video_id"), f"a request for video {video_id!r} is in progress on this replica")
        self.busy.add(video_id)
        try:
            position = self.positions.pop(video_id, None)
            continued = position is not None and position[0] == start and video_id in self.segmenter.memories
            lineage = position[1] if continued else uuid.uuid4().hex
            first = start if continued else start - warmup
            todo = frames[first - (start - warmup) :]
            keep = fields.video_id is not None and not fields.last
            results, batch_sizes = [], []
            clip_frames = self.options.clip_frames
            for offset in range(0, len(todo), clip_frames):
                clip = Clip(video_id, first + offset, np.ascontiguousarray(todo[offset : offset + clip_frames]))
                release = not keep and offset + clip_frames >= len(todo)
                done, size = await self.infer(_Work(clip, reset=offset == 0 and not continued, release=release))
                results += [result for result in done if result.frame_index >= start]
                batch_sizes.append(size)
            if keep:
                self.positions[video_id] = (start + len(results), lineage)
                self._forget_evicted()
        finally:
            self.busy.discard(video_id)
        labels = self.segmenter.labels
        return dict(
            video_id=fields.video_id,
            lineage=lineage,
            continued=continued,
            height=int(frames.shape[1]),
            width=int(frames.shape[2]),
            frames=await asyncio.to_thread(lambda: [frame_json(result, labels) for result in results]),
            batch_sizes=batch_sizes,
        )

    def _forget_evicted(self):
        """Drop positions of videos whose memory the segmenter has evicted."""
        for video_id in [v for v in self.positions if v not in self.segmenter.memories]:
            del self.positions[video_id]

    # --- inputs -------------------------------------------------------------------------------

    def _allowed(self, uri: str, prefixes: list[str], loc: tuple[str, ...]) -> str:
        try:
            return resolve(uri, prefixes)
        except ForbiddenURI as error:
            raise _reject(403, loc, str(error)) from None

    def _read_uri(self, uri: str) -> np.ndarray:
        fs, path = filesystem(uri, self.options.endpoint_url)
        if not fs.isfile(path):
            raise _reject(404, ("body", "uri"), f"no file at {uri}")
        size = fs.size(path)
        if size > self.options.max_upload_bytes:
            raise _reject(413, ("body", "uri"), f"{size} bytes, over the limit of {self.options.max_upload_bytes}")
        with fs.open(path, "rb") as handle:
            return self._decode(handle, ("body", "uri"))

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused before any of it is read when its declared length is missing or too large.

        Serve's proxy forwards a body to the replica as fast as the client sends it, so a body is
        only read once its Content-Length is known to be within the limit (a chunked upload
        without one gets 411).
        """
        limit = self.options.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            raise _reject(411, ("header", "content-length"), "send the video with a Content-Length header")
        if int(declared) > limit:
            raise _reject(413, ("body",), f"{declared} bytes, over the limit of {limit}")
        body = await request.body()
        if not body:
            raise _reject(422, ("body",), "empty body: send the bytes of a video file")
        return body

    def _decode(self, handle, loc: tuple[str, ...]) -> np.ndarray:
        """All frames of a clip, (T, H, W, 3) uint8, after checking the frame and pixel limits."""
        try:
            reader = open_video(handle)
        except ValueError as error:
            raise _reject(422, loc, f"not a video that can be decoded (mp4, mkv, webm, ...): {error}") from None
        info = reader.info
        if info.frames > self.options.max_frames:
            raise _reject(
                413, loc, f"{info.frames} frames, over the limit of {self.options.max_frames}: send shorter clips"
            )
        if info.height * info.width > self.options.max_pixels:
            raise _reject(
                413,
                loc,
                f"{info.width}x{info.height} frames, over the limit of {self.options.max_pixels} pixels per frame",
            )
        try:
            return reader.read(0, info.frames)[0]
        except Exception as error:  # decord's own errors, PyAV's ValueError: a truncated or corrupt file
            raise _reject(422, loc, f"the video cannot be decoded: {decoder_message(error)}") from None


def build_app(args: dict) -> Application:
    """The application from its arguments (`ServiceOptions` fields): the ingress and the job runner."""
    options = ServiceOptions.model_validate(args)
    JobConfig(**options.job)  # unknown job settings fail here, at deploy time
    return SegmentService.bind(options, NightlyJobs.bind(options.max_running_jobs))
