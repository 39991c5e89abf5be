"""The state folder stays bounded: outputs, history and blobs are collected by their rules.

A real ``SchedulerService`` (real SQLite file, real blob folder) with a hand-moved clock
and one agent stream whose launches the test answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from anypu.comm import MissingBlobError
from anypu.protos import messages as m
from anypu.scheduler import (
    NotFoundError,
    OutputsGoneError,
    Retention,
    SchedulerMetrics,
    SchedulerService,
    StateStore,
)
from tests.builders import done, join, submit_request

RETENTION = Retention(
    results_after_fetch_s=60,
    unfetched_results_s=3600,
    jobs=5,
    jobs_for_s=86400,
    models_for_s=600,
    blob_grace_s=60,
    sweep_every_s=3600,  # the test sweeps by hand
)


class Cluster:
    """A service, its clock, and one joined agent whose launches wait in ``launches``."""

    def __init__(self, state_dir: Path, retention: Retention = RETENTION) -> None:
        self.now = time.time()
        self.service = SchedulerService(state_dir, clock=lambda: self.now, retention=retention)
        self.launches: list[m.Launch] = []
        self.session = self.service.attach_agent(self._sent, lambda: None)
        self.session.receive(join("n1"))
        self.model = self.service.blobs.put(b"model")

    def _sent(self, message: m.SchedulerMessage) -> None:
        if isinstance(message, m.Launch):
            self.launches.append(message)

    def run(self, outputs: bytes = b"out", **request: object) -> str:
        """Submit a job and have the agent finish it: its id."""
        fields = {"artifact_digest": self.model, **request}
        job_id = self.service.submit(submit_request(**fields)).job_id
        launch = self.launches.pop()
        assert launch.job_id == job_id
        self.session.receive(m.JobStarted(job_id, launch.attempt))
        digest = ""
        if len(outputs) > 100:  # stands for an upload over the message limit
            digest = self.service.blobs.put(outputs)
            outputs = b""
        result = done(job_id, launch.attempt, outputs=outputs)
        self.session.receive(dataclasses.replace(result, outputs_digest=digest))
        return job_id

    def later(self, seconds: float) -> None:
        self.now += seconds

    def payloads(self) -> set[tuple[str, str]]:
        self.service.flush()
        with sqlite3.connect(self.service.store.path) as db:
            return set(db.execute("SELECT job_id, kind FROM job_payloads"))

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def age(path: Path, seconds: float) -> None:
    """Make a blob look untouched for ``seconds`` (the collector reads mtimes)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def blob_path(service: SchedulerService, digest: str) -> Path:
    return service.blobs.root / digest[:2] / digest


def test_outputs_are_kept_for_the_retention_after_their_fetch_then_said_gone(cluster):
    job_id = cluster.run(outputs=b"result")
    info, outputs, _ = cluster.service.wait(job_id, 0)
    assert outputs == b"result" and info.state == "succeeded"
    cluster.later(30)
    assert cluster.service.sweep().outputs == []
    assert cluster.service.wait(job_id, 0)[1] == b"result"  # still kept; read from the store
    cluster.later(31)
    assert cluster.service.sweep().outputs == [job_id]
    assert (job_id, "outputs") not in cluster.payloads()
    with pytest.raises(OutputsGoneError, match="kept 1m after it is first fetched.*--keep-results"):
        cluster.service.wait(job_id, 0)
    assert cluster.service.job_info(job_id).state == "succeeded"  # the record stays


def test_outputs_nobody_fetched_are_kept_until_the_unfetched_limit(cluster):
    job_id = cluster.run(outputs=b"result")
    cluster.later(3000)
    assert cluster.service.sweep().outputs == []
    cluster.later(601)
    assert cluster.service.sweep().outputs == [job_id]


def test_a_fetch_mark_survives_a_restart(tmp_path):
    first = Cluster(tmp_path)
    job_id = first.run(outputs=b"result")
    first.service.wait(job_id, 0)
    first.service.sweep()  # writes the fetch down
    first.close()
    again = Cluster(tmp_path)
    try:
        again.now = first.now + 61
        assert again.service.sweep().outputs == [job_id]
    finally:
        again.close()


