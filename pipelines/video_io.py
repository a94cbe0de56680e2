"""Reading videos by byte range (PyAV) and writing H.264 MP4.

A video is read in two steps, so that no process ever holds a whole file:

- `probe` opens the container through a ranged reader and reads its header and index only. Where the
  index lists every packet of the video stream (MP4/MOV), it also takes every packet's exact
  presentation time by demuxing with the packets' bytes left unread (served as zeros), so the
  probe knows each frame's time, each key frame and each packet's byte range: a `PacketTable`.
  Other containers (Matroska, WebM, AVI, still images) keep no such index; they are read in one
  streaming pass.
- `decode_frames` decodes frames [first, stop) of an indexed video from the key frame at or before
  `first`, fetching only the byte ranges of the packets it needs, through a codec context built
  from the probe's `StreamParams` (no container is opened again). `stream_frames` decodes a video
  without an index in one streaming pass.

Frames come as RGB uint8 in display orientation (rotation metadata applied) and presentation order,
with each frame's presentation time in seconds from the start of the stream (exact for variable
frame rates). A file holding fewer packets than its index lists is refused as truncated; packets
that an MP4 edit list discards are decoded (later frames refer to them) but are not frames.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_AVERROR_INVALIDDATA = 1094995529  # FFmpeg's "invalid data found when processing input"
READAHEAD = (64 * 1024, 4 * 1024 * 1024)  # bytes fetched per request by FFmpeg's reads: first, and most
# (doubling while reads go on where the last request ended)
WINDOWS_KEPT = 4  # fetched windows kept, so FFmpeg going back and forth (header, index, data) fetches once
WINDOW = 8 * 1024 * 1024  # bytes fetched per request while decoding packets (the most held at once)


class ByteSource:
    """A file's bytes, fetched by range: an fsspec filesystem and path, a local path or a seekable file
    object. `fetched` counts the bytes read from it."""

    def __init__(self, source, fs=None):
        self.fs, self.path, self.handle = fs, None, None
        if fs is not None:
            self.path = source
            self.size = int(fs.size(source))
        elif isinstance(source, (str, Path)):
            self.handle = open(source, "rb")  # noqa: SIM115 (closed with the source)
            self.size = Path(source).stat().st_size
        else:
            self.handle = source
            self.size = source.seek(0, io.SEEK_END)
        self.fetched = 0

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes start..end-1 (fewer at the end of the file)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        if self.fs is not None:
            data = self.fs.cat_file(self.path, start=start, end=end)
        else:
            self.handle.seek(start)
            data = self.handle.read(end - start)
        self.fetched += len(data)
        return data


class RangeFile(io.RawIOBase):
    """A seekable file object over a ByteSource for FFmpeg: fetches what is read, with a read-ahead that
    grows while reading goes on sequentially; byte ranges set as `unread` are served as zeros without
    being fetched."""

    def __init__(self, source: ByteSource):
        self.source, self.position = source, 0
        self.windows: list[tuple[int, bytes]] = []  # most recent last
        self.readahead, self.fetched_to = READAHEAD[0], -1
        self.unread_starts: list[int] = []
        self.unread_ends: list[int] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.source.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def set_unread(self, ranges: list[tuple[int, int]]):
        """Serve these [start, end) byte ranges (sorted, merged here) as zeros from now on."""
        merged: list[list[int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.unread_starts, self.unread_ends = [a for a, _ in merged], [b for _, b in merged]

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self.source.size - self.position)
        done = 0
        while done < wanted:
            done += self._read_piece(memoryview(buffer)[done:wanted], self.position + done)
        self.position += done
        return done

    def _read_piece(self, out: memoryview, at: int) -> int:
        """Fill the start of `out` with bytes from `at`: up to the next unread range, or zeros in one."""
        i = bisect.bisect_right(self.unread_starts, at) - 1
        if i >= 0 and at < self.unread_ends[i]:
            count = min(len(out), self.unread_ends[i] - at)
            out[:count] = bytes(count)
            return count
        limit = self.unread_starts[i + 1] if i + 1 < len(self.unread_starts) else self.source.size
        count = min(len(out), limit - at)
        start, window = self._window(at, count, limit)
        out[:count] = window[at - start : at - start + count]
        return count

    def _window(self, at: int, count: int, limit: int) -> tuple[int, bytes]:
        """A fetched window holding bytes at..at+count-1 (fetched now if none does)."""
        for start, window in self.windows:
            if start <= at and at + count <= start + len(window):
                return start, window
        sequential = at == self.fetched_to
        self.readahead = min(2 * self.readahead, READAHEAD[1]) if sequential else READAHEAD[0]
        window = self.source.fetch(at, min(limit, at + max(count, self.readahead)))
        self.fetched_to = at + len(window)
        self.windows = [*self.windows[-(WINDOWS_KEPT - 1) :], (at, window)]
        return at, window


@dataclass(frozen=True)
class StreamParams:
    """What decoding a video stream's packets needs, without its container (crosses process boundaries)."""

    codec: str
    extradata: bytes
    time_base: tuple[int, int]
    origin: int  # the stream's start time, in time_base units: presentation times count from it
    rotation: int  # degrees, from the display matrix

    def seconds(self, pts: int) -> float:
        return float((pts - self.origin) * Fraction(*self.time_base))


