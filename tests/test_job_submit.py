"""`ray job submit --working-dir . -- python -m pipelines.nightly ...` against a real local cluster."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import free_port

from pipelines.video_io import write_mp4
from tca_core.synthetic import moving_disc_clip

REPO = Path(__file__).resolve().parents[1]


def test_job_submission_to_a_local_cluster(small_config, tmp_path):
    from tca_core.model import build_model

    build_model(small_config).save_pretrained(tmp_path / "model")
    frames, _ = moving_disc_clip(20, 64, 96, seed=3)
    write_mp4(tmp_path / "in" / "clip.mp4", frames, fps=10)
    ray = Path(sys.executable).with_name("ray")
    port, dashboard = free_port(), free_port()
    # Ray >= 2.59 turns on token authentication for local clusters; give head and client the same token.
    # The job's `python` is the head's: the virtual environment's, as on a node where the project is installed.
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    # A temp dir of its own keeps the cluster's address file from leaking into later `ray.init()` calls
    # (short, for Ray's unix socket paths).
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        address = f"http://127.0.0.1:{dashboard}"
        submitted = None
        for _ in range(30):  # the dashboard takes a few seconds to accept jobs
            submitted = subprocess.run(
                [
                    ray,
                    "job",
                    "submit",
                    "--address",
                    address,
                    "--working-dir",
                    ".",
                    "--",
                    "python",
                    "-m",
                    "pipelines.nightly",
                    "--input",
                    str(tmp_path / "in"),
                    "--output",
                    str(tmp_path / "out"),
                    "--model",
                    str(tmp_path / "model"),
                    "--score-threshold",
                    "0",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                env=env,
            )
            if "Job 'raysubmit" in submitted.stdout:  # accepted; until then the head may still be starting
                break
            time.sleep(2)
        assert "succeeded" in submitted.stdout, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "1 ok, 0 failed" in submitted.stdout
        table = pq.read_table(tmp_path / "out" / "frames" / "clip.mp4.parquet")
        assert sorted(table.column("frame_index").to_pylist()) == list(range(20))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_services_job_settings_reach_the_job_through_its_command_line():
    """What `POST /jobs` submits (deploy/jobs.py): the job's settings as `python -m pipelines.nightly`
    arguments, which the job's own parser reads back whole; settings it cannot carry are refused."""
    from deploy.jobs import check_job_settings, job_arguments, job_config
    from deploy.schemas import JobRequest, ServiceOptions
    from pipelines.nightly import parse_args

    options = ServiceOptions(
        model="/models/m", method="none", score_threshold=0.0, short_side=160, job=dict(actors=2, cpus_per_actor=0.5)
    )
    request = JobRequest(input="/in", output="/out", include=["*.mkv"], exclude=["cam/*"], force=True)
    config = job_config(options, request, "/in", "/out")
    arguments = job_arguments(config)
    assert parse_args(arguments) == config
    assert arguments[:4] == ["--input", "/in", "--output", "/out"] and "--force" in arguments
    with pytest.raises(ValueError, match="argument --include: expected at least one argument"):
        check_job_settings(ServiceOptions(job=dict(include=[])))


def test_an_unreachable_job_service_is_named_in_the_error():
    from deploy.jobs import JobServiceError, NightlyJobs
    from deploy.schemas import ServiceOptions

    jobs = NightlyJobs.func_or_class(ServiceOptions(dashboard_address=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(JobServiceError, match=r"Ray's job service at http://127\.0\.0\.1:\d+: "):
        jobs.status(f"nightly-{'0' * 32}")
    assert jobs.status("raysubmit_1") is None  # not an id this service gives: not asked at all
