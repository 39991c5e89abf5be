"""What runs taught the scheduler about each model, by artifact digest.

- **timings**: the measured run time on each device model (a moving average, 0.3 of each
  new run), which replaces the estimate in placement's compute term;
- **memory peaks**: the most a run on a seat of a shared device was measured using (or
  half as much again as a job stopped over its share used), which raises what the
  model's later jobs reserve;
- **backends lacking an operator**: ``(kind, vendor)`` pairs a run found without an
  operator the model needs, with what was found where; placement skips them for it.

Each table keeps the models most recently learnt about (``models``, 10,000 by default):
the oldest lesson goes first, so a scheduler that has seen millions of models holds a
bounded amount. All of it is in memory: a restarted scheduler learns it again.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Learned"]

V = TypeVar("V")


class Learned:
    def __init__(self, models: int = 10_000) -> None:
        self.models = models
        self.timings: dict[str, dict[str, float]] = {}
        self.memory_peak: dict[str, int] = {}
        self.unsupported: dict[str, dict[tuple[str, str], str]] = {}

    def ran(self, digest: str, device_model: str, seconds: float) -> None:
        """A run of ``digest`` on ``device_model`` took ``seconds``."""
        timings = self._take(self.timings, digest, {})
        old = timings.get(device_model)
        timings[device_model] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def used(self, digest: str, nbytes: int) -> None:
        """A run of ``digest`` was measured using ``nbytes``: its peak if that is more."""
        self._take(self.memory_peak, digest, 0)
        self.memory_peak[digest] = max(self.memory_peak[digest], nbytes)

    def lacks(self, digest: str, kind: str, vendor: str, what: str) -> None:
        """``digest`` needs an operator the ``(kind, vendor)`` backend lacks (``what``)."""
        self._take(self.unsupported, digest, {})[(kind, vendor)] = what

    def timings_of(self, digest: str) -> dict[str, float]:
        return dict(self.timings.get(digest, {}))

    def peak_of(self, digest: str) -> int:
        return self.memory_peak.get(digest, 0)

    def lacking_for(self, digest: str) -> dict[tuple[str, str], str]:
        return self.unsupported.get(digest, {})

    def _take(self, table: dict[str, V], digest: str, empty: V) -> V:
        """``table[digest]`` (``empty`` if new), made the most recent; the oldest entries
        beyond ``models`` are forgotten."""
        value = table.pop(digest, empty)
        table[digest] = value
        while len(table) > self.models:
            del table[next(iter(table))]
        return value