def test_inputs_are_deleted_as_the_job_finishes(cluster):
    job_id = cluster.service.submit(
        submit_request(artifact_digest=cluster.model, inputs=b"in")
    ).job_id
    assert (job_id, "inputs") in cluster.payloads()
    launch = cluster.launches.pop()
    cluster.session.receive(done(job_id, launch.attempt))
    assert (job_id, "inputs") not in cluster.payloads()
    assert cluster.service.state.jobs[job_id].request.inputs == b""  # nor kept in memory


def test_history_keeps_the_newest_finished_jobs_and_every_unfinished_one(cluster):
    finished = []
    for _ in range(8):
        finished.append(cluster.run())
        cluster.later(1)
    waiting = cluster.service.submit(submit_request(artifact_digest=cluster.model)).job_id
    report = cluster.service.sweep()
    assert report.jobs == finished[:3]
    store = cluster.service.store
    assert store.load_job(finished[0]) is None and store.transitions(finished[0]) == []
    assert store.load_job(finished[3]) is not None
    assert store.load_job(waiting).state == "placed"
    cluster.service.state.jobs.pop(finished[0])  # as if it had left memory too
    with pytest.raises(NotFoundError, match="keeps the newest 5 finished jobs.*--keep-jobs"):
        cluster.service.wait(finished[0], 0)


def test_history_older_than_its_age_limit_goes_whatever_the_count(tmp_path):
    c = Cluster(tmp_path, Retention(jobs=1000, jobs_for_s=100, sweep_every_s=3600))
    try:
        old = c.run()
        c.later(101)
        new = c.run()
        assert c.service.sweep().jobs == [old]
        assert c.service.store.load_job(new) is not None
    finally:
        c.close()


def test_blobs_are_collected_once_nothing_kept_refers_to_them(cluster):
    service = cluster.service
    big = b"o" * 1000
    job_id = cluster.run(outputs=big)
    outputs_blob = hashlib.sha256(big).hexdigest()
    stray = service.blobs.put(b"uploaded, never submitted")
    pending_model = service.blobs.put(b"model of a pending job")
    service.submit(submit_request(artifact_digest=pending_model))
    for digest in (outputs_blob, stray, pending_model, cluster.model):
        age(blob_path(service, digest), 3600)
    before = service.blobs.bytes
    report = service.sweep()
    assert report.blobs == 1 and not blob_path(service, stray).exists()  # no reference
    assert blob_path(service, outputs_blob).exists()  # a kept result's outputs
    assert blob_path(service, cluster.model).exists()  # a model used within --keep-models
    assert service.blobs.bytes == before - len(b"uploaded, never submitted")
    assert service.wait(job_id, 0)[0].outputs_digest == outputs_blob
    cluster.later(61)  # the outputs expire; the model goes unused for longer than 600 s
    cluster.later(600)
    report = service.sweep()
    assert report.outputs == [job_id]
    assert not blob_path(service, outputs_blob).exists()
    assert not blob_path(service, cluster.model).exists()
    assert blob_path(service, pending_model).exists()  # its job still waits


def test_a_fresh_upload_is_spared_and_asking_about_a_blob_counts_as_use(cluster):
    service = cluster.service
    fresh = service.blobs.put(b"just uploaded")
    asked = service.blobs.put(b"asked about")
    age(blob_path(service, asked), 3600)
    assert service.blobs.has(asked)
    service.sweep()
    assert blob_path(service, fresh).exists() and blob_path(service, asked).exists()


def test_a_job_naming_a_collected_model_is_refused_as_missing_blob(cluster):
    missing = "b" * 64
    with pytest.raises(MissingBlobError, match="upload it with PutBlob and submit again"):
        cluster.service.submit(submit_request(artifact_digest=missing))


def test_the_client_uploads_a_collected_model_again(tmp_path):
    torch = pytest.importorskip("torch")
    from anypu.sdk import Embedded, InProcessTransport
    from anypu.sdk._client import Client

    embedded = Embedded()
    try:
        client = Client(InProcessTransport(embedded.service))
        model = torch.nn.Linear(3, 2).eval()
        x = torch.ones(1, 3)
        first = client.submit(model, x).result(timeout=30)
        service = embedded.service
        (digest,) = list(client._uploaded)
        path = blob_path(service, digest)
        path.unlink()  # collected while the client still thinks it is there
        again = client.submit(model, x).result(timeout=30)
        assert torch.equal(first, again) and path.exists()
    finally:
        embedded.close()


