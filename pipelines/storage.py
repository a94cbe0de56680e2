"""Object storage through fsspec: s3:// (s3fs, standard AWS credentials) or local paths."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

VIDEO_PATTERNS = ("*.mp4", "*.mkv", "*.mov", "*.avi", "*.webm", "*.m4v")


@dataclass(frozen=True)
class VideoRef:
    """A video to process: `video_id` is its path relative to the input prefix (e.g. cams/a.mp4)."""

    video_id: str
    uri: str
    size: int | None = field(default=None, compare=False)  # bytes, when the listing gave it


def filesystem(uri: str, endpoint_url: str | None = None):
    """(fsspec filesystem, path without scheme) for a URI; `endpoint_url` for S3-compatible stores.

    S3 requests that fail transiently (5xx, throttling, timeouts, dropped connections) are retried
    with exponential backoff and jitter by botocore (`s3_retries`); s3fs also retries reads whose
    response body breaks off.
    """
    options = {}
    if uri.startswith("s3://"):
        options["use_listings_cache"] = False  # reruns and resumes must see what was just committed
        options["config_kwargs"] = {"retries": s3_retries()}
        if endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
    return fsspec.core.url_to_fs(uri, **options)


def s3_retries() -> dict:
    """botocore's retry settings: AWS's own AWS_RETRY_MODE and AWS_MAX_ATTEMPTS (attempts in all,
    the first included) when set, else the standard mode with 8 attempts."""
    return {
        "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
        "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "8")),
    }


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def list_videos(prefix: str, include=VIDEO_PATTERNS, exclude=(), endpoint_url=None) -> list[VideoRef]:
    """Files under `prefix` whose relative path matches an include glob and no exclude glob, sorted."""
    fs, root = filesystem(prefix, endpoint_url)
    if not fs.isdir(root):
        raise ValueError(f"input {prefix} is not a directory or prefix")
    scheme = prefix.split("://", 1)[0] + "://" if "://" in prefix else ""
    refs = []
    found = fs.find(root, detail=True)
    for path in sorted(found):
        relative = path[len(root.rstrip("/")) + 1 :]
        if any(fnmatch.fnmatch(relative, g) for g in include) and not any(
            fnmatch.fnmatch(relative, g) for g in exclude
        ):
            refs.append(VideoRef(relative, scheme + path, found[path].get("size")))
    return refs


def read_manifest(uri: str, prefix: str | None = None, endpoint_url=None) -> list[VideoRef]:
    """Videos listed in a CSV, JSONL or Parquet manifest with a `uri` column.

    The video id is the URI relative to `prefix` when given and it matches, else the URI's path.
    """
    fs, path = filesystem(uri, endpoint_url)
    if path.endswith(".parquet"):
        uris = pq.read_table(path, columns=["uri"], filesystem=fs).column("uri").to_pylist()
    else:
        text = fs.cat_file(path).decode()
        if path.endswith(".jsonl"):
            uris = [json.loads(line)["uri"] for line in text.splitlines() if line.strip()]
        elif path.endswith(".csv"):
            rows = list(csv.DictReader(io.StringIO(text)))
            if rows and "uri" not in rows[0]:
                raise ValueError(f"manifest {uri} has no 'uri' column")
            uris = [row["uri"] for row in rows]
        else:
            raise ValueError(f"manifest {uri}: expected .csv, .jsonl or .parquet")
    refs = []
    for video_uri in uris:
        base = (prefix or "").rstrip("/") + "/"
        video_id = video_uri[len(base) :] if prefix and video_uri.startswith(base) else video_uri.split("://", 1)[-1]
        refs.append(VideoRef(video_id.lstrip("/"), video_uri))
    return refs


def write_atomic(fs, path: str, data: bytes):
    """Make `path` hold `data` all at once: one PUT on object stores, write-then-rename locally."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)


def write_parquet(fs, path: str, rows: list[dict], schema: pa.Schema):
    """Write `rows` as one Parquet file at `path`, all at once (write_atomic)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    write_atomic(fs, path, sink.getvalue().to_pybytes())


@contextmanager
def atomic_writer(fs, path: str):
    """A binary file to write `path` through, appearing whole when the block ends (and not at all on an
    error): a multipart upload on object stores (the object exists once it completes), a temporary
    file renamed into place locally. Memory stays at one upload part, whatever is written."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as out:
                yield out
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    else:
        handle = fs.open(path, "wb")
        try:
            yield handle
        except BaseException:
            handle.discard() if hasattr(handle, "discard") else None  # abort the multipart upload
            raise
        handle.close()


class Output:
    """The run's output prefix: per-video tables, commit records and run manifests (docs/output.md).
    Here rather than in `pipelines.nightly` (which re-exports it) so that the readers of an output
    (validate, export) need not import the job and its model code."""

    def __init__(self, uri: str, endpoint_url=None):
        self.uri = uri
        self.fs, self.root = filesystem(uri, endpoint_url)

    def path(self, *parts: str) -> str:
        """The path (without scheme) of `parts` under the output prefix, for `fs`."""
        return join(self.root, *parts)

    def committed_ids(self) -> set[str]:
        """The ids of the videos with a commit record (one listing)."""
        root = self.path("_commits")
        found = self.fs.find(root) if self.fs.exists(root) else []
        return {path[len(root) + 1 : -len(".json")] for path in found if path.endswith(".json")}

    def chunk_records(self) -> dict[str, list[str]]:
        """video id -> the paths of its chunk records under _parts/ (written chunks of videos not yet
        committed), in frame order; one listing."""
        root = self.path("_parts")
        found = self.fs.find(root) if self.fs.exists(root) else []
        records: dict[str, list[str]] = {}
        for path in sorted(found):
            video_id, folder, name = path[len(root) + 1 :].rpartition("/chunks/")
            if folder and name.endswith(".json"):
                records.setdefault(video_id, []).append(path)
        return records

    def committed(self, video_id: str) -> dict | None:
        """The video's commit record, or None when it has none."""
        path = self.path("_commits", f"{video_id}.json")
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def write_table(self, rows: list[dict], schema: pa.Schema, *parts: str):
        write_parquet(self.fs, self.path(*parts), rows, schema)
