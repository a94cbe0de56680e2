"""The nightly job on local Ray, with S3 served by moto on localhost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import moto_s3

from pipelines.export import youtube_vis_results
from pipelines.nightly import JobConfig, main, run_job
from pipelines.output import decode_frames
from pipelines.storage import filesystem, join
from pipelines.validate import validate
from pipelines.video_io import write_mp4
from tca_core import rle
from tca_core.synthetic import moving_disc_clip

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
# name: (frames, height, width)
SAMPLES = {
    "bottle-detection.mp4": (1189, 360, 640),
    "car-detection.mp4": (377, 432, 768),
    "milk.mkv": (51, 480, 640),
    "walk.mkv": (89, 480, 640),
}


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        yield endpoint


def _s3_archive(endpoint: str) -> str:
    fs, _ = filesystem("s3://archive/", endpoint)
    fs.mkdir("archive")
    for name in SAMPLES:
        prefix = "cams/" if name.endswith(".mkv") else ""
        fs.put_file(str(VIDEOS / name), f"archive/videos/{prefix}{name}")
    fs.pipe_file("archive/videos/corrupt.mp4", np.random.default_rng(0).bytes(50_000))  # not a video at all
    fs.pipe_file("archive/videos/readme.txt", b"not a video")
    return "s3://archive/videos/"


def test_archive_on_s3_every_frame_corrupt_reported_rerun_skips(s3, local_ray, tiny_model):
    config = JobConfig(
        input=_s3_archive(s3),
        output="s3://archive/runs/night1/",
        endpoint_url=s3,
        model=tiny_model,
        short_side=48,
        chunk_frames=256,
        clip_frames=16,
        task="semantic",
    )
    summary = run_job(config, progress=False)
    assert summary["videos_ok"] == 4 and summary["videos_failed"] == 1, summary
    assert "corrupt.mp4" in summary["failures"] and "decode" in summary["failures"]["corrupt.mp4"]
    fs, root = filesystem(config.output, s3)
    for name, (count, height, width) in SAMPLES.items():
        video_id = ("cams/" if name.endswith(".mkv") else "") + name
        frames = pq.read_table(join(root, "frames", f"{video_id}.parquet"), filesystem=fs)
        assert sorted(frames.column("frame_index").to_pylist()) == list(range(count))
        masks = pq.read_table(join(root, "masks", f"{video_id}.parquet"), filesystem=fs)
        assert set(masks.column("frame_index").to_pylist()) == set(range(count))  # every frame has masks
        decoded = decode_frames(masks.slice(0, 50))
        assert set(masks.column("height").to_pylist()) == {height}
        assert set(masks.column("width").to_pylist()) == {width}
        assert decoded and all(m.shape == (height, width) for f in decoded.values() for *_, m in f.semantic)
        assert all(f.label_map(height, width).shape == (height, width) for f in decoded.values())
        record = json.loads(fs.cat_file(join(root, "_commits", f"{video_id}.json")))
        assert record["frames"] == count
    manifest = pq.read_table(join(root, "manifests", f"{summary['run_id']}.parquet"), filesystem=fs).to_pylist()
    assert {r["video_id"]: r["status"] for r in manifest}["corrupt.mp4"] == "failed"

    again = run_job(config, progress=False)
    assert again["videos_skipped"] == 4 and again["videos_ok"] == 0 and again["frames"] == 0


def _disc_archive(directory: Path, count: int = 2) -> Path:
    for seed in range(count):
        frames, _ = moving_disc_clip(30, 64, 96, seed=500 + seed)
        write_mp4(directory / f"disc{seed}.mp4", frames, fps=10)
    return directory


def test_chunked_run_matches_unchunked(local_ray, disc_model, tmp_path):
    model_dir = tmp_path / "disc_model"
    disc_model.save_pretrained(model_dir)
    archive = _disc_archive(tmp_path / "in")
    runs = {}
    for name, chunk in (("whole", 1000), ("chunked", 8)):
        config = JobConfig(
            input=str(archive),
            output=str(tmp_path / name),
            model=str(model_dir),
            chunk_frames=chunk,
            overlap=3,
            clip_frames=4,
        )
        assert run_job(config, progress=False)["videos_ok"] == 2
        runs[name] = {
            v: decode_frames(pq.read_table(tmp_path / name / "masks" / f"{v}.parquet"))
            for v in ("disc0.mp4", "disc1.mp4")
        }
    for video, whole in runs["whole"].items():
        chunked = runs["chunked"][video]
        assert sorted(whole) == sorted(chunked) == list(range(30))
        pairs = set()
        for t in range(30):
            assert len(whole[t].instances) == len(chunked[t].instances) == 1
            (a_id, _, _, _, a), (b_id, _, _, _, b) = whole[t].instances[0], chunked[t].instances[0]
            assert (a & b).sum() / (a | b).sum() > 0.9
            pairs.add((a_id, b_id))
        assert len(pairs) == 1  # one id throughout, in both runs

    exported = youtube_vis_results(str(tmp_path / "chunked"))
    assert [v["name"] for v in exported["videos"]] == ["disc0.mp4", "disc1.mp4"]
    assert [r["video_id"] for r in exported["results"]] == [1, 2]
    for result in exported["results"]:
        assert result["category_id"] == 0 and all(s is not None for s in result["segmentations"])
        assert rle.decode(result["segmentations"][5]).shape == (64, 96)


def test_killed_run_leaves_no_half_written_video_and_resumes(tiny_model, tmp_path):
    archive = tmp_path / "in"
    for seed in range(6):
        frames, _ = moving_disc_clip(40, 64, 96, seed=seed)
        write_mp4(archive / f"v{seed}.mp4", frames, fps=10)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pipelines.nightly",
        "--input",
        str(archive),
        "--output",
        str(out),
        "--model",
        tiny_model,
        "--chunk-frames",
        "10",
        "--score-threshold",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "_commits").glob("*.json")):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = {p.stem for p in (out / "_commits").glob("*.json")}
    assert 0 < len(committed) < 6, committed
    for path in (out / "masks").glob("*.parquet"):
        table = pq.read_table(path)  # every masks file present is whole
        frames = set(table.column("frame_index").to_pylist())
        assert frames == set(range(40)), path

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(committed)} skipped" in resumed.stdout
    assert {p.stem for p in (out / "_commits").glob("*.json")} == {f"v{i}.mp4" for i in range(6)}


def test_exit_status_reports_failures(local_ray, tiny_model, tmp_path, capsys):
    archive = tmp_path / "in"
    archive.mkdir()
    (archive / "empty.mp4").write_bytes(b"")
    shutil.copy(VIDEOS / "milk.mkv", archive / "milk.mkv")
    code = main(
        ["--input", str(archive), "--output", str(tmp_path / "out"), "--model", tiny_model, "--short-side", "32"]
    )
    printed = capsys.readouterr()
    assert code == 1
    assert "1 ok, 1 failed" in printed.out and "FAILED empty.mp4" in printed.err


def test_instance_run_on_a_real_video_with_the_shipped_model(local_ray, tmp_path):
    """The shipped model on a real video, instance task, every score kept."""
    archive = tmp_path / "in"
    archive.mkdir()
    shutil.copy(VIDEOS / "milk.mkv", archive / "milk.mkv")
    config = JobConfig(
        input=str(archive), output=str(tmp_path / "out"), short_side=96, chunk_frames=16, score_threshold=0.0
    )
    summary = run_job(config, progress=False)
    assert summary["videos_ok"] == 1, summary
    frames = pq.read_table(tmp_path / "out" / "frames" / "milk.mkv.parquet")
    assert sorted(frames.column("frame_index").to_pylist()) == list(range(51))
    assert sum(frames.column("num_masks").to_pylist()) > 0
    masks = pq.read_table(tmp_path / "out" / "masks" / "milk.mkv.parquet")
    for frame in decode_frames(masks.slice(0, 40)).values():
        assert all(mask.shape == (480, 640) for *_, mask in frame.instances)


def _job_command(archive: Path, out: Path, model: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.nightly", "--input", str(archive), "--output", str(out)] + [
        "--model",
        model,
        *options,
    ]


def _summary(out: Path) -> dict:
    """The summary of the newest run under `out`."""
    return json.loads(sorted((out / "manifests").glob("*.summary.json"))[-1].read_text())


def test_a_long_recording_killed_midway_resumes_from_its_written_chunks(disc_model, tmp_path):
    """A job killed in the middle of a long recording (4 groups of pictures, 61 chunks) leaves its
    written chunks; the rerun segments only the rest, links ids across the gap, and commits every
    frame exactly once, one disc with one id throughout."""
    model_dir, archive, out = tmp_path / "disc_model", tmp_path / "in", tmp_path / "out"
    disc_model.save_pretrained(model_dir)
    frames, truth = moving_disc_clip(960, 64, 96, seed=700)
    write_mp4(archive / "long.mp4", frames, fps=24)  # x264's default: a key frame every 250 frames
    command = _job_command(archive, out, str(model_dir), "--chunk-frames", "16", "--clip-frames", "8")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "_parts" / "long.mp4" / "chunks"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and len(list(records.glob("*.json"))) < 20:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written = [json.loads(path.read_text()) for path in records.glob("*.json")]
    assert len(written) >= 20 and not (out / "_commits").exists(), len(written)
    stored = sum(record["frames_written"] for record in written)

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = _summary(out)
    assert summary["videos_ok"] == 1 and summary["frames"] == 960, summary
    assert summary["frames_resumed"] == stored < 960, summary  # every written chunk taken, none redone
    masks = decode_frames(pq.read_table(out / "masks" / "long.mp4.parquet"))
    assert sorted(masks) == list(range(960))
    ids = set()
    for index, frame in masks.items():
        assert len(frame.instances) == 1, index
        instance_id, _, _, _, mask = frame.instances[0]
        assert (mask & truth[index]).sum() / (mask | truth[index]).sum() > 0.8, index
        ids.add(instance_id)
    assert ids == {1}  # linked across the chunks the killed run wrote and those the rerun did
    assert not (out / "_parts" / "long.mp4").exists()
    report = validate(str(out))
    assert report.ok and report.frames_lost == 0 and report.frames_duplicated == 0, report.text()
