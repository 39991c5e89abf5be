"""A call split across tiers, live, against the cloud GPU alone, over a shaped link.

``python -m benchmarks.split [--calls N]``. A real scheduler and two agents on loopback:
``phone-1`` beside the scheduler (its site's gateway) and ``cloud-1``, an A100 declared
in ``devices.yaml``, reaching the scheduler through a TCP proxy (``tests/proxy.py``)
that imposes what ``network.yaml`` declares for that link: 20 ms each way and 8 Mb/s.
The client is at the phone. The model is ``tests/integration/test_split.py``'s camera
model: 16 frames of 3×128×128 (3 MiB) in, cut by the SDK after its first convolution
block (64 KiB across). Rows, each over warm calls (after two warm-ups), submit to
outputs back: median and p99, and what placement predicted.

- **split**: ``deadline_ms=5000``; the scheduler splits it (head on the phone, tail on
  the cloud GPU): only the activation crosses the shaped link;
- **cloud GPU alone**: the same call pinned to ``cloud-1`` with ``split=False``: the
  frames cross it.

Both sides compute on this machine's CPU (the A100 is simulated), so the difference
is the bytes on the link, which is what a split saves; a row for the phone alone is
left out because its compute here is the host's, not a phone's.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from benchmarks import machine, percentile
from tests.cluster import Cluster
from tests.integration.test_split import CLOUD, NETWORK, PHONE, Camera
from tests.proxy import Proxy

DELAY_S, BANDWIDTH_BPS = 0.020, 1e6  # as NETWORK declares scheduler–cloud


def _calls(client: Client, options: RunOptions, count: int) -> tuple[list[float], str, float]:
    """(seconds per warm call, the last call's split, its predicted seconds)."""
    model, frames = Camera().eval(), torch.randn(16, 3, 128, 128)
    seconds: list[float] = []
    info = None
    for i in range(count + 2):
        started = time.perf_counter()
        future = client.submit(model, frames, options)
        future.result(timeout=300)
        if i >= 2:
            seconds.append(time.perf_counter() - started)
        info = future.info()
    assert info is not None and info.placement is not None
    predicted = info.placement.predicted_seconds
    found = re.search(r"([\d.]+) ms predicted", info.split)
    if found:
        predicted = float(found.group(1)) / 1000
    return seconds, info.split, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15, help="warm calls per row (15)")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        (workdir / "network.yaml").write_text(NETWORK)
        cluster = Cluster(workdir, network=workdir / "network.yaml")
        proxy = Proxy(cluster.port)
        proxy.shape(delay_s=DELAY_S, bandwidth_bps=BANDWIDTH_BPS)
        try:
            cluster.add_agent("phone-1", "device", PHONE, site="phone")
            cluster.add_agent("cloud-1", "cloud", CLOUD, site="cloud", address=proxy.address)
            client = Client(GrpcTransport(cluster.address, cluster.token), origin="phone")
            cluster.wait_nodes(client, 2)
            rows = {
                "split": RunOptions(deadline_ms=5_000),
                "cloud GPU alone": RunOptions(nodes=("cloud-1",), split=False),
            }
            print(
                f"link scheduler–cloud: {DELAY_S * 1e3:g} ms each way, "
                f"{BANDWIDTH_BPS * 8 / 1e6:g} Mb/s (proxy); {args.calls} warm calls a row"
            )
            print("| row | median | p99 | predicted | where |")
            print("|---|---|---|---|---|")
            for name, options in rows.items():
                count = args.calls if name == "split" else max(3, args.calls // 3)
                seconds, split, predicted = _calls(client, options, count)
                where = split or "whole on cloud-1/gpu0"
                print(
                    f"| {name} | {statistics.median(seconds) * 1e3:.1f} ms |"
                    f" {percentile(seconds, 0.99) * 1e3:.1f} ms | {predicted * 1e3:.1f} ms |"
                    f" {where} |"
                )
            client.close()
        finally:
            proxy.close()
            cluster.close()


if __name__ == "__main__":
    main()
