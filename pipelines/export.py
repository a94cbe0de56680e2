"""Exporting a run's committed videos as YouTube-VIS results JSON.

Masks tables are read by record batches, one video at a time: a video's tracks are complete only
once its whole table is read (a track's category and score are over all its frames), so its RLE
strings are held until its tracks are emitted, and no more than one video's. `write_youtube_vis_results`
writes the JSON as it goes; `youtube_vis_results` returns the same as a dict (for small outputs).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import pyarrow.parquet as pq

from .storage import Output

MASK_BATCH = 4_096  # masks-table rows per record batch
TRACK_COLUMNS = ["frame_index", "instance_id", "category_id", "score", "height", "width", "rle_counts"]


@dataclass
class Track:
    """One instance id's rows in a video: category votes, scores in row order, and its masks by frame
    (the last row of a frame wins) as (height, width, RLE counts)."""

    categories: Counter = field(default_factory=Counter)
    scores: array = field(default_factory=lambda: array("d"))
    masks: dict = field(default_factory=dict)


def youtube_vis_results(output_uri: str, endpoint_url: str | None = None) -> dict:
    """{"videos": [{id, name, length, width, height}], "results": [{video_id, category_id, score,
    segmentations}]} for every committed video; a track's category is its most frequent one and its
    score the mean over its frames; `segmentations` has one COCO RLE (or None) per frame. Holds every
    track of the run: `write_youtube_vis_results` writes the same without holding them."""
    output = Output(output_uri, endpoint_url)
    videos = committed_videos(output)
    results = [result for video in videos for result in video_results(output, video)]
    return dict(videos=videos, results=results)


def write_youtube_vis_results(output_uri: str, out: TextIO, endpoint_url: str | None = None) -> tuple[int, int]:
    """Write to `out` the JSON text of `youtube_vis_results` (the same text `json.dumps` gives of it),
    video after video, holding one video's tracks at a time; returns (videos, tracks) written."""
    output = Output(output_uri, endpoint_url)
    videos = committed_videos(output)
    out.write('{"videos": ' + json.dumps(videos) + ', "results": [')
    tracks = 0
    for video in videos:
        for result in video_results(output, video):
            out.write((", " if tracks else "") + json.dumps(result))
            tracks += 1
    out.write("]}")
    return len(videos), tracks


def committed_videos(output: Output) -> list[dict]:
    """The "videos" entries, {id, name, length, width, height}, of the output's commit records in the
    order of their paths (ids from 1); ValueError naming the record when one lacks a field."""
    root = output.path("_commits")
    paths = sorted(path for path in output.fs.find(root) if path.endswith(".json"))
    videos = []
    for number, path in enumerate(paths, 1):
        record = json.loads(output.fs.cat_file(path))
        try:
            videos.append(
                dict(
                    id=number,
                    name=record["video_id"],
                    length=record["frames"],
                    width=record["width"],
                    height=record["height"],
                )
            )
        except KeyError as error:
            raise ValueError(f"{path}: commit record without {error}") from error
    return videos


def video_results(output: Output, video: dict) -> Iterator[dict]:
    """The "results" entries of one video (a `committed_videos` entry), one track at a time in the order
    of their first rows, after its masks table is read whole by record batches."""
    tracks = read_tracks(output, video)
    for instance_id in list(tracks):
        track = tracks.pop(instance_id)  # its masks are let go once its entry is made
        segmentations = [None] * video["length"]
        for frame, (height, width, counts) in track.masks.items():
            segmentations[frame] = {"size": [height, width], "counts": counts}
        yield dict(
            video_id=video["id"],
            category_id=track.categories.most_common(1)[0][0],
            score=sum(track.scores) / len(track.scores),
            segmentations=segmentations,
        )


def read_tracks(output: Output, video: dict) -> dict[int, Track]:
    """Instance id -> Track of the video's masks table, read by record batches (semantic rows, without
    an instance id, are skipped); ValueError naming the file when a row's frame is outside the video."""
    path = output.path("masks", f"{video['name']}.parquet")
    tracks: dict[int, Track] = {}
    with output.fs.open(path, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=MASK_BATCH, columns=TRACK_COLUMNS):
            for row in batch.to_pylist():
                if row["instance_id"] is None:
                    continue
                if not 0 <= row["frame_index"] < video["length"]:
                    raise ValueError(
                        f"{path}: a mask of frame {row['frame_index']}, outside the video's {video['length']} frames"
                    )
                track = tracks.setdefault(row["instance_id"], Track())
                track.categories[row["category_id"]] += 1
                track.scores.append(row["score"])
                track.masks[row["frame_index"]] = (row["height"], row["width"], row["rle_counts"])
    return tracks
