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
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import one_line
from .storage import Output


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
    """The Report of checking the output under `uri` (local directory or s3:// prefix). Tables are read
    by record batches, keeping counters per frame, whatever their length."""
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
    """Check one committed video's tables against its commit record, streaming them; adds the counts
    and any problems to `report` (returns nothing)."""
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
        tally = _tally_video(output, video_id, count, height, width)
    except TableError as error:
        report.problems.append(f"{video_id}: committed, but its tables cannot be read: {error}")
        return
    report.frames += tally.frames
    report.masks += tally.masks
    problems += _frame_problems(tally, count, report)
    if tally.others:
        problems.append(f"rows of other videos: {sorted(tally.others)}")
    problems += _mask_problems(tally, height, width)
    if tally.wrong_counts:
        problems.append(f"num_masks disagrees with the masks table on {tally.wrong_counts} frames")
    if record.get("masks") != tally.masks:
        problems.append(f"commit record says {record.get('masks')} masks, the table has {tally.masks}")
    report.problems += [f"{video_id}: {problem}" for problem in problems]


FRAME_BATCH = 65_536  # rows per record batch of the frames table (or of a few int columns of masks)
MASK_BATCH = 4_096  # rows per record batch of the masks table, RLE strings included
MASK_COLUMNS = ["video_id", "frame_index", "instance_id", "score", "height", "width", "area", "rle_counts"]
MASK_CHECKS = {  # a flagged mask row's check -> what the problem calls such rows
    "size": "masks not of the recorded size {height}x{width}",
    "rle": "RLEs that do not decode to the row's frame size",
    "area": "areas that differ from their RLE's",
    "frame": "masks of frames not in the frames table",
    "ids": "instance ids repeated within a frame or without a score",
}
_NO_FRAME = object()  # the frame "before" a table's first row


class TableError(Exception):
    """A committed video's table that cannot be opened or read; the message names the file and why."""


class PerFrame:
    """Rows per frame index, for any number of rows: an array over the recorded frames 0..count-1 and
    a Counter for other indices (None included), so memory is 8 bytes a recorded frame."""

    def __init__(self, count: int):
        self.inside = np.zeros(max(count, 0), dtype=np.int64)
        self.outside: Counter = Counter()

    def add(self, frame):
        """Count one row of `frame`."""
        if isinstance(frame, int) and 0 <= frame < len(self.inside):
            self.inside[frame] += 1
        else:
            self.outside[frame] += 1

    def __getitem__(self, frame) -> int:
        """The rows counted for `frame` (0 when none)."""
        if isinstance(frame, int) and 0 <= frame < len(self.inside):
            return int(self.inside[frame])
        return self.outside[frame]


@dataclass
class Tally:
    """What one committed video's two tables hold, counted while streaming them."""

    listed: PerFrame  # frames-table rows per frame index
    per_frame: PerFrame  # masks-table rows per frame index
    frames: int = 0  # frames-table rows
    masks: int = 0  # masks-table rows
    others: set = field(default_factory=set)  # video ids of rows that are not the video's own
    flags: dict = field(default_factory=lambda: {name: [0, None] for name in MASK_CHECKS})  # [rows, first frame]
    repeated: dict = field(default_factory=dict)  # frame -> its (frame, instance id) pairs found twice or more
    wrong_counts: int = 0  # frames-table rows whose num_masks differs from the frame's mask rows

    def flag(self, check: str, frame):
        """Count a mask row of `frame` failing `check` (a key of MASK_CHECKS)."""
        entry = self.flags[check]
        entry[0] += 1
        entry[1] = _first(entry[1], frame)


def _tally_video(output: Output, video_id: str, count: int, height: int, width: int) -> Tally:
    """The Tally of the video's tables, read by record batches: the frames table, the masks table,
    the masks' ids again for frames whose rows are not contiguous (if any), the frames' num_masks;
    TableError when a table cannot be read."""
    tally = Tally(PerFrame(count), PerFrame(count))
    for batch in _batches(output, "frames", video_id, ["video_id", "frame_index"], FRAME_BATCH):
        tally.others |= _other_videos(batch, video_id)
        tally.frames += batch.num_rows
        for frame in batch.column("frame_index").to_pylist():
            tally.listed.add(frame)
    scattered = _tally_masks(output, video_id, tally, height, width)
    _recount_repeats(output, video_id, scattered, tally)
    for batch in _batches(output, "frames", video_id, ["frame_index", "num_masks"], FRAME_BATCH):
        for frame, num_masks in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            tally.wrong_counts += num_masks != tally.per_frame[frame]
    return tally


