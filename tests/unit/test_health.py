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


def test_metrics_say_whether_it_is_joined_and_count_a_gateway_s_requests():
    import urllib.request
    from collections import Counter
    from types import SimpleNamespace

    from anypu.agents._health import agent_registry

    ready = [(False, "not joined yet")]
    gateway = SimpleNamespace(
        answered=Counter({("http", "mlp", 200): 3}),
        throttle=SimpleNamespace(delayed=1, refused=0),
        on_latency=None,
    )
    registry = agent_registry("edge-1", time.monotonic, lambda: ready[0], gateway)
    gateway.on_latency("grpc", "mlp", 0.004)
    server = HealthServer("127.0.0.1:0", time.monotonic, lambda: ready[0], registry)
    try:

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{server.address}/metrics") as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                return response.read().decode()

        seen = _samples(scrape())
        assert seen[("anypu_agent_ready", (("node", "edge-1"),))] == 0.0
        requests = (
            "anypu_inference_requests_total",
            (("code", "200"), ("model", "mlp"), ("protocol", "http")),
        )
        assert seen[requests] == 3.0
        bucket = (("le", "0.005"), ("model", "mlp"), ("protocol", "grpc"))
        assert seen[("anypu_inference_duration_seconds_bucket", bucket)] == 1.0
        assert seen[("anypu_auth_failures_throttled_total", (("action", "delayed"),))] == 1.0
        ready[0] = (True, "joined as edge-1 (epoch 1)")
        assert _samples(scrape())[("anypu_agent_ready", (("node", "edge-1"),))] == 1.0
    finally:
        server.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
