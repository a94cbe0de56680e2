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


class FlakyProxy:
    """An HTTP proxy on localhost in front of an S3 endpoint that fails chosen requests before they
    reach it, as a bad network or an overloaded store does.

    `fail_every = n`: every n-th request fails, alternately with a 503 and a dropped connection.
    `fail_writes_under = ("bucket/prefix", ...)`: every PUT of a key under one of them gets a 503;
    `fail_reads_under`: the same for GET and HEAD.
    `failures` lists (method, path, how) for each failed request. Use as a context manager; `url`
    is the endpoint to give clients.
    """

    def __init__(self, target: str, fail_every: int = 0, fail_writes_under=(), fail_reads_under=()):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.fail_every, self.fail_writes_under, self.fail_reads_under = fail_every, fail_writes_under, fail_reads_under
        self.failures: list[tuple[str, str, str]] = []
        self.requests = 0
        lock, proxy, target_host = threading.Lock(), self, urlsplit(target).netloc

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

            def log_message(self, *args):
                pass

            def handle_one(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                how = proxy._decide(self.command, self.path, lock)
                if how == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if how == "503":
                    error = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    if self.command != "HEAD":  # a body after a HEAD answer would be read as the next response
                        self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection(target_host, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _decide(self, method: str, path: str, lock) -> str:
        """'503', 'drop' or '' (forward) for a request."""
        with lock:
            self.requests += 1
            how = ""
            key = path.lstrip("/").split("?", 1)[0]
            under = (
                self.fail_writes_under
                if method == "PUT"
                else self.fail_reads_under
                if method in ("GET", "HEAD")
                else ()
            )
            if any(key.startswith(prefix) for prefix in under):
                how = "503"
            elif self.fail_every and self.requests % self.fail_every == 0:
                how = "503" if (self.requests // self.fail_every) % 2 else "drop"
            if how:
                self.failures.append((method, path, how))
            return how

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
