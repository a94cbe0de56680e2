"""Reliability of the nightly job: bad inputs, worker faults, storage faults, secrets, `validate`.

Real components: local Ray, moto's S3 server over HTTP behind a fault-injecting proxy
(helpers.FlakyProxy), real video files (tests/bad_inputs.py). Each job test prints a `FIGURES`
line (pytest -s) with what it tried and what it counted; docs/reliability.md quotes them.
"""

import json
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_inputs import write_bad_inputs, write_faststart, write_trimmed
from helpers import FlakyProxy, moto_s3

from pipelines.cli import main as cli
from pipelines.commit import commit_video
from pipelines.errors import redact
from pipelines.nightly import JobConfig, VideoLedger, run_job
from pipelines.nightly import main as nightly_main
from pipelines.stages import Chunking, decode_segment, probe_video, video_row, write_chunk
from pipelines.storage import filesystem, join
from pipelines.validate import validate
from pipelines.video_io import ByteSource, open_video, stream_frames, write_mp4
from tca_core.synthetic import moving_disc_clip

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
ACCESS_KEY, SECRET_KEY = "AKIATCARELIABILITY01", "tca-reliability-secret-Zq8vW2xK"
DISC_FRAMES = 24


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server, with credentials distinctive enough to search for (test_no_credentials_...)."""
    with moto_s3() as endpoint:
        os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        filesystem("s3://reliability/", endpoint)[0].mkdir("reliability")
        yield endpoint


def _config(tiny_model, **settings) -> JobConfig:
    """Small and fast: 8-frame chunks, every mask kept (a random-weight model scores low)."""
    return JobConfig(model=tiny_model, short_side=32, chunk_frames=8, clip_frames=4, score_threshold=0.0, **settings)


def _disc_videos(directory: Path, count: int = 3) -> dict[str, int]:
    """Videos of DISC_FRAMES frames (3 chunks of 8 each); {file name: frames}."""
    for seed in range(count):
        frames, _ = moving_disc_clip(DISC_FRAMES, 64, 96, seed=seed)
        write_mp4(directory / f"v{seed}.mp4", frames, fps=10)
    return {f"v{seed}.mp4": DISC_FRAMES for seed in range(count)}


def _every_frame_once(output: str, expected: dict[str, int], endpoint_url=None) -> dict:
    """Each video's frames table lists 0..N-1 exactly once, and `validate` finds nothing wrong."""
    fs, root = filesystem(output, endpoint_url)
    for video_id, count in expected.items():
        frames = pq.read_table(join(root, "frames", f"{video_id}.parquet"), filesystem=fs)
        assert sorted(frames.column("frame_index").to_pylist()) == list(range(count)), video_id
    report = validate(output, endpoint_url)
    assert report.ok, report.text()
    assert report.frames_lost == 0 and report.frames_duplicated == 0
    return dict(frames=sum(expected.values()), lost=report.frames_lost, duplicated=report.frames_duplicated)


def _figures(name: str, **values):
    print(f"FIGURES {name}: " + ", ".join(f"{key}={value}" for key, value in values.items()))


def test_ranged_decoding_and_the_streaming_pass_decode_the_awkward_inputs_alike(tmp_path):
    """Decoding an indexed file's packets by byte range and decoding it in one pass through its
    container give the same frames, display orientation and presentation times."""
    for item in write_bad_inputs(tmp_path):
        path = tmp_path / item.name
        if not item.readable:
            with pytest.raises(ValueError, match=item.reason):
                open_video(path)
            continue
        reader = open_video(path)
        assert (reader.info.frames, reader.info.height, reader.info.width) == (item.frames, item.height, item.width)
        frames, times = reader.read(0, item.frames)
        streamed = list(stream_frames(ByteSource(path), reader.probe.params))
        assert np.array_equal(frames, np.stack([frame for frame, _ in streamed])), item.name
        assert times == pytest.approx([seconds for _, seconds in streamed], abs=1e-6), item.name
        if item.times:
            assert times == pytest.approx(item.times, abs=1e-3)


