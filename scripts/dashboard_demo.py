"""A small live network for the dashboard, and a headless Chromium to look at it.

The browser test and ``python -m scripts.screenshots`` both use this, so what is tested
is what is pictured: a scheduler with its dashboard on a free loopback port, one agent
per tier (simulated cloud GPU, simulated edge NPU with slices, the host CPU as a
"device"), a finished job and a job that no device can take, so it stays pending with a
reason per node.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster import Cluster

__all__ = [
    "CHROMIUM_FLAGS",
    "DemoNetwork",
    "chromium_driver",
    "dashboard_url",
    "start_demo_network",
]

NETWORK = """\
sites: [dc-frankfurt, shop-7, home]
links:
  - {a: home, b: shop-7, latency_ms: 4, bandwidth_mbps: 500}
  - {a: shop-7, b: dc-frankfurt, latency_ms: 18, bandwidth_mbps: 1000}
"""
AGENTS = (
    (
        "cloud-1",
        "cloud",
        "dc-frankfurt",
        "devices:\n"
        "  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}\n"
        "include_host: false\n",
    ),
    (
        "edge-1",
        "edge",
        "shop-7",
        "devices:\n"
        "  - {kind: npu, vendor: huawei, model: Ascend-310P, memory: 8GiB, tflops: 22,"
        " slices: 4}\n"
        "include_host: false\n",
    ),
    ("phone-1", "device", "home", None),
)
#: What the test and the screenshots run Chromium with: no network beyond loopback, no
#: background traffic, a throwaway profile (added per run).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
_DASHBOARD = re.compile(r"dashboard on (http://\S+)")
PENDING_NAME = "needs-a-tpu"


def dashboard_url(cluster: Cluster, timeout: float = 30) -> str:
    """The URL the scheduler printed (``dashboard on http://HOST:PORT``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _DASHBOARD.search(cluster.log("scheduler"))
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise RuntimeError("the scheduler printed no dashboard URL:\n" + cluster.log("scheduler"))


@dataclass
class DemoNetwork:
    cluster: Cluster
    client: Any
    url: str
    finished_job: str
    pending_job: str
    pending_handle: Any

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def start_demo_network(workdir: Path, burst: int = 0) -> DemoNetwork:
    """Start the network, run one job to completion, leave one job pending.

    ``burst`` more jobs are submitted and awaited, so pictures show some history.
    """
    import torch

    from anypu.sdk import Client, RunOptions
    from anypu.sdk._transport import GrpcTransport
    from anypu.sdk.models import mlp

    (workdir / "network.yaml").write_text(NETWORK)
    flags = {
        "http-port": 0,
        "network": workdir / "network.yaml",
        "unschedulable-timeout": 3600,  # the pending job must stay pending, with reasons
    }
    cluster = Cluster(workdir, **flags)
    try:
        for name, tier, site, devices in AGENTS:
            cluster.add_agent(name, tier, devices, site=site, direct=True)
        url = dashboard_url(cluster)
        client = Client(GrpcTransport(cluster.address, cluster.token), origin="home")
        cluster.wait_nodes(client, len(AGENTS))
        model = mlp(width=64, depth=2)
        x = torch.randn(8, 64)
        done = client.submit(model, x, RunOptions(name="mlp-64"))
        done.result(timeout=120)
        # Pinned to each tier in turn, so the pictures show flows to every kind of node.
        handles = [
            client.submit(model, x, RunOptions(name="mlp-64", tiers=(AGENTS[i % 3][1],)))
            for i in range(burst)
        ]
        for handle in handles:
            handle.result(timeout=120)
        pending = client.submit(model, x, RunOptions(device_kinds=("tpu",), name=PENDING_NAME))
    except BaseException:
        cluster.close()
        raise
    return DemoNetwork(cluster, client, url, done.job_id, pending.job_id, pending)


def chromium_driver(width: int = 1400, height: int = 900) -> Any:
    """A Selenium driver for the system's headless Chromium, with a fresh profile.

    Raises ``RuntimeError`` naming the fix when Chromium or its driver is missing.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise RuntimeError(
            "headless Chromium is not installed: run `sudo tests/setup_browser.sh`"
            " (apt-get install chromium chromium-driver), which `make test` does for you"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='anypu-chromium-')}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
