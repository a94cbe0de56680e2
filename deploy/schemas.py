"""The application's arguments (`ServiceOptions`) and the HTTP API's request and response models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.options import JOB_KNOBS, MODEL_KNOBS
from tca_core.config import METHODS, TASKS

from .inputs import InputLimits


class ServiceOptions(InputLimits):
    """The application's arguments (`args:` of the application in deploy/serve_config.yaml)."""

    model: str = MODEL_KNOBS["model"].pydantic()
    method: Literal[METHODS] = MODEL_KNOBS["method"].pydantic()
    task: Literal[TASKS] = MODEL_KNOBS["task"].pydantic()
    score_threshold: float = MODEL_KNOBS["score_threshold"].pydantic()
    short_side: int | None = MODEL_KNOBS["short_side"].pydantic()
    acceleration: str | None = MODEL_KNOBS["acceleration"].pydantic()
    device: str = Field("auto", description="auto: the GPU Ray assigned the replica (float16), else cpu")
    torch_threads: int | None = Field(None, ge=1, description="CPU inference threads per replica")
    clip_frames: int = MODEL_KNOBS["clip_frames"].pydantic()
    max_batch_size: int = Field(4, ge=1, description="clips (of different requests) per forward pass")
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    max_videos: int = Field(64, ge=1, description="video memories a replica keeps (least recently used dropped)")
    inference_wedged_s: float = Field(
        60,
        gt=0,
        description="a health probe that waits this long behind the inference thread's work fails the replica's "
        "health check (several full forward passes at the limits)",
    )
    input_prefixes: list[str] = Field([], description="where clips and job inputs may be read from")
    output_prefixes: list[str] = Field([], description="where jobs may write")
    endpoint_url: str | None = JOB_KNOBS["endpoint_url"].pydantic()
    job: dict = Field({}, description="further JobConfig settings of submitted jobs (actors, gpus_per_actor, ...)")
    max_running_jobs: int = Field(2, ge=1, description="submitted jobs running at once, counted from Ray's job list")
    dashboard_address: str = Field(
        "http://127.0.0.1:8265",
        description="Ray's job submission API (the dashboard on the head node, where the jobs deployment runs)",
    )


# --- segmenting clips --------------------------------------------------------------------------


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


class Stats(BaseModel):
    batches: int
    batch_sizes: list[int] = Field(description="clips per forward pass, most recent last (up to 1000)")
    batch_frames: list[int] = Field(description="frames per forward pass")
    max_batch_size: int
    videos_in_memory: int


# --- nightly jobs ------------------------------------------------------------------------------


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="archive prefix to list (s3://bucket/videos/ or a local directory)")
    output: str = Field(description="output prefix (docs/output.md)")
    include: list[str] | None = Field(None, description="globs on the relative path (default: video extensions)")
    exclude: list[str] = []
    force: bool = Field(False, description="recompute videos already committed")


class JobStatus(BaseModel):
    job_id: str
    state: Literal["running", "succeeded", "failed", "stopped"] = Field(
        description="running also while Ray's job manager is still starting it"
    )
    submitted_at: float
    finished_at: float | None
    input: str
    output: str
    summary: dict | None = Field(None, description="the run's summary (manifests/<run_id>.summary.json), once finished")
    error: str | None


class JobLogs(BaseModel):
    job_id: str
    logs: str = Field(description="the job's output so far, as Ray's job manager keeps it")
