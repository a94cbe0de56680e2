"""`NightlyJobs`: the nightly job (`python -m pipelines.nightly`) submitted to Ray's job system.

Each job is a Ray job: `JobSubmissionClient.submit_job` with the job's settings as command-line
arguments, run by Ray's job manager on the head node under the service's own Python (so it finds
the installed project) and the service's code (`working_dir`/`py_modules` of its runtime_env,
when it has them). Ray's job manager keeps each job's status and logs and can stop it; this
deployment keeps nothing of its own but a cache of finished jobs' answers, so a restart of it or of
the application loses no job. Jobs are told apart from other Ray jobs by their metadata
(`JOB_KIND`) and their id (`JOB_ID`).

One replica, on the head node next to the dashboard (`dashboard_address`, default
http://127.0.0.1:8265), serialises submissions, so that `max_running_jobs`, counted from Ray's job
list, holds whichever ingress replica is asked. Once finished, a job's summary is the file the
job writes next to its run manifest (`manifests/<run_id>.summary.json`, docs/output.md), whose run
id the service gives the job: its submission id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import sys
import threading
import uuid

import ray
import requests
from ray import serve
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from pipelines.errors import redact
from pipelines.nightly import JobConfig, parse_args
from pipelines.storage import Output

from .schemas import JobRequest, ServiceOptions

JOB_KIND = {"submitted_by": "tca-video/serve"}  # metadata of the jobs this service submits
JOB_ID = re.compile(r"nightly-[0-9a-f]{32}")
STATES = {
    JobStatus.PENDING: "running",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "stopped",
}
HEAD_NODE = "node:__internal_head__"  # a resource only the head node has
FINISHED_KEPT = 1024  # finished jobs' answers cached (they no longer change)


class JobServiceError(RuntimeError):
    """Ray's job submission API, or the store of a job's summary, did not answer; the message says
    where and why."""


def job_config(options: ServiceOptions, request: JobRequest, input: str, output: str) -> JobConfig:
    """The job of a request: its (allowed, canonical) input and output, the service's model and
    thresholds, and the application's `job` settings."""
    settings = dict(
        options.job,
        input=input,
        output=output,
        exclude=request.exclude,
        force=request.force,
        model=options.model,
        method=options.method,
        task=options.task,
        score_threshold=options.score_threshold,
        short_side=options.short_side,
        acceleration=options.acceleration,
        endpoint_url=options.endpoint_url,
    )
    if request.include is not None:
        settings["include"] = request.include
    return JobConfig(**settings)


def job_arguments(config: JobConfig) -> list[str]:
    """`python -m pipelines.nightly`'s arguments for `config`: its settings that differ from the
    defaults. ValueError naming the settings when the command line cannot carry them."""
    arguments, defaults = [], JobConfig()
    for field in dataclasses.fields(JobConfig):
        value = getattr(config, field.name)
        if value == getattr(defaults, field.name) or value is None or value is False:
            continue
        flag = field.metadata["knob"].flag
        if value is True:
            arguments.append(flag)
        elif isinstance(value, (list, tuple)):
            arguments += [flag, *map(str, value)]
        else:
            arguments += [flag, str(value)]
    _check_round_trip(config, arguments)
    return arguments


