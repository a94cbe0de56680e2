"""The service's error answers: FastAPI's own validation format, naming where (`loc`) and why (`msg`).

Overload, whether too many requests are in flight (Serve's backpressure, `max_queued_requests`) or
too many jobs are running (`max_running_jobs`), is answered `OVERLOAD_STATUS` (503) with a
`Retry-After` header: the service, not the client, is out of capacity for now (docs/deploy.md,
"Limits and errors").
"""

from __future__ import annotations

from fastapi import HTTPException

OVERLOAD_STATUS = 503
REQUESTS_RETRY_AFTER_S = 2  # a replica frees a slot within a forward pass or two
JOBS_RETRY_AFTER_S = 60  # a nightly job runs for minutes at least


def reject(status: int, loc: tuple[str, ...], message: str, headers: dict | None = None) -> HTTPException:
    """An error in FastAPI's own validation format: the field it concerns and why."""
    return HTTPException(status, detail=[{"loc": list(loc), "msg": message}], headers=headers)


def overloaded(loc: tuple[str, ...], message: str, retry_after_s: int) -> HTTPException:
    """The overload answer: `OVERLOAD_STATUS` with the seconds to wait before retrying."""
    return reject(OVERLOAD_STATUS, loc, message, {"Retry-After": str(retry_after_s)})
