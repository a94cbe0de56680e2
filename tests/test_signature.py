"""The nightly job's resume signature comes from the checkpoint's content, not from its path; the
weights' digests are cached per file (tca_core/checkpoint_digest.py)."""

import hashlib
import json
import logging
import os
import shutil

import pytest
import torch

from pipelines.nightly import JobConfig, processing_size
from tca_core import checkpoint_digest
from tca_core.checkpoint_digest import DigestCache, checkpoint_identity, default_cache_path
from tca_core.config import EMBEDDED_MODEL
from tca_core.model import build_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    """Each test's own digest cache, under its own XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "tca-video" / "checkpoint-digests.json"


@pytest.fixture
def hashed(monkeypatch):
    """The files whose weights are read and hashed, in order."""
    files = []
    stream_sha256 = checkpoint_digest.stream_sha256

    def counting(path):
        files.append(path)
        return stream_sha256(path)

    monkeypatch.setattr(checkpoint_digest, "stream_sha256", counting)
    return files


def _saved(model, directory, **options):
    model.save_pretrained(directory, **options)
    processing_size.cache_clear()  # one process reads a checkpoint's preprocessor config once
    return directory


def test_the_cache_lies_under_the_users_cache_dir(digest_cache, monkeypatch, tmp_path):
    assert default_cache_path() == digest_cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / ".cache" / "tca-video" / "checkpoint-digests.json"


def test_the_same_checkpoint_at_another_path_has_the_same_signature(tmp_path):
    copy = shutil.copytree(EMBEDDED_MODEL, tmp_path / "elsewhere" / "swin-shapes-copy")
    assert JobConfig(model=str(copy)).signature() == JobConfig().signature()
    assert JobConfig(model=str(copy), overlap=5).signature() != JobConfig().signature()  # settings still count


def test_changed_weights_change_the_signature(small_config, tmp_path):
    model = build_model(small_config, seed=0)
    directory = _saved(model, tmp_path / "model")
    before = JobConfig(model=str(directory)).signature()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0  # one weight
    _saved(model, directory)
    assert JobConfig(model=str(directory)).signature() != before


def test_a_changed_config_changes_the_signature(small_config, tmp_path):
    directory = _saved(build_model(small_config, seed=0), tmp_path / "model")
    before = JobConfig(model=str(directory)).signature()
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(config, mask_weight=config["mask_weight"] + 1)))
    assert JobConfig(model=str(directory)).signature() != before


def test_the_config_counts_as_parsed_json(small_config, tmp_path):
    directory = _saved(build_model(small_config, seed=0), tmp_path / "model")
    before = checkpoint_identity(directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(reversed(config.items())), indent=7))
    assert checkpoint_identity(directory) == before


def test_the_digest_cache_holds_the_weights_digest_and_a_changed_mtime_invalidates_it(digest_cache, hashed, tmp_path):
    copy = shutil.copytree(EMBEDDED_MODEL, tmp_path / "swin-shapes")
    weights = copy / "model.safetensors"
    first = checkpoint_identity(copy)
    assert hashed == [weights.resolve()]
    entry = json.loads(digest_cache.read_text())["files"][str(weights.resolve())]
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert entry == dict(size=weights.stat().st_size, mtime_ns=weights.stat().st_mtime_ns, sha256=sha256)
    assert first["weights"] == {"model.safetensors": sha256}

    assert checkpoint_identity(copy) == first and len(hashed) == 1  # from the cache: the weights not read

    mtime = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(mtime, mtime))
    assert checkpoint_identity(copy) == first and len(hashed) == 2  # read again, same content
    assert json.loads(digest_cache.read_text())["files"][str(weights.resolve())]["mtime_ns"] == mtime


def test_sharded_weights_count_with_their_index(small_config, hashed, tmp_path):
    model = build_model(small_config, seed=0)
    directory = _saved(model, tmp_path / "sharded", max_shard_size="300KB")
    identity = checkpoint_identity(directory)
    shards = sorted(path.name for path in directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and sorted(identity["weights"]) == sorted(["model.safetensors.index.json", *shards])
    copy = shutil.copytree(directory, tmp_path / "copy")
    assert checkpoint_identity(copy) == identity
    (copy / shards[-1]).unlink()
    with pytest.raises(ValueError, match=f"{copy / 'model.safetensors.index.json'}: .*missing.*{shards[-1]}"):
        checkpoint_identity(copy)


def test_a_checkpoint_without_weights_is_an_error_naming_the_directory(tmp_path):
    directory = tmp_path / "config-only"
    directory.mkdir()
    shutil.copy(EMBEDDED_MODEL / "config.json", directory)
    with pytest.raises(ValueError, match=f"{directory}: no weights file"):
        checkpoint_identity(directory)


def _hub_cache(root, repo_id: str, files) -> None:
    """`files` as the snapshot of `repo_id` in a Hugging Face cache at `root`, in its layout:
    models--<owner>--<name>/refs/main names the commit whose snapshot links to the blobs."""
    repository = root / f"models--{repo_id.replace('/', '--')}"
    (repository / "refs").mkdir(parents=True)
    (repository / "refs" / "main").write_text(COMMIT)
    (repository / "blobs").mkdir()
    snapshot = repository / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for file in files:
        blob = shutil.copy(file, repository / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest())
        (snapshot / file.name).symlink_to(blob)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hugging Face cache huggingface_hub looks in, empty."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_hub_id_in_the_local_cache_is_its_snapshots_content(hub):
    _hub_cache(hub, "tca/swin-shapes", EMBEDDED_MODEL.iterdir())
    assert checkpoint_identity("tca/swin-shapes") == checkpoint_identity(EMBEDDED_MODEL)


def test_a_hub_id_not_in_the_local_cache_is_its_name_and_revision(hub):
    assert checkpoint_identity("tca/not-cached") == dict(hub_id="tca/not-cached", revision="main")


def test_a_hub_snapshot_without_its_weights_is_its_name_and_revision(hub):
    """What the driver alone leaves in the cache: the configs it read, not the weights."""
    _hub_cache(hub, "tca/configs-only", [EMBEDDED_MODEL / "config.json", EMBEDDED_MODEL / "preprocessor_config.json"])
    assert checkpoint_identity("tca/configs-only") == dict(hub_id="tca/configs-only", revision="main")


def test_an_unreadable_cache_is_ignored_with_a_warning_and_rewritten(digest_cache, hashed, caplog):
    digest_cache.parent.mkdir(parents=True)
    digest_cache.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=checkpoint_digest.__name__):
        identity = checkpoint_identity(EMBEDDED_MODEL)
    assert f"{digest_cache}: ignoring the checkpoint digest cache" in caplog.text
    assert identity["weights"]["model.safetensors"] in digest_cache.read_text() and len(hashed) == 1


def test_entries_of_files_gone_are_dropped(digest_cache, tmp_path):
    copy = shutil.copytree(EMBEDDED_MODEL, tmp_path / "gone")
    checkpoint_identity(copy)
    shutil.rmtree(copy)
    checkpoint_identity(EMBEDDED_MODEL)
    assert list(json.loads(digest_cache.read_text())["files"]) == [
        str((EMBEDDED_MODEL / "model.safetensors").resolve())
    ]
    assert os.listdir(digest_cache.parent) == [digest_cache.name]  # no temporary file left


def test_a_cache_that_cannot_be_written_leaves_the_digest_right(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    cache = DigestCache(blocked / "digests.json")  # its directory cannot be made: a file is in the way
    weights = EMBEDDED_MODEL / "model.safetensors"
    with caplog.at_level(logging.WARNING, logger=checkpoint_digest.__name__):
        assert cache.sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
        cache.save()
    assert "cannot write the checkpoint digest cache" in caplog.text
