"""Checking a nightly run's output (`tca-segment validate OUTPUT`; layout in docs/output.md).

For every committed video (one with a commit record): the frames table lists frames 0..N-1 of the
record exactly once; every mask row belongs to one of them, has the recorded frame size and a COCO
RLE whose runs cover exactly that size, with the area the row states; instance ids are unique
within a frame; each frame's `num_masks` matches its mask rows; ids and counts match the record.
Across runs: each manifest row reported ok or skipped has a commit record with the same frames,
each failed row says why and left no commit record of its own run, each commit record is reported
ok by its run's manifest when that manifest exists, and each summary agrees with its manifest.
Tables without a commit record (a run stopped or failed midway) are listed, not counted as
problems: they are not committed, and a rerun rewrites them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from .nightly import Output


@dataclass
class Report:
    output: str
    videos: int = 0  # committed videos checked
    frames: int = 0  # frame rows read
    masks: int = 0  # mask rows read
    frames_lost: int = 0  # frames of committed videos missing from their frames table
    frames_duplicated: int = 0  # frame rows beyond the first for the same frame
    manifests: int = 0
    uncommitted: list[str] = field(default_factory=list)  # video ids with tables but no commit record
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [
            f"output: {self.output}",
            f"committed videos: {self.videos} ({self.frames} frame rows, {self.masks} mask rows)",
            f"frames lost: {self.frames_lost}, frames duplicated: {self.frames_duplicated}",
            f"run manifests: {self.manifests}",
            "uncommitted tables (not committed; a rerun rewrites them): " + (", ".join(self.uncommitted) or "none"),
        ]
        lines.append(f"{len(self.problems)} problem(s):" if self.problems else "no problems")
        return "\n".join(lines + [f"  - {problem}" for problem in self.problems])


def validate(uri: str, endpoint_url: str | None = None) -> Report:
    """Check the output under `uri` (local directory or s3:// prefix)."""
    output, report = Output(uri, endpoint_url), Report(uri)
    commits = {video_id: json.loads(output.fs.cat_file(path)) for video_id, path in _files(output, "_commits", ".json")}
    for video_id, record in sorted(commits.items()):
        _check_video(output, video_id, record, report)
    tables = {video_id for kind in ("frames", "masks") for video_id, _ in _files(output, kind, ".parquet")}
    report.uncommitted = sorted(tables - set(commits))
    _check_manifests(output, commits, report)
    return report


def _files(output: Output, folder: str, suffix: str) -> list[tuple[str, str]]:
    """(video id or run id, path) of the files under `folder` with `suffix`."""
    root = output.path(folder)
    found = output.fs.find(root) if output.fs.exists(root) else []
    return [(path[len(root) + 1 : -len(suffix)], path) for path in sorted(found) if path.endswith(suffix)]


def _check_video(output: Output, video_id: str, record: dict, report: Report):
    report.videos += 1
    lacking = [key for key in ("frames", "height", "width", "masks", "run_id") if key not in record]
    if lacking:
        report.problems.append(f"{video_id}: commit record lacks {', '.join(lacking)}")
        return
    problems = []
    count, height, width = int(record["frames"]), int(record["height"]), int(record["width"])
    if record.get("video_id") != video_id:
        problems.append(f"commit record names video {record.get('video_id')!r}")
    try:
        frames = pq.read_table(output.path("frames", f"{video_id}.parquet"), filesystem=output.fs).to_pylist()
        masks = pq.read_table(output.path("masks", f"{video_id}.parquet"), filesystem=output.fs).to_pylist()
    except Exception as error:
        report.problems.append(f"{video_id}: committed, but its tables cannot be read: {error}")
        return
    report.frames += len(frames)
    report.masks += len(masks)

    indices = Counter(row["frame_index"] for row in frames)
    lost = sum(1 for frame in range(count) if frame not in indices)
    duplicated = sum(n - 1 for n in indices.values())
    outside = sorted(frame for frame in indices if not 0 <= frame < count)
    report.frames_lost += lost
    report.frames_duplicated += duplicated
    if lost or duplicated or outside:
        problems.append(
            f"frames table: {lost} of {count} frames missing, {duplicated} duplicated, {len(outside)} outside 0..{count - 1}"
        )
    others = {row["video_id"] for row in frames + masks} - {video_id}
    if others:
        problems.append(f"rows of other videos: {sorted(others)}")

    bad_size, bad_rle, bad_area, bad_frame, bad_ids = [], [], [], [], []
    per_frame, ids = Counter(), Counter()
    for row in masks:
        frame = row["frame_index"]
        per_frame[frame] += 1
        if frame not in indices:
            bad_frame.append(frame)
        if (row["height"], row["width"]) != (height, width):
            bad_size.append(frame)
        runs = rle_runs(row["rle_counts"])
        if runs is None or sum(runs) != row["height"] * row["width"]:
            bad_rle.append(frame)
        elif sum(runs[1::2]) != row["area"]:
            bad_area.append(frame)
        if row["instance_id"] is not None:
            ids[(frame, row["instance_id"])] += 1
            if row["score"] is None:
                bad_ids.append(frame)
    bad_ids += [frame for (frame, _), n in ids.items() if n > 1]
    for name, frames_with in (
        (f"masks not of the recorded size {height}x{width}", bad_size),
        ("RLEs that do not decode to the row's frame size", bad_rle),
        ("areas that differ from their RLE's", bad_area),
        ("masks of frames not in the frames table", bad_frame),
        ("instance ids repeated within a frame or without a score", bad_ids),
    ):
        if frames_with:
            problems.append(f"{len(frames_with)} {name} (first at frame {min(frames_with)})")
    wrong_counts = [row["frame_index"] for row in frames if row["num_masks"] != per_frame[row["frame_index"]]]
    if wrong_counts:
        problems.append(f"num_masks disagrees with the masks table on {len(wrong_counts)} frames")
    if record.get("masks") != len(masks):
        problems.append(f"commit record says {record.get('masks')} masks, the table has {len(masks)}")
    report.problems += [f"{video_id}: {problem}" for problem in problems]


def _check_manifests(output: Output, commits: dict[str, dict], report: Report):
    reported_ok = set()
    for run_id, path in _files(output, "manifests", ".parquet"):
        report.manifests += 1
        rows = pq.read_table(path, filesystem=output.fs).to_pylist()
        for row in rows:
            video_id, status, record = row["video_id"], row["status"], commits.get(row["video_id"])
            where = f"manifest {run_id}: {video_id} {status}"
            if status in ("ok", "skipped"):
                if record is None:
                    report.problems.append(f"{where}, but it has no commit record")
                elif int(record["frames"]) != row["frames"]:
                    report.problems.append(
                        f"{where} with {row['frames']} frames, its commit record has {record['frames']}"
                    )
                if status == "ok":
                    reported_ok.add((run_id, video_id))
            elif status == "failed":
                if not row["error"]:
                    report.problems.append(f"{where} without a reason")
                if record is not None and record.get("run_id") == run_id:
                    report.problems.append(f"{where}, but the same run committed it")
            else:
                report.problems.append(f"{where}: unknown status")
        summary_path = output.path("manifests", f"{run_id}.summary.json")
        if output.fs.exists(summary_path):
            summary, statuses = json.loads(output.fs.cat_file(summary_path)), Counter(r["status"] for r in rows)
            for status in ("ok", "failed", "skipped"):
                if summary.get(f"videos_{status}") != statuses[status]:
                    report.problems.append(
                        f"summary {run_id}: {summary.get(f'videos_{status}')} videos {status}, its manifest {statuses[status]}"
                    )
    runs = {run_id for run_id, _ in _files(output, "manifests", ".parquet")}
    for video_id, record in sorted(commits.items()):
        run_id = record.get("run_id")
        if run_id in runs and (run_id, video_id) not in reported_ok:
            report.problems.append(f"{video_id}: committed by run {run_id}, whose manifest does not report it ok")


def rle_runs(counts: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString); None if malformed."""
    runs, position = [], 0
    try:
        while position < len(counts):
            value, shift, more = 0, 0, True
            while more:
                char = ord(counts[position]) - 48
                value |= (char & 0x1F) << (5 * shift)
                more = bool(char & 0x20)
                position += 1
                shift += 1
                if not more and char & 0x10:
                    value |= -1 << (5 * shift)
            if len(runs) > 2:
                value += runs[-2]
            runs.append(value)
    except IndexError:  # the string ends inside a number
        return None
    return runs if all(run >= 0 for run in runs) else None
