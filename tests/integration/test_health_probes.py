"""What a kubelet's probes see: the scheduler's ``/healthz`` and ``/readyz`` on its HTTP
port, and an agent's on ``--health-address``, as the scheduler goes away."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from tests.cluster import SIMULATED_CPU, Cluster


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_probes_follow_the_agent_s_stream_and_the_scheduler_s_state(tmp_path):
    cluster = Cluster(tmp_path, **{"http-port": 0})
    try:
        health = ("--health-address", "127.0.0.1:0")
        cluster.add_agent("edge-1", "edge", SIMULATED_CPU, extra=health)
        agent = "http://" + cluster.printed(
            "edge-1", r"/healthz, /readyz and /metrics at http://(\S+)"
        )
        scheduler = "http://127.0.0.1:" + cluster.printed(
            "scheduler", r"dashboard on http://127\.0\.0\.1:(\d+)"
        )
        with cluster.connected_client(1):
            assert _get(scheduler + "/healthz") == (200, "ok\n")
            assert _get(scheduler + "/readyz") == (200, "ready: 1 node(s) known\n")
            status, text = _get(agent + "/readyz")
            assert status == 200 and text.startswith("joined as edge-1")
        assert _get(agent + "/healthz") == (200, "ok\n")
        assert _get(agent + "/other")[0] == 404
        cluster.kill("scheduler")
        deadline = time.monotonic() + 30
        while (answer := _get(agent + "/readyz"))[0] == 200:
            assert time.monotonic() < deadline, answer
            time.sleep(0.1)
        assert answer[0] == 503 and "not joined: the stream broke" in answer[1]
        assert _get(agent + "/healthz") == (200, "ok\n")  # alive: only not ready
        assert 'anypu_agent_ready{node="edge-1"} 0.0' in _get(agent + "/metrics")[1]
    finally:
        cluster.close()