@dataclass(frozen=True)
class PacketTable:
    """The video stream's packets in decode order: byte position and size, presentation time (pts),
    key frame and edit-list discard flags. Frame i is the i-th smallest pts of the kept packets."""

    pos: np.ndarray
    size: np.ndarray
    pts: np.ndarray
    key: np.ndarray
    discard: np.ndarray

    @property
    def frame_pts(self) -> np.ndarray:
        return np.sort(self.pts[~self.discard])

    def frame_packets(self) -> np.ndarray:
        """The decode-order packet index of each frame, in presentation order."""
        kept = np.flatnonzero(~self.discard)
        return kept[np.argsort(self.pts[kept], kind="stable")]

    def key_frames(self) -> list[tuple[int, int]]:
        """(packet index, frame index) of each key frame that is a frame, in decode order."""
        ranks = {int(p): r for r, p in enumerate(self.frame_pts)}
        return [(int(i), ranks[int(self.pts[i])]) for i in np.flatnonzero(self.key & ~self.discard)]

    def cuts(self, spans: list[tuple[int, int]]) -> list[tuple[PacketTable, list[int]]]:
        """For each span of frames [first, stop): the packets decoding it needs (from the last key frame at
        or before `first` to the last packet any of its frames needs) and its frames' presentation
        times. The table is sorted once for all spans."""
        frame_pts, frame_packets = self.frame_pts, self.frame_packets()
        keys = self.key_frames()
        key_frames = [frame for _, frame in keys]
        cut = []
        for first, stop in spans:
            k = bisect.bisect_right(key_frames, first) - 1
            begin = keys[k][0] if k >= 0 else 0
            end = int(frame_packets[first:stop].max()) + 1
            cut.append((self.slice(begin, end), frame_pts[first:stop].tolist()))
        return cut

    def slice(self, start: int, stop: int) -> PacketTable:
        return PacketTable(*(a[start:stop] for a in (self.pos, self.size, self.pts, self.key, self.discard)))

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in ("pos", "size", "pts", "key", "discard")}

    @classmethod
    def from_dict(cls, data: dict) -> PacketTable:
        kinds = dict(pos=np.int64, size=np.int64, pts=np.int64, key=bool, discard=bool)
        return cls(**{name: np.asarray(data[name], dtype=kind) for name, kind in kinds.items()})


@dataclass(frozen=True)
class VideoInfo:
    frames: int | None  # None: the container keeps no index; known once the video is decoded
    fps: float
    height: int  # display size (after rotation)
    width: int
    duration: float  # seconds, as the container states it (0 when unknown)

    @property
    def estimated_frames(self) -> int:
        return self.frames if self.frames is not None else max(1, round(self.duration * self.fps))


@dataclass(frozen=True)
class Probe:
    info: VideoInfo
    params: StreamParams
    table: PacketTable | None  # None: read in one streaming pass
    index_bytes: int  # bytes read to probe (header, index, first frame)


def probe(source: ByteSource, count_frames: bool = False) -> Probe:
    """Read a video's header and index (and decode its first frame); ValueError naming the reason when
    it is not a readable video. `count_frames` demuxes a file without an index (reading it whole) to
    count its frames; otherwise their count stays unknown (None)."""
    if source.size == 0:
        raise ValueError("empty file (0 bytes)")
    handle = RangeFile(source)
    with _container(handle) as container:
        stream = container.streams.video[0]
        first = _first_frame(container, stream)
        params = StreamParams(
            codec=stream.codec_context.name,
            extradata=bytes(stream.codec_context.extradata or b""),
            time_base=(stream.time_base.numerator, stream.time_base.denominator),
            origin=stream.start_time or 0,
            rotation=first.rotation,
        )
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        table = _indexed_table(container, stream, handle, source.size)
        frames = int((~table.discard).sum()) if table is not None else None
        if table is None and count_frames:
            frames = _count_frames(container, stream)
    image = _array(first)
    if frames == 0:
        raise ValueError("the video stream has no frames")
    info = VideoInfo(frames, fps, image.shape[0], image.shape[1], duration)
    return Probe(info, params, table, source.fetched)