def _tally_masks(output: Output, video_id: str, tally: Tally, height: int, width: int) -> set:
    """Count and check the masks table's rows into `tally`, in one pass, keeping the instance ids of
    the current frame only; returns the frames whose rows are not contiguous (their ids are counted
    again by `_recount_repeats`)."""
    current, ids, scattered = _NO_FRAME, Counter(), set()
    for batch in _batches(output, "masks", video_id, MASK_COLUMNS, MASK_BATCH):
        tally.others |= _other_videos(batch, video_id)
        for row in batch.to_pylist():
            frame = row["frame_index"]
            if frame != current:
                _close_frame(tally, current, ids)
                if tally.per_frame[frame]:
                    scattered.add(frame)
                current, ids = frame, Counter()
            tally.masks += 1
            tally.per_frame.add(frame)
            _check_mask(tally, row, height, width)
            if row["instance_id"] is not None:
                ids[row["instance_id"]] += 1
    _close_frame(tally, current, ids)
    return scattered


def _check_mask(tally: Tally, row: dict, height: int, width: int):
    """Flag in `tally` each check that one masks-table row fails."""
    frame = row["frame_index"]
    if not tally.listed[frame]:
        tally.flag("frame", frame)
    if (row["height"], row["width"]) != (height, width):
        tally.flag("size", frame)
    runs = rle_runs(row["rle_counts"])
    if runs is None or sum(runs) != row["height"] * row["width"]:
        tally.flag("rle", frame)
    elif sum(runs[1::2]) != row["area"]:
        tally.flag("area", frame)
    if row["instance_id"] is not None and row["score"] is None:
        tally.flag("ids", frame)


def _close_frame(tally: Tally, frame, ids: Counter):
    """Record in `tally` how many of `frame`'s instance ids (those of its rows just read) repeat."""
    repeats = sum(1 for n in ids.values() if n > 1)
    if frame is not _NO_FRAME and repeats:
        tally.repeated[frame] = repeats


def _recount_repeats(output: Output, video_id: str, scattered: set, tally: Tally):
    """Count the repeated instance ids of the `scattered` frames over the whole masks table (two int
    columns), replacing what their separate runs of rows gave; nothing to read when there are none."""
    if not scattered:
        return
    pairs = Counter()
    for batch in _batches(output, "masks", video_id, ["frame_index", "instance_id"], FRAME_BATCH):
        for frame, instance_id in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            if frame in scattered and instance_id is not None:
                pairs[(frame, instance_id)] += 1
    for frame in scattered:
        tally.repeated.pop(frame, None)
    for (frame, _), n in pairs.items():
        if n > 1:
            tally.repeated[frame] = tally.repeated.get(frame, 0) + 1


def _frame_problems(tally: Tally, count: int, report: Report) -> list[str]:
    """The frames table's problem (frames missing, duplicated or outside 0..count-1), if any; adds the
    frames lost and duplicated to `report`."""
    listed = tally.listed
    lost = int((listed.inside == 0).sum())
    duplicated = int(np.maximum(listed.inside - 1, 0).sum()) + sum(n - 1 for n in listed.outside.values())
    outside = len(listed.outside)
    report.frames_lost += lost
    report.frames_duplicated += duplicated
    if lost or duplicated or outside:
        return [
            f"frames table: {lost} of {count} frames missing, {duplicated} duplicated, {outside} outside 0..{count - 1}"
        ]
    return []


def _mask_problems(tally: Tally, height: int, width: int) -> list[str]:
    """One problem per check that some mask rows fail: how many, and the first frame with one."""
    problems = []
    for check, name in MASK_CHECKS.items():
        flagged, first = tally.flags[check]
        if check == "ids" and tally.repeated:
            flagged += sum(tally.repeated.values())
            first = _first(first, *tally.repeated)
        if flagged:
            problems.append(f"{flagged} {name.format(height=height, width=width)} (first at frame {first})")
    return problems


def _first(*frames):
    """The smallest of the frame indices that are not None (None if all are)."""
    known = [frame for frame in frames if frame is not None]
    return min(known) if known else None


def _other_videos(batch: pa.RecordBatch, video_id: str) -> set:
    """The video ids in a batch's `video_id` column other than `video_id`."""
    return set(pc.unique(batch.column("video_id")).to_pylist()) - {video_id}


def _batches(output: Output, kind: str, video_id: str, columns: list[str], batch_size: int) -> Iterator:
    """The record batches (of `columns`) of the video's `kind` table ("frames" or "masks"), read one
    row group at a time through `output.fs`; TableError naming the file and why when it cannot be
    opened or read."""
    path = output.path(kind, f"{video_id}.parquet")
    try:
        with output.fs.open(path, "rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns)
    except Exception as error:  # any reading error (storage, not Parquet, a column missing): the table's
        raise TableError(f"{path}: {type(error).__name__}: {one_line(error)}") from error


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
