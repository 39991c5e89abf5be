"""What runs taught the scheduler about each model, by artifact digest.

- **timings**: the measured run time on each device model (a moving average, 0.3 of each
  new run), which replaces the estimate in placement's compute term;
- **memory peaks**: the most a run on a seat of a shared device was measured using (or
  half as much again as a job stopped over its share used), which raises what the
  model's later jobs reserve;
- **backends lacking an operator**: ``(kind, vendor)`` pairs a run found without an
  operator the model needs, with what was found where; placement skips them for it;
- **work**: what one call of the model does (``_compute_model.WORK``, from the SDK's
  profile), so that each device model's timings of the models that ran there fit a
  throughput model (``_compute_model``) that predicts models it never ran.

Each table keeps the models most recently learnt about (``models``, 10,000 by default):
the oldest lesson goes first, so a scheduler that has seen millions of models holds a
bounded amount. Every lesson is also a ``Lesson`` row the scheduler persists (the state
store's ``learned`` table), read back by ``restore`` after a restart.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeVar

from anypu.scheduler._compute_model import KEPT_MODELS, WORK, ThroughputModel, fit_throughput

__all__ = ["Learned", "Lesson"]

V = TypeVar("V")


class Lesson(NamedTuple):
    """One learnt fact as stored: ``what`` is ``timing`` (``key`` a device model, value
    seconds), ``peak`` (value bytes), ``lacks`` (``key`` ``kind/vendor``, value what
    was found where) or ``work`` (value the JSON list of ``WORK``)."""

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
        self.work: dict[str, tuple[float, ...]] = {}
        # Per device model: the models that ran there (most recent last), its fit, and
        # how many timings changed since that fit.
        self._ran_on: dict[str, OrderedDict[str, None]] = {}
        self._fits: dict[str, ThroughputModel | None] = {}
        self._stale: dict[str, int] = {}
        self._cold: set[tuple[str, str]] = set()  # timings of a first, cold run only

    def ran(self, digest: str, device_model: str, seconds: float, cold: bool = False) -> Lesson:
        """A run of ``digest`` on ``device_model`` took ``seconds``; ``cold``: the model
        was loaded for it, and a first call runs slower than the rest. A cold time is kept
        only until the first warm one, which replaces it instead of averaging with it."""
        timings = self._take(self.timings, digest, {})
        old = timings.get(device_model)
        key = (digest, device_model)
        if old is None or key in self._cold:
            timings[device_model] = seconds
        elif not cold:
            timings[device_model] = 0.7 * old + 0.3 * seconds
        if cold and old is None:
            self._cold.add(key)
        elif not cold:
            self._cold.discard(key)
        self._note_run(digest, device_model, new=old is None)
        return Lesson(digest, "timing", device_model, repr(timings[device_model]))

    def worked(self, digest: str, work: Sequence[float]) -> Lesson | None:
        """What one call of ``digest`` does (``WORK``); the lesson to keep when it is new.
        All zeros (a client that does not say) is not kept."""
        values = tuple(float(w) for w in work)
        if len(values) != len(WORK) or not any(values) or self.work.get(digest) == values:
            return None
        self._take(self.work, digest, values)
        self.work[digest] = values
        return Lesson(digest, "work", "", json.dumps(values))

    def predicted(self, work: Sequence[float]) -> dict[str, float]:
        """Seconds a model doing ``work`` is predicted to take on each device model with a
        throughput fit (``_compute_model``); empty for no work."""
        if len(work) != len(WORK) or not any(work):
            return {}
        out = {}
        for device_model in self._ran_on:
            fit = self.fit_for(device_model)
            if fit is not None:
                out[device_model] = max(fit.seconds(work), 1e-6)
        return out

    def fit_for(self, device_model: str) -> ThroughputModel | None:
        """The throughput fit of ``device_model``, refitted when a model new to it ran
        there or eight of its timings changed since the last fit."""
        stale = self._stale.get(device_model, 0)
        if device_model in self._fits and stale == 0:
            return self._fits[device_model]
        fit = self._fits.get(device_model)
        if fit is None or stale >= 8 or stale < 0:
            runs = {
                d: (self.work[d], self.timings[d][device_model])
                for d in self._ran_on.get(device_model, ())
                if d in self.work and device_model in self.timings.get(d, {})
            }
            fit = self._fits[device_model] = fit_throughput(runs)
            self._stale[device_model] = 0
        return fit

    def _note_run(self, digest: str, device_model: str, new: bool) -> None:
        ran = self._ran_on.setdefault(device_model, OrderedDict())
        ran[digest] = None
        ran.move_to_end(digest)
        while len(ran) > KEPT_MODELS:
            ran.popitem(last=False)
        # A model new to the device model refits at once (marked < 0); updates every 8.
        self._stale[device_model] = -1 if new else self._stale.get(device_model, 0) + 1

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
                    self._note_run(lesson.digest, lesson.key, new=True)
                elif lesson.what == "peak":
                    self._take(self.memory_peak, lesson.digest, 0)
                    self.memory_peak[lesson.digest] = int(lesson.value)
                elif lesson.what == "lacks":
                    kind, _, vendor = lesson.key.partition("/")
                    self._take(self.unsupported, lesson.digest, {})[(kind, vendor)] = lesson.value
                elif lesson.what == "work":
                    values = tuple(float(w) for w in json.loads(lesson.value))
                    if len(values) == len(WORK):
                        self._take(self.work, lesson.digest, values)
                        self.work[lesson.digest] = values
            except (ValueError, TypeError):
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
