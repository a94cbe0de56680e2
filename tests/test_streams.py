"""Continuing a video from one clip or chunk to the next: `VideoSegmenter.start_stream`, used by the
job's actor and the Serve replica alike."""

import numpy as np
import pytest

from pipelines.nightly import JobConfig
from pipelines.stages import SegmentActor, chunk_row
from tca_core.config import METHODS, AccelerationConfig
from tca_core.segmenter import Clip, StreamLost, VideoSegmenter

HEIGHT, WIDTH = 64, 96


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_continues_a_video_where_its_last_clip_ended(small_model, method):
    segmenter = VideoSegmenter(small_model, AccelerationConfig(method=method), short_side=None)
    first = segmenter.start_stream("v", 0)
    assert (first.continued, first.first) == (False, 0)
    segmenter.process([Clip("v", 0, _frames(4))])

    following = segmenter.start_stream("v", 4, warmup=2)
    assert (following.continued, following.first, following.lineage) == (True, 4, first.lineage)
    segmenter.process([Clip("v", 4, _frames(2, seed=1))])

    after_a_gap = segmenter.start_stream("v", 10, warmup=3)
    assert (after_a_gap.continued, after_a_gap.first) == (False, 7)
    assert after_a_gap.lineage != first.lineage


def test_a_dropped_or_new_video_starts_afresh_on_its_warm_up_frames(small_model):
    segmenter = VideoSegmenter(small_model, AccelerationConfig(method="tca"), short_side=None)
    segmenter.start_stream("v", 0)
    segmenter.process([Clip("v", 0, _frames(3))])
    segmenter.drop("v")
    assert not segmenter.start_stream("v", 3, warmup=3).continued
    assert segmenter.start_stream("w", 5, warmup=5).first == 0
    assert segmenter.videos_in_memory == 2


def test_more_warm_up_frames_than_frames_before_the_start_are_refused(small_model):
    segmenter = VideoSegmenter(small_model, AccelerationConfig(), short_side=None)
    with pytest.raises(ValueError, match="3 warm-up frames before frame 2"):
        segmenter.start_stream("v", 2, warmup=3)


def _chunk(warm_start: int, start: int, stop: int, last: bool) -> dict:
    """A one-chunk batch of video "v"."""
    return _batch([_video_chunk("v", warm_start, start, stop, last, seed=0)])


@pytest.mark.parametrize("method", METHODS)
def test_the_jobs_actor_continues_every_method_across_chunks_without_warm_up_frames(tiny_model, tmp_path, method):
    config = JobConfig(input=str(tmp_path), output=str(tmp_path / "out"), model=tiny_model, method=method)
    actor = SegmentActor(tiny_model, config.settings())
    first = actor(_chunk(0, 0, 6, last=False)).to_pylist()[0]
    second = actor(_chunk(4, 6, 12, last=True)).to_pylist()[0]
    assert [f["frame_index"] for f in first["frames"]] == list(range(6))
    assert [f["frame_index"] for f in second["frames"]] == list(range(6, 12))  # its 2 warm-up frames skipped
    assert second["lineage"] == first["lineage"] and first["lineage"]
    # The last chunk freed the memory: the video starts afresh, on its warm-up frames.
    again = actor(_chunk(4, 6, 12, last=True)).to_pylist()[0]
    assert [f["frame_index"] for f in again["frames"]] == list(range(4, 12))
    assert again["lineage"] != first["lineage"]


def test_a_clip_whose_video_memory_was_evicted_mid_stream_is_refused(small_model):
    segmenter = VideoSegmenter(small_model, AccelerationConfig(method="tca"), short_side=None, max_videos=1)
    first = segmenter.start_stream("a", 0)
    segmenter.start_stream("b", 0)  # evicts a's memory: one video kept
    assert not segmenter.holds_stream("a", first.lineage)
    with pytest.raises(StreamLost, match=r"\['a'\].*max_videos=1"):
        segmenter.process([Clip("a", 0, _frames(2), lineage=first.lineage)])
    assert len(segmenter.process([Clip("a", 0, _frames(2))])[0]) == 2  # without a lineage: a fresh memory


