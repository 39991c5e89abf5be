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
