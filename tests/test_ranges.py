"""Reads by byte range: the probe reads a header and an index, a segment only its packets' bytes.

Real parts: a long recording stream-copied from a sample video, moto's S3 server behind a proxy that
counts every request's byte range (benchmarks/s3proxy.py), the job's own probe and decode stages.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import moto_s3

from benchmarks.recordings import long_recording
from benchmarks.s3proxy import CountingProxy
from pipelines.stages import Chunking, decode_segment, probe_video, video_row
from pipelines.storage import filesystem
from pipelines.video_io import PacketTable, open_video

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
KEY = "ranges/recording.mp4"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """car-detection.mp4 (377 frames, a key frame every 60) stream-copied 4 times: 1508 frames."""
    return long_recording(VIDEOS / "car-detection.mp4", tmp_path_factory.mktemp("rec") / "recording.mp4", 4)


@pytest.fixture(scope="module")
def s3_recording(recording):
    with moto_s3() as endpoint:
        fs, _ = filesystem("s3://ranges/", endpoint)
        fs.mkdir("ranges")
        fs.put_file(str(recording), KEY)
        yield endpoint


def _ranges(requests) -> list[tuple[int, int]]:
    """[start, end) of each ranged GET of the recording."""
    spans = []
    for request in requests:
        if request.method == "GET" and request.range:
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", request.range).groups())
            spans.append((start, end + 1))
    return spans


def test_a_segment_fetches_only_the_byte_ranges_of_its_packets(recording, s3_recording):
    size, chunking = recording.stat().st_size, Chunking(64, 4)
    uri = f"s3://{KEY}"
    with CountingProxy(s3_recording) as proxy:
        segments = probe_video(video_row("recording.mp4", uri), chunking, proxy.url)
        probed = proxy.bytes_read(KEY)
        assert not segments[0]["error"] and len(segments) > 4
        assert probed < 0.05 * size, f"the probe read {probed} of {size} bytes"
        frames = 0
        for segment in segments:
            proxy.reset()
            table = PacketTable.from_dict(json.loads(segment["table"]))
            low, high = int(table.pos[0]), int((table.pos + table.size).max())
            chunks = list(decode_segment(segment, chunking, proxy.url))
            assert all(not chunk["error"] for chunk in chunks), chunks[0]["error"]
            frames += sum(int(chunk["stop"]) - int(chunk["start"]) for chunk in chunks)
            spans = _ranges(proxy.requests(KEY))
            assert spans and all(low <= start and end <= high for start, end in spans), (low, high, spans)
            assert proxy.bytes_read(KEY) == sum(end - start for start, end in spans) <= high - low
    assert frames == 1508


def test_a_whole_video_is_read_once_whatever_its_segments(recording, s3_recording):
    """Bytes read over the probe and every segment: at most 1.2x the file, and every frame decoded is
    the frame a plain decode of the whole file gives."""
    size, reference = recording.stat().st_size, open_video(recording)
    for chunk_frames in (16, 64, 1000):
        chunking = Chunking(chunk_frames, 4)
        with CountingProxy(s3_recording) as proxy:
            segments = probe_video(video_row("recording.mp4", f"s3://{KEY}"), chunking, proxy.url)
            checked = 0
            for segment in segments:
                for chunk in decode_segment(segment, chunking, proxy.url):
                    if checked < 3 and chunk["warm_start"] > 0:  # a few chunks, bit for bit
                        expected = reference.read(int(chunk["warm_start"]), int(chunk["stop"]))[0]
                        assert np.array_equal(chunk["frames"], expected)
                        checked += 1
            ratio = proxy.bytes_read(KEY) / size
        assert ratio <= 1.2, f"chunks of {chunk_frames}: {ratio:.3f}x the file read"
        print(f"FIGURES ranges: chunk_frames={chunk_frames}, segments={len(segments)}, bytes_read_ratio={ratio:.3f}")
