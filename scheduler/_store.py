"""Durable scheduler state in one SQLite file: jobs, their transitions, nodes, blobs.

Every job transition is one row in ``transitions`` and an upsert of ``jobs`` in the same
transaction. WAL mode with ``synchronous=NORMAL``: a crash of the process loses nothing
committed; a power cut may lose the last transactions but never corrupts the file.
Blobs (model artifacts, large inputs and outputs) are content-addressed files beside
the database. What finished jobs leave behind is collected (``scheduler._retention``):
the columns beside ``jobs.record`` (artifact, blobs, finished_at, fetched_at,
outputs_kept) are what the collector reads, so it never parses a record.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from anypu._labels import LabelRequirement
from anypu.devices import Device
from anypu.protos import convert
from anypu.protos.messages import Autoscaling, Outcome, PlacementInfo, SplitOption, SubmitRequest
from anypu.scheduler._deployments import DeploymentRecord, DeploymentVersion
from anypu.scheduler._events import PersistDeployment
from anypu.scheduler._learned import Lesson
from anypu.scheduler._records import JobRecord, NodeRecord

__all__ = ["BlobStore", "StateStore", "open_state_db"]


def open_state_db(
    state_dir: str | os.PathLike[str], schema: str
) -> tuple[Path, sqlite3.Connection]:
    """Open ``<state_dir>/anypu.db`` (WAL, autocommit) and create ``schema``'s tables.

    Several components keep their tables in the one file, each with its own connection;
    the busy timeout lets them take turns writing.
    """
    path = Path(state_dir) / "anypu.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    # Before the first table exists (it has no effect on a file that has tables): pages
    # that collected rows free can be given back to the file system.
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA journal_size_limit={64 << 20}")  # the WAL shrinks after a checkpoint
    db.executescript(schema)
    return path, db


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    inputs BLOB,
    outputs BLOB,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
CREATE TABLE IF NOT EXISTS job_payloads (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, kind)
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    replicas INTEGER NOT NULL,
    created_at REAL NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    min_replicas INTEGER NOT NULL,
    max_replicas INTEGER NOT NULL,
    rollout TEXT NOT NULL DEFAULT '{}'
);
-- When each model was last used by a job since forgotten: --keep-models counts from
-- a model's last use, not from its newest job still kept (jobs are kept by count).
CREATE TABLE IF NOT EXISTS model_uses (
    artifact TEXT PRIMARY KEY,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS learned (
    digest TEXT NOT NULL,
    what TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (digest, what, key)
);
"""
_UPSERT_LEARNED = (
    "INSERT INTO learned (digest, what, key, value, updated_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(digest, what, key) DO UPDATE SET value=excluded.value,"
    " updated_at=excluded.updated_at"
)

# What the collector reads, beside the record; added to databases written before it
# (ALTER TABLE, then filled from the records once).
_RETENTION_COLUMNS = {
    "artifact": "TEXT NOT NULL DEFAULT ''",
    "inputs_blob": "TEXT NOT NULL DEFAULT ''",
    "outputs_blob": "TEXT NOT NULL DEFAULT ''",
    "finished_at": "REAL NOT NULL DEFAULT 0",
    "fetched_at": "REAL NOT NULL DEFAULT 0",
    "outputs_kept": "INTEGER NOT NULL DEFAULT 0",
}
_RETENTION_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE finished_at > 0;
CREATE INDEX IF NOT EXISTS jobs_outputs_kept ON jobs(finished_at) WHERE outputs_kept = 1;
"""
_BACKFILL = """
UPDATE jobs SET
    artifact = COALESCE(json_extract(record, '$.request.artifact_digest'), ''),
    inputs_blob = COALESCE(json_extract(record, '$.request.inputs_digest'), ''),
    outputs_blob = COALESCE(json_extract(record, '$.outputs_digest'), ''),
    finished_at = COALESCE(json_extract(record, '$.finished_at'), 0),
    outputs_kept = (state = 'succeeded');
INSERT OR IGNORE INTO job_payloads (job_id, kind, data)
    SELECT job_id, 'outputs', outputs FROM jobs WHERE outputs IS NOT NULL;
INSERT OR IGNORE INTO job_payloads (job_id, kind, data)
    SELECT job_id, 'inputs', inputs FROM jobs
    WHERE inputs IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled');