def _container(handle: RangeFile):
    """The file opened with PyAV; ValueError when FFmpeg cannot read it or it has no video stream."""
    try:
        container = av.open(handle)
    except av.FFmpegError as error:
        raise ValueError(
            f"not a video file FFmpeg can read: {error.strerror} (corrupt, truncated or not a video)"
        ) from None
    if container.format.name == "tty":  # FFmpeg renders .txt, .nfo, .asc ... files as frames of text
        container.close()
        raise ValueError("a text file, not a video")
    if not container.streams.video:
        container.close()
        raise ValueError("no video stream (audio only, or not a video)")
    return container


def _first_frame(container, stream) -> av.VideoFrame:
    try:
        frame = next(iter(container.decode(stream)), None)
    except av.FFmpegError as error:
        raise ValueError(f"decoding the first frame failed: {_reason(error)}") from None
    if frame is None:
        raise ValueError("the video stream has no frames")
    return frame


def _indexed_table(container, stream, handle: RangeFile, file_size: int) -> PacketTable | None:
    """The packet table from the container's index, or None where it does not list every packet.

    The index gives positions, sizes, key frames and decode times; presentation times come from
    demuxing once more with every packet's bytes unread. Raises ValueError when the file is shorter
    than its index says (truncated)."""
    entries = list(stream.index_entries)
    if not entries or len(entries) != stream.frames or any(e.size <= 0 for e in entries):
        return None
    held = sum(1 for e in entries if e.pos + e.size <= file_size)
    if held < len(entries):
        raise ValueError(f"truncated: the container's index lists {len(entries)} frames, the file holds {held}")
    handle.set_unread([(e.pos, e.pos + e.size) for s in container.streams for e in s.index_entries if e.size > 0])
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all  # their packets are not even demuxed
    container.seek(stream.start_time or 0, stream=stream, backward=True)
    packets = [(p.pos, p.size, p.pts, p.is_discard) for p in container.demux(stream) if p.size]
    if [(p[0], p[1]) for p in packets] != [(e.pos, e.size) for e in entries] or any(p[2] is None for p in packets):
        return None  # the demuxer disagrees with its index: read this file in one pass instead
    return PacketTable(
        pos=np.array([p[0] for p in packets], np.int64),
        size=np.array([p[1] for p in packets], np.int64),
        pts=np.array([p[2] for p in packets], np.int64),
        key=np.array([e.is_keyframe for e in entries], bool),
        discard=np.array([p[3] for p in packets], bool),
    )


def _count_frames(container, stream) -> int:
    """The frames of a file without an index, by demuxing it whole (reads every byte)."""
    container.seek(stream.start_time or 0, stream=stream, backward=True)
    try:
        return sum(1 for p in container.demux(stream) if p.size and not p.is_discard)
    except av.FFmpegError as error:
        raise ValueError(f"reading failed: {_reason(error)}") from None


