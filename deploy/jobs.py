"""`NightlyJobs`: runs the nightly batch job (`pipelines.nightly.run_job`) on request and tracks it.

Each job is a Ray task on the service's cluster; the driver-side work of the job (listing, linking,
committing) is light, so the task asks for no CPU and Ray Data schedules the heavy stages. One
replica holds the job table, so any ingress replica can answer for any job. The table lives in
memory: if this replica restarts, its running jobs stop with it and are forgotten. A job's outputs
are committed per video, so submitting it again resumes it.
"""

from __future__ import annotations

import time
import uuid

import ray
from ray import serve

from pipelines.errors import redact
from pipelines.nightly import JobConfig, run_job

_run_job = ray.remote(num_cpus=0)(run_job)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class NightlyJobs:
    """The job table: job id -> state, input, output, and the summary or error once finished."""

    def __init__(self, max_running: int = 2):
        self.max_running = max_running
        self.jobs: dict[str, dict] = {}

    def submit(self, config: JobConfig) -> str | None:
        """Start a job; its id, or None when `max_running` jobs are still running."""
        if sum(self._state(job_id)["state"] == "running" for job_id in self.jobs) >= self.max_running:
            return None
        job_id = uuid.uuid4().hex
        self.jobs[job_id] = dict(
            job_id=job_id,
            state="running",
            submitted_at=time.time(),
            finished_at=None,
            input=config.input,
            output=config.output,
            summary=None,
            error=None,
            ref=_run_job.remote(config, progress=False),
        )
        return job_id

    def status(self, job_id: str) -> dict | None:
        """The job's state (running, succeeded or failed) and, once finished, its summary or error."""
        return self._state(job_id) if job_id in self.jobs else None

    def _state(self, job_id: str) -> dict:
        job = self.jobs[job_id]
        if job["state"] == "running":
            done, _ = ray.wait([job["ref"]], timeout=0)
            if done:
                try:
                    job["summary"] = ray.get(job["ref"])
                    failed = job["summary"]["videos_failed"]
                    job["state"] = "failed" if failed else "succeeded"
                    job["error"] = f"{failed} video(s) failed" if failed else None
                except Exception as error:  # the job itself failed (bad input prefix, lost cluster, ...)
                    job["state"], job["error"] = "failed", redact(str(error).strip().splitlines()[-1][:1000])
                job["finished_at"] = time.time()
        return {key: value for key, value in job.items() if key != "ref"}
