"""An HTTP proxy on localhost in front of an S3 endpoint (e.g. moto's server) that records every request.

    with CountingProxy("http://127.0.0.1:5000") as proxy:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.url})
        ...
        proxy.bytes_read("bucket/videos/")      # GET body bytes of the objects under that prefix
        proxy.requests("bucket/videos/a.mp4")   # [Request(method, bucket, key, range, status, body_bytes, ...)]

Clients must address buckets path-style (`http://host/bucket/key`), which botocore does for an
endpoint given by IP address. The proxy keeps each client connection alive (HTTP/1.1), holds one
upstream connection per client connection, and relays response bodies in pieces, so a large object
is never held whole. `S3Proxy.fault` is the hook for proxies that inject failures (tests).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

PIECE_BYTES = 1 << 20  # response bodies are relayed this much at a time
# Headers that describe one hop, not the message: never forwarded as they are.
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}


@dataclass(frozen=True)
class Request:
    """One request the proxy saw. `status` 0: no response (connection dropped or upstream down)."""

    method: str
    bucket: str
    key: str  # "" for bucket-level requests (listings, multipart listings)
    query: str
    range: str | None  # the Range header, e.g. "bytes=0-1023"
    status: int
    body_bytes: int  # response body bytes relayed to the client
    started: float  # time.monotonic() when the request arrived
    finished: float  # time.monotonic() when its response was relayed

    @property
    def path(self) -> str:
        return f"{self.bucket}/{self.key}"


def split_path(target: str) -> tuple[str, str, str]:
    """(bucket, key, query) of a path-style request target ("/bucket/a%20b.mp4?x=1", or absolute)."""
    parts = urlsplit(target)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return bucket, key, parts.query


def _under(request: Request, key_prefix: str) -> bool:
    prefix = key_prefix.removeprefix("s3://").lstrip("/")
    return request.path.startswith(prefix)


class S3Proxy:
    """Forwards every request to `target_endpoint` and records it; a context manager with `.url`.

    Subclasses may override `fault(method, path)` to fail chosen requests: "503" answers with a
    ServiceUnavailable error, "drop" closes the connection without an answer, "" forwards.
    """

    def __init__(self, target_endpoint: str, settle_seconds: float = 5.0):
        self.target, self.settle_seconds = urlsplit(target_endpoint).netloc, settle_seconds
        self._changed = threading.Condition()
        self._requests: list[Request] = []
        self._tickets, self._open = 0, set()  # a number per request on arrival; those not yet recorded
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.proxy = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3proxy", daemon=True)

    def fault(self, method: str, path: str) -> str:
        """What to do with a request to `path` ("bucket/key"): "503", "drop" or "" (forward; always, here)."""
        return ""

    def arrived(self) -> int:
        """A ticket for a request that has just arrived, to give back to `record`."""
        with self._changed:
            self._tickets += 1
            self._open.add(self._tickets)
            return self._tickets

    def record(self, ticket: int, request: Request):
        with self._changed:
            self._requests.append(request)
            self._open.discard(ticket)
            self._changed.notify_all()

    def requests(self, key_prefix: str = "") -> list[Request]:
        """The requests to keys under `key_prefix` ("bucket/prefix" or "s3://bucket/prefix"), in the order
        they finished. Waits (up to `settle_seconds`) for the requests that arrived before the call: a
        client may read the end of a response before the proxy's thread has recorded it."""
        with self._changed:
            horizon = self._tickets
            self._changed.wait_for(lambda: all(t > horizon for t in self._open), timeout=self.settle_seconds)
            return [r for r in self._requests if _under(r, key_prefix)]

    def bytes_read(self, key_prefix: str = "") -> int:
        """Body bytes of the successful object GETs (200 and 206) under `key_prefix`."""
        return sum(
            r.body_bytes for r in self.requests(key_prefix) if r.method == "GET" and r.key and r.status in (200, 206)
        )

    def reset(self):
        """Forget the requests recorded so far."""
        with self._changed:
            self._requests.clear()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A TCP port on localhost that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3():
    """A real S3 API (moto's server) on localhost, test credentials in the environment (inherited by
    processes started inside the block); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class CountingProxy(S3Proxy):
    """An S3Proxy that only forwards and counts: what a benchmark puts between a job and its store."""


class _Handler(BaseHTTPRequestHandler):
    """One client connection: forwards its requests, one after the other, over one upstream connection."""

    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    upstream: http.client.HTTPConnection | None = None

    def log_message(self, *args):
        pass

    def handle_one(self):
        proxy: S3Proxy = self.server.proxy
        ticket, started, body = proxy.arrived(), time.monotonic(), self._request_body()
        bucket, key, query = split_path(self.path)
        status, sent = 0, 0
        try:
            how = proxy.fault(self.command, f"{bucket}/{key}")
            if how == "drop":
                self._drop()
            elif how == "503":
                status, sent = self._send_error(503, "ServiceUnavailable", "injected by the proxy")
            else:
                status, sent = self._forward(body)
        finally:
            rng = self.headers.get("Range")
            request = Request(self.command, bucket, key, query, rng, status, sent, started, time.monotonic())
            proxy.record(ticket, request)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

    def _request_body(self) -> bytes:
        """The request's body: Content-Length bytes, or a chunked body joined."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        pieces = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            pieces.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(pieces)

    def _forward(self, body: bytes) -> tuple[int, int]:
        """Send the request upstream and relay the answer: (status, body bytes relayed)."""
        try:
            response = self._upstream_response(body)
        except (OSError, http.client.HTTPException) as error:
            self._close_upstream()
            return self._send_error(502, "BadGateway", f"upstream: {error}")
        return response.status, self._relay(response)

    def _upstream_response(self, body: bytes) -> http.client.HTTPResponse:
        """The upstream's response over the kept connection; again over a fresh one if that had gone stale."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        reused = self.upstream is not None
        try:
            return self._send_upstream(body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._close_upstream()
            if not reused:
                raise
            return self._send_upstream(body, headers)

    def _send_upstream(self, body: bytes, headers: dict) -> http.client.HTTPResponse:
        if self.upstream is None:
            self.upstream = http.client.HTTPConnection(self.server.proxy.target, timeout=120)
        self.upstream.request(self.command, self.path, body=body, headers=headers)
        return self.upstream.getresponse()

    def _relay(self, response: http.client.HTTPResponse) -> int:
        """Relay status, headers and body (in pieces when its length is known); body bytes relayed."""
        bodyless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        length = response.getheader("Content-Length")
        data = b"" if bodyless or length is not None else response.read()  # unknown length: read it all
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", length if length is not None else str(len(data)))
        self.end_headers()
        sent = 0
        try:
            if data:
                self.wfile.write(data)
                sent = len(data)
            while not bodyless and length is not None and (piece := response.read(PIECE_BYTES)):
                self.wfile.write(piece)
                sent += len(piece)
        except (OSError, http.client.HTTPException):  # either side broke off mid-body: reuse neither connection
            self._close_upstream()
            self.close_connection = True
        if response.will_close:
            self._close_upstream()
        return sent

    def _send_error(self, status: int, code: str, message: str) -> tuple[int, int]:
        error = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(error)))
        self.end_headers()
        if self.command == "HEAD":  # a body after a HEAD answer would be read as the next response
            return status, 0
        self.wfile.write(error)
        return status, len(error)

    def _drop(self):
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _close_upstream(self):
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def finish(self):
        self._close_upstream()
        super().finish()
