"""``make demo``: a scheduler and three agents on loopback, two models, no downloads.

cloud-1 declares a datacentre GPU, edge-1 a small edge accelerator, phone-1 (tier
device) offers its own CPU. The client sits at the phone's site, so moving data to the
cloud costs a WAN round trip: a small model stays close, a heavy one goes where compute
is. Simulated devices run on this machine's CPU, and every line says so.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from anypu.protos.messages import JobInfo

NETWORK = """\
sites: [dc-frankfurt, shop-7, home]
links:
  - {a: home, b: shop-7, latency_ms: 4, bandwidth_mbps: 500}
  - {a: shop-7, b: dc-frankfurt, latency_ms: 18, bandwidth_mbps: 1000}
"""

AGENTS = [
    (
        "cloud-1",
        "cloud",
        "dc-frankfurt",
        "devices:\n  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}\n"
        "include_host: false\n",
    ),
    (
        "edge-1",
        "edge",
        "shop-7",
        "devices:\n  - {kind: npu, vendor: huawei, model: Ascend-310P, memory: 8GiB, tflops: 22}\n"
        "include_host: false\n",
    ),
    ("phone-1", "device", "home", None),
]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "anypu", *args],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def _explain(info: JobInfo) -> str:
    p = info.placement
    assert p is not None, "a job that ran has a placement"
    terms = ", ".join(f"{k} {v * 1e3:.2f}ms" for k, v in p.terms.items() if v)
    load = (
        f" + model load {info.outcome.load_seconds * 1e3:.0f} ms (first use)"
        if info.outcome.load_seconds
        else ""
    )
    return (
        f"  ran on {p.node_id} ({p.tier}) {p.device_id}: {p.device_description}\n"
        f"  why: {terms} (solver {p.solver})\n"
        f"  predicted {p.predicted_seconds * 1e3:.2f} ms, measured run {info.outcome.run_seconds * 1e3:.2f} ms"
        f"{load}, end-to-end {info.latency_seconds * 1e3:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="scheduler port (default: a free one)")
    parser.add_argument("--http-port", type=int, default=0, help="dashboard port (default: free)")
    parser.add_argument(
        "--hold", action="store_true", help="keep the network and dashboard up until Ctrl-C"
    )
    args = parser.parse_args()
    from anypu import sdk
    from anypu.sdk import models

    work = Path(tempfile.mkdtemp(prefix="anypu-demo-"))
    (work / "network.yaml").write_text(NETWORK)
    port = args.port or _free_port()
    address = f"127.0.0.1:{port}"
    token = "demo-token"
    procs = [
        _start(
            [
                "scheduler",
                "--port",
                str(port),
                "--state-dir",
                str(work / "state"),
                "--token",
                token,
                "--network",
                str(work / "network.yaml"),
                "--http-port",
                str(args.http_port),
            ],
            work / "scheduler.log",
        )
    ]
    try:
        log = work / "scheduler.log"
        _wait_for(lambda: "join an agent" in log.read_text(), 60, "the scheduler")
        # The real bootstrap: agents pin the CA by hash, spend the token on a certificate
        # and speak mutual TLS from then on; the client speaks TLS with the token.
        ca_hash = re.search(r"CA hash: (sha256:\w+)", log.read_text()).group(1)  # type: ignore[union-attr]
        print(f"scheduler on {address} (TLS, CA {ca_hash[:15]}…), logs in {work}")
        dashboard = re.search(r"dashboard on (http://\S+)", log.read_text())
        if dashboard:
            print(
                f"dashboard on {dashboard.group(1)} (open it while the demo runs; --hold keeps it up)"
            )
        for name, tier, site, devices in AGENTS:
            cmd = [
                "agent",
                "--scheduler",
                address,
                "--token",
                token,
                "--tier",
                tier,
                "--name",
                name,
                "--site",
                site,
                "--cache-dir",
                str(work / name),
                "--ca-hash",
                ca_hash,
            ]
            if devices:
                (work / f"{name}.yaml").write_text(devices)
                cmd += ["--devices", str(work / f"{name}.yaml")]
            procs.append(_start(cmd, work / f"{name}.log"))
        client = sdk.connect(address, token=token, origin="home", ca_hash=ca_hash)
        _wait_for(lambda: len(sdk.nodes()) == 3, 60, "three agents to join")
        for node in sdk.nodes():
            kinds = ", ".join(d.describe() for d in node.devices)
            print(f"joined {node.node_id:<8} tier {node.tier:<6} site {node.site:<13} {kinds}")
        cnn = models.small_cnn()
        block = models.transformer_block(d_model=512, nhead=8)
        jobs = [
            ("small CNN, batch 1", cnn, cnn.example_inputs(batch=1)),
            (
                "transformer block, 16 sequences × 128 tokens",
                block,
                block.example_inputs(batch=16, tokens=128),
            ),
        ]
        for title, model, inputs in jobs:
            handle = sdk.submit(model, inputs)
            outputs = handle.result(timeout=300)
            expected = model(*inputs)
            torch.testing.assert_close(outputs, expected, rtol=1e-4, atol=1e-4)
            print(f"\n{title}: outputs match a direct call")
            expected_block = expected
            print(_explain(handle.info()))
        print("\nwarm call of the small CNN:")
        handle = sdk.submit(cnn, jobs[0][2])
        handle.result(timeout=60)
        print(_explain(handle.info()))
        print("\na burst of 6 transformer jobs at once (queueing spreads them):")
        burst = [sdk.submit(block, jobs[1][2]) for _ in range(6)]
        for handle in burst:
            torch.testing.assert_close(
                handle.result(timeout=300), expected_block, rtol=1e-4, atol=1e-4
            )
            p = handle.info().placement
            assert p is not None, "a job that ran has a placement"
            print(
                f"  {handle.job_id}: {p.node_id:<8} predicted {p.predicted_seconds * 1e3:7.1f} ms"
                f" (queue {p.terms.get('queue', 0) * 1e3:.1f} ms)"
            )
        if args.hold:
            print("\nholding the network up; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        client.close()
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        # An AF_INET socket's name is (host, port).
        return cast(int, sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
