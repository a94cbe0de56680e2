"""Writing generated videos as H.264 MP4 with YouTube-VIS ground truth (COCO RLE)."""

from __future__ import annotations

import json
from pathlib import Path

from tca_core import rle
from tca_core.synthetic import CATEGORIES, THING_CATEGORIES, SyntheticVideo

from .video_io import write_mp4


def youtube_vis_entry(video_id: int, file_name: str, video: SyntheticVideo, objects) -> tuple[dict, list[dict]]:
    """The YouTube-VIS `videos` entry and `annotations` (one per track) of a generated video."""
    entry = dict(id=video_id, file_name=file_name, width=video.width, height=video.height, length=video.num_frames)
    tracks: dict[int, dict] = {}
    for t, frame_objects in enumerate(objects):
        for obj in frame_objects:
            track = tracks.setdefault(
                obj.track_id,
                dict(
                    video_id=video_id,
                    category_id=obj.category_id,
                    iscrowd=0,
                    segmentations=[None] * video.num_frames,
                    areas=[None] * video.num_frames,
                    bboxes=[None] * video.num_frames,
                ),
            )
            encoded = rle.encode(obj.mask)
            track["segmentations"][t] = encoded
            track["areas"][t] = rle.area(encoded)
            track["bboxes"][t] = rle.bbox(encoded)
    return entry, [dict(id=video_id * 1000 + track_id, **track) for track_id, track in sorted(tracks.items())]


def write_generated(out_dir: Path, seeds: list[int], num_frames: int = 48, fps: float = 12.0) -> Path:
    """OUT/videos/<seed>.mp4 for each seed and OUT/annotations.json (YouTube-VIS); returns the JSON path."""
    videos, annotations = [], []
    for seed in seeds:
        video = SyntheticVideo(seed, num_frames)
        frames, objects = video.frames()
        file_name = f"videos/{seed}.mp4"
        write_mp4(out_dir / file_name, frames, fps)
        entry, tracks = youtube_vis_entry(len(videos) + 1, file_name, video, objects)
        videos.append(dict(entry, seed=seed, camera=video.camera_kind))
        annotations += tracks
    categories = [dict(id=c, name=CATEGORIES[c], supercategory="shape") for c in THING_CATEGORIES]
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(dict(videos=videos, annotations=annotations, categories=categories)))
    return path
