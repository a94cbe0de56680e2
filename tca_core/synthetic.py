"""Generated videos with exact ground truth: the embedded model's training and evaluation data.

`SyntheticVideo(seed)` is a deterministic scene of shapes (the CATEGORIES, each with its own shape
and color family) that move, hold still,
rush, rotate, scale, occlude each other and enter or leave, over a textured background with
lighting changes, camera jitter and sensor noise. `frame(t)` renders frame t and returns its exact
per-object visible masks, categories and track ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = {0: "background", 1: "disc", 2: "square", 3: "triangle", 4: "star"}
THING_CATEGORIES = (1, 2, 3, 4)
CATEGORY_HUES = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75}
JITTER = 6  # pixels of camera jitter at most, each way
# Training videos use seeds below this, evaluation (the held-out videos) seeds from it up: no video
# the model is evaluated on was seen in training.
HELD_OUT_SEED = 1_000_000_000


@dataclass
class ObjectTruth:
    track_id: int
    category_id: int
    mask: np.ndarray  # (H, W) bool, visible pixels only


@dataclass
class _Track:
    track_id: int
    category_id: int
    color: np.ndarray  # (3,) RGB
    positions: np.ndarray  # (T, 2) center (y, x) per frame
    angles: np.ndarray  # (T,) radians
    radii: np.ndarray  # (T,) pixels


class SyntheticVideo:
    """A deterministic generated video: `num_frames` frames of `height` x `width` from `seed`."""

    def __init__(self, seed: int, num_frames: int = 48, height: int = 224, width: int = 336):
        self.seed, self.num_frames, self.height, self.width = seed, num_frames, height, width
        rng = np.random.default_rng(seed)
        self.background = _background(rng, height + 2 * JITTER, width + 2 * JITTER)
        self.lighting = 1.0 + rng.uniform(0.1, 0.3) * np.sin(
            2 * math.pi * np.arange(num_frames) / rng.uniform(16, 64) + rng.uniform(0, 2 * math.pi)
        )
        shaky = rng.random() < 0.6
        self.jitter = (
            rng.integers(-JITTER, JITTER + 1, (num_frames, 2)) if shaky else np.zeros((num_frames, 2), dtype=int)
        )
        self.noise = rng.uniform(2, 8)
        count = rng.integers(2, 6)
        self.tracks = sorted(  # drawn back to front: later tracks occlude earlier ones
            (_track(rng, track_id, num_frames, height, width) for track_id in range(1, count + 1)),
            key=lambda track: rng.random(),
        )

    def frame(self, t: int) -> tuple[np.ndarray, list[ObjectTruth]]:
        """Frame t as (H, W, 3) uint8 RGB and the visible objects in it, with exact masks."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} of a {self.num_frames}-frame video")
        dy, dx = self.jitter[t]
        image = self.background[JITTER + dy : JITTER + dy + self.height, JITTER + dx : JITTER + dx + self.width].copy()
        drawn = []
        for track in self.tracks:
            center = track.positions[t] + (dy, dx)
            mask = _shape_mask(track.category_id, center, track.radii[t], track.angles[t], self.height, self.width)
            shade = 0.85 + 0.15 * np.linspace(-1, 1, self.width)[None, :] * math.cos(track.angles[t])
            image[mask] = track.color[None, :] * shade[:, :, None].repeat(self.height, 0)[mask]
            drawn.append((track, mask))
        image = image * self.lighting[t]
        rng = np.random.default_rng((self.seed, t))
        image = np.clip(image + rng.normal(0, self.noise, image.shape), 0, 255).astype(np.uint8)

        objects, covered = [], np.zeros((self.height, self.width), dtype=bool)
        for track, mask in reversed(drawn):  # front to back
            visible = mask & ~covered
            covered |= mask
            if visible.any():
                objects.append(ObjectTruth(track.track_id, track.category_id, visible))
        return image, objects[::-1]

    def frames(self) -> tuple[np.ndarray, list[list[ObjectTruth]]]:
        """All frames (T, H, W, 3) and their objects."""
        rendered = [self.frame(t) for t in range(self.num_frames)]
        return np.stack([image for image, _ in rendered]), [objects for _, objects in rendered]


def semantic_map(objects: list[ObjectTruth], height: int, width: int) -> np.ndarray:
    """(H, W) category ids, 0 for background."""
    labels = np.zeros((height, width), dtype=np.int32)
    for obj in objects:
        labels[obj.mask] = obj.category_id
    return labels