UPDATE jobs SET inputs = NULL, outputs = NULL WHERE inputs IS NOT NULL OR outputs IS NOT NULL;
"""
_FINISHED = "('succeeded', 'failed', 'cancelled')"


_REQUEST_FIELDS = tuple(
    f.name for f in dataclasses.fields(SubmitRequest) if f.name not in ("inputs", "splits")
)
# The outcome is stored flat (``Outcome.fields``), as rows were before it had a type.
_JOB_FIELDS = tuple(
    f.name for f in dataclasses.fields(JobRecord) if f.name not in ("request", "outputs", "outcome")
)

# A job's inputs and outputs live in job_payloads, each written once: SQLite rewrites a
# whole row on update, so blobs in ``jobs`` were copied again at every transition.
# (``jobs.inputs``/``jobs.outputs`` hold them for databases written before that.)
_UPSERT_JOB = (
    "INSERT INTO jobs (job_id, state, record, updated_at, artifact, inputs_blob, outputs_blob,"
    " finished_at, outputs_kept) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(job_id) DO UPDATE SET"
    " state=excluded.state, record=excluded.record, updated_at=excluded.updated_at,"
    " outputs_blob=excluded.outputs_blob, finished_at=excluded.finished_at,"
    " outputs_kept=excluded.outputs_kept"
)
_PUT_PAYLOAD = (
    "INSERT INTO job_payloads (job_id, kind, data) VALUES (?, ?, ?)"
    " ON CONFLICT(job_id, kind) DO UPDATE SET data=excluded.data"
)
_SELECT_JOBS = (
    "SELECT j.record, COALESCE(i.data, j.inputs), COALESCE(o.data, j.outputs) FROM jobs j"
    " LEFT JOIN job_payloads i ON i.job_id = j.job_id AND i.kind = 'inputs'"
    " LEFT JOIN job_payloads o ON o.job_id = j.job_id AND o.kind = 'outputs'"
)
_DROP_INPUTS = "DELETE FROM job_payloads WHERE job_id = ? AND kind = 'inputs'"
_INSERT_STEP = "INSERT INTO transitions (job_id, attempt, state, detail, at) VALUES (?, ?, ?, ?, ?)"
_UPSERT_NODE = (
    "INSERT INTO nodes (node_id, record) VALUES (?, ?)"
    " ON CONFLICT(node_id) DO UPDATE SET record=excluded.record"
)


def _record(job: JobRecord) -> dict[str, Any]:
    # Shallow on purpose: dataclasses.asdict deep-copies and was the hot path's biggest cost.
    record = {name: getattr(job, name) for name in _JOB_FIELDS}
    if job.placement is not None:
        record["placement"] = vars(job.placement)
    record.update(job.outcome.fields())
    return record


def _request_document(request: SubmitRequest) -> dict[str, Any]:
    document = {name: getattr(request, name) for name in _REQUEST_FIELDS}
    document["label_selector"] = [
        [r.key, r.operator, list(r.values)] for r in request.label_selector
    ]
    document["splits"] = [
        {
            "label": split.label,
            "activation_bytes": split.activation_bytes,
            "head": _request_document(split.head),
            "tail": _request_document(split.tail),
        }
        for split in request.splits
    ]
    return document


def _request_from(document: dict[str, Any], inputs: bytes = b"") -> SubmitRequest:
    for key in ("device_kinds", "tiers", "sites", "nodes", "operators"):
        if key in document:
            document[key] = tuple(document[key])
    document["label_selector"] = tuple(
        LabelRequirement(str(key), str(operator), tuple(values))
        for key, operator, values in document.get("label_selector", ())
    )
    document["round_trips"] = tuple(
        (str(vertex), float(rtt)) for vertex, rtt in document.get("round_trips", ())
    )
    splits = tuple(
        SplitOption(
            label=split["label"],
            activation_bytes=split["activation_bytes"],
            head=_request_from(split["head"]),
            tail=_request_from(split["tail"]),
        )
        for split in document.pop("splits", ())
    )
    return SubmitRequest(inputs=inputs, splits=splits, **document)


def _job_to_row(job: JobRecord) -> dict[str, Any]:
    record = _record(job)
    record["request"] = _request_document(job.request)
    return record


# Calls run under one lease share one request object (without inputs): its JSON is made
# once, not once per call. Keyed by identity; requests carrying inputs are not kept.
_shared_requests: OrderedDict[int, tuple[SubmitRequest, str]] = OrderedDict()


def _job_json(job: JobRecord) -> str:
    request = job.request
    hit = _shared_requests.get(id(request))
    if hit is not None and hit[0] is request:
        text = hit[1]
    else:
        text = json.dumps(_request_document(request))
        if not request.inputs:
            _shared_requests[id(request)] = (request, text)
            while len(_shared_requests) > 256:
                _shared_requests.popitem(last=False)
    return json.dumps(_record(job))[:-1] + ', "request": ' + text + "}"


def _job_from_row(record: dict[str, Any], inputs: bytes, outputs: bytes) -> JobRecord:
    request = _request_from(record.pop("request"), inputs or b"")
    placement = record.pop("placement")
    outcome = Outcome.from_fields(record)
    return JobRecord(
        request=request,
        placement=PlacementInfo(**placement) if placement else None,
        outputs=outputs or b"",
        outcome=outcome,
        **{name: record[name] for name in _JOB_FIELDS if name in record},
    )


def _node_to_row(node: NodeRecord) -> dict[str, Any]:
    record = dataclasses.asdict(node)
    record["warm_digests"] = sorted(node.warm_digests)
    record.pop("usage")  # readings and round trips are measured afresh, not kept
    record.pop("job_usage")
    record.pop("round_trips")
    record.pop("peer_trips")
    return record


def _node_from_row(record: dict[str, Any]) -> NodeRecord:
    record["devices"] = tuple(Device(**d) for d in record["devices"])
    record["warm_digests"] = frozenset(record["warm_digests"])
    return NodeRecord(**record)


def _rollout(record: DeploymentRecord) -> dict[str, Any]:
    """A deployment's versions, canary and caller token hash as stored."""
    kept: dict[str, Any] = {
        "version": record.version,
        "latest_version": record.latest_version,
        "canary_percent": record.canary_percent,
        "caller_token_sha256": record.caller_token_sha256,
        "autoscaling": dataclasses.asdict(record.autoscaling),
    }
    if record.previous is not None:
        kept["previous"] = {
            "number": record.previous.number,
            "request": base64.b64encode(
                convert.submit_request_bytes(record.previous.request)
            ).decode(),
            "inputs": convert.tensor_specs_json(record.previous.inputs),
            "outputs": convert.tensor_specs_json(record.previous.outputs),
        }
    return kept


