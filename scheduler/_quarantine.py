"""Quarantine for lying nodes: one that keeps failing jobs for reasons not the user's.

A node may claim capacity it lacks (memory it does not have, a device that is broken):
jobs placed there die with out-of-memory, lost workers or load errors, while the same
jobs succeed elsewhere. The rule: ``threshold`` failures that are not the user's fault,
of *distinct* jobs (one poison job retried there is the job's problem, not the node's),
within ``window_s`` and with no success on the node in between, quarantine it for
``quarantine_s``: the placer must leave it out. A success clears the count. Pure: the
state machine feeds it events with their times and asks; nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["NodeQuarantine"]


@dataclass
class _History:
    failures: deque[tuple[float, str]] = field(default_factory=deque)
    until: float = 0.0


class NodeQuarantine:
    """Counts infrastructure failures per node; says which nodes are quarantined."""

    def __init__(
        self, threshold: int = 3, window_s: float = 600.0, quarantine_s: float = 600.0
    ) -> None:
        if threshold < 1 or window_s <= 0 or quarantine_s <= 0:
            raise ValueError("threshold ≥ 1, window_s > 0 and quarantine_s > 0 are required")
        self.threshold = threshold
        self.window_s = window_s
        self.quarantine_s = quarantine_s
        self._nodes: dict[str, _History] = {}

    def failed(self, node_id: str, job_id: str, now: float, user_error: bool) -> bool:
        """Record that ``job_id`` failed on ``node_id``; True if this quarantines the node.

        ``user_error``: the model itself raised (bad inputs, a bug): never the node's fault.
        """
        if user_error:
            return False
        history = self._nodes.setdefault(node_id, _History())
        failures = history.failures
        while failures and failures[0][0] <= now - self.window_s:
            failures.popleft()
        if any(job == job_id for _, job in failures):
            return False
        failures.append((now, job_id))
        if len(failures) >= self.threshold and history.until <= now:
            history.until = now + self.quarantine_s
            failures.clear()
            return True
        return False

    def succeeded(self, node_id: str) -> None:
        """A job finished on the node: what failed before was not the node's doing."""
        history = self._nodes.get(node_id)
        if history is not None:
            history.failures.clear()

    def quarantined(self, node_id: str, now: float) -> bool:
        history = self._nodes.get(node_id)
        return history is not None and history.until > now

    def release(self, node_id: str) -> None:
        """An operator vouches for the node again (or it re-enrolled)."""
        self._nodes.pop(node_id, None)

    def reason(self, node_id: str, now: float) -> str:
        """Why the placer skips the node, for the job's pending reasons ("" if it does not)."""
        history = self._nodes.get(node_id)
        if history is None or history.until <= now:
            return ""
        return (
            f"quarantined for {history.until - now:.0f} s more: {self.threshold} jobs failed"
            " there for reasons not their own"
        )