def test_a_database_written_before_retention_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / "anypu.db")
    db.executescript(
        """
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, record TEXT NOT NULL,
            inputs BLOB, outputs BLOB, updated_at REAL NOT NULL);
        CREATE TABLE job_payloads (job_id TEXT NOT NULL, kind TEXT NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY (job_id, kind));
        """
    )
    record = (
        '{"finished_at": 5.0, "outputs_digest": "", "request": {"artifact_digest": "%s",'
        ' "inputs_digest": ""}}' % ("c" * 64)
    )
    db.execute("INSERT INTO jobs VALUES ('j1', 'succeeded', ?, x'69', x'6f', 5.0)", (record,))
    db.commit()
    db.close()
    store = StateStore(tmp_path)
    try:
        assert store.referenced_blobs(0.0) == {"c" * 64}
        assert store.expire_outputs(0.0, 10.0, 100) == [("j1", "")]
        with sqlite3.connect(tmp_path / "anypu.db") as check:
            assert check.execute("SELECT inputs, outputs FROM jobs").fetchone() == (None, None)
            assert list(check.execute("SELECT * FROM job_payloads")) == []
    finally:
        store.close()


def test_the_state_folder_s_size_and_what_was_collected_are_metrics(cluster):
    metrics = SchedulerMetrics(cluster.service)
    cluster.service.blobs.put(b"x" * 5000)
    cluster.run()
    assert 'anypu_state_folder_bytes{part="blobs"} 5005.0' in metrics.render().decode()
    cluster.later(4000)  # the outputs expire, the model and the stray blob go unused
    cluster.service.sweep()
    text = metrics.render().decode()
    assert 'anypu_state_folder_bytes{part="blobs"} 0.0' in text
    assert 'anypu_state_collected_total{what="outputs"} 1.0' in text
    assert 'anypu_state_collected_total{what="blobs"} 2.0' in text
    assert "anypu_state_collected_blob_bytes_total 5005.0" in text
    database = next(
        line for line in text.splitlines() if line.startswith('anypu_state_folder_bytes{part="d')
    )
    assert float(database.split()[-1]) > 0


def test_retention_flags_are_checked(tmp_path, capsys):
    from anypu._cli import main

    state = str(tmp_path / "state")
    assert main(["scheduler", "--insecure", "--state-dir", state, "--keep-results", "soon"]) == 2
    assert "--keep-results 'soon' is not a duration" in capsys.readouterr().err
    assert main(["scheduler", "--insecure", "--state-dir", state, "--keep-jobs", "-1"]) == 2
    assert "--keep-jobs must be ≥ 0" in capsys.readouterr().err


def test_a_missing_blob_crosses_the_wire_as_missing_blob_error(tmp_path):
    from anypu.scheduler import serve
    from anypu.sdk._transport import GrpcTransport

    service = SchedulerService(tmp_path, token="t")
    server, port = serve(service, "127.0.0.1", 0, None, None)
    transport = GrpcTransport(f"127.0.0.1:{port}", "t")
    try:
        with pytest.raises(MissingBlobError, match="is not on the scheduler") as caught:
            transport.submit(submit_request(artifact_digest="e" * 64))
        assert caught.value.digest == "e" * 64
    finally:
        transport.close()
        server.stop(0).wait()
        service.close()


def test_a_model_is_kept_from_its_last_use_even_once_its_jobs_are_forgotten(tmp_path):
    # Jobs are kept by count: many calls of one model must not get another model,
    # used a minute ago, collected as if unused (--keep-models counts from its last use).
    db = sqlite3.connect(tmp_path / "anypu.db")
    db.close()
    store = StateStore(tmp_path)
    try:
        with sqlite3.connect(tmp_path / "anypu.db") as raw:
            for job_id, digest, finished in (("old", "a" * 64, 100.0), ("new", "b" * 64, 200.0)):
                raw.execute(
                    "INSERT INTO jobs (job_id, state, record, updated_at, artifact, finished_at)"
                    " VALUES (?, 'succeeded', '{}', ?, ?, ?)",
                    (job_id, finished, digest, finished),
                )
        assert store.forget_finished_jobs(1, 0.0, 100) == ["old"]  # keep the newest one
        assert store.referenced_blobs(50.0) == {"a" * 64, "b" * 64}
        assert store.referenced_blobs(150.0) == {"b" * 64}  # a's last use is past the window
        assert store.referenced_blobs(50.0) == {"b" * 64}  # and it was forgotten
    finally:
        store.close()
