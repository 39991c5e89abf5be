"""The scheduler's state folder over 100,000 jobs: bounded with retention, growing without.

``python -m benchmarks.state_growth [--jobs 100000] [--baseline-jobs 20000]``. A real
scheduler and agent in their own processes on loopback (``anypu scheduler --insecure``,
one agent), and a client in this process calling ``run(model, x, timeout_s=…)`` from two
threads, so every call is placed by the scheduler and its inputs and outputs pass
through its state (a leased call never touches it). The workload:

- 16 KiB in, 16 KiB out per call (stored inline in SQLite);
- every 1,000th call 5.6 MB in and out (over the 4 MiB message limit: both are blobs);
- a new model (4 MiB of weights, a new artifact) every 2,000 calls.

Two runs, one after the other on the same machine: short retention windows, so that the
bound shows within minutes (``--keep-results 5s --keep-models 10s --keep-jobs 10000``;
the defaults are 10m, 1h and 10,000), and "keep everything" (every window a year): the
behaviour before retention existed, except that inputs are deleted as a job finishes in
both. The folder's size (every file under it) is sampled every ``--sample-every``
calls; per-call latency (median, p99) shows what sweeping costs the calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from benchmarks import machine
from tests.cluster import Cluster

BOUNDED = {
    "keep-results": "5s",
    "keep-unfetched-results": "30s",
    "keep-jobs": 10_000,
    "keep-jobs-for": "1h",
    "keep-models": "10s",
}
EVERYTHING = {
    "keep-results": "365d",
    "keep-unfetched-results": "365d",
    "keep-jobs": 1_000_000_000,
    "keep-jobs-for": "365d",
    "keep-models": "365d",
}
MODEL_EVERY = 2000
LARGE_EVERY = 1000


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass  # collected while we looked
    return total


def _model(index: int) -> torch.nn.Module:
    torch.manual_seed(index)
    return torch.nn.Linear(1024, 1024).eval()


def run(label: str, jobs: int, flags: dict, sample_every: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        cluster = Cluster(Path(work), **flags)  # type: ignore[arg-type]
        try:
            cluster.add_agent("bench-1", "edge")
            client = Client(GrpcTransport(cluster.address, cluster.token))
            cluster.wait_nodes(client, 1)
            small, large = torch.randn(4, 1024), torch.randn(1400, 1024)
            options = RunOptions(timeout_s=300.0)
            lock = threading.Lock()
            counter = iter(range(jobs))
            latencies: list[float] = []
            samples: list[tuple[int, int]] = []
            models: dict[int, torch.nn.Module] = {}
            started = time.perf_counter()

            def worker() -> None:
                while True:
                    with lock:
                        i = next(counter, None)
                        if i is None:
                            return
                        model = models.get(i // MODEL_EVERY)
                        if model is None:
                            models.clear()
                            model = models[i // MODEL_EVERY] = _model(i // MODEL_EVERY)
                    x = large if i % LARGE_EVERY == LARGE_EVERY - 1 else small
                    begun = time.perf_counter()
                    client.run(model, x, options)
                    took = time.perf_counter() - begun
                    with lock:
                        latencies.append(took)
                        done = len(latencies)
                    if done % sample_every == 0:
                        size = folder_bytes(cluster.state_dir)
                        with lock:
                            samples.append((done, size))
                        print(
                            f"  {label}: {done} jobs, state folder {size / 1e6:.1f} MB", flush=True
                        )

            pool = [threading.Thread(target=worker) for _ in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            elapsed = time.perf_counter() - started
            client.close()
            return {
                "label": label,
                "jobs": jobs,
                "seconds": elapsed,
                "latencies": latencies,
                "samples": sorted(samples),
            }
        finally:
            cluster.close()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--baseline-jobs", type=int, default=20_000)
    parser.add_argument("--sample-every", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [
        run("retention", args.jobs, BOUNDED, args.sample_every, args.threads),
        run("keep everything", args.baseline_jobs, EVERYTHING, args.sample_every, args.threads),
    ]
    print("\n" + machine())
    print(f"{'run':<18}{'jobs':>8}{'s':>8}{'median ms':>11}{'p99 ms':>9}  state folder MB at")
    for r in results:
        sizes = "  ".join(f"{n // 1000}k:{size / 1e6:.0f}" for n, size in r["samples"])
        print(
            f"{r['label']:<18}{r['jobs']:>8}{r['seconds']:>8.0f}"
            f"{statistics.median(r['latencies']) * 1e3:>11.2f}{_p99(r['latencies']) * 1e3:>9.2f}"
            f"  {sizes}"
        )
    bounded, everything = results
    if everything["samples"]:
        n, size = everything["samples"][-1]
        print(
            f"\nkeep everything: {size / n / 1e3:.1f} kB per job;"
            f" at {args.jobs} jobs that is ~{size / n * args.jobs / 1e9:.1f} GB (extrapolated)"
        )
    if bounded["samples"]:
        half = [size for n, size in bounded["samples"] if n > args.jobs // 2]
        first = [size for n, size in bounded["samples"] if n <= args.jobs // 2]
        print(
            f"retention: largest in the first half {max(first, default=0) / 1e6:.0f} MB,"
            f" in the second half {max(half, default=0) / 1e6:.0f} MB"
        )


if __name__ == "__main__":
    main()
