"""The body limit in Serve's HTTP proxy: an oversized or length-less upload is refused before any of it
is read.

The replica refuses such bodies too (deploy/inputs.py), but a request reaches it through the proxy,
which reads ahead what the client sends while the request is routed; with 128 MiB bodies on a busy
machine that was up to 66 MB of the proxy's memory per flood of four. Serve applies the Starlette
middlewares returned by the function that `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names in every
proxy it starts, so the refusal happens in the proxy itself, from the request's headers:

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deploy.proxy:middlewares
    TCA_PROXY_MAX_BODY_BYTES=33554432   # optional; the default is the service's default upload limit

The environment of the Ray node sets them (deploy/Dockerfile, ray_cluster.yaml and the KubeRay
manifests do); the limit applies to every HTTP request on the cluster's proxies, so it should be at
least each application's own `max_upload_bytes`.
"""

from __future__ import annotations

import json
import os

from starlette.middleware import Middleware

PROXY_CALLBACK = "deploy.proxy:middlewares"
LIMIT_VARIABLE = "TCA_PROXY_MAX_BODY_BYTES"
# The service's default upload limit (deploy/inputs.py, InputLimits), declared here because the proxy
# imports only this module (the proxy must answer its readiness check within seconds of starting).
DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20


def proxy_environment(limit: int | None = None) -> dict[str, str]:
    """The variables a Ray node needs for its proxies to apply the body limit (`limit` bytes; None:
    the service's default upload limit)."""
    env = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_CALLBACK}
    if limit is not None:
        env[LIMIT_VARIABLE] = str(limit)
    return env


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the body limit, from TCA_PROXY_MAX_BODY_BYTES."""
    value = os.environ.get(LIMIT_VARIABLE, str(DEFAULT_MAX_UPLOAD_BYTES))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{LIMIT_VARIABLE}={value!r}: expected a positive number of bytes")
    return [Middleware(BodyLimit, limit=int(value))]


class BodyLimit:
    """Pure ASGI middleware: a request whose declared body is over `limit` bytes is answered 413, one
    whose body comes chunked without a length 411, both from the headers alone; others pass."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self._refusal(dict(scope["headers"]))
            if refusal is not None:
                await _answer(send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> tuple[int, list[str], str] | None:
        declared = headers.get(b"content-length")
        if declared is None:
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                return 411, ["header", "content-length"], "send the video with a Content-Length header"
            return None
        if not declared.isdigit():
            return 400, ["header", "content-length"], f"not a length: {declared.decode(errors='replace')!r}"
        if int(declared) > self.limit:
            return 413, ["body"], f"{int(declared)} bytes, over the proxy's limit of {self.limit}"
        return None


async def _answer(send, status: int, loc: list[str], message: str):
    """The refusal in the service's error format (deploy/errors.py); the connection is closed, since
    the client may still be sending the body that will not be read."""
    body = json.dumps({"detail": [{"loc": loc, "msg": message}]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