def _version_from(kept: dict[str, Any]) -> DeploymentVersion:
    return DeploymentVersion(
        kept["number"],
        convert.submit_request_from_bytes(base64.b64decode(kept["request"])),
        convert.tensor_specs_from_json(kept["inputs"]),
        convert.tensor_specs_from_json(kept["outputs"]),
    )


class StateStore:
    """Jobs, transitions and nodes in ``<state_dir>/anypu.db``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path, self._db = open_state_db(state_dir, _SCHEMA)
        self._lock = threading.Lock()
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        missing = [name for name in _RETENTION_COLUMNS if name not in columns]
        for name in missing:
            self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {_RETENTION_COLUMNS[name]}")
        if missing:
            self._db.executescript("BEGIN;" + _BACKFILL + "COMMIT;")
        self._db.executescript(_RETENTION_INDEXES)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(deployments)")}
        if "rollout" not in columns:  # written before versions were kept
            self._db.execute(
                "ALTER TABLE deployments ADD COLUMN rollout TEXT NOT NULL DEFAULT '{}'"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save_job(self, job: JobRecord, transition: str, detail: str, now: float) -> None:
        self.commit([self.job_write(job, transition, detail, now)])

    @staticmethod
    def job_write(job: JobRecord, transition: str, detail: str, now: float) -> tuple:
        """Freeze what to write for a job now; ``commit`` writes it later."""
        row = _job_json(job)
        kept = job.state == "succeeded" and not job.outputs_expired
        upsert = (
            job.job_id,
            job.state,
            row,
            now,
            job.request.artifact_digest,
            job.request.inputs_digest,
            job.outputs_digest,
            job.finished_at if job.terminal else 0.0,
            int(kept),
        )
        step = (job.job_id, job.attempt, transition, detail, now) if transition else None
        payloads = []
        if transition == "pending" and job.request.inputs:  # submitted, or requeued
            payloads.append((job.job_id, "inputs", job.request.inputs))
        if job.outputs:
            payloads.append((job.job_id, "outputs", job.outputs))
        return ("job", upsert, (step, payloads))

    @staticmethod
    def node_write(node: NodeRecord) -> tuple:
        return ("node", (node.node_id, json.dumps(_node_to_row(node))), None)

    @staticmethod
    def node_forget(node_id: str) -> tuple:
        return ("forget_node", node_id, None)

    @staticmethod
    def deployment_write(record: DeploymentRecord) -> tuple:
        row = (
            record.name,
            convert.submit_request_bytes(record.request),
            record.replicas,
            record.created_at,
            convert.tensor_specs_json(record.inputs),
            convert.tensor_specs_json(record.outputs),
            record.min_replicas,
            record.max_replicas,
            json.dumps(_rollout(record), separators=(",", ":")),
        )
        return ("deployment", row, None)

    @staticmethod
    def deployment_forget(name: str) -> tuple:
        return ("forget_deployment", name, None)

    def load_deployments(self) -> list[DeploymentRecord]:
        """Every deployment, oldest first (without its replicas: they are placed anew)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, request, replicas, created_at, inputs, outputs, min_replicas,"
                " max_replicas, rollout FROM deployments ORDER BY created_at"
            ).fetchall()
        found = []
        for name, request, replicas, created_at, inputs, outputs, low, high, rollout in rows:
            kept = json.loads(rollout or "{}")
            previous = kept.get("previous")
            found.append(
                DeploymentRecord.restored(
                    PersistDeployment(
                        name,
                        convert.submit_request_from_bytes(request),
                        replicas,
                        created_at,
                        inputs=convert.tensor_specs_from_json(inputs),
                        outputs=convert.tensor_specs_from_json(outputs),
                        bounds=(low, high),
                        version=kept.get("version", 1),
                        latest_version=kept.get("latest_version", 1),
                        previous=None if previous is None else _version_from(previous),
                        canary_percent=kept.get("canary_percent", 0),
                        caller_token_sha256=kept.get("caller_token_sha256", ""),
                        autoscaling=Autoscaling(**kept.get("autoscaling", {})),
                    )
                )
            )
        return found

    def commit(self, writes: list[tuple]) -> None:
        """Write many jobs, transitions and nodes in one transaction (group commit)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for kind, row, extra in writes:
                    if kind == "job":
                        step, payloads = extra
                        self._db.execute(_UPSERT_JOB, row)
                        if step is not None:
                            self._db.execute(_INSERT_STEP, step)
                        if payloads:
                            self._db.executemany(_PUT_PAYLOAD, payloads)
                        if row[7]:  # finished: its inputs are never read again
                            self._db.execute(_DROP_INPUTS, row[:1])
                    elif kind == "forget_node":
                        self._db.execute("DELETE FROM nodes WHERE node_id = ?", (row,))
                    elif kind == "deployment":
                        self._db.execute(
                            "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            row,
                        )
                    elif kind == "forget_deployment":
                        self._db.execute("DELETE FROM deployments WHERE name = ?", (row,))
                    elif kind == "learned":
                        self._db.execute(_UPSERT_LEARNED, row)
                    else:
                        self._db.execute(_UPSERT_NODE, row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def save_node(self, node: NodeRecord) -> None:
        self.commit([self.node_write(node)])

    def load_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(_SELECT_JOBS + " WHERE j.job_id = ?", (job_id,)).fetchone()
        return _job_from_row(json.loads(row[0]), row[1], row[2]) if row else None

    def load_unfinished_jobs(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                _SELECT_JOBS + " WHERE j.state NOT IN ('succeeded', 'failed', 'cancelled')"
                " ORDER BY j.rowid"
            ).fetchall()
        return [_job_from_row(json.loads(r[0]), r[1], r[2]) for r in rows]

    @staticmethod
    def learned_write(lesson: Lesson, now: float) -> tuple:
        return ("learned", (*lesson, now), None)

    def load_learned(self, models: int = 10_000) -> list[Lesson]:
        """The lessons of the ``models`` models most recently learnt about, oldest first;
        older ones are deleted (what the scheduler keeps in mind is bounded the same)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM learned WHERE digest NOT IN (SELECT digest FROM learned"
                " GROUP BY digest ORDER BY max(updated_at) DESC LIMIT ?)",
                (models,),
            )
            rows = self._db.execute(
                "SELECT digest, what, key, value FROM learned ORDER BY updated_at"
            ).fetchall()
        return [Lesson(*row) for row in rows]

    def load_nodes(self) -> list[NodeRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM nodes").fetchall()
        return [_node_from_row(json.loads(r[0])) for r in rows]

    def transitions(self, job_id: str) -> list[tuple[int, str, str, float]]:
        with self._lock:
            return self._db.execute(
                "SELECT attempt, state, detail, at FROM transitions WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()

    def recent_jobs(self, limit: int, state: str = "") -> list[JobRecord]:
        query = "SELECT record FROM jobs"  # listings show no payloads: leave them on disk
        args: tuple[Any, ...] = ()
        if state:
            query += " WHERE state = ?"
            args = (state,)
        query += " ORDER BY updated_at DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [_job_from_row(json.loads(r[0]), b"", b"") for r in rows]

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------ collection (see ``_retention``)
    # Each call is a short transaction of at most ``limit`` jobs, so the writer thread,
    # which shares the connection, waits milliseconds for it, never a whole sweep.

    def note_fetched(self, fetched: Iterable[tuple[str, float]]) -> None:
        """Record when each job's outputs were first handed to a client."""
        with self._lock:
            self._db.executemany(
                "UPDATE jobs SET fetched_at = ? WHERE job_id = ? AND fetched_at = 0",
                [(at, job_id) for job_id, at in fetched],
            )

    def expire_outputs(
        self, fetched_before: float, finished_before: float, limit: int
    ) -> list[tuple[str, str]]:
        """Discard the outputs of succeeded jobs fetched before ``fetched_before`` or never
        fetched and finished before ``finished_before``: ``[(job_id, outputs blob)]``."""
        with self._lock:
            due = self._db.execute(
                "SELECT job_id, outputs_blob FROM jobs WHERE outputs_kept = 1 AND"
                " ((fetched_at > 0 AND fetched_at < ?) OR (fetched_at = 0 AND finished_at < ?))"
                " LIMIT ?",
                (fetched_before, finished_before, limit),
            ).fetchall()
            if due:
                ids = [(job_id,) for job_id, _ in due]
                self._db.execute("BEGIN")
                self._db.executemany(
                    "UPDATE jobs SET outputs_kept = 0,"
                    " record = json_set(record, '$.outputs_expired', json('true'))"
                    " WHERE job_id = ?",
                    ids,
                )
                self._db.executemany(
                    "DELETE FROM job_payloads WHERE job_id = ? AND kind = 'outputs'", ids
                )
                self._db.execute("COMMIT")
        return due

    def forget_finished_jobs(self, keep: int, finished_before: float, limit: int) -> list[str]:
        """Delete finished jobs beyond the newest ``keep`` or finished before
        ``finished_before`` (records, transitions, payloads): the ids deleted."""
        with self._lock:
            nth = self._db.execute(
                "SELECT finished_at FROM jobs WHERE finished_at > 0"
                " ORDER BY finished_at DESC LIMIT 1 OFFSET ?",
                (keep,),
            ).fetchone()
            ids = [
                row[0]
                for row in self._db.execute(
                    "SELECT job_id FROM jobs WHERE finished_at > 0"
                    " AND (finished_at < ? OR finished_at <= ?) ORDER BY finished_at LIMIT ?",
                    (finished_before, nth[0] if nth else -1.0, limit),
                )
            ]
            if ids:
                rows = [(job_id,) for job_id in ids]
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO model_uses (artifact, last_used)"
                    " SELECT artifact, finished_at FROM jobs WHERE job_id = ? AND artifact != ''"
                    " ON CONFLICT(artifact) DO UPDATE SET"
                    " last_used = max(last_used, excluded.last_used)",
                    rows,
                )
                self._db.executemany("DELETE FROM transitions WHERE job_id = ?", rows)
                self._db.executemany("DELETE FROM job_payloads WHERE job_id = ?", rows)
                self._db.executemany("DELETE FROM jobs WHERE job_id = ?", rows)
                self._db.execute("COMMIT")
        return ids

    def referenced_blobs(self, models_used_since: float) -> set[str]:
        """Every blob a kept job still needs: the model and inputs of unfinished jobs, the
        outputs still kept, and the models of jobs finished since ``models_used_since``;
        and every deployment's model (its replicas are placed again from it)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT artifact, inputs_blob FROM jobs"
                " WHERE state IN ('pending', 'placed', 'running')"
                " UNION SELECT outputs_blob, '' FROM jobs WHERE outputs_kept = 1"
                " UNION SELECT DISTINCT artifact, '' FROM jobs WHERE finished_at > ?"
                " UNION SELECT artifact, '' FROM model_uses WHERE last_used > ?",
                (models_used_since, models_used_since),
            ).fetchall()
            self._db.execute("DELETE FROM model_uses WHERE last_used <= ?", (models_used_since,))
        deployed = {d.request.artifact_digest for d in self.load_deployments()}
        return deployed | {digest for row in rows for digest in row if digest}

    def bytes_on_disk(self) -> int:
        """The database with its write-ahead log."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return total

    def give_back_free_pages(self) -> int:
        """Shrink the file when more than a quarter of it is free pages: pages freed."""
        with self._lock:
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            if free * 4 <= pages:
                return 0
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(free)


class BlobStore:
    """Content-addressed blobs (sha256 hex) on disk, with a small in-memory cache."""

    def __init__(self, root: str | os.PathLike[str], cache_bytes: int = 256 << 20) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()
        #: What the blobs take on disk (a scan at start, kept current by puts and deletes).
        self.bytes = sum(f.stat().st_size for f in self.root.glob("??/*") if len(f.name) == 64)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        """Whether the blob is here; asking counts as using it (the collector spares
        blobs used lately, so a client told "present" can still submit a job naming it)."""
        try:
            os.utime(self._path(digest))
        except FileNotFoundError:
            return False
        return True

    def put(self, data: bytes, expected_digest: str = "") -> str:
        digest = hashlib.sha256(data).hexdigest()
        if expected_digest and expected_digest != digest:
            raise ValueError(
                f"blob content does not match its digest: announced {expected_digest},"
                f" received data hashing to {digest}"
            )
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
            with self._lock:
                self.bytes += len(data)
        else:
            os.utime(path)
        self._remember(digest, data)
        return digest

    def put_chunks(
        self, chunks: Iterable[bytes | memoryview], expected_digest: str
    ) -> tuple[str, int]:
        """Store a blob arriving in chunks without holding it whole: ``(digest, size)``.

        Written to a temporary file while hashed, then moved into place, so a blob of any
        size the disk can hold goes through; a digest that does not match is refused and
        nothing is kept.
        """
        target = self._path(expected_digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            try:
                for chunk in chunks:
                    hasher.update(chunk)
                    tmp.write(chunk)
                    size += len(chunk)
            except BaseException:
                os.unlink(tmp.name)
                raise
        digest = hasher.hexdigest()
        if digest != expected_digest:
            os.unlink(tmp.name)
            raise ValueError(
                f"blob content does not match its digest: announced {expected_digest},"
                f" received data hashing to {digest}"
            )
        existed = target.exists()
        os.replace(tmp.name, target)
        if not existed:
            with self._lock:
                self.bytes += size
        return digest, size

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            raise KeyError(digest) from None

    def read_chunks(self, digest: str, chunk_bytes: int) -> Iterator[bytes]:
        """A blob in chunks, read from disk as they are sent (KeyError: no such blob)."""
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None:
            for start in range(0, len(cached), chunk_bytes):
                yield cached[start : start + chunk_bytes]
            return
        try:
            handle = self._path(digest).open("rb")
        except FileNotFoundError:
            raise KeyError(digest) from None
        with handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def get(self, digest: str) -> bytes:
        with self._lock:
            data = self._cache.get(digest)
            if data is not None:
                self._cache.move_to_end(digest)
                return data
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        self._remember(digest, data)
        return data

    def _remember(self, digest: str, data: bytes) -> None:
        with self._lock:
            if digest in self._cache or len(data) > self._cache_bytes // 4:
                return
            self._cache[digest] = data
            self._cached += len(data)
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def collect(self, referenced: set[str], unused_before: float) -> tuple[int, int]:
        """Delete every blob not in ``referenced`` and not used (written or asked about)
        since ``unused_before``, and temporary files of uploads that never finished:
        ``(files deleted, bytes freed)``."""
        deleted = freed = 0
        for path in self.root.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.name in referenced or stat.st_mtime >= unused_before:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            with self._lock:
                cached = self._cache.pop(path.name, None)
                if cached is not None:
                    self._cached -= len(cached)
                if len(path.name) == 64:  # an upload's temporary file was never counted
                    self.bytes -= stat.st_size
            deleted += 1
            freed += stat.st_size
        return deleted, freed

    def count(self) -> int:
        return sum(1 for _ in self.root.glob("??/*"))
