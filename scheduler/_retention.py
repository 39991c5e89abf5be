"""What the scheduler keeps of finished jobs, and the collector that deletes the rest.

The state folder holds three kinds of thing, each bounded by a rule (defaults in
``Retention``; ``anypu scheduler --keep-*`` flags set them):

- **outputs** of a succeeded job (inline in SQLite, or a blob when over 4 MiB) are kept
  until the client fetched them plus ``results_after_fetch_s``; outputs nobody fetched,
  ``unfetched_results_s`` after the job finished. A later fetch is told they are gone.
  The **inputs** of a job are deleted as it finishes (a retry needs them; nothing else).
- **history**: finished jobs' records and transitions, the newest ``jobs`` of them and
  none older than ``jobs_for_s``. Unfinished jobs are never collected.
- **blobs** (model artifacts, large inputs and outputs) are reference-counted: a sweep
  counts the kept jobs that name each one (an unfinished job its model and inputs, a
  kept result its outputs, a job finished within ``models_for_s`` its model) and deletes
  those with no reference that nobody used (uploaded or asked about) for
  ``blob_grace_s``, so an upload is never collected before the job that names it is
  submitted. The counts are taken from the database at each sweep rather than kept as
  counters, so a crash can never leave one wrong. A client whose model was collected
  uploads it again (``MissingBlobError``).

Bound: with jobs finishing at rate λ, the folder holds at most the ``jobs`` newest
records, the outputs of the last λ·``results_after_fetch_s`` fetched jobs (plus the
unfetched ones of the last ``unfetched_results_s``), the inputs of unfinished jobs, and
the models used in the last ``models_for_s``: nothing grows with the number of jobs
ever run. ``benchmarks/state_growth.py`` shows it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from anypu.devices import format_bytes
from anypu.errors import ConfigError
from anypu.scheduler._store import BlobStore, StateStore

__all__ = ["Collector", "Retention", "Sweep", "duration"]

log = logging.getLogger("anypu.scheduler")

_BATCH = 2000  # jobs per transaction: the writer never waits long for the database


def duration(seconds: float) -> str:
    """``10m``, ``1d``, ``90s``: a span as the ``--keep-*`` flags take it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Retention:
    """How long what finished jobs leave behind is kept (see the module docstring)."""

    results_after_fetch_s: float = 600.0  # --keep-results 10m
    unfetched_results_s: float = 86400.0  # --keep-unfetched-results 1d
    jobs: int = 10_000  # --keep-jobs
    jobs_for_s: float = 7 * 86400.0  # --keep-jobs-for 7d
    models_for_s: float = 3600.0  # --keep-models 1h
    blob_grace_s: float = 60.0  # an upload is named by its job within this
    sweep_every_s: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "results_after_fetch_s",
            "unfetched_results_s",
            "jobs_for_s",
            "models_for_s",
            "blob_grace_s",
        ):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"retention {name} must be ≥ 0, got {getattr(self, name)}")
        if self.jobs < 0:
            raise ConfigError(f"--keep-jobs must be ≥ 0, got {self.jobs}")
        if not self.sweep_every_s > 0:
            raise ConfigError(f"the sweep interval must be > 0, got {self.sweep_every_s}")


@dataclass
class Sweep:
    """What one sweep collected, and what the state folder holds after it."""

    outputs: list[str] = field(default_factory=list)  # jobs whose outputs were discarded
    fetched: list[str] = field(default_factory=list)  # jobs whose fetch was recorded
    jobs: list[str] = field(default_factory=list)  # jobs forgotten
    blobs: int = 0
    blob_bytes: int = 0
    database_bytes: int = 0
    folder_bytes: int = 0

    @property
    def collected(self) -> bool:
        return bool(self.outputs or self.jobs or self.blobs)

    def describe(self) -> str:
        return (
            f"state folder {format_bytes(self.folder_bytes)} (database"
            f" {format_bytes(self.database_bytes)}); collected outputs of {len(self.outputs)}"
            f" job(s), {len(self.jobs)} finished job record(s), {self.blobs} blob(s)"
            f" ({format_bytes(self.blob_bytes)})"
        )


class Collector:
    """Applies a ``Retention`` to a state store and its blobs, one ``sweep`` at a time.

    ``fetched`` marks arrive from the request path (cheap: a dict entry) and are written
    at the next sweep; a crash loses only marks, and their outputs then live until the
    unfetched limit. Thread-safe.
    """

    def __init__(self, store: StateStore, blobs: BlobStore, retention: Retention) -> None:
        self.store = store
        self.blobs = blobs
        self.retention = retention
        self._fetched: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sweeping = threading.Lock()
        #: Totals since start, for metrics: what each rule collected.
        self.collected = {"outputs": 0, "jobs": 0, "blobs": 0}
        self.collected_bytes = 0
        self.last: Sweep | None = None

    def fetched(self, job_id: str, now: float) -> None:
        with self._lock:
            self._fetched.setdefault(job_id, now)

    def sweep(self, now: float) -> Sweep:
        r = self.retention
        with self._sweeping:
            with self._lock:
                fetched, self._fetched = self._fetched, {}
            if fetched:
                self.store.note_fetched(fetched.items())
            report = Sweep(fetched=list(fetched))
            while True:
                due = self.store.expire_outputs(
                    now - r.results_after_fetch_s, now - r.unfetched_results_s, _BATCH
                )
                report.outputs += [job_id for job_id, _ in due]
                if len(due) < _BATCH:
                    break
            while True:
                gone = self.store.forget_finished_jobs(r.jobs, now - r.jobs_for_s, _BATCH)
                report.jobs += gone
                if len(gone) < _BATCH:
                    break
            referenced = self.store.referenced_blobs(now - r.models_for_s)
            report.blobs, report.blob_bytes = self.blobs.collect(referenced, now - r.blob_grace_s)
            if report.jobs or report.outputs:
                self.store.give_back_free_pages()
            report.database_bytes = self.store.bytes_on_disk()
            report.folder_bytes = report.database_bytes + self.blobs.bytes
            self.collected["outputs"] += len(report.outputs)
            self.collected["jobs"] += len(report.jobs)
            self.collected["blobs"] += report.blobs
            self.collected_bytes += report.blob_bytes
            self.last = report
        return report

    def run(self, stop: threading.Event, clock: Callable[[], float], after: Callable) -> None:
        """Sweep every ``sweep_every_s`` until ``stop``; ``after(sweep)`` follows each."""
        while not stop.wait(self.retention.sweep_every_s):
            try:
                report = self.sweep(clock())
            except Exception:
                log.exception("the state folder's collector failed; it tries again next sweep")
                continue
            after(report)
            level = logging.INFO if report.collected else logging.DEBUG
            log.log(level, "%s [sweep]", report.describe())
