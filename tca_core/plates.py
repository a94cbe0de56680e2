"""Background plates: real footage behind the generated videos' objects (tca_core.synthetic).

The sample videos in `../shared/data/videos/` (Intel IoT Developer Kit sample videos, CC BY 4.0) are
read at generation and training time, never copied into the repository. Each is decoded once, at
`PLATE_HEIGHT` pixels high and about `PLATE_FPS` frames per second, into a read-only `.npy` cache
that every process maps with `mmap` (so a training run or a Ray worker holds no plate in memory).

Frames are split in time: training videos take the first `TRAIN_SHARE` of each plate's frames and
the held-out videos the rest, so no background frame of an evaluation video was seen in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

PLATE_NAMES = ("bottle-detection.mp4", "car-detection.mp4", "milk.mkv", "walk.mkv")
PLATE_HEIGHT = 256  # above the generated frames' 224, so a camera can pan and zoom within a plate
PLATE_FPS = 15.0
TRAIN_SHARE = 0.8
CREDIT = "Intel IoT Developer Kit sample videos (github.com/intel-iot-devkit/sample-videos), CC BY 4.0"


def video_dir() -> Path:
    """Where the sample videos are: `TCA_PLATE_DIR`, else `../shared/data/videos` beside the checkout."""
    configured = os.environ.get("TCA_PLATE_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def cache_dir() -> Path:
    return Path(os.environ.get("TCA_CACHE_DIR", Path.home() / ".cache" / "tca-video")) / "plates"


@dataclass(frozen=True)
class Plate:
    """One plate's frames, (N, PLATE_HEIGHT, W, 3) uint8 (memory-mapped), and its time split."""

    name: str
    frames: np.ndarray

    def split(self, held_out: bool) -> range:
        """Frame indices of the training part (the first TRAIN_SHARE) or of the held-out part."""
        cut = max(1, min(len(self.frames) - 1, round(len(self.frames) * TRAIN_SHARE)))
        return range(cut, len(self.frames)) if held_out else range(cut)


@cache
def plate(name: str) -> Plate:
    """The plate decoded from sample video `name`, from the cache (decoded there on first use)."""
    if name not in PLATE_NAMES:
        raise ValueError(f"unknown plate {name!r}: the plates are {', '.join(PLATE_NAMES)}")
    cached = cache_dir() / f"{Path(name).stem}-{PLATE_HEIGHT}.npy"
    if not cached.exists():
        source = video_dir() / name
        if not source.is_file():
            raise FileNotFoundError(
                f"background plate {source} is missing: the generated videos need the sample videos "
                "(../shared/data/videos beside the checkout, or TCA_PLATE_DIR)"
            )
        _write_atomic(cached, _decode(source))
    return Plate(name, np.load(cached, mmap_mode="r"))


def _decode(source: Path) -> np.ndarray:
    """Every k-th frame of `source` (k from its rate, for about PLATE_FPS), resized to PLATE_HEIGHT."""
    import av
    from PIL import Image

    frames = []
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or PLATE_FPS)
        step = max(1, round(rate / PLATE_FPS))
        for index, frame in enumerate(container.decode(stream)):
            if index % step:
                continue
            image = frame.to_image()
            width = round(image.width * PLATE_HEIGHT / image.height)
            frames.append(np.asarray(image.resize((width, PLATE_HEIGHT), Image.BILINEAR)))
    if len(frames) < 2:
        raise ValueError(f"background plate {source} has {len(frames)} decodable frame(s); it needs 2")
    return np.stack(frames)


def _write_atomic(path: Path, array: np.ndarray) -> None:
    """Write to a temporary name, then rename: processes decoding at once never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(temporary, array)
    temporary.replace(path)
