"""What a checkpoint is, by its content rather than by where it lies.

`checkpoint_identity` describes a checkpoint by its config files (parsed JSON) and the sha256 of
each of its weights files, so the same checkpoint in another directory, or a hub id and its local
snapshot, describe the same way. The weights are hashed in fixed-size reads (never whole in
memory), and each file's digest is kept in a small JSON cache (`default_cache_path`), valid while
the file's absolute path, size and mtime_ns stay the same: a rerun on an unchanged checkpoint
reads no weights, only their sizes and times.

A safetensors file does not identify its own content cheaply: its header holds each tensor's
dtype, shape and byte offsets and a free-form metadata map (transformers writes {"format": "pt"}),
but no checksum, so a checkpoint with one changed weight has the same header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from .config import PREPROCESSOR_CONFIG

CONFIG = "config.json"
# The weights `from_pretrained` loads, in the order it looks for them: a single file, else an index
# naming the shards (the index and every shard it names are hashed).
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The revision `from_pretrained` loads when given none (load_model passes none).
DEFAULT_REVISION = "main"
READ_BYTES = 2**20  # one read while hashing weights
CACHE_FORMAT = 1

log = logging.getLogger(__name__)


def checkpoint_identity(source: str | Path, cache: Path | None = None) -> dict:
    """What the checkpoint at `source` is: {"config": its config.json, "preprocessor": its
    preprocessor_config.json or None, "weights": {file: sha256}}; `cache`: the digest cache file
    (None: `default_cache_path`).

    `source` resolves as `tca_core.model.load_model` resolves it: a local directory, else a hub id,
    found here only in the local Hugging Face cache (nothing is downloaded). A hub id whose snapshot
    is not in the cache, or lacks its config or weights, is {"hub_id": source, "revision": "main"}:
    then the name stands for the content, a new upload under that name goes unnoticed, and once the
    snapshot's weights are in the cache (the inference actors download them) the next run signs
    by content, differently, and recomputes."""
    directory = local_checkpoint(source)
    if directory is None:
        return dict(hub_id=str(source), revision=DEFAULT_REVISION)
    preprocessor = directory / PREPROCESSOR_CONFIG
    return dict(
        config=read_json(directory / CONFIG),
        preprocessor=read_json(preprocessor) if preprocessor.is_file() else None,
        weights=weights_digests(directory, cache),
    )


def local_checkpoint(source: str | Path) -> Path | None:
    """The directory holding `source`'s files: `source` itself when it is a directory, else the
    snapshot of hub id `source` in the local Hugging Face cache when it holds a config and weights;
    None otherwise."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(str(source), revision=DEFAULT_REVISION, local_files_only=True))
        weight_files(snapshot)  # all there: a snapshot may hold only the configs the driver read
    except (OSError, ValueError):  # not in the cache; not a valid repository id; weights missing
        return None
    return snapshot if (snapshot / CONFIG).is_file() else None


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the checkpoint's config: {error}") from error


def weight_files(directory: Path) -> list[Path]:
    """The weights files of the checkpoint in `directory` that `from_pretrained` loads (WEIGHTS)."""
    for name in WEIGHTS:
        path = directory / name
        if not path.is_file():
            continue
        return [path, *_shards(path)] if name.endswith(".index.json") else [path]
    raise ValueError(f"{directory}: no weights file (one of {', '.join(WEIGHTS)})")


def _shards(index: Path) -> list[Path]:
    """The shards that the index file at `index` names (its weight_map's values), sorted."""
    content = read_json(index)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: not a weights index: no weight_map naming the shards")
    shards = [index.parent / name for name in sorted(set(map(str, weight_map.values())))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ValueError(f"{index}: names shards that are missing: {missing}")
    return shards


def weights_digests(directory: Path, cache: Path | None = None) -> dict[str, str]:
    """{file name relative to `directory`: sha256} of the checkpoint's weights files, through the
    digest cache at `cache` (None: `default_cache_path`)."""
    digests = DigestCache(cache or default_cache_path())
    result = {path.relative_to(directory).as_posix(): digests.sha256(path) for path in weight_files(directory)}
    digests.save()
    return result


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/tca-video/checkpoint-digests.json (XDG_CACHE_HOME unset: ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tca-video" / "checkpoint-digests.json"


def stream_sha256(path: Path) -> str:
    """The sha256 of the file at `path`, read READ_BYTES at a time."""
    digest, buffer = hashlib.sha256(), bytearray(READ_BYTES)
    view = memoryview(buffer)
    try:
        with open(path, "rb") as file:
            while count := file.readinto(buffer):
                digest.update(view[:count])
    except OSError as error:
        raise ValueError(f"{path}: cannot read the weights: {error.strerror or error}") from error
    return digest.hexdigest()


class DigestCache:
    """File digests kept in the JSON file at `path`: {"format": 1, "files": {absolute path: {"size",
    "mtime_ns", "sha256"}}}. An entry holds while the file (symlinks resolved) has the same size and
    mtime_ns (writing a file sets its mtime; a file replaced by another of the same size with its
    mtime set back to the old one's would go unnoticed). A cache that cannot be read is ignored and one that cannot be
    written is skipped, each with a warning: the digests stay right, only the next run reads the
    weights again."""

    def __init__(self, path: Path):
        self.path = path
        self.files = self._load()
        self.changed = False

    def sha256(self, file: Path) -> str:
        real = file.resolve()
        before = real.stat()
        entry = self.files.get(str(real), {})
        if (entry.get("size"), entry.get("mtime_ns")) == (before.st_size, before.st_mtime_ns):
            return entry["sha256"]
        digest = stream_sha256(real)
        after = real.stat()
        if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):  # not written meanwhile
            self.files[str(real)] = dict(size=after.st_size, mtime_ns=after.st_mtime_ns, sha256=digest)
            self.changed = True
        return digest

    def save(self):
        """Write the cache, all at once (write-then-rename), without the entries of files gone or changed."""
        if not self.changed:
            return
        files = {path: entry for path, entry in self.files.items() if _unchanged(path, entry)}
        data = json.dumps(dict(format=CACHE_FORMAT, files=files), indent=1, sort_keys=True)
        try:
            _write_atomic(self.path, data)
        except OSError as error:
            log.warning("%s: cannot write the checkpoint digest cache: %s", self.path, error)
            return
        self.changed = False

    def _load(self) -> dict:
        try:
            cache = json.loads(self.path.read_text())
            files = cache["files"] if cache.get("format") == CACHE_FORMAT else {}
            return {path: entry for path, entry in files.items() if isinstance(entry.get("sha256"), str)}
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("%s: ignoring the checkpoint digest cache: %s", self.path, error)
            return {}


def _unchanged(path: str, entry: dict) -> bool:
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)


def _write_atomic(path: Path, text: str):
    """`path` holds `text` all at once: written to a temporary file beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