def _video_chunk(video_id: str, warm_start: int, start: int, stop: int, last: bool, seed: int) -> dict:
    """One chunk row of video `video_id` (frames from `seed`)."""
    segment = dict(
        video_id=video_id,
        uri=f"file:///videos/{video_id}.mp4",
        source_bytes=1,
        frames_total=stop if last else -1,
        estimated_frames=12,
        fps=25.0,
        height=HEIGHT,
        width=WIDTH,
        error="",
    )
    frames = _frames(stop - warm_start, seed=seed * 1000 + warm_start)
    row = chunk_row(segment, warm_start, start, stop, frames, [i / 25 for i in range(warm_start, stop)])
    row["last"] = last
    return row


def _batch(rows: list[dict]) -> dict:
    return {key: [row[key] for row in rows] for key in rows[0]}


def _masks(row: dict) -> list[tuple]:
    return [(f["frame_index"], f["instance_ids"], f["category_ids"], f["masks"], f["label_map"]) for f in row["frames"]]


@pytest.mark.parametrize("method", METHODS)
def test_several_videos_in_one_actor_call_give_the_same_masks_as_each_alone(tiny_model, tmp_path, method):
    """Two chunks of each of two videos in one call, run two clips per pass, against each video's
    chunks run alone: the same frames, ids, categories, masks and label maps."""
    config = JobConfig(input=str(tmp_path), output=str(tmp_path / "out"), model=tiny_model, method=method)
    chunks = {
        video: [_video_chunk(video, 0, 0, 6, False, seed), _video_chunk(video, 4, 6, 12, True, seed)]
        for seed, video in enumerate(("a", "b"))
    }
    together = SegmentActor(tiny_model, config.settings(), clips_per_pass=2)
    mixed = [chunks["a"][0], chunks["b"][0], chunks["a"][1], chunks["b"][1]]
    rows = together(_batch(mixed)).to_pylist()
    assert [r["video_id"] for r in rows] == ["a", "b", "a", "b"] and not any(r["error"] for r in rows)
    alone = SegmentActor(tiny_model, config.settings())
    for video in ("a", "b"):
        expected = [alone(_batch([chunk])).to_pylist()[0] for chunk in chunks[video]]
        got = [r for r in rows if r["video_id"] == video]
        assert [_masks(r) for r in got] == [_masks(r) for r in expected]
        assert [f["frame_index"] for f in got[1]["frames"]] == list(range(6, 12))  # continued, no warm-up


def test_a_failing_video_in_a_shared_call_spares_the_others(tiny_model, tmp_path):
    config = JobConfig(input=str(tmp_path), output=str(tmp_path / "out"), model=tiny_model)
    actor = SegmentActor(tiny_model, config.settings(), clips_per_pass=2)
    good = _video_chunk("good", 0, 0, 6, True, 1)
    bad = _video_chunk("bad", 0, 0, 6, True, 2)
    bad["frames"] = bad["frames"][..., :2]  # two channels: the model cannot take it
    rows = actor(_batch([bad, good])).to_pylist()
    assert "bad.mp4: inference:" in rows[0]["error"] and rows[0]["frames"] == []
    assert rows[1]["error"] == "" and [f["frame_index"] for f in rows[1]["frames"]] == list(range(6))


def test_videos_of_different_sizes_share_a_call(tiny_model, tmp_path):
    """A call's clips of different frame sizes each come back at their own size."""
    config = JobConfig(input=str(tmp_path), output=str(tmp_path / "out"), model=tiny_model)
    actor = SegmentActor(tiny_model, config.settings(), clips_per_pass=2)
    small = _video_chunk("small", 0, 0, 6, True, 1)
    large = _video_chunk("large", 0, 0, 6, True, 2)
    large["frames"] = np.random.default_rng(3).integers(0, 256, (6, 96, 128, 3), dtype=np.uint8)
    large.update(height=96, width=128)
    rows = actor(_batch([small, large])).to_pylist()
    assert [r["error"] for r in rows] == ["", ""]
    alone = [SegmentActor(tiny_model, config.settings())(_batch([c])).to_pylist()[0] for c in (small, large)]
    assert [_masks(r) for r in rows] == [_masks(r) for r in alone]
