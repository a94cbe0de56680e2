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
    segment = dict(
        video_id="v",
        uri="file:///videos/v.mp4",
        source_bytes=1,
        frames_total=stop if last else -1,
        estimated_frames=12,
        fps=25.0,
        height=HEIGHT,
        width=WIDTH,
        error="",
    )
    frames = _frames(stop - warm_start, seed=warm_start)
    row = chunk_row(segment, warm_start, start, stop, frames, [i / 25 for i in range(warm_start, stop)])
    row["last"] = last
    return {key: [value] for key, value in row.items()}


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
