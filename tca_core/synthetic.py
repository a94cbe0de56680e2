"""Generated clips with exact ground truth, for the demo and the tests."""

from __future__ import annotations

import numpy as np


def moving_disc_clip(num_frames: int = 8, height: int = 64, width: int = 96, seed: int = 0):
    """A red disc crossing a textured background. Returns (frames (T, H, W, 3) uint8, masks (T, H, W) bool)."""
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
