"""Frames, ports and a local S3 endpoint for tests."""

import threading

import numpy as np
import torch

from benchmarks.s3proxy import S3Proxy, free_port, moto_s3  # noqa: F401 (the tests import these from here)

# Clustering settings that tests of TCA's mechanics and precision on the small random-weight models are
# written for: the generic defaults before those became Expedit's (docs/tca.md, "Generic defaults"). On
# these models' features, more k-means rounds at Expedit's temperature (7.68 on our scale) raise some
# windows' quantisation error, so on a static clip TCA's per-window fallback replaces the memory there
# (1/8 of the tokens of test_tca's static clip), which those tests rule out; and test_half_precision's
# bound was set at them (TCA's float16 output is 0.3% from float32's there, 4% at Expedit's settings,
# where a radius of 2 cells lets a token of the 4 x 4 grid join almost every center).
SMALL_MODEL_CLUSTERING = dict(temperature=1.0, radius=1, topk=4)


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


class FlakyProxy(S3Proxy):
    """An S3Proxy (benchmarks/s3proxy.py: forwards and records every request) that fails chosen
    requests before they reach the store, as a bad network or an overloaded store does.

    `fail_every = n`: every n-th request fails, alternately with a 503 and a dropped connection.
    `fail_writes_under = ("bucket/prefix", ...)`: every PUT of a key under one of them gets a 503;
    `fail_reads_under`: the same for GET and HEAD.
    `failures` lists (method, "bucket/key", how) for each failed request; `seen` counts requests.
    Use as a context manager; `url` is the endpoint to give clients.
    """

    def __init__(self, target: str, fail_every: int = 0, fail_writes_under=(), fail_reads_under=()):
        super().__init__(target)
        self.fail_every, self.fail_writes_under, self.fail_reads_under = fail_every, fail_writes_under, fail_reads_under
        self.failures: list[tuple[str, str, str]] = []
        self.seen = 0
        self._lock = threading.Lock()

    def fault(self, method: str, path: str) -> str:
        """'503', 'drop' or '' (forward) for a request to `path` ("bucket/key")."""
        with self._lock:
            self.seen += 1
            under = {"PUT": self.fail_writes_under, "GET": self.fail_reads_under, "HEAD": self.fail_reads_under}
            how = ""
            if any(path.startswith(prefix) for prefix in under.get(method, ())):
                how = "503"
            elif self.fail_every and self.seen % self.fail_every == 0:
                how = "503" if (self.seen // self.fail_every) % 2 else "drop"
            if how:
                self.failures.append((method, path, how))
            return how
