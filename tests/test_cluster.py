"""The nightly job on a simulated two-node Ray cluster (ray.cluster_utils.Cluster: a head and a
worker node, each its own raylet and object store) that loses its worker node mid-job."""

import threading
import time
from pathlib import Path

import pytest
import ray
from ray._private import state as ray_state  # per-node resources: the only way to see what a node is running
from ray.cluster_utils import Cluster

from pipelines.nightly import JobConfig, run_job
from pipelines.validate import validate
from pipelines.video_io import write_mp4
from tca_core.synthetic import moving_disc_clip

FRAMES = 48


@pytest.fixture
def two_nodes():
    """A head node and a worker node, 2 CPUs each; the driver (this process) joins on the head."""
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, include_dashboard=False))
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def _busy(node_id: str) -> bool:
    """Whether the node holds CPUs for tasks or actors right now."""
    total = ray_state.state.total_resources_per_node().get(node_id, {}).get("CPU", 0)
    return ray_state.state.available_resources_per_node().get(node_id, {}).get("CPU", total) < total


def _remove_when_busy(cluster, worker, out: Path, job: threading.Thread, removed: dict):
    """Remove the worker node, without notice, once chunks are being written and the node is running
    something; records when, and what the node held."""
    deadline = time.time() + 300
    while time.time() < deadline and job.is_alive():
        written = list(out.glob("_parts/*/frames/*.parquet")) + list(out.glob("_commits/*.json"))
        if written and _busy(worker.node_id):
            removed.update(at=time.time(), written=len(written))
            cluster.remove_node(worker, allow_graceful=False)
            return
        time.sleep(0.05)


def test_a_worker_node_lost_mid_job_loses_no_frame_and_duplicates_none(two_nodes, tiny_model, tmp_path):
    cluster, worker = two_nodes
    archive, out = tmp_path / "in", tmp_path / "out"
    for seed in range(6):
        write_mp4(archive / f"v{seed}.mp4", moving_disc_clip(FRAMES, 64, 96, seed=seed)[0], fps=10)
    config = JobConfig(
        input=str(archive),
        output=str(out),
        model=tiny_model,
        short_side=32,
        chunk_frames=8,
        clip_frames=4,
        score_threshold=0.0,
    )
    summary, removed = {}, {}
    job = threading.Thread(target=lambda: summary.update(run_job(config, progress=False)))
    job.start()
    _remove_when_busy(cluster, worker, out, job, removed)
    job.join(timeout=600)

    assert removed, "the job ended before the worker node was busy"
    assert not job.is_alive(), "the job did not finish after the node was removed"
    assert summary["videos_ok"] == 6 and summary["videos_failed"] == 0, list(summary["failures"].values())[:1]
    assert summary["frames"] == 6 * FRAMES
    report = validate(str(out))
    assert report.ok, report.text()
    assert report.frames == 6 * FRAMES and report.frames_lost == 0 and report.frames_duplicated == 0
    print(f"FIGURES node-removed: written_before={removed['written']}, frames={report.frames}, lost=0, duplicated=0")
