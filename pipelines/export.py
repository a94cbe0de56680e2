"""Exporting a run's committed videos as YouTube-VIS results JSON."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import partial

import pyarrow.parquet as pq

from .nightly import Output
from .storage import join


def youtube_vis_results(output_uri: str, endpoint_url: str | None = None) -> dict:
    """{"videos": [{id, name, length, width, height}], "results": [{video_id, category_id, score,
    segmentations}]} for every committed video; a track's category is its most frequent one and its
    score the mean over its frames; `segmentations` has one COCO RLE (or None) per frame."""
    output = Output(output_uri, endpoint_url)
    commits = sorted(output.fs.find(output.path("_commits")))
    videos, results = [], []
    for number, path in enumerate(commits, 1):
        record = json.loads(output.fs.cat_file(path))
        videos.append(
            dict(
                id=number,
                name=record["video_id"],
                length=record["frames"],
                width=record["width"],
                height=record["height"],
            )
        )
        table = pq.read_table(join(output.root, "masks", f"{record['video_id']}.parquet"), filesystem=output.fs)
        tracks = defaultdict(partial(_empty_track, record["frames"]))
        for row in table.to_pylist():
            if row["instance_id"] is None:
                continue  # semantic rows are not instances
            track = tracks[row["instance_id"]]
            track["categories"][row["category_id"]] += 1
            track["scores"].append(row["score"])
            track["segmentations"][row["frame_index"]] = {
                "size": [row["height"], row["width"]],
                "counts": row["rle_counts"],
            }
        for track in tracks.values():
            results.append(
                dict(
                    video_id=number,
                    category_id=track["categories"].most_common(1)[0][0],
                    score=sum(track["scores"]) / len(track["scores"]),
                    segmentations=track["segmentations"],
                )
            )
    return dict(videos=videos, results=results)


def _empty_track(frames: int) -> dict:
    return dict(categories=Counter(), scores=[], segmentations=[None] * frames)
