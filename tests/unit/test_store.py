"""The SQLite state store: jobs, their payloads and transitions, across restarts."""

from __future__ import annotations

import json
import sqlite3

from anypu.protos import messages as m
from anypu.scheduler._records import JobRecord
from anypu.scheduler._store import StateStore, _job_to_row

INPUTS = b"i" * 40_000
OUTPUTS = b"o" * 30_000


def job(state: str = "pending", outputs: bytes = b"") -> JobRecord:
    request = m.SubmitRequest(artifact_digest="a" * 64, inputs=INPUTS, flops=1e6)
    return JobRecord("j1", request, state=state, outputs=outputs)


def test_payloads_are_written_once_and_load_back_with_the_job(tmp_path):
    store = StateStore(tmp_path)
    store.commit([store.job_write(job(), "pending", "", 1.0)])
    store.commit([store.job_write(job("placed"), "placed", "n1/cpu0", 2.0)])
    store.commit([store.job_write(job("running"), "running", "n1", 3.0)])
    assert store.load_unfinished_jobs()[0].request.inputs == INPUTS
    store.commit([store.job_write(job("succeeded", OUTPUTS), "succeeded", "n1", 4.0)])
    store.close()

    again = StateStore(tmp_path)
    loaded = again.load_job("j1")
    assert loaded is not None and loaded.state == "succeeded"
    assert loaded.request.inputs == INPUTS and loaded.outputs == OUTPUTS
    assert again.load_unfinished_jobs() == []
    assert [s for _, s, _, _ in again.transitions("j1")] == [
        "pending",
        "placed",
        "running",
        "succeeded",
    ]
    listed = again.recent_jobs(10)
    assert [j.job_id for j in listed] == ["j1"] and listed[0].outputs == b""
    again.close()
    db = sqlite3.connect(tmp_path / "anypu.db")
    kinds = db.execute("SELECT kind, length(data) FROM job_payloads ORDER BY kind").fetchall()
    assert kinds == [("inputs", len(INPUTS)), ("outputs", len(OUTPUTS))]
    # The job row itself stays small: no blob is copied into it at each transition.
    assert db.execute("SELECT inputs, outputs FROM jobs").fetchone() == (None, None)


def test_a_database_written_before_payloads_moved_still_loads(tmp_path):
    StateStore(tmp_path).close()  # the schema, as an older scheduler left it plus the new table
    db = sqlite3.connect(tmp_path / "anypu.db")
    row = json.dumps(_job_to_row(job("pending")))
    db.execute(
        "INSERT INTO jobs (job_id, state, record, inputs, outputs, updated_at)"
        " VALUES ('j1', 'pending', ?, ?, NULL, 1.0)",
        (row, INPUTS),
    )
    db.commit()
    db.close()
    store = StateStore(tmp_path)
    (loaded,) = store.load_unfinished_jobs()
    assert loaded.request.inputs == INPUTS
    store.commit([store.job_write(job("succeeded", OUTPUTS), "succeeded", "n1", 2.0)])
    finished = store.load_job("j1")
    assert finished is not None and finished.outputs == OUTPUTS
    assert finished.request.inputs == INPUTS
    store.close()


def test_a_job_s_outcome_is_stored_flat_and_rows_from_before_codes_read_as_their_code(tmp_path):
    store = StateStore(tmp_path)
    poisoned = job("failed")
    poisoned.outcome = m.Outcome.failed(m.FailureCode.POISON, "died 3 times")
    store.commit([store.job_write(poisoned, "failed", "poison", 1.0)])
    assert store.load_job("j1").outcome == poisoned.outcome
    store.close()
    # Rows an older scheduler wrote carry error_type and user_error, and no code.
    db = sqlite3.connect(tmp_path / "anypu.db")
    legacy = {
        "j-raised": ({"error_type": "IndexError", "user_error": True}, m.FailureCode.MODEL_RAISED),
        "j-died": ({"error_type": "WorkerDied", "user_error": False}, m.FailureCode.WORKER_DIED),
        "j-ran": ({"error_type": "", "user_error": False, "run_seconds": 0.5}, None),
    }
    for job_id, (fields, _) in legacy.items():
        record = _job_to_row(job("failed"))
        for key in m.Outcome().fields():
            record.pop(key)
        record.update(fields, job_id=job_id, error_message="old words")
        db.execute(
            "INSERT INTO jobs (job_id, state, record, updated_at) VALUES (?, 'failed', ?, 1.0)",
            (job_id, json.dumps(record)),
        )
    db.commit()
    again = StateStore(tmp_path)
    for job_id, (fields, code) in legacy.items():
        outcome = again.load_job(job_id).outcome
        assert outcome.code is code, job_id
        assert outcome.error_type == (fields["error_type"] or "") or code is None
    assert again.load_job("j-ran").outcome.run_seconds == 0.5
    again.close()


def test_a_deployment_s_versions_canary_and_caller_token_survive_a_restart(tmp_path):
    from anypu.scheduler._deployments import DeploymentRecord, DeploymentVersion
    from tests.builders import submit_request

    v1 = submit_request(name="MLP", inputs=b"example")
    v2 = submit_request(name="MLP", inputs=b"example", artifact_digest="b" * 64)
    spec = (m.TensorSpec("x", "FP32", (2, 4)),)
    record = DeploymentRecord(
        "mlp",
        v2,
        3,
        5.0,
        spec,
        spec,
        version=4,
        latest_version=4,
        previous=DeploymentVersion(2, v1, spec, ()),
        canary_percent=10,
        caller_token_sha256="c" * 64,
    )
    store = StateStore(tmp_path)
    store.commit([store.deployment_write(record)])
    store.close()
    (loaded,) = StateStore(tmp_path).load_deployments()
    assert (loaded.request, loaded.version, loaded.latest_version) == (v2, 4, 4)
    assert loaded.previous == DeploymentVersion(2, v1, spec, ())
    assert (loaded.canary_percent, loaded.caller_token_sha256) == (10, "c" * 64)


def test_deployments_stored_before_versions_were_kept_load_as_version_one(tmp_path):
    from anypu.protos import convert
    from tests.builders import submit_request

    path = tmp_path / "anypu.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE deployments (name TEXT PRIMARY KEY, request BLOB NOT NULL, replicas"
        " INTEGER NOT NULL, created_at REAL NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT"
        " NULL, min_replicas INTEGER NOT NULL, max_replicas INTEGER NOT NULL)"
    )
    request = submit_request(name="MLP", inputs=b"example")
    db.execute(
        "INSERT INTO deployments VALUES (?, ?, 1, 1.0, '[]', '[]', 0, 0)",
        ("old", convert.submit_request_bytes(request)),
    )
    db.commit()
    db.close()
    (loaded,) = StateStore(tmp_path).load_deployments()
    assert (loaded.name, loaded.version, loaded.previous, loaded.caller_token_sha256) == (
        "old",
        1,
        None,
        "",
    )
