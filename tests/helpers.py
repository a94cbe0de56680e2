"""Frames, ports and a local S3 endpoint for tests."""

import os
import socket
from contextlib import contextmanager

import numpy as np
import torch


def random_frames(num_frames, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def smooth_video(num_frames, height, width, seed=0):
    """Frames of a textured scene drifting slowly to the right: consecutive frames are similar."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 2, (width + num_frames * 2) // 8 + 2, 3)).astype(np.float32)
    texture = (
        torch.nn.functional.interpolate(
            torch.from_numpy(base).permute(2, 0, 1)[None], scale_factor=8, mode="bilinear", align_corners=False
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    frames = [texture[:height, 2 * t : 2 * t + width] for t in range(num_frames)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def train_disc_detector(model, steps=300, seed=0):
    """Train `model` in place to segment the disc of `moving_disc_clip` (class 0); ~25 s on 2 CPUs."""
    from tca_core.segmenter import IMAGENET_MEAN, IMAGENET_STD
    from tca_core.synthetic import moving_disc_clip

    torch.manual_seed(seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    for step in range(steps):
        frames, masks = moving_disc_clip(4, 64, 96, seed=seed * 100_000 + step)
        pixels = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
        loss = model(
            pixel_values=pixels,
            mask_labels=[torch.from_numpy(mask[None]).float() for mask in masks],
            class_labels=[torch.tensor([0]) for _ in masks],
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_s3():
    """A real S3 API (moto's server) on localhost; credentials through the standard environment.
    Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
