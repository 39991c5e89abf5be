"""Join admission on the agents' port: at most so many Joins wait at once, the rest are
told to come back (RESOURCE_EXHAUSTED), and the refusals are logged once a second."""

from __future__ import annotations

import logging

import grpc
import pytest

from anypu.scheduler._agent_stream import JoinAdmission, JoinsBusyError
from anypu.scheduler._grpc import status_of


def test_joins_beyond_the_limit_are_refused_until_one_leaves(caplog):
    now = [100.0]
    admission = JoinAdmission(2, clock=lambda: now[0])
    admission.enter()
    admission.enter()
    with caplog.at_level(logging.WARNING, "anypu.scheduler"):
        for _ in range(3):
            with pytest.raises(JoinsBusyError, match="admitting 2 joins at once"):
                admission.enter()
        now[0] += 1.5
        with pytest.raises(JoinsBusyError):
            admission.enter()
    reports = [r.getMessage() for r in caplog.records]
    assert reports == [
        "admitting agents: 1 join(s) refused since the last report, 2 waiting"
        " (they come back with jittered backoff)",
        "admitting agents: 3 join(s) refused since the last report, 2 waiting"
        " (they come back with jittered backoff)",
    ]
    assert admission.refused_total == 4
    admission.leave()
    admission.enter()  # room again
    assert admission.waiting == 2


def test_a_refused_join_is_answered_resource_exhausted_which_agents_retry():
    code, message = status_of(JoinsBusyError("busy"))  # type: ignore[misc]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and message == "busy"
