"""Generated videos with exact ground truth: the embedded model's training and evaluation data.

`SyntheticVideo(seed)` is a deterministic scene: 3-9 textured objects of the CATEGORIES (each its own
shape *and* its own texture, `LOOKS`; colour only hints, `FAMILY_SHARE`) over real footage, a
background plate from the sample videos (tca_core.plates). Some objects are small (down to about
8 px) or thin (rods, rings), a third of them pile up around one point and occlude each other, and
they hold still, drift or rush, rotate and enter or leave. The camera is either **static** (a fixed
view of the plate while its footage plays on) or **moving** (pans, zooms and shake, the objects
moving with the scene). `frame(t)` renders frame t and returns its exact per-object visible masks,
categories and track ids: the masks are the pixels the renderer drew.

Training videos use seeds below HELD_OUT_SEED and the first part of each plate; the held-out sets
(`HELD_OUT_SETS`, `held_out_videos`) use seeds from it up and the plates' last part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from . import plates

CATEGORIES = {
    0: "background",
    1: "disc",
    2: "square",
    3: "triangle",
    4: "star",
    5: "cross",
    6: "crescent",
    7: "rod",
    8: "ring",
}
THING_CATEGORIES = tuple(range(1, len(CATEGORIES)))
# Each category is a shape and a texture, both its own: either tells it apart from the others.
LOOKS = {
    1: ("disc", "stripes"),
    2: ("square", "checks"),
    3: ("triangle", "dots"),
    4: ("star", "plain"),
    5: ("cross", "grid"),
    6: ("crescent", "rings"),
    7: ("rod", "halves"),
    8: ("ring", "dashes"),
}
THIN = {"rod", "ring"}
# Colour hints the category and never decides it: FAMILY_SHARE of the objects take their category's
# hue family (hues 1/8 apart, jittered by FAMILY_JITTER); the others any hue.
FAMILY_SHARE = 0.75
FAMILY_JITTER = 0.03
SMALL_SHARE = 0.2  # objects 8-14 px across
PILE_SHARE = 1 / 3  # objects that stay around one focus point, occluding each other
ZOOM_RANGE = (1.02, 1.42)  # the moving camera's zoom, from a plate's pixels to the frame's
CAMERAS = ("static", "moving")
HELD_OUT_SETS = {"static-camera": "static", "moving-camera": "moving"}
# Training videos use seeds below this, evaluation (the held-out videos) seeds from it up: no video
# the model is evaluated on was seen in training.
HELD_OUT_SEED = 1_000_000_000


def category_hue(category_id: int) -> float:
    return (category_id - 1) / len(THING_CATEGORIES)


@dataclass
class ObjectTruth:
    track_id: int
    category_id: int
    mask: np.ndarray  # (H, W) bool, visible pixels only


@dataclass
class _Track:
    track_id: int
    category_id: int
    colors: np.ndarray  # (2, 3) RGB: base and texture
    period: float  # texture period, plate pixels
    thickness: float  # of rods and rings, plate pixels
    positions: np.ndarray  # (T, 2) center (y, x) per frame, plate pixels
    angles: np.ndarray  # (T,) radians
    radii: np.ndarray  # (T,) plate pixels


@dataclass
class _Camera:
    """Per frame: the plate pixel at the frame's center (T, 2) and the zoom (T,)."""

    centers: np.ndarray
    zooms: np.ndarray


