"""A request's clip: where it may be read from, its size within the limits, its frames decoded.

A URI is read only under an allowed prefix (deploy/uris.py); a file or body over
`max_upload_bytes` is refused before it is read, a clip over `max_frames` frames or `max_pixels`
pixels per frame before it is decoded. Every refusal names the field and the reason
(deploy/errors.py).
"""

from __future__ import annotations

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from pipelines.storage import filesystem
from pipelines.video_io import decoder_message, open_video

from .errors import reject
from .proxy import DEFAULT_MAX_UPLOAD_BYTES
from .uris import ForbiddenURI, resolve


class InputLimits(BaseModel):
    """The most a request may bring (part of the application's arguments, `ServiceOptions`)."""

    model_config = ConfigDict(extra="forbid")

    max_upload_bytes: int = Field(
        DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest uploaded or referenced video file"
    )
    max_frames: int = Field(64, ge=1, description="frames per request, warm-up frames included")
    max_pixels: int = Field(1920 * 1080, ge=1, description="pixels per frame")


def allowed(uri: str, prefixes: list[str], loc: tuple[str, ...]) -> str:
    """The canonical form of `uri` when it lies under one of `prefixes`; 403 otherwise."""
    try:
        return resolve(uri, prefixes)
    except ForbiddenURI as error:
        raise reject(403, loc, str(error)) from None


def read_uri(uri: str, limits: InputLimits, endpoint_url: str | None) -> np.ndarray:
    """The frames of the video file at an (allowed, canonical) URI."""
    fs, path = filesystem(uri, endpoint_url)
    if not fs.isfile(path):
        raise reject(404, ("body", "uri"), f"no file at {uri}")
    size = fs.size(path)
    if size > limits.max_upload_bytes:
        raise reject(413, ("body", "uri"), f"{size} bytes, over the limit of {limits.max_upload_bytes}")
    with fs.open(path, "rb") as handle:
        return decode(handle, ("body", "uri"), limits)


async def read_body(request: Request, limits: InputLimits) -> bytes:
    """The body, refused before any of it is read when its declared length is missing or too large.

    Serve's proxy forwards a body to the replica as fast as the client sends it, so a body is
    only read once its Content-Length is known to be within the limit (a chunked upload
    without one gets 411).
    """
    limit = limits.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise reject(411, ("header", "content-length"), "send the video with a Content-Length header")
    if int(declared) > limit:
        raise reject(413, ("body",), f"{declared} bytes, over the limit of {limit}")
    body = await request.body()
    if not body:
        raise reject(422, ("body",), "empty body: send the bytes of a video file")
    return body


def decode(handle, loc: tuple[str, ...], limits: InputLimits) -> np.ndarray:
    """All frames of a clip, (T, H, W, 3) uint8, after checking the frame and pixel limits."""
    try:
        reader = open_video(handle)
    except ValueError as error:
        raise reject(422, loc, f"not a video that can be decoded (mp4, mkv, webm, ...): {error}") from None
    info = reader.info
    if info.frames > limits.max_frames:
        raise reject(413, loc, f"{info.frames} frames, over the limit of {limits.max_frames}: send shorter clips")
    if info.height * info.width > limits.max_pixels:
        raise reject(
            413, loc, f"{info.width}x{info.height} frames, over the limit of {limits.max_pixels} pixels per frame"
        )
    try:
        return reader.read(0, info.frames)[0]
    except Exception as error:  # decord's own errors, PyAV's ValueError: a truncated or corrupt file
        raise reject(422, loc, f"the video cannot be decoded: {decoder_message(error)}") from None
