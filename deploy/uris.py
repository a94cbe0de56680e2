"""Which URIs the service may read or write: configured prefixes only, local paths or s3://.

A prefix is an absolute local path (or file:///path) or s3://bucket/prefix. A URI is allowed when
it names a location under one of them: local paths after resolving symlinks (so a link inside an
allowed directory can't point outside it), S3 keys by prefix. `..` and `.` segments (also
percent-encoded), other schemes (http://, ftp://, ...) and relative paths are refused outright.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import unquote

SCHEMES = ("file", "s3")


class ForbiddenURI(ValueError):
    """The URI is not one the service may touch; the message says why."""


def resolve(uri: str, prefixes: Sequence[str]) -> str:
    """The canonical form of `uri` (a real local path or s3://bucket/key) if it lies under a prefix."""
    scheme, path = _split(uri)
    if not prefixes:
        raise ForbiddenURI("no prefixes are configured for this service, so no URI is allowed")
    if scheme == "file":
        real = os.path.realpath(path)
        for prefix in prefixes:
            prefix_scheme, prefix_path = _split(prefix)
            if prefix_scheme == "file":
                root = os.path.realpath(prefix_path)
                if os.path.commonpath([real, root]) == root:
                    return real
    else:
        canonical = f"s3://{path}"
        for prefix in prefixes:
            prefix_scheme, prefix_path = _split(prefix)
            if prefix_scheme == "s3" and (canonical + "/").startswith(f"s3://{prefix_path.rstrip('/')}/"):
                return canonical
    raise ForbiddenURI(f"{uri!r} is not under an allowed prefix ({', '.join(prefixes)})")


def _split(uri: str) -> tuple[str, str]:
    """(scheme, path): "file" with an absolute path, or "s3" with bucket/key."""
    if not isinstance(uri, str) or not uri:
        raise ForbiddenURI("empty URI")
    if any(ord(c) < 32 or c == "\\" for c in uri):
        raise ForbiddenURI("control characters and backslashes are not allowed")
    scheme, separator, rest = uri.partition("://")
    if not separator:
        scheme, rest = "file", uri
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ForbiddenURI(f"scheme {scheme!r} is not allowed (allowed: {', '.join(SCHEMES)})")
    if scheme == "file" and not rest.startswith("/"):
        raise ForbiddenURI("local paths must be absolute")
    segments = rest.strip("/").split("/")
    if any(unquote(segment) in ("..", ".") for segment in segments):  # %2e%2e too: some stores decode keys
        raise ForbiddenURI("'..' and '.' path segments are not allowed")
    if scheme == "s3" and (not segments[0] or "?" in rest or "#" in rest):
        raise ForbiddenURI("expected s3://bucket/key without query or fragment")
    return scheme, rest
