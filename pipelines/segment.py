"""Segmenting one video file clip by clip and writing its output tables (single process).

The Ray Data job (issue 4) will distribute the same steps; the demo uses this directly.
"""

from __future__ import annotations

from pathlib import Path

from tca_core.segmenter import Clip, FrameResult, VideoSegmenter

from .output import FRAMES_SCHEMA, MASKS_SCHEMA, result_rows, write_table
from .video_io import VideoInfo, open_video, probe, read_frames


def segment_video(segmenter: VideoSegmenter, path, video_id: str, clip_frames: int = 8, progress=None):
    """Decode `path` with decord and segment it clip by clip; returns (VideoInfo, frame results)."""
    reader = open_video(path)
    info = probe(reader)
    results: list[FrameResult] = []
    for start in range(0, info.frames, clip_frames):
        frames = read_frames(reader, start, min(start + clip_frames, info.frames))
        results += segmenter.process([Clip(video_id, start, frames)])[0]
        if progress:
            progress(len(results), info.frames)
    segmenter.drop(video_id)
    return info, results


def write_outputs(out_dir: Path, video_id: str, uri: str, info: VideoInfo, results, labels) -> tuple[Path, Path]:
    """OUT/masks/<video_id>.parquet and OUT/frames/<video_id>.parquet."""
    masks, frames = result_rows(video_id, uri, info.fps, results, labels)
    paths = out_dir / "masks" / f"{video_id}.parquet", out_dir / "frames" / f"{video_id}.parquet"
    for path, rows, schema in zip(paths, (masks, frames), (MASKS_SCHEMA, FRAMES_SCHEMA)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table(rows, schema, path)
    return paths
