"""How many models run at once on one GPU: demand-sized shares vs slices.

Run from the repository root::

    python -m benchmarks.density [--jobs 16] [--seed 1]

A real scheduler and one real agent process on this machine, offering one simulated GPU
of ``--gib`` GiB three ways in turn: shared by demand-sized reservations (``seats: 12``),
one exclusive slice (what an agent offered an accelerator before shares), and six fixed
slices (the most that still hold the largest model). The same ``--jobs`` calls go to
each: a model whose estimate says 5 %, 7.5 %, 10 %, 12.5 % or 15 % of the GPU (2–6 GiB of
a 40 GiB one; drawn with ``--seed``; the simulated GPU runs on the CPU, so the models
themselves are small and only their reservations are that size), all submitted at once.
A simulated device is offered with at most the host's memory (it runs there), so on a
machine with less than 40 GiB the default is a 20 GiB GPU and 1–3 GiB models: the same
ratios at half the scale. The figures: the most jobs placed on
the device at once (the scheduler's; on slices, jobs queued behind a busy slice count
too), the most its agent ran at the same time (its heartbeats' count, polled), the most
memory reserved, and the time until all finished (on 2 cores concurrent jobs share the
CPU, so that is not what a GPU would show).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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
    """A few seconds of tanh on a 4 MiB tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(4, 1)
        for _ in range(600):
            y = torch.tanh(y)
        return y[:1]


def _run(
    layout: str, gib: float, sizes: list[int], work: Path
) -> tuple[int, int, float, float, int]:
    """(most placed at once, most running at once, seconds until all finished, most
    reserved GiB, jobs that succeeded)."""
    devices = (
        "devices:\n  - {kind: gpu, vendor: nvidia, model: A100-40GB,"
        f" memory: {int(gib * 1024)}MiB, tflops: 19.5, {layout}}}\ninclude_host: false\n"
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
            client.transport.submit(dataclasses.replace(request, memory_bytes=s))[0].job_id
            for s in sizes
        ]
        most = placed = 0
        most_gib = 0.0
        pending = set(jobs)
        while pending:
            (node,) = client.transport.list_nodes()
            most = max(most, node.running_jobs)
            most_gib = max(most_gib, sum(r.memory_bytes for r in node.reservations) / GiB)
            states = {j: client.transport.job(j).state for j in pending}
            placed = max(placed, sum(s in ("placed", "running") for s in states.values()))
            pending = {j for j, s in states.items() if s not in _DONE}
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        ok = sum(client.transport.job(j).state == "succeeded" for j in jobs)
        client.close()
        return placed, most, seconds, most_gib, ok
    finally:
        cluster.close()


_DONE = ("succeeded", "failed", "cancelled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    host_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    parser.add_argument("--gib", type=float, default=40.0 if host_gib > 44 else 20.0)
    args = parser.parse_args()
    # 5 % to 15 % of the GPU: 2–6 GiB of a 40 GiB one.
    eighths = np.random.default_rng(args.seed).integers(4, 13, size=args.jobs)
    sizes = [int(args.gib * GiB * e / 80) for e in eighths.tolist()]
    rows = []
    for name, layout in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as work:
            rows.append((name, *_run(layout, args.gib, sizes, Path(work))))
    print(machine())
    print(
        f"{args.jobs} jobs of {sum(sizes) / GiB:.1f} GiB in all ({min(sizes) / GiB:.1f}–"
        f"{max(sizes) / GiB:.1f} GiB each) on one {args.gib:g} GiB simulated GPU"
    )
    print(
        f"{'offered as':<24} {'placed (max)':>12} {'running (max)':>13} {'reserved (max)':>15}"
        f" {'all done':>9} {'succeeded':>9}"
    )
    for name, placed, most, seconds, gib, ok in rows:
        reserved = f"{gib:.1f} GiB" if name.startswith("shared") else "–"
        print(
            f"{name:<24} {placed:>12} {most:>13} {reserved:>15} {seconds:>8.1f}s"
            f" {ok:>6}/{len(sizes)}"
        )


if __name__ == "__main__":
    main()
