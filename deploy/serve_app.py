"""Ray Serve application: segment clips over HTTP, and start nightly batch jobs.

    serve run deploy/serve_config.yaml        # a laptop: starts Ray and Serve, port 8000
    serve deploy deploy/serve_config.yaml     # a running cluster (docs/deploy.md)

Endpoints (schema at /openapi.json, browsable at /docs):
    POST /segment            a clip named by URI (local path or s3:// under an allowed prefix)
    POST /segment/upload     a clip as the request body (video file bytes); fields as query parameters
    POST /jobs               the nightly job over an archive prefix, as a Ray job (deploy/jobs.py)
    GET  /jobs/{job_id}      its state and, once finished, its summary; /jobs/{job_id}/logs its output
    POST /jobs/{job_id}/stop stop it
    GET  /healthz, /stats    liveness and the replica's recent batch sizes

This module holds the deployment: its endpoints, batching and video memory. The arguments and the
HTTP models are in deploy/schemas.py, reading and decoding clips within the limits in
deploy/inputs.py, the health probe in deploy/health.py, the error answers in deploy/errors.py.

Batching: each request's frames go through `SegmentService.infer` in clips of `clip_frames`;
`@serve.batch` gathers the clips of concurrent requests into one `VideoSegmenter.process` call.

Video memory: a request with a `video_id` continues the cluster memory and instance tracks that
the replica kept for that video when its `start_frame` is the frame after the video's previous
request there (`VideoSegmenter.start_stream`). Otherwise (first clip, another replica served the
previous one, a gap, an evicted memory) the replica starts a fresh memory, running the request's
`warmup_frames` leading frames first to warm it up; their results are not returned. `continued`
says which happened and `lineage` names the instance-id sequence: ids are comparable between
responses with the same lineage only. Clips of one video must be sent one after another (a second
concurrent request for the same video gets 409).
"""

import asyncio
import io
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from pipelines.devices import placement
from tca_core.allocator import INFERENCE_ENV
from tca_core.model import tuned_acceleration
from tca_core.segmenter import Clip, FrameResult, StreamLost, StreamStart, VideoSegmenter

from .errors import JOBS_RETRY_AFTER_S, OVERLOAD_STATUS, REQUESTS_RETRY_AFTER_S, overloaded, reject
from .health import InferenceProbe
from .inputs import allowed, decode, read_body, read_uri
from .jobs import JobServiceError, NightlyJobs, check_job_settings, job_arguments, job_config
from .results import frame_json
from .schemas import (
    ClipFields,
    JobLogs,
    JobRequest,
    JobStatus,
    SegmentRequest,
    SegmentResponse,
    ServiceOptions,
    Stats,
)

# Serve's health checks of a replica (docs/deploy.md, "Health and graceful shutdown"): `check_health`
# returns within health.PROBE_WAIT_S, so its timeout only catches an event loop that stopped.
HEALTH_CHECK_PERIOD_S = 10
HEALTH_CHECK_TIMEOUT_S = 10
# A stopping replica finishes what it holds first: at least the proxy's request_timeout_s (300 s in
# both configs), beyond which the proxy has answered the client already.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 300
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 1  # how often a stopping replica looks whether its requests are done


@dataclass
class _Work:
    clip: Clip
    release: bool  # forget the video afterwards