def _background(rng, height: int, width: int) -> np.ndarray:
    """A muted smooth texture with fine grain and a few soft stripes, float RGB."""
    coarse = rng.uniform(40, 170, (height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    smooth = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c]).resize((width, height), Image.BICUBIC)) for c in range(3)], -1
    )
    angle = rng.uniform(0, math.pi)
    rows, cols = np.mgrid[:height, :width]
    stripes = np.sin((rows * math.sin(angle) + cols * math.cos(angle)) / rng.uniform(6, 20))
    grain = rng.normal(0, 6, (height, width, 1))
    return np.clip(smooth * (1 + 0.08 * stripes[..., None]) + grain, 0, 255)


def _track(rng, track_id: int, num_frames: int, height: int, width: int) -> _Track:
    """A random object and its path: holds, slow moves and fast moves; may enter or leave."""
    category = int(rng.choice(THING_CATEGORIES))
    # Each category has its own color family (as real classes differ in appearance, not only in
    # outline): hue around a per-category center, with jitter and a random brightness.
    hue = CATEGORY_HUES[category] + rng.uniform(-0.06, 0.06)
    color = 255 * rng.uniform(0.7, 1.0) * np.array([_hue_channel(hue + shift) for shift in (0, 2 / 3, 1 / 3)])
    radius0 = rng.uniform(0.08, 0.2) * min(height, width)

    def point(outside: bool):
        if outside:  # just beyond a random edge
            edge = rng.integers(4)
            y, x = rng.uniform(0, height), rng.uniform(0, width)
            margin = 1.2 * radius0
            return np.array([[-margin, x], [height + margin, x], [y, -margin], [y, width + margin]][edge])
        return np.array([rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width])

    position = point(rng.random() < 0.25)
    positions = []
    while len(positions) < num_frames:
        kind = rng.choice(["hold", "slow", "fast"], p=[0.3, 0.45, 0.25])
        steps = int(rng.integers(4, 16))
        if kind == "hold":
            positions += [position] * steps
            continue
        target = point(len(positions) + steps >= num_frames and rng.random() < 0.3)
        speed = rng.uniform(1, 3) if kind == "slow" else rng.uniform(6, 12)
        steps = max(1, int(np.linalg.norm(target - position) / speed))
        positions += [position + (target - position) * (i + 1) / steps for i in range(steps)]
        position = target
    positions = np.array(positions[:num_frames])
    spin = rng.choice([0.0, rng.uniform(-0.15, 0.15)])
    angles = rng.uniform(0, 2 * math.pi) + spin * np.arange(num_frames)
    pulse = rng.choice([0.0, rng.uniform(0.1, 0.3)])
    radii = radius0 * (1 + pulse * np.sin(2 * math.pi * np.arange(num_frames) / rng.uniform(20, 60)))
    return _Track(track_id, category, color, positions, angles, radii)


def _hue_channel(h: float) -> float:
    """One RGB channel of a saturated color of hue h (a smooth color wheel)."""
    return 0.15 + 0.8 * max(0.0, min(1.0, abs((h % 1.0) * 6 - 3) - 1))


def _shape_mask(category_id: int, center, radius: float, angle: float, height: int, width: int) -> np.ndarray:
    """Exact (H, W) mask of a shape drawn with PIL (the same pixels the frame shows)."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    y, x = center
    if CATEGORIES[category_id] == "disc":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=1)
    else:
        draw.polygon(_polygon(CATEGORIES[category_id], x, y, radius, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _polygon(name: str, x: float, y: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if name == "square":
        radii, corners = [radius] * 4, 4
    elif name == "triangle":
        radii, corners = [radius * 1.2] * 3, 3
    else:  # star: alternating outer and inner points
        radii, corners = [radius * 1.2, radius * 0.5] * 5, 10
    return [
        (x + r * math.cos(angle + 2 * math.pi * k / corners), y + r * math.sin(angle + 2 * math.pi * k / corners))
        for k, r in enumerate(radii)
    ]


def moving_disc_clip(num_frames: int = 8, height: int = 64, width: int = 96, seed: int = 0):
    """A red disc crossing a textured background (the tests' quick detector).

    Returns (frames (T, H, W, 3) uint8, masks (T, H, W) bool)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 140, (height // 8 + 1, width // 8 + 1, 3))
    background = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    radius = min(height, width) * rng.uniform(0.15, 0.25)
    start = np.array([rng.uniform(radius, height - radius), radius])
    end = np.array([rng.uniform(radius, height - radius), width - radius])
    color = np.array([220, 40, 40]) + rng.uniform(-20, 20, 3)
    rows, cols = np.mgrid[:height, :width]
    frames, masks = [], []
    for t in range(num_frames):
        y, x = start + (end - start) * t / max(num_frames - 1, 1)
        mask = (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
        frame = np.where(mask[..., None], color, background) + rng.normal(0, 4, (height, width, 3))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(frames), np.stack(masks)
