"""Inputs for the storage benchmarks, made cheaply from the sample videos.

`long_recording(source, dest, times)`: one long recording, the source's video stream stream-copied
(packets remuxed, nothing re-encoded) `times` times end to end, each copy's timestamps shifted by the
duration of the copies before it, so the timeline is continuous and strictly increasing.

`head_recording(source, dest, frames)`: the source's first groups of pictures (up to a key frame),
stream-copied: the same video, short.

`small_archive(dest_dir, count)`: `count` small, distinct MP4 clips (generated, a few KB each).

Both are cached: a file is rebuilt only when its marker (a JSON file beside it that records what it
was made from and its size in bytes) does not match.

    python -m benchmarks.recordings SOURCE DEST TIMES      # make and check one recording
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import av


def long_recording(source: Path, dest: Path, times: int) -> Path:
    """`source`'s video stream stream-copied `times` times into `dest` (same container type); `dest`.

    Skipped when `dest` and its marker match (same source size, same `times`, the recorded size);
    else built under a temporary name, checked (`check_recording`) and moved into place.
    """
    source, dest = Path(source), Path(dest)
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    if source.suffix.lower() != dest.suffix.lower():
        raise ValueError(f"{dest.name}: a stream copy of {source.name} keeps its container ({source.suffix})")
    recipe = dict(source=source.name, source_bytes=source.stat().st_size, times=times)
    if _cached(_marker(dest), recipe, dest.stat().st_size if dest.exists() else None):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.stem}.partial{dest.suffix}")  # the suffix tells FFmpeg the container
    try:
        _remux_repeated(source, partial, times)
        check_recording(partial, times * count_frames(source))
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _write_marker(_marker(dest), recipe, dest.stat().st_size)
    return dest


def head_recording(source: Path, dest: Path, frames: int = 1) -> Path:
    """The packets of `source`'s video stream before its first key frame at or after packet `frames`,
    stream-copied into `dest` (whole groups of pictures, so every frame decodes); `dest`. Cached and
    checked as `long_recording` is."""
    source, dest = Path(source), Path(dest)
    keep = _head_packets(source, frames)
    recipe = dict(source=source.name, source_bytes=source.stat().st_size, head=keep)
    if _cached(_marker(dest), recipe, dest.stat().st_size if dest.exists() else None):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    try:
        _remux_repeated(source, partial, 1, packets=keep)
        check_recording(partial, keep)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _write_marker(_marker(dest), recipe, dest.stat().st_size)
    return dest


def _head_packets(source: Path, frames: int) -> int:
    """The number of packets (decode order) before the first key frame at or after packet `frames`; all
    of them when there is none."""
    with av.open(str(source)) as container:
        packets = (p for p in container.demux(container.streams.video[0]) if p.size)
        total = 0
        for index, packet in enumerate(packets):
            if index >= max(frames, 1) and packet.is_keyframe:
                return index
            total = index + 1
        return total


def _remux_repeated(source: Path, dest: Path, times: int, packets: int | None = None):
    """Write `times` copies of `source`'s first video stream's packets (its first `packets` only, when
    given) into `dest`, each copy's timestamps shifted by the duration of the copies before it."""
    span = _copy_duration(source) if times > 1 else 0
    with av.open(str(dest), "w") as out:
        out_stream = None
        for copy in range(times):
            with av.open(str(source)) as container:
                stream = container.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                demuxed = (p for p in container.demux(stream) if p.size)  # not the final empty one
                for packet in _with_dts(itertools.islice(demuxed, packets)):
                    packet.pts = None if packet.pts is None else packet.pts + copy * span
                    packet.dts = None if packet.dts is None else packet.dts + copy * span
                    packet.stream = out_stream  # PyAV rescales from the source stream's time base
                    out.mux(packet)