class SyntheticVideo:
    """A deterministic generated video: `num_frames` frames of `height` x `width` from `seed`.

    `camera` is "static" or "moving"; None draws it from the seed (training videos)."""

    def __init__(self, seed: int, num_frames: int = 48, height: int = 224, width: int = 336, camera: str | None = None):
        if camera is not None and camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
        self.seed, self.num_frames, self.height, self.width = seed, num_frames, height, width
        rng = np.random.default_rng(seed)
        self.camera_kind = camera or str(rng.choice(CAMERAS))
        self.plate = plates.plate(str(rng.choice(plates.PLATE_NAMES)))
        part = self.plate.split(held_out=seed >= HELD_OUT_SEED)
        start = int(rng.integers(0, len(part)))
        self.plate_frames = [part[_bounce(start + t, len(part))] for t in range(num_frames)]
        self.camera = _camera(rng, self.camera_kind, num_frames, self.plate.frames.shape[1:3], (height, width))
        self.lighting = 1.0 + rng.uniform(0.05, 0.2) * np.sin(
            2 * math.pi * np.arange(num_frames) / rng.uniform(16, 64) + rng.uniform(0, 2 * math.pi)
        )
        self.noise = rng.uniform(2, 6)
        region = _scene_region(self.camera, (height, width))
        focus = np.array([rng.uniform(*region[0]), rng.uniform(*region[1])])
        count = int(rng.integers(3, 10))
        self.tracks = [_track(rng, i, num_frames, region, focus) for i in range(1, count + 1)]
        rng.shuffle(self.tracks)  # drawn back to front: later tracks occlude earlier ones

    def frame(self, t: int) -> tuple[np.ndarray, list[ObjectTruth]]:
        """Frame t as (H, W, 3) uint8 RGB and the visible objects in it, with exact masks."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} of a {self.num_frames}-frame video")
        center, zoom = self.camera.centers[t], float(self.camera.zooms[t])
        image = _view(self.plate.frames[self.plate_frames[t]], center, zoom, (self.height, self.width))
        drawn = []
        for track in self.tracks:
            mask = _draw_track(image, track, t, center, zoom)
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

    def to_frame(self, t: int, points: np.ndarray) -> np.ndarray:
        """Plate pixels (N, 2) as (y, x) to frame t's pixels."""
        half = np.array([self.height, self.width]) / 2
        return (np.asarray(points) - self.camera.centers[t]) * self.camera.zooms[t] + half


def held_out_videos(set_name: str, count: int, num_frames: int = 48) -> list[SyntheticVideo]:
    """The first `count` videos of held-out set `set_name` (a key of HELD_OUT_SETS)."""
    if set_name not in HELD_OUT_SETS:
        raise ValueError(f"unknown held-out set {set_name!r}: the sets are {', '.join(HELD_OUT_SETS)}")
    return [SyntheticVideo(HELD_OUT_SEED + i, num_frames, camera=HELD_OUT_SETS[set_name]) for i in range(count)]


def semantic_map(objects: list[ObjectTruth], height: int, width: int) -> np.ndarray:
    """(H, W) category ids, 0 for background."""
    labels = np.zeros((height, width), dtype=np.int32)
    for obj in objects:
        labels[obj.mask] = obj.category_id
    return labels


def _bounce(index: int, length: int) -> int:
    """Play a plate's part forwards then backwards, so a video may be longer than the part."""
    if length == 1:
        return 0
    index %= 2 * (length - 1)
    return index if index < length else 2 * (length - 1) - index


def _camera(rng, kind: str, num_frames: int, plate_shape, frame_shape) -> _Camera:
    """A static view (zoom 1, fixed) or a moving one: a pan, a zoom between two values and shake."""
    steps = np.arange(num_frames) / max(1, num_frames - 1)
    if kind == "static":
        zooms = np.ones(num_frames)
    else:
        begin, end = rng.uniform(*ZOOM_RANGE, 2)
        zooms = begin + (end - begin) * (0.5 - 0.5 * np.cos(math.pi * steps))
    # The plate pixels the view may be centered on at the smallest zoom (the widest view).
    half = np.array(frame_shape) / 2 / zooms.min()
    low, high = half, np.array(plate_shape) - half
    high = np.maximum(high, low)
    first = rng.uniform(low, high)
    if kind == "static":
        centers = np.repeat(first[None], num_frames, 0)
    else:
        last = rng.uniform(low, high)
        shake = rng.normal(0, 1.5, (num_frames, 2)) * (rng.random() < 0.7)
        centers = np.clip(first + (last - first) * steps[:, None] + shake, low, high)
    return _Camera(centers, zooms)