def test_a_file_cut_between_two_packets_is_refused_as_truncated(tmp_path):
    """Such a file demuxes and decodes without an error, short of its index: the probe refuses it."""
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    packet_ends = write_faststart(whole, frames=12)
    assert len(packet_ends) == 12 and packet_ends[-1] <= whole.stat().st_size
    data = whole.read_bytes()
    for present, end in enumerate(packet_ends[:-1], start=1):
        cut.write_bytes(data[:end])
        with pytest.raises(
            ValueError, match=f"truncated: the container's index lists 12 frames, the file holds {present}$"
        ):
            open_video(cut)
    assert open_video(whole).info.frames == 12


def test_every_cut_of_a_video_fails_it_with_a_one_line_reason(tmp_path):
    """Cut anywhere (here every 7th byte), a file fails the job's probe or one of its chunks."""
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    write_faststart(whole)
    data, ways, chunking = whole.read_bytes(), {}, Chunking(8, 2)
    for end in range(len(data) // 10, len(data), 7):
        cut.write_bytes(data[:end])
        segments = probe_video(video_row("cut.mp4", str(cut)), chunking)
        errors = [chunk["error"] for segment in segments for chunk in decode_segment(segment, chunking)]
        failed = [error for error in errors if error]
        assert failed, f"cut at byte {end} of {len(data)}: every chunk decoded"
        assert failed[0].startswith(f"{cut}: ") and "\n" not in failed[0], failed[0]
        way = "probing" if segments[0]["error"] else "a chunk"
        ways[way] = ways.get(way, 0) + 1
    _figures("every-cut", cuts=sum(ways.values()), **ways)


def test_a_trimmed_mp4_starts_where_its_edit_list_does(tmp_path):
    """decord shows the frames of the first group of pictures shifted there (and negative times), so
    PyAV reads it; any range read on its own (a seek, from the second group on) is the same frames."""
    shown = write_trimmed(tmp_path / "trimmed.mp4", frames=60, frames_off=3, gop=10)
    reader = open_video(tmp_path / "trimmed.mp4")
    frames, times = reader.read(0, 57)
    assert reader.info.frames == 57 and times == pytest.approx([i / 10 for i in range(57)], abs=1e-3)
    assert np.array_equal(frames, shown)  # the same packets, decoded the same
    for start, stop in [(1, 5), (6, 9), (7, 20), (30, 31), (40, 57)]:
        part, part_times = reader.read(start, stop)
        assert np.array_equal(part, frames[start:stop]) and part_times == times[start:stop], (start, stop)


def test_bad_input_matrix_through_the_job(local_ray, tiny_model, tmp_path):
    """Each input is segmented with every frame at its display size, or failed naming the file and the
    reason; a good video in the same run is unaffected."""
    inputs = write_bad_inputs(tmp_path / "in")
    shutil.copy(VIDEOS / "milk.mkv", tmp_path / "in" / "milk.mkv")  # 51 frames, 480x640
    output = str(tmp_path / "out")
    summary = run_job(_config(tiny_model, input=str(tmp_path / "in"), include=["*"], output=output), progress=False)

    readable = {item.name: item for item in inputs if item.readable}
    unreadable = {item.name: item for item in inputs if not item.readable}
    assert summary["videos_ok"] == len(readable) + 1 and summary["videos_failed"] == len(unreadable), summary
    for name, item in unreadable.items():
        error = summary["failures"][name]
        assert error.startswith(str(tmp_path / "in" / name)) and item.reason in error, error
        assert not (tmp_path / "out" / "_commits" / f"{name}.json").exists()
    expected = {name: item.frames for name, item in readable.items()} | {"milk.mkv": 51}
    figures = _every_frame_once(output, expected)
    for name, item in [*readable.items(), ("milk.mkv", None)]:
        masks = pq.read_table(tmp_path / "out" / "masks" / f"{name}.parquet")
        size = (480, 640) if item is None else (item.height, item.width)
        assert set(zip(masks.column("height").to_pylist(), masks.column("width").to_pylist())) == {size}, name
        if item is not None and item.times:
            frames = pq.read_table(tmp_path / "out" / "frames" / f"{name}.parquet").sort_by("frame_index")
            assert frames.column("timestamp").to_pylist() == pytest.approx(item.times, abs=1e-3)
    _figures(
        "bad-inputs",
        inputs=len(inputs) + 1,
        segmented=summary["videos_ok"],
        reported_failed=summary["videos_failed"],
        **figures,
    )


def test_an_actor_killed_mid_video_is_retried_and_every_frame_is_kept_once(local_ray, tiny_model, tmp_path):
    expected = _disc_videos(tmp_path / "in")
    marker = tmp_path / "killed"
    config = _config(
        tiny_model, input=str(tmp_path / "in"), output=str(tmp_path / "out"), kill_actor_once=f"5:{marker}"
    )
    summary = run_job(config, progress=False)
    assert marker.exists()  # the actor did die, at its 5th batch: in order, the second video's middle chunk
    assert summary["videos_ok"] == 3 and summary["videos_failed"] == 0, summary
    _figures("actor-killed", actors_killed=1, **_every_frame_once(config.output, expected))


def test_an_actor_dying_past_its_restarts_fails_cleanly_and_a_rerun_finishes(local_ray, tiny_model, tmp_path):
    expected = _disc_videos(tmp_path / "in")
    config = _config(
        tiny_model,
        input=str(tmp_path / "in"),
        output=str(tmp_path / "out"),
        kill_actor_once=f"2:{tmp_path / 'killed'}",
        max_actor_restarts=0,
        max_task_retries=0,
    )
    summary = run_job(config, progress=False)
    assert summary["videos_failed"] == 3, summary
    assert all("actor died" in error for error in summary["failures"].values()), summary["failures"]
    assert validate(config.output).ok  # nothing half-committed

    again = run_job(_config(tiny_model, input=config.input, output=config.output), progress=False)
    assert again["videos_ok"] + again["videos_skipped"] == 3 and again["videos_failed"] == 0, again
    _figures("actor-killed-no-restarts", actors_killed=1, **_every_frame_once(config.output, expected))


def _segmented(start: int, stop: int, warm: int, lineage: str, frames_total: int = 16) -> dict:
    """A segmented chunk as the actor returns it: one square per frame (local id 7), 16x24 frames."""
    frames = []
    for index in range(start - warm, stop):
        mask = np.zeros((1, 16, 24), bool)
        mask[0, 4:10, index % 12 : index % 12 + 6] = True
        frames.append(
            dict(
                frame_index=index,
                timestamp=index / 10,
                warm=index < start,
                instance_ids=[7],
                category_ids=[0],
                category_names=["disc"],
                scores=[0.9],
                masks=np.packbits(mask).tobytes(),
                label_map=b"",
                tca_reset=None,
                tca_reassigned=0.5,
                token_ratio=0.5,
                windows_computed=None,
                frame_reused=False,
            )
        )
    return dict(
        video_id="v.mp4",
        uri="/in/v.mp4",
        warm_start=start - warm,
        start=start,
        stop=stop,
        last=stop == frames_total,
        source_bytes=0,
        frames_total=frames_total,
        estimated_frames=frames_total,
        fps=10.0,
        height=16,
        width=24,
        decode_seconds=0.0,
        lineage=lineage,
        frames=frames,
        error="",
        inference_seconds=0.0,
    )


def test_a_video_is_committed_from_its_parts_once_each_and_never_incomplete(tmp_path):
    """Chunks written twice (a retried attempt) count once; ids are linked over the warm-up frames;
    the commit task writes frames 0..N-1 exactly once, or refuses the video."""
    out = str(tmp_path / "out")
    write = partial(write_chunk, output=out, labels={0: "disc"}, overlap=4, signature="sig")
    first, retried, again = (
        write(_segmented(0, 8, 0, "a")),
        write(_segmented(8, 16, 4, "c")),
        write(_segmented(8, 16, 4, "b")),
    )
    ledger = VideoLedger(first)
    assert not ledger.add(retried)  # ahead of frame 0: waits
    assert ledger.add(first)  # both line up: complete
    assert not ledger.add(again)  # a second attempt at chunk 8 is ignored
    frames, masks, reason = commit_video(out, None, ledger.plan(dict(run_id="run", signature="sig")))
    assert (frames, masks, reason) == (16, 16, "")
    table = pq.read_table(tmp_path / "out" / "masks" / "v.mp4.parquet")
    assert table.column("frame_index").to_pylist() == list(range(16))
    assert set(table.column("instance_id").to_pylist()) == {1}  # the second lineage linked to the first's id
    assert not list((tmp_path / "out" / "_parts").rglob("*.parquet"))  # parts removed once committed
    assert validate(out).ok

    short = VideoLedger(write(_segmented(0, 8, 0, "a", frames_total=20)))
    short.add(write(_segmented(0, 8, 0, "a", frames_total=20)))
    short.frames_total = 20  # the probe promised 20 frames; only 8 were written
    frames, _, reason = commit_video(str(tmp_path / "short"), None, short.plan(dict(run_id="run", signature="sig")))
    assert frames == 0 and "not committed: 12 of 20 frames missing" in reason
    assert not (tmp_path / "short" / "_commits").exists()


def _s3_archive(endpoint: str, local: Path, prefix: str) -> dict[str, int]:
    expected = _disc_videos(local)
    fs, _ = filesystem("s3://reliability/", endpoint)
    for name in expected:
        fs.put_file(str(local / name), f"reliability/{prefix}/{name}")
    return expected


def test_transient_storage_errors_are_retried(s3, local_ray, tiny_model, tmp_path):
    expected = _s3_archive(s3, tmp_path, "flaky-in")
    with FlakyProxy(s3, fail_every=5) as proxy:
        config = _config(
            tiny_model,
            input="s3://reliability/flaky-in/",
            output="s3://reliability/runs/flaky/",
            endpoint_url=proxy.url,
        )
        summary = run_job(config, progress=False)
    assert summary["videos_ok"] == 3 and summary["videos_failed"] == 0, summary
    kinds = {(method, how) for method, _, how in proxy.failures}
    assert {how for _, how in kinds} == {"503", "drop"} and {"GET", "PUT"} <= {method for method, _ in kinds}, kinds
    figures = _every_frame_once(config.output, expected, s3)
    _figures("storage-transient", requests=proxy.seen, failed_requests=len(proxy.failures), **figures)


def test_persistent_storage_errors_fail_only_their_video_and_a_rerun_finishes(
    s3, local_ray, tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # the driver's writes and reads: give up sooner
    expected = _s3_archive(s3, tmp_path, "stuck-in")
    output = "s3://reliability/runs/stuck/"
    broken_write, broken_read = "reliability/runs/stuck/masks/v1.mp4", "reliability/stuck-in/v2.mp4"
    with FlakyProxy(s3, fail_writes_under=(broken_write,), fail_reads_under=(broken_read,)) as proxy:
        config = _config(tiny_model, input="s3://reliability/stuck-in/", output=output, endpoint_url=proxy.url)
        summary = run_job(config, progress=False)
    assert summary["videos_ok"] == 1 and set(summary["failures"]) == {"v1.mp4", "v2.mp4"}, summary
    assert "not committed" in summary["failures"]["v1.mp4"] and "cannot read" in summary["failures"]["v2.mp4"]
    # Every attempt failed: botocore's retries of the commit task's worker (8 by default; the workers
    # were started before this test set AWS_MAX_ATTEMPTS for the driver's own requests).
    assert sum(path.endswith("v1.mp4.parquet") and method == "PUT" for method, path, _ in proxy.failures) >= 3
    fs, root = filesystem(output, s3)
    assert fs.exists(join(root, "frames", "v1.mp4.parquet"))  # written before the masks failed ...
    assert not fs.exists(join(root, "_commits", "v1.mp4.json"))  # ... but not committed
    report = validate(output, s3)
    assert report.ok and report.uncommitted == ["v1.mp4"], report.text()

    again = run_job(_config(tiny_model, input=config.input, output=output, endpoint_url=s3), progress=False)
    assert again["videos_ok"] == 2 and again["videos_skipped"] == 1, again
    figures = _every_frame_once(output, expected, s3)
    assert validate(output, s3).uncommitted == []
    _figures("storage-persistent", failed_requests=len(proxy.failures), videos_failed_then_rerun=2, **figures)


def test_no_credentials_in_outputs_manifests_or_logs(s3, local_ray, tiny_model, tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    _s3_archive(s3, tmp_path, "secret-in")
    with FlakyProxy(s3, fail_every=7, fail_writes_under=("reliability/runs/secret/masks/v0.mp4",)) as proxy:
        code = nightly_main(
            [
                "--input",
                "s3://reliability/secret-in/",
                "--output",
                "s3://reliability/runs/secret/",
                "--endpoint-url",
                proxy.url,
            ]
            + ["--model", tiny_model, "--short-side", "32", "--chunk-frames", "8"]
        )
    printed = capsys.readouterr()
    assert code == 1 and "FAILED v0.mp4" in printed.err  # an error message went to the manifest and stderr
    fs, _ = filesystem("s3://reliability/", s3)
    texts = {"stdout": printed.out, "stderr": printed.err}
    for path in fs.find("reliability/runs/secret/"):
        texts[path] = fs.cat_file(path).decode("latin-1")
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in logs.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [where for where, text in texts.items() if ACCESS_KEY in text or SECRET_KEY in text]
    assert not leaks and len(texts) > 10, leaks
    assert redact(f"http://user:{SECRET_KEY}@host/b?X-Amz-Signature=abc&X-Amz-Credential={ACCESS_KEY}") == (
        "http://***@host/b?X-Amz-Signature=***&X-Amz-Credential=***"
    )
    _figures("secrets", files_and_streams_searched=len(texts), leaks=len(leaks))


def test_validate_reports_what_is_wrong(local_ray, tiny_model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_mp4(tmp_path / "in" / "v.mp4", moving_disc_clip(10, 64, 96, seed=1)[0], fps=10)
    (tmp_path / "in" / "empty.mp4").write_bytes(b"")
    good = tmp_path / "good"
    summary = run_job(_config(tiny_model, input=str(tmp_path / "in"), output=str(good)), progress=False)
    assert (summary["videos_ok"], summary["videos_failed"]) == (1, 1)
    assert cli(["validate", str(good)]) == 0
    assert "frames lost: 0, frames duplicated: 0" in capsys.readouterr().out

    def table(path: Path, change):
        original = pq.read_table(path)
        pq.write_table(pa.Table.from_pylist(change(original.to_pylist()), schema=original.schema), path)

    def commit_failed_video(out: Path):
        record = json.loads((out / "_commits" / "v.mp4.json").read_text())
        (out / "_commits" / "empty.mp4.json").write_text(json.dumps(dict(record, video_id="empty.mp4")))

    corruptions = {
        "frame missing": (
            lambda out: table(out / "frames" / "v.mp4.parquet", lambda r: r[:3] + r[4:]),
            "1 of 10 frames missing",
        ),
        "frame twice": (lambda out: table(out / "frames" / "v.mp4.parquet", lambda r: r + r[5:6]), "1 duplicated"),
        "bad RLE": (
            lambda out: table(out / "masks" / "v.mp4.parquet", lambda r: [dict(r[0], rle_counts="0")] + r[1:]),
            "RLEs that do not decode",
        ),
        "repeated id": (
            lambda out: table(out / "masks" / "v.mp4.parquet", lambda r: r + r[:1]),
            "instance ids repeated",
        ),
        "commit lost": (lambda out: (out / "_commits" / "v.mp4.json").unlink(), "ok, but it has no commit record"),
        "failed yet committed": (commit_failed_video, "failed, but the same run committed it"),
    }
    for name, (corrupt, message) in corruptions.items():
        broken = tmp_path / name.replace(" ", "-")
        shutil.copytree(good, broken)
        corrupt(broken)
        assert cli(["validate", str(broken)]) == 1, name
        assert message in capsys.readouterr().out, name