# Before the deployment: Serve pickles the class, with the globals its methods name, where it is declared.
def _found(result, job_id: str):
    """A jobs call's result; 404 when there is no such job of this service."""
    if result is None:
        raise reject(404, ("path", "job_id"), f"no job {job_id!r}")
    return result


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
    backpressure_config={"status_code": OVERLOAD_STATUS, "retry_after_s": REQUESTS_RETRY_AFTER_S},
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
    health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
    graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
    graceful_shutdown_wait_loop_s=GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
)
@serve.ingress(api)
class SegmentService:
    """The HTTP ingress: holds a `VideoSegmenter` (the model and a memory per video) per replica."""

    def __init__(self, options: ServiceOptions, jobs: DeploymentHandle):
        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        where = placement(options.device)  # "auto": the GPU Ray assigned this replica, else the CPU
        self.segmenter = VideoSegmenter.from_pretrained(
            options.model,
            device=where.device,
            dtype=where.dtype,
            acceleration=tuned_acceleration(options.model, options.method, options.acceleration),
            task=options.task,
            score_threshold=options.score_threshold,
            short_side=options.short_side,
            max_videos=options.max_videos,
        )
        self.options, self.jobs, self.device = options, jobs, where.device
        self.inference = ThreadPoolExecutor(1)  # the only thread that runs the model or touches its memories
        self.probe = InferenceProbe(self.inference, options.inference_wedged_s)
        self.busy: set[str] = set()  # videos with a request in progress
        self.batch_sizes, self.batch_frames = deque(maxlen=1000), deque(maxlen=1000)
        self.infer.set_max_batch_size(options.max_batch_size)
        self.infer.set_batch_wait_timeout_s(options.batch_wait_timeout_s)

    async def check_health(self):
        """Serve's health check (every HEALTH_CHECK_PERIOD_S): raises once the inference thread is stuck."""
        await self.probe.check()

    # --- segmenting ---------------------------------------------------------------------------

    @api.post("/segment", response_model=SegmentResponse)
    async def segment_uri(self, request: SegmentRequest) -> dict:
        """Segment a clip read from a URI under an allowed prefix."""
        uri = allowed(request.uri, self.options.input_prefixes, ("body", "uri"))
        frames = await asyncio.to_thread(read_uri, uri, self.options, self.options.endpoint_url)
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
        body = await read_body(request, self.options)
        frames = await asyncio.to_thread(decode, io.BytesIO(body), ("body",), self.options)
        return await self._segment(frames, fields)

    # --- jobs ---------------------------------------------------------------------------------

    @api.post("/jobs", status_code=202, response_model=JobStatus)
    async def submit_job(self, request: JobRequest) -> dict:
        """Start the nightly job (pipelines.nightly) over an archive prefix; poll GET /jobs/{job_id}."""
        options = self.options
        input = allowed(request.input, options.input_prefixes, ("body", "input"))
        output = allowed(request.output, options.output_prefixes, ("body", "output"))
        try:
            config = job_config(options, request, input, output)
            job_arguments(config)
        except ValueError as error:  # a setting the job refuses, or its command line cannot carry
            raise reject(422, ("body",), str(error)) from None
        job_id = await self._jobs("submit", config)
        if job_id is None:
            message = f"{options.max_running_jobs} jobs are running already"
            raise overloaded(("body",), message, JOBS_RETRY_AFTER_S)
        return await self._jobs("status", job_id)

    @api.get("/jobs/{job_id}", response_model=JobStatus)
    async def job_status(self, job_id: str) -> dict:
        """A job's state; its summary (videos ok/failed, frames, throughput) once finished."""
        return _found(await self._jobs("status", job_id), job_id)

    @api.get("/jobs/{job_id}/logs", response_model=JobLogs)
    async def job_logs(self, job_id: str) -> dict:
        """A job's output so far (its progress, then its totals)."""
        return dict(job_id=job_id, logs=_found(await self._jobs("logs", job_id), job_id))

    @api.post("/jobs/{job_id}/stop", status_code=202, response_model=JobStatus)
    async def stop_job(self, job_id: str) -> dict:
        """Stop a job; it reads `stopped` once it has ended (videos committed so far stay committed)."""
        return _found(await self._jobs("stop", job_id), job_id)

    async def _jobs(self, method: str, *args):
        """A call to the jobs deployment; 503 when Ray's job service (or a summary's store) does not answer."""
        try:
            return await getattr(self.jobs, method).remote(*args)
        except JobServiceError as error:
            raise reject(503, ("server", "jobs"), str(error)) from None

    # --- service ------------------------------------------------------------------------------

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
            videos_in_memory=self.segmenter.videos_in_memory,  # a count: read here, not behind a forward pass
        )

    # --- batched inference --------------------------------------------------------------------

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def infer(self, work: list[_Work]) -> list[tuple[list[FrameResult], int]]:
        """Segment the clips of concurrent requests in one forward pass; (results, batch size) each."""
        self.batch_sizes.append(len(work))
        self.batch_frames.append(sum(len(item.clip.frames) for item in work))
        results = await self._on_inference_thread(self._process, work)
        return [(result, len(work)) for result in results]

    def _process(self, work: list[_Work]) -> list[list[FrameResult] | StreamLost]:
        """The batch's clips through the model; a clip whose stream was lost (its video's memory
        evicted by other videos since its request began) gets `StreamLost` instead, the others run."""
        lost = {
            item.clip.video_id
            for item in work
            if not self.segmenter.holds_stream(item.clip.video_id, item.clip.lineage)
        }
        try:
            done = iter(self.segmenter.process([item.clip for item in work if item.clip.video_id not in lost]))
            return [
                StreamLost(f"video {item.clip.video_id!r}") if item.clip.video_id in lost else next(done)
                for item in work
            ]
        finally:
            for item in work:
                if item.release:
                    self.segmenter.drop(item.clip.video_id)

    async def _on_inference_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.inference, function, *args)

    async def _segment(self, frames: np.ndarray, fields: ClipFields) -> dict:
        """Segment decoded frames, continuing the video's memory when this replica has it."""
        where = "body" if isinstance(fields, SegmentRequest) else "query"
        warmup, start = fields.warmup_frames, fields.start_frame
        if warmup >= len(frames):
            raise reject(422, (where, "warmup_frames"), f"{warmup} warm-up frames leave none of the {len(frames)}")
        if warmup > start:
            raise reject(422, (where, "warmup_frames"), f"{warmup} warm-up frames precede start_frame {start}")
        video_id = fields.video_id or f"#request-{uuid.uuid4().hex}"  # not a valid client id: no collision
        if video_id in self.busy:
            raise reject(409, (where, "video_id"), f"a request for video {video_id!r} is in progress on this replica")
        self.busy.add(video_id)
        try:
            stream = await self._on_inference_thread(self.segmenter.start_stream, video_id, start, warmup)
            results, batch_sizes = await self._run_clips(stream, frames[stream.first - (start - warmup) :], fields)
        finally:
            self.busy.discard(video_id)
        labels = self.segmenter.labels
        return dict(
            video_id=fields.video_id,
            lineage=stream.lineage,
            continued=stream.continued,
            height=int(frames.shape[1]),
            width=int(frames.shape[2]),
            frames=await asyncio.to_thread(lambda: [frame_json(result, labels) for result in results]),
            batch_sizes=batch_sizes,
        )

    async def _run_clips(
        self, stream: StreamStart, todo: np.ndarray, fields: ClipFields
    ) -> tuple[list[FrameResult], list[int]]:
        """The frames from `stream.first` on, clip by clip through `infer`: the results from
        `start_frame` on and each clip's batch size. A video whose request fails is forgotten."""
        keep = fields.video_id is not None and not fields.last
        clip_frames = self.options.clip_frames
        results, batch_sizes = [], []
        try:
            for offset in range(0, len(todo), clip_frames):
                pixels = np.ascontiguousarray(todo[offset : offset + clip_frames])
                clip = Clip(stream.video_id, stream.first + offset, pixels, lineage=stream.lineage)
                release = not keep and offset + clip_frames >= len(todo)
                done, size = await self.infer(_Work(clip, release=release))
                if isinstance(done, StreamLost):
                    message = f"{done}: more videos in flight than this replica keeps (max_videos); send it again"
                    raise overloaded(("body",), message, REQUESTS_RETRY_AFTER_S)
                results += [result for result in done if result.frame_index >= fields.start_frame]
                batch_sizes.append(size)
        except BaseException:  # failed or cancelled: its memory is not where the next request expects it
            self.inference.submit(self.segmenter.drop, stream.video_id)  # queued before any later start_stream
            raise
        return results, batch_sizes


def build_app(args: dict) -> Application:
    """The application from its arguments (`ServiceOptions` fields): the ingress and the job runner."""
    options = ServiceOptions.model_validate(args)
    check_job_settings(options)  # unknown job settings fail here, at deploy time
    return SegmentService.bind(options, NightlyJobs.bind(options))