def _scene_region(camera: _Camera, frame_shape) -> tuple[tuple[float, float], tuple[float, float]]:
    """The plate region (y range, x range) the camera sees at some point of the video."""
    half = np.array(frame_shape) / 2 / camera.zooms[:, None]
    low, high = (camera.centers - half).min(0), (camera.centers + half).max(0)
    return (low[0], high[0]), (low[1], high[1])


def _view(plate_frame: np.ndarray, center, zoom: float, frame_shape) -> np.ndarray:
    """The frame the camera sees: the plate around `center`, magnified `zoom` times, float RGB."""
    height, width = frame_shape
    y, x = center
    coefficients = (1 / zoom, 0, x - width / 2 / zoom, 0, 1 / zoom, y - height / 2 / zoom)
    image = Image.fromarray(np.ascontiguousarray(plate_frame))
    return np.asarray(image.transform((width, height), Image.AFFINE, coefficients, Image.BILINEAR), np.float32)


def _track(rng, track_id: int, num_frames: int, region, focus) -> _Track:
    """A random object of a random category and its path in plate pixels."""
    category = int(rng.choice(THING_CATEGORIES))
    shape = LOOKS[category][0]
    small = rng.random() < SMALL_SHARE
    radius0 = rng.uniform(4, 7) if small else rng.uniform(14, 40)
    if shape in THIN and not small:
        radius0 = rng.uniform(20, 44)
    piled = rng.random() < PILE_SHARE
    positions = _path(rng, num_frames, region, focus if piled else None, radius0)
    spin = rng.choice([0.0, rng.uniform(-0.12, 0.12)])
    angles = rng.uniform(0, 2 * math.pi) + spin * np.arange(num_frames)
    pulse = rng.choice([0.0, rng.uniform(0.05, 0.2)])
    radii = radius0 * (1 + pulse * np.sin(2 * math.pi * np.arange(num_frames) / rng.uniform(20, 60)))
    return _Track(
        track_id,
        category,
        _colors(rng, category),
        period=rng.uniform(12, 20),
        thickness=rng.uniform(6, 10),
        positions=positions,
        angles=angles,
        radii=radii,
    )


def _colors(rng, category: int) -> np.ndarray:
    """A base colour (the category's hue family, or any hue) and a darker texture colour."""
    if rng.random() < FAMILY_SHARE:
        hue = category_hue(category) + rng.uniform(-FAMILY_JITTER, FAMILY_JITTER)
    else:
        hue = rng.uniform(0, 1)
    base = 255 * rng.uniform(0.75, 1.0) * np.array([_hue_channel(hue + shift) for shift in (0, 2 / 3, 1 / 3)])
    return np.stack([base, base * rng.uniform(0.25, 0.45)])


def _path(rng, num_frames: int, region, focus, radius: float) -> np.ndarray:
    """(T, 2) centers: holds, slow moves and fast moves within `region`, or drifts around `focus`;
    a free object may enter from beyond an edge or leave."""
    (y0, y1), (x0, x1) = region

    def point(outside: bool):
        if focus is not None:
            return focus + rng.normal(0, 18, 2)
        if outside:  # just beyond a random edge
            y, x, margin = rng.uniform(y0, y1), rng.uniform(x0, x1), 1.2 * radius
            return np.array([[y0 - margin, x], [y1 + margin, x], [y, x0 - margin], [y, x1 + margin]][rng.integers(4)])
        return np.array(
            [
                rng.uniform(y0 + 0.1 * (y1 - y0), y1 - 0.1 * (y1 - y0)),
                rng.uniform(x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0)),
            ]
        )

    position = point(rng.random() < 0.2)
    positions = []
    while len(positions) < num_frames:
        kind = rng.choice(["hold", "slow", "fast"], p=[0.3, 0.45, 0.25])
        steps = int(rng.integers(4, 16))
        if kind == "hold":
            positions += [position] * steps
            continue
        target = point(len(positions) + steps >= num_frames and rng.random() < 0.3)
        speed = rng.uniform(0.5, 2.5) if kind == "slow" else rng.uniform(5, 10)
        steps = max(1, int(np.linalg.norm(target - position) / speed))
        positions += [position + (target - position) * (i + 1) / steps for i in range(steps)]
        position = target
    return np.array(positions[:num_frames])


