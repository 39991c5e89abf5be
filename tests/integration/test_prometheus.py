"""A real Prometheus server (Debian ``prometheus``) scrapes a running scheduler on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from scripts.dashboard_demo import AGENTS, dashboard_url
from tests.cluster import Cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture()
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `sudo tests/setup_browser.sh` (or make test)")
    cluster = Cluster(tmp_path, **{"http-port": 0})
    for name, tier, site, devices in AGENTS[:2]:  # cloud and edge: simulated, quick to start
        cluster.add_agent(name, tier, devices, site=site)
    target = dashboard_url(cluster).removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: anypu, static_configs: [{{targets: ['{target}']}}]}}\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "prometheus.log"
    finally:
        proc.terminate()
        proc.wait(10)
        cluster.close()


def test_promql_counts_the_joined_nodes(prometheus):
    base, log = prometheus
    deadline = time.monotonic() + 45
    ready = by_tier = None
    while time.monotonic() < deadline:
        try:
            ready = query(base, 'sum(anypu_nodes{state="ready"})')
            by_tier = query(base, 'sum by (tier) (anypu_nodes{state="ready"})')
        except OSError:
            pass  # Prometheus still starting
        if ready and float(ready[0]["value"][1]) == 2:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"PromQL never saw 2 ready nodes: {ready}\n{log.read_text()[-2000:]}")
    tiers = {r["metric"]["tier"]: float(r["value"][1]) for r in by_tier}
    assert tiers == {"cloud": 1.0, "edge": 1.0, "device": 0.0}
    up = query(base, 'up{job="anypu"}')
    assert float(up[0]["value"][1]) == 1.0
