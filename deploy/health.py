"""Whether a replica's inference thread still runs: the probe behind Serve's `check_health`.

Everything that touches the model runs on one thread (a single-worker executor), first come first
served. A probe is a no-op submitted to that thread: it runs as soon as the work queued before it
is done, so a healthy thread finishes it within a forward pass or so, while a thread that is stuck
(a deadlocked or hung forward pass) never does. One probe is outstanding at a time; it fails the
check once it has waited `wedged_after_s`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, Future

# The longest one check waits for its probe: a busy thread answers later, at a following check.
# Well under the deployment's health_check_timeout_s, so that Serve's own timeout never decides.
PROBE_WAIT_S = 2.0


class InferenceWedged(RuntimeError):
    """The inference thread has not run a probe within the limit."""


class InferenceProbe:
    """The health of a single-thread executor, checked by probes that queue behind its work."""

    def __init__(self, executor: Executor, wedged_after_s: float, wait_s: float = PROBE_WAIT_S):
        self.executor, self.wedged_after_s, self.wait_s = executor, wedged_after_s, wait_s
        self.pending: Future | None = None
        self.since = 0.0  # when the pending probe was submitted (time.monotonic)

    async def check(self):
        """Return once the probe has run or may still be waiting behind work; raise `InferenceWedged`
        when it has waited `wedged_after_s`."""
        if self.pending is None:
            self.pending, self.since = self.executor.submit(_probe), time.monotonic()
        try:  # shielded: a timeout leaves the probe in the queue, where it keeps its place and its age
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.pending)), self.wait_s)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            waited = time.monotonic() - self.since
            if waited >= self.wedged_after_s:
                raise InferenceWedged(
                    f"the inference thread has not run a health probe for {waited:.0f} s "
                    f"(inference_wedged_s: {self.wedged_after_s:g}): it is stuck"
                ) from None
            return  # busy with the work queued before the probe
        self.pending = None


def _probe():
    """The no-op a probe runs on the inference thread."""
