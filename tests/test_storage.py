"""Listing an archive and reading manifests (local paths; S3 is covered in test_nightly)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.storage import VideoRef, list_videos, read_manifest, write_atomic


def test_list_videos_with_globs(tmp_path):
    for name in ("a.mp4", "cams/b.mkv", "cams/tmp/c.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    refs = list_videos(str(tmp_path), exclude=["cams/tmp/*"])
    assert refs == [VideoRef("a.mp4", str(tmp_path / "a.mp4")), VideoRef("cams/b.mkv", str(tmp_path / "cams/b.mkv"))]
    assert [r.video_id for r in list_videos(str(tmp_path), include=["*.mkv"])] == ["cams/b.mkv"]
    with pytest.raises(ValueError, match="not a directory"):
        list_videos(str(tmp_path / "missing"))


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifests(tmp_path, kind):
    uris = ["s3://bucket/videos/cams/a.mp4", "s3://bucket/other/b.mp4"]
    path = tmp_path / f"list.{kind}"
    if kind == "csv":
        path.write_text("uri,note\n" + "".join(f"{u},x\n" for u in uris))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"uri": u}) + "\n" for u in uris))
    else:
        pq.write_table(pa.table({"uri": uris}), path)
    refs = read_manifest(str(path), prefix="s3://bucket/videos/")
    assert refs == [VideoRef("cams/a.mp4", uris[0]), VideoRef("bucket/other/b.mp4", uris[1])]


def test_bad_manifests_are_clear_errors(tmp_path):
    (tmp_path / "list.csv").write_text("path\nx.mp4\n")
    with pytest.raises(ValueError, match="no 'uri' column"):
        read_manifest(str(tmp_path / "list.csv"))
    (tmp_path / "list.txt").write_text("x.mp4\n")
    with pytest.raises(ValueError, match="expected .csv, .jsonl or .parquet"):
        read_manifest(str(tmp_path / "list.txt"))


def test_atomic_local_write_leaves_no_temporary(tmp_path):
    import fsspec

    fs = fsspec.filesystem("file")
    write_atomic(fs, str(tmp_path / "deep" / "f.bin"), b"abc")
    write_atomic(fs, str(tmp_path / "deep" / "f.bin"), b"abcd")
    assert (tmp_path / "deep" / "f.bin").read_bytes() == b"abcd"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["f.bin"]