def decode_frames(
    source: ByteSource, params: StreamParams, table: PacketTable, first: int, stop: int, wanted: list[int] | None = None
) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, seconds) for frames first..stop-1 of an indexed video, fetching only the packets needed:
    from the key frame at or before `first` to the last packet any of these frames needs.

    `table` is the video's packet table, or (with `wanted`, the frames' presentation times) the part
    of it these frames need, as `PacketTable.cuts` cuts it."""
    if wanted is None:
        ((table, wanted),) = table.cuts([(first, stop)])
    index_of = {int(p): first + i for i, p in enumerate(wanted)}
    codec = av.CodecContext.create(params.codec, "r")
    codec.extradata = params.extradata or None
    expected = first
    for packet in _packets(source, table, params):
        for frame in _decode(codec, packet, expected):
            index = index_of.get(frame.pts)
            if index is None:
                continue  # a discarded (edit list) frame, or one before `first`
            if index != expected:
                raise ValueError(f"frame {expected} decodes out of order (frame {index} came first)")
            yield _array(frame, params.rotation), params.seconds(frame.pts)
            expected += 1
            if expected == stop:
                return
    raise ValueError(f"frames {first}-{stop - 1} requested, decoding ended after frame {expected - 1}")


def _packets(source: ByteSource, table: PacketTable, params: StreamParams):
    """The table's packets (decode order) as av.Packets, fetched in windows of at most WINDOW bytes,
    then a flush (None)."""
    base = Fraction(*params.time_base)
    index, end = 0, len(table.pos)
    while index < end:
        start = int(table.pos[index])
        last = index
        while last + 1 < end and table.pos[last + 1] + table.size[last + 1] - start <= WINDOW:
            last += 1
        span_end = int(max(table.pos[index : last + 1] + table.size[index : last + 1]))
        data = source.fetch(start, span_end)
        for i in range(index, last + 1):
            offset = int(table.pos[i]) - start
            packet = av.Packet(data[offset : offset + int(table.size[i])])
            packet.pts, packet.dts, packet.time_base = int(table.pts[i]), None, base
            yield packet
        index = last + 1
    yield None


def _decode(codec, packet, expected: int):
    try:
        return codec.decode(packet)
    except av.FFmpegError as error:
        raise ValueError(f"decoding failed at frame {expected}: {_reason(error)}") from None


def stream_frames(source: ByteSource, params: StreamParams) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, seconds) of every frame of a video, in one streaming pass through its container (for
    files without an index); frames in presentation order, as the decoder returns them. Raises
    ValueError at the end when the file holds fewer packets than its container lists."""
    handle = RangeFile(source)
    packets = frames = 0
    with _container(handle) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                packets += packet.size > 0  # the last, empty packet only flushes the decoder
                for frame in packet.decode():
                    yield _array(frame), params.seconds(frame.pts) if frame.pts is not None else 0.0
                    frames += 1
        except av.FFmpegError as error:
            raise ValueError(f"decoding failed after {frames} frames: {_reason(error)}") from None
        listed = stream.frames
    if frames == 0:
        raise ValueError("the video stream has no frames")
    if listed and packets < listed:
        raise ValueError(f"truncated: the container's index lists {listed} frames, the file holds {packets}")


class VideoFile:
    """A whole video opened for reading: `info`, `read(start, stop)`, `frames()`. Files without an index
    are demuxed whole when opened, to count their frames (for files at hand: the endpoint's uploads,
    rendering); their reads decode from the start."""

    def __init__(self, source, fs=None):
        self.source = ByteSource(source, fs)
        self.probe = probe(self.source, count_frames=True)
        self.info = self.probe.info

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[float]]:
        """(frames, presentation times in seconds) of frames start..stop-1, as (T, H, W, 3) uint8 RGB."""
        if self.probe.table is None:  # no index: decode from the start
            pairs = [pair for i, pair in zip(range(stop), self.frames()) if i >= start]
        else:
            pairs = list(decode_frames(self.source, self.probe.params, self.probe.table, start, stop))
        if len(pairs) != stop - start:
            raise ValueError(f"frames {start}-{stop - 1} requested, {len(pairs)} decoded")
        return np.stack([frame for frame, _ in pairs]), [seconds for _, seconds in pairs]

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(frame, seconds) of every frame, in one pass."""
        if self.probe.table is None:
            return stream_frames(self.source, self.probe.params)
        return decode_frames(self.source, self.probe.params, self.probe.table, 0, self.info.frames)


def open_video(source, fs=None) -> VideoFile:
    """A VideoFile on a path, a seekable binary file object or (with `fs`) an fsspec path; ValueError
    naming the reason when it is not a readable video."""
    return VideoFile(source, fs)


def decoder_message(error: Exception) -> str:
    """A decoder error in a line, FFmpeg's error codes named."""
    lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    text = lines[0].strip()
    if str(_AVERROR_INVALIDDATA) in text:
        text += " (invalid data: the file is truncated or corrupt)"
    return text[:300]


def _array(frame, rotation: int | None = None) -> np.ndarray:
    """RGB, turned upright as the display matrix says."""
    rotation = frame.rotation if rotation is None else rotation
    return np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=round(rotation / 90) % 4))


def _reason(error: av.FFmpegError) -> str:
    hint = " (the file is truncated or corrupt)" if isinstance(error, av.InvalidDataError) else ""
    return f"{error.strerror}{hint}"


def write_mp4(path: str | Path, frames, fps: float = 24.0, crf: int = 18):
    """Write (H, W, 3) uint8 RGB frames as H.264 (yuv420p; odd sizes are padded by one pixel)."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[0] + first.shape[0] % 2, first.shape[1] + first.shape[1] % 2
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in (first, *frames):
            if frame.shape[:2] != (height, width):
                frame = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