def _check_round_trip(config: JobConfig, arguments: list[str]):
    """The job's own argument parser reads `arguments` back as `config`."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed = parse_args(arguments)
    except SystemExit:
        reason = errors.getvalue().strip().splitlines()[-1]
        raise ValueError(f"job settings cannot be passed to python -m pipelines.nightly: {reason}") from None
    differing = [f.name for f in dataclasses.fields(JobConfig) if getattr(parsed, f.name) != getattr(config, f.name)]
    if differing:
        raise ValueError(f"job settings {', '.join(differing)} cannot be passed to python -m pipelines.nightly")


def _job_runtime_env() -> dict:
    """The code the service runs (its runtime_env's working_dir and py_modules), for the job to run."""
    runtime_env = ray.get_runtime_context().runtime_env
    return {key: runtime_env[key] for key in ("working_dir", "py_modules") if runtime_env.get(key)}


def _error(state: str, info: JobDetails, summary: dict | None, logs: str) -> str | None:
    """Why a finished job did not succeed: its failed videos, or the job's last line, or Ray's message."""
    if state == "succeeded":
        return None
    if summary is not None and summary["videos_failed"]:
        return f"{summary['videos_failed']} video(s) failed"
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    reason = lines[-1] if state == "failed" and lines else info.message or state
    return redact(reason)[:1000]


# The class comes after every function its methods call: Serve pickles it, with those globals, here.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0, "resources": {HEAD_NODE: 0.001}})
class NightlyJobs:
    """Submits, reads back and stops the nightly jobs of this service through Ray's job manager."""

    def __init__(self, options: ServiceOptions):
        self.address, self.max_running = options.dashboard_address, options.max_running_jobs
        self.endpoint_url = options.endpoint_url
        self.lock = threading.Lock()  # Serve runs these methods on a thread pool: one submission at a time
        self.client: JobSubmissionClient | None = None  # connected on first use (the dashboard may start later)
        self.finished: dict[str, dict] = {}

    def submit(self, config: JobConfig) -> str | None:
        """Start a job; its id, or None when `max_running` of this service's jobs are running."""
        job_id = f"nightly-{uuid.uuid4().hex}"  # also the run's id: its summary's name
        config = dataclasses.replace(config, run_id=job_id)
        entrypoint = shlex.join([sys.executable, "-m", "pipelines.nightly", *job_arguments(config)])
        with self.lock:
            if self._running() >= self.max_running:
                return None
            metadata = dict(JOB_KIND, input=config.input, output=config.output)
            self._call(
                lambda client: client.submit_job(
                    entrypoint=entrypoint, submission_id=job_id, metadata=metadata, runtime_env=_job_runtime_env()
                )
            )
        return job_id

    def status(self, job_id: str) -> dict | None:
        """The job's state and, once finished, its summary or error; None for no job of this service."""
        if job_id in self.finished:
            return self.finished[job_id]
        info = self._info(job_id)
        if info is None:
            return None
        status = self._status(info)
        if status["state"] != "running":
            while len(self.finished) >= FINISHED_KEPT:
                del self.finished[next(iter(self.finished))]
            self.finished[job_id] = status
        return status

    def logs(self, job_id: str) -> str | None:
        """The job's output so far (redacted); None for no job of this service."""
        if self._info(job_id) is None:
            return None
        return redact(self._call(lambda client: client.get_job_logs(job_id)))

    def stop(self, job_id: str) -> dict | None:
        """Ask Ray to stop the job (it ends within seconds); its status; None for no job of this service."""
        if self._info(job_id) is None:
            return None
        self._call(lambda client: client.stop_job(job_id))
        return self.status(job_id)

    # --- Ray's job manager --------------------------------------------------------------------

    def _call(self, request):
        """`request(client)`, its failures as `JobServiceError` naming the address and the reason."""
        try:
            if self.client is None:
                self.client = JobSubmissionClient(self.address)
            return request(self.client)
        except (requests.RequestException, ConnectionError, RuntimeError) as error:
            raise JobServiceError(f"Ray's job service at {self.address}: {redact(str(error))[:500]}") from None

    def _info(self, job_id: str) -> JobDetails | None:
        """Ray's record of one of this service's jobs, or None."""
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            info = self._call(lambda client: client.get_job_info(job_id))
        except JobServiceError as error:
            if "status code 404" in str(error):  # the client's message for "Job ... does not exist"
                return None
            raise
        return info if JOB_KIND.items() <= (info.metadata or {}).items() else None

    def _running(self) -> int:
        jobs = self._call(lambda client: client.list_jobs())
        return sum(STATES[job.status] == "running" and JOB_KIND.items() <= (job.metadata or {}).items() for job in jobs)

    def _status(self, info: JobDetails) -> dict:
        state = STATES[info.status]
        summary = error = None
        if state != "running":
            logs = self._call(lambda client: client.get_job_logs(info.submission_id))
            summary = self._summary(info.metadata["output"], info.submission_id)
            error = _error(state, info, summary, logs)
        return dict(
            job_id=info.submission_id,
            state=state,
            submitted_at=info.start_time / 1000,
            finished_at=info.end_time / 1000 if info.end_time else None,
            input=info.metadata["input"],
            output=info.metadata["output"],
            summary=summary,
            error=error,
        )

    def _summary(self, output: str, run_id: str) -> dict | None:
        """The run's summary file (the job's run id is its submission id); None without one."""
        store = Output(output, self.endpoint_url)
        path = store.path("manifests", f"{run_id}.summary.json")
        try:
            return json.loads(store.fs.cat_file(path)) if store.fs.exists(path) else None
        except (OSError, ValueError) as error:  # a storage failure, or a file that is not JSON
            raise JobServiceError(f"the job's summary under {output}: {redact(str(error))[:500]}") from None


def check_job_settings(options: ServiceOptions):
    """At deploy time: the application's `job` settings are JobConfig fields that the job's command
    line carries (TypeError or ValueError naming them otherwise)."""
    placeholder = "/"
    job_arguments(job_config(options, JobRequest(input=placeholder, output=placeholder), placeholder, placeholder))
