"""`ray job submit --working-dir . -- python -m pipelines.nightly ...` against a real local cluster."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.video_io import write_mp4
from tca_core.synthetic import moving_disc_clip

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_job_submission_to_a_local_cluster(small_config, tmp_path):
    from tca_core.model import build_model

    build_model(small_config).save_pretrained(tmp_path / "model")
    frames, _ = moving_disc_clip(20, 64, 96, seed=3)
    write_mp4(tmp_path / "in" / "clip.mp4", frames, fps=10)
    ray = Path(sys.executable).with_name("ray")
    port, dashboard = _free_port(), _free_port()
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        address = f"http://127.0.0.1:{dashboard}"
        submitted = None
        for _ in range(60):  # the dashboard takes a few seconds to accept jobs
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
            )
            if "Job 'raysubmit" in submitted.stdout or "succeeded" in submitted.stdout:
                break
            time.sleep(2)
        assert "succeeded" in submitted.stdout, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "1 ok, 0 failed" in submitted.stdout
        table = pq.read_table(tmp_path / "out" / "frames" / "clip.mp4.parquet")
        assert sorted(table.column("frame_index").to_pylist()) == list(range(20))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
