"""How many 2–6 GiB models run at once on one 40 GiB GPU: demand-sized shares vs slices.

Run from the repository root::

    python -m benchmarks.density [--jobs 24] [--seed 1]

A real scheduler and one real agent process on this machine, offering one simulated
40 GiB GPU three ways in turn: shared by demand-sized reservations (``seats: 12``), one
exclusive slice (what an agent offered an accelerator before shares), and six fixed
slices of 6.7 GiB (the most that still hold a 6 GiB model). The same ``--jobs`` calls go
to each: a model whose estimate says 2, 3, 4, 5 or 6 GiB (drawn with ``--seed``; the
simulated GPU runs on the CPU, so the models themselves are small and only their
reservations are that size), all submitted at once. The figures: the most jobs the agent
ran at the same time (its heartbeats' count, polled), and the time until all finished
(on 2 cores concurrent jobs share the CPU, so that is not what a GPU would show).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from benchmarks import machine
from tests.cluster import Cluster

GiB = 2**30
LAYOUTS = {
    "shared, 12 seats": "seats: 12",
    "1 slice (before shares)": "slices: 1",
    "6 fixed slices": "slices: 6",
}


class Busy(torch.nn.Module):
    """About a second of tanh on a 4 MiB tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(4, 1)
        for _ in range(150):
            y = torch.tanh(y)
        return y[:1]


def _run(layout: str, sizes: list[int], work: Path) -> tuple[int, float, int]:
    """(most running at once, seconds until all finished, most reserved GiB)."""
    devices = (
        "devices:\n  - {kind: gpu, vendor: nvidia, model: A100-40GB, memory: 40GiB,"
        f" tflops: 19.5, {layout}}}\ninclude_host: false\n"
    )
    cluster = Cluster(work)
    try:
        cluster.add_agent("gpu-1", "cloud", devices)
        client = Client(GrpcTransport(cluster.address, cluster.token))
        cluster.wait_nodes(client, 1)
        model, x = Busy().eval(), torch.randn(256, 1024)
        client.run(model, x)  # export, estimate and upload once; the agent loads it
        request, args = client._describe(model, x, RunOptions(device_kinds=("gpu",)))
        request = client._with_inputs(request, args)
        started = time.perf_counter()
        jobs = [
            client.transport.submit(dataclasses.replace(request, memory_bytes=s * GiB))[0].job_id
            for s in sizes
        ]
        most = most_gib = 0
        pending = set(jobs)
        while pending:
            (node,) = client.transport.list_nodes()
            most = max(most, node.running_jobs)
            most_gib = max(most_gib, sum(r.memory_bytes for r in node.reservations) // GiB)
            pending = {j for j in pending if client.transport.job(j).state not in _DONE}
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        client.close()
        return most, seconds, most_gib
    finally:
        cluster.close()


_DONE = ("succeeded", "failed", "cancelled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = np.random.default_rng(args.seed).integers(2, 7, size=args.jobs).tolist()
    rows = []
    for name, layout in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as work:
            rows.append((name, *_run(layout, sizes, Path(work))))
    print(machine())
    print(f"{args.jobs} jobs of {sum(sizes)} GiB in all (2–6 GiB each) on one 40 GiB simulated GPU")
    print(f"{'offered as':<24} {'at once (max)':>13} {'reserved (max)':>15} {'all done':>9}")
    for name, most, seconds, gib in rows:
        reserved = f"{gib} GiB" if name.startswith("shared") else "–"
        print(f"{name:<24} {most:>13} {reserved:>15} {seconds:>8.1f}s")


if __name__ == "__main__":
    main()