def _with_dts(packets):
    """The packets, each with a decode time (dts). Matroska stores presentation times only, so the
    packets before the decoder's reorder delay demux without one; the muxer would guess it, and across
    copies guess wrong. Each gets the next known dts less one frame duration per packet between them."""
    pending, last_dts, step = [], None, 1
    for packet in packets:
        if packet.dts is None:
            pending.append(packet)
            continue
        step = packet.duration or step
        for back, waiting in enumerate(reversed(pending), 1):
            waiting.dts = packet.dts - back * step
        yield from pending
        pending, last_dts = [], packet.dts
        yield packet
    for ahead, waiting in enumerate(pending, 1):  # none known after them: continue from the last one
        waiting.dts = None if last_dts is None else last_dts + ahead * step
    yield from pending


def _copy_duration(source: Path) -> int:
    """One copy's length in the stream's time base: from its first frame's start to its last frame's end."""
    first, end = None, None
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            stop = packet.pts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
    if first is None:
        raise ValueError(f"{source}: no video packets with timestamps")
    return end - first


def count_frames(path: Path) -> int:
    """Video packets that carry a frame (demuxed, not decoded)."""
    with av.open(str(path)) as container:
        return sum(packet.size > 0 for packet in container.demux(container.streams.video[0]))


def check_recording(path: Path, frames: int, decode: bool = True) -> int:
    """Check a recording: `frames` frames; decode times (dts) strictly increasing and, when `decode`,
    the decoded frames' presentation times too. Returns the frame count; ValueError when it fails."""
    packets, decoded, last_dts, last_pts = 0, 0, None, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
                if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                    raise ValueError(f"{path.name}: packet {packets} at dts {packet.dts} after {last_dts}")
                last_dts = packet.dts if packet.dts is not None else last_dts
            for frame in packet.decode() if decode else ():  # the final empty packet drains the decoder
                if last_pts is not None and (frame.pts is None or frame.pts <= last_pts):
                    raise ValueError(f"{path.name}: frame {decoded} at pts {frame.pts} after {last_pts}")
                last_pts, decoded = frame.pts, decoded + 1
    count = decoded if decode else packets
    if count != frames or packets != frames:
        raise ValueError(f"{path.name}: {packets} packets, {count} frames, expected {frames}")
    return count


def small_archive(dest_dir: Path, count: int, frames: int = 8, height: int = 64, width: int = 96) -> list[Path]:
    """`count` distinct small MP4 clips in `dest_dir` (a red disc crossing a textured background, one
    seed each, H.264, a few KB each); their paths. Skipped when the directory's marker matches."""
    from pipelines.video_io import write_mp4
    from tca_core.synthetic import moving_disc_clip

    dest_dir = Path(dest_dir)
    paths = [dest_dir / f"clip-{index:05d}.mp4" for index in range(count)]
    marker, recipe = dest_dir / "archive.json", dict(count=count, frames=frames, height=height, width=width)
    if _cached(marker, recipe, sum(p.stat().st_size for p in paths) if all(p.exists() for p in paths) else None):
        return paths
    for index, path in enumerate(paths):
        write_mp4(path, moving_disc_clip(frames, height, width, seed=index)[0], fps=24)
    _write_marker(marker, recipe, sum(p.stat().st_size for p in paths))
    return paths


def _marker(path: Path) -> Path:
    """The JSON file beside `path` recording what it was made from and its size."""
    return path.with_name(path.name + ".json")


def _cached(marker: Path, recipe: dict, size: int | None) -> bool:
    """True when `marker` records `recipe` and `size` bytes (None: the file is missing)."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return size is not None and recorded == dict(recipe, bytes=size)


def _write_marker(marker: Path, recipe: dict, size: int):
    marker.write_text(json.dumps(dict(recipe, bytes=size), indent=2))


def main(argv=None):
    """Make (or reuse) one recording and print its frames and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("times", type=int)
    args = parser.parse_args(argv)
    path = long_recording(args.source, args.dest, args.times)
    print(f"{path}: {count_frames(path)} frames, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
