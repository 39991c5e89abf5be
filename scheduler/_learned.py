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
bounded amount. Every lesson is also a ``Lesson`` row the scheduler persists (the state
store's ``learned`` table), read back by ``restore`` after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypeVar

__all__ = ["Learned", "Lesson"]

V = TypeVar("V")


class Lesson(NamedTuple):
    """One learnt fact as stored: ``what`` is ``timing`` (``key`` a device model, value
    seconds), ``peak`` (value bytes) or ``lacks`` (``key`` ``kind/vendor``, value what
    was found where)."""

    digest: str
    what: str
    key: str
    value: str


class Learned:
    def __init__(self, models: int = 10_000) -> None:
        self.models = models
        self.timings: dict[str, dict[str, float]] = {}
        self.memory_peak: dict[str, int] = {}
        self.unsupported: dict[str, dict[tuple[str, str], str]] = {}

    def ran(self, digest: str, device_model: str, seconds: float) -> Lesson:
        """A run of ``digest`` on ``device_model`` took ``seconds``."""
        timings = self._take(self.timings, digest, {})
        old = timings.get(device_model)
        timings[device_model] = seconds if old is None else 0.7 * old + 0.3 * seconds
        return Lesson(digest, "timing", device_model, repr(timings[device_model]))

    def used(self, digest: str, nbytes: int) -> Lesson | None:
        """A run of ``digest`` was measured using ``nbytes``: its peak if that is more
        (the lesson to keep then, else None)."""
        before = self._take(self.memory_peak, digest, 0)
        if nbytes <= before:
            return None
        self.memory_peak[digest] = nbytes
        return Lesson(digest, "peak", "", str(nbytes))

    def lacks(self, digest: str, kind: str, vendor: str, what: str) -> Lesson:
        """``digest`` needs an operator the ``(kind, vendor)`` backend lacks (``what``)."""
        self._take(self.unsupported, digest, {})[(kind, vendor)] = what
        return Lesson(digest, "lacks", f"{kind}/{vendor}", what)

    def restore(self, lessons: Iterable[Lesson]) -> None:
        """Lessons read back after a restart, oldest first (the newest stay in mind)."""
        for lesson in lessons:
            try:
                if lesson.what == "timing":
                    self._take(self.timings, lesson.digest, {})[lesson.key] = float(lesson.value)
                elif lesson.what == "peak":
                    self._take(self.memory_peak, lesson.digest, 0)
                    self.memory_peak[lesson.digest] = int(lesson.value)
                elif lesson.what == "lacks":
                    kind, _, vendor = lesson.key.partition("/")
                    self._take(self.unsupported, lesson.digest, {})[(kind, vendor)] = lesson.value
            except ValueError:
                continue  # a row this version cannot read: learnt again by the next run

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
