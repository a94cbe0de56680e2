"""Frames for tests."""

import numpy as np
import torch


def random_frames(num_frames, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def smooth_video(num_frames, height, width, seed=0):
    """Frames of a textured scene drifting slowly to the right: consecutive frames are similar."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 2, (width + num_frames * 2) // 8 + 2, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(
        torch.from_numpy(base).permute(2, 0, 1)[None], scale_factor=8, mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0).numpy()
    frames = [texture[:height, 2 * t : 2 * t + width] for t in range(num_frames)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)
