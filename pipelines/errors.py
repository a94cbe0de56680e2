"""Error text that is safe to store and show: one line, without credentials.

Errors end up in run manifests, summaries, job status answers and logs. Storage errors can carry
an endpoint URL with a user and password, a presigned URL or a request signature, and any text
could echo a credential taken from the environment; `redact` removes all of these.
"""

from __future__ import annotations

import os
import re

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SIGNED = re.compile(
    r"(?P<key>X-Amz-(?:Signature|Credential|Security-Token)|AWSAccessKeyId|Signature|Credential)=[^&\s,\"']+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with URL user info, request signatures and credential values replaced by ***."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    text = _SIGNED.sub(r"\g<key>=***", text)
    for name in CREDENTIAL_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 6:
            text = text.replace(value, "***")
    return text


def one_line(error: BaseException, limit: int = 500) -> str:
    """The first line of an error's message (its type when it has none), redacted and capped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(error).__name__)[:limit]
