"""The agent's probes' answers, and the mistakes its flag can hold."""

from __future__ import annotations

import time

import pytest

from anypu.agents._health import STALE_AFTER_S, HealthServer
from anypu.errors import ConfigError


def test_a_wedged_agent_is_not_alive_and_an_unjoined_one_is_not_ready():
    ticked = [time.monotonic()]
    ready = [(False, "not joined yet")]
    server = HealthServer("127.0.0.1:0", lambda: ticked[0], lambda: ready[0])
    try:
        assert server.answer("/healthz") == (200, "ok")
        assert server.answer("/readyz") == (503, "not joined yet")
        ready[0] = (True, "joined as edge-1 (epoch 1)")
        assert server.answer("/readyz") == (200, "joined as edge-1 (epoch 1)")
        ticked[0] -= STALE_AFTER_S + 1
        status, text = server.answer("/healthz")
        assert status == 503 and text.startswith("wedged: no housekeeping tick for")
        assert server.answer("/other")[0] == 404
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("address", "says"), [("8081", "must be HOST:PORT"), (":x", "must be HOST:PORT")]
)
def test_a_bad_health_address_says_what_it_takes(address, says):
    with pytest.raises(ConfigError, match=says):
        HealthServer(address, time.monotonic, lambda: (True, ""))
