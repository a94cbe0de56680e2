"""Pipeline efficiency: frames/s of the nightly job divided by frames/s of the model alone, same frames.

The model alone: a VideoSegmenter in a process of its own, with the allocator settings of the job's
actor, segments frames already decoded into memory, clip by clip, with the job's settings. The job:
`run_job` on the same videos with local Ray (decoding, RLE, Parquet and commits included). Both run
in one invocation, one after the other.

Where the job's time goes: the CPU seconds of the model alone (its timed loop) and of the job's
processes by role (driver, inference actor, task workers, Ray's daemons and Ray Data's own actors;
/proc sampled every 0.5 s, Linux). On a machine whose cores the job keeps busy, its wall time is at
least its CPU seconds over the cores, so `efficiency_ceiling` (the model alone's seconds over that
bound) is the most this job's work allows on these cores, whatever its scheduling.

    python -m benchmarks.pipeline_efficiency            # all the sample videos in ../shared/data/videos
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.cpu import TreeCPU
from pipelines.nightly import JobConfig, run_job
from pipelines.video_io import open_video
from tca_core.allocator import INFERENCE_ENV
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.segmenter import Clip, VideoSegmenter

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def model_alone_as_the_actor_runs(paths: list[Path], config: JobConfig) -> tuple[int, float, float]:
    """`model_alone` in a fresh process whose allocator starts with the job actor's settings."""
    saved = dict(os.environ)
    os.environ.update(INFERENCE_ENV)  # read by the child's C library when it starts
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(model_alone, paths, config).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def model_alone(paths: list[Path], config: JobConfig) -> tuple[int, float, float]:
    """(frames, seconds, CPU seconds) of segmenting `paths`' frames, decoded beforehand."""
    segmenter = VideoSegmenter.from_pretrained(
        config.model,
        acceleration=AccelerationConfig(**config.settings()["acceleration"]),  # exactly what the job runs
        task=config.task,
        score_threshold=config.score_threshold,
        short_side=config.short_side,
    )
    frames = {path.name: reader.read(0, reader.info.frames)[0] for path in paths for reader in [open_video(path)]}
    segmenter.process([Clip("warm-up", 0, next(iter(frames.values()))[:1])])
    segmenter.drop("warm-up")
    begin, cpu, count = time.perf_counter(), _cpu_seconds(), 0
    for name, video in frames.items():
        for start in range(0, len(video), config.clip_frames):
            count += len(segmenter.process([Clip(name, start, video[start : start + config.clip_frames])])[0])
        segmenter.drop(name)
    return count, time.perf_counter() - begin, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all of the process's threads
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--videos", nargs="+", default=sorted(p.name for p in SHARED_VIDEOS.glob("*") if p.suffix in (".mp4", ".mkv"))
    )
    parser.add_argument("--video-dir", type=Path, default=SHARED_VIDEOS)
    parser.add_argument("--model", default=str(EMBEDDED_MODEL))
    parser.add_argument("--method", default="tca")
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        archive = Path(work) / "videos"
        archive.mkdir()
        for name in args.videos:
            (archive / name).symlink_to((args.video_dir / name).resolve())
        config = JobConfig(
            input=str(archive),
            output=str(Path(work) / "out"),
            model=args.model,
            method=args.method,
            short_side=args.short_side,
            ray_address="local",
            torch_threads=os.cpu_count(),  # as `tca-segment demo`; the model alone uses every core too
        )
        frames, seconds, model_cpu = model_alone_as_the_actor_runs(sorted(archive.iterdir()), config)
        with TreeCPU(os.getpid(), from_now=True) as job_cpu:
            summary = run_job(config)
    model_fps = frames / seconds
    cores = os.cpu_count()
    # After start-up (Ray, planning, loading the model, the first chunk): the rate a long night runs at.
    after_start = (frames - config.chunk_frames) / (summary["seconds"] - summary["first_output_seconds"])
    report = dict(
        videos=args.videos,
        frames=frames,
        method=args.method,
        short_side=args.short_side,
        model_alone_fps=model_fps,
        job_fps_end_to_end=summary["frames_per_second"],
        job_start_seconds=summary["first_output_seconds"],
        job_fps_after_start=after_start,
        efficiency_end_to_end=summary["frames_per_second"] / model_fps,
        efficiency_after_start=after_start / model_fps,
        cores=cores,
        model_alone_cpu_seconds=model_cpu,
        job_cpu_seconds=job_cpu.seconds,
        job_cpu_seconds_by_role=job_cpu.by_role(),
        efficiency_ceiling=seconds / (job_cpu.seconds / cores),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline_efficiency.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
