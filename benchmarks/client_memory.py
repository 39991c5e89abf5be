"""What one large call costs the client in memory: peak RSS over a round trip.

``python -m benchmarks.client_memory [--mib 200]``. A scheduler and an agent in their own
processes on loopback; this process calls ``run(x * 2)`` on a ``--mib`` float32 tensor
(inputs and outputs over 4 MiB: both travel as chunked blobs). The first call warms the
model (export, estimate, upload); then the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``) and a second call measures what a round trip holds at its
peak beyond the caller's own tensor: the reference is the tensor's size (1.0× would be
the output alone).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from benchmarks import machine
from tests.cluster import Cluster


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(args.mib << 18)  # float32: 4 bytes each
    size = x.numel() * 4
    with tempfile.TemporaryDirectory() as work:
        cluster = Cluster(Path(work))
        try:
            cluster.add_agent("bench-1", "edge")
            client = Client(GrpcTransport(cluster.address, cluster.token))
            cluster.wait_nodes(client, 1)
            model = Double().eval()
            assert torch.equal(client.run(model, x), x * 2)  # warm: export, estimate, upload
            peaks, times = [], []
            for _ in range(args.calls):
                with open("/proc/self/clear_refs", "w") as clear:
                    clear.write("5")  # reset the peak-RSS mark (VmHWM) to now
                before = _rss("VmRSS")
                started = time.perf_counter()
                y = client.run(model, x)
                times.append(time.perf_counter() - started)
                peaks.append(_rss("VmHWM") - before)
                del y
            client.close()
        finally:
            cluster.close()
    print(machine())
    peak = max(peaks)
    print(
        f"{args.mib} MiB in, {args.mib} MiB out: peak RSS above the caller's tensor"
        f" {peak / 2**20:.0f} MiB = {peak / size:.2f}× the tensor (median of {args.calls}"
        f" calls {sorted(times)[len(times) // 2]:.2f} s)"
    )


if __name__ == "__main__":
    main()