def _hue_channel(h: float) -> float:
    """One RGB channel of a saturated color of hue h (a smooth color wheel)."""
    return 0.15 + 0.8 * max(0.0, min(1.0, abs((h % 1.0) * 6 - 3) - 1))


def _draw_track(image: np.ndarray, track: _Track, t: int, center, zoom: float) -> np.ndarray:
    """Paint track's object at frame t into `image` (in place); return its exact (H, W) mask."""
    height, width = image.shape[:2]
    y, x = (track.positions[t] - center) * zoom + np.array([height, width]) / 2
    radius, angle = track.radii[t] * zoom, float(track.angles[t])
    shape = LOOKS[track.category_id][0]
    mask = _shape_mask(shape, (y, x), radius, angle, track.thickness * zoom, (height, width))
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return mask
    # Object-local coordinates in plate pixels: the texture turns and scales with the object.
    dy, dx = (rows - y) / zoom, (cols - x) / zoom
    u, v = dx * math.cos(angle) + dy * math.sin(angle), -dx * math.sin(angle) + dy * math.cos(angle)
    pattern = _texture(LOOKS[track.category_id][1], u, v, track.period)
    shade = 0.85 + 0.15 * np.clip(u / max(track.radii[t], 1), -1, 1)
    image[rows, cols] = track.colors[pattern.astype(int)] * shade[:, None]
    return mask


def _texture(name: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Which pixels (object-local coordinates u, v) take the texture colour."""
    if name == "stripes":
        return (u / period) % 1 < 0.5
    if name == "checks":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 1
    if name == "dots":
        return ((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2 < 0.09
    if name == "grid":
        return ((u / period) % 1 < 0.3) | ((v / period) % 1 < 0.3)
    if name == "rings":
        return (np.hypot(u, v) / (0.6 * period)) % 1 < 0.5
    if name == "halves":
        return v > 0
    if name == "dashes":
        return np.floor(np.arctan2(v, u) / (2 * math.pi) * 12) % 2 == 1
    return np.zeros(u.shape, dtype=bool)  # plain


def _shape_mask(shape: str, center, radius: float, angle: float, thickness: float, frame_shape) -> np.ndarray:
    """Exact (H, W) mask of a shape drawn with PIL (the same pixels the frame shows)."""
    height, width = frame_shape
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    y, x = center
    box = [x - radius, y - radius, x + radius, y + radius]
    if shape == "disc":
        draw.ellipse(box, fill=1)
    elif shape == "ring":
        draw.ellipse(box, outline=1, width=max(2, round(thickness)))
    elif shape == "crescent":
        draw.ellipse(box, fill=1)
        shift, inner = 0.55 * radius, 0.85 * radius
        cx, cy = x + shift * math.cos(angle), y + shift * math.sin(angle)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        draw.polygon(_polygon(shape, x, y, radius, angle, thickness), fill=1)
    return np.asarray(canvas, dtype=bool)


def _polygon(shape: str, x: float, y: float, radius: float, angle: float, thickness: float):
    """Corners of the polygon shapes, as (x, y) in frame pixels."""
    if shape in ("square", "triangle", "star"):
        radii, corners = {"square": ([radius] * 4, 4), "triangle": ([radius * 1.2] * 3, 3)}.get(
            shape, ([radius * 1.2, radius * 0.5] * 5, 10)
        )
        return [
            (x + r * math.cos(angle + 2 * math.pi * k / corners), y + r * math.sin(angle + 2 * math.pi * k / corners))
            for k, r in enumerate(radii)
        ]
    if shape == "rod":
        half_length, half_width = 1.2 * radius, max(1.0, thickness / 2)
        local = [
            (-half_length, -half_width),
            (half_length, -half_width),
            (half_length, half_width),
            (-half_length, half_width),
        ]
    else:  # cross: two bars of a third of the width
        a, b = 1.1 * radius, 0.36 * radius
        local = [
            (-a, -b),
            (-b, -b),
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x + u * cos - v * sin, y + u * sin + v * cos) for u, v in local]


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
