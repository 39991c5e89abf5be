"""When CP-SAT places jobs: one caller at a time against a burst of concurrent callers.

``python -m benchmarks.burst [--jobs 96] [--threads 16]``. A real scheduler and three
agents on loopback (simulated GPUs of different speeds, two slices each); the client
submits ``--jobs`` calls of three model sizes, first from one thread (each call is alone
in its placement round: ``single``), then from ``--threads`` threads at once. The
scheduler places every submission that arrived while a round ran in the next round
(``SchedulerService.submit``), so a burst is planned together: ``cp-sat:OPTIMAL`` when
CP-SAT's plan won, ``greedy (cp-sat …)`` when the greedy plan was as good. The table
counts jobs by the solver that placed them and shows how they spread over the nodes.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import torch

from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from benchmarks import machine
from tests.cluster import Cluster

NODES = {
    "fast": "devices:\n  - {kind: gpu, vendor: nvidia, model: H100, memory: 80GiB, tflops: 400,"
    " slices: 2}\ninclude_host: false\n",
    "mid": "devices:\n  - {kind: gpu, vendor: nvidia, model: A100, memory: 40GiB, tflops: 156,"
    " slices: 2}\ninclude_host: false\n",
    "slow": "devices:\n  - {kind: gpu, vendor: nvidia, model: T4, memory: 16GiB, tflops: 65,"
    " slices: 2}\ninclude_host: false\n",
}


def _calls(client: Client, jobs: int, threads: int) -> tuple[Counter, Counter, float]:
    models = [mlp(width=w, depth=3).eval() for w in (64, 256, 512)]
    x = {id(m): torch.randn(16, w) for m, w in zip(models, (64, 256, 512), strict=True)}
    solvers: Counter = Counter()
    nodes: Counter = Counter()
    lock = threading.Lock()
    work = iter(range(jobs))

    def caller() -> None:
        while True:
            with lock:
                i = next(work, None)
            if i is None:
                return
            model = models[i % len(models)]
            handle = client.submit(model, x[id(model)], RunOptions(device_kinds=("gpu",)))
            handle.result(timeout=120)
            placement = handle.info().placement
            with lock:
                solvers[placement.solver.split(" ")[0]] += 1
                nodes[placement.node_id] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return solvers, nodes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--solver-time-limit", type=float, default=0.2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        cluster = Cluster(Path(work), **{"solver-time-limit": args.solver_time_limit})
        try:
            for name, devices in NODES.items():
                cluster.add_agent(name, "cloud", devices)
            client = Client(GrpcTransport(cluster.address, cluster.token))
            cluster.wait_nodes(client, len(NODES))
            _calls(client, 6, 1)  # warm: export, estimate, upload each model
            for threads in (1, args.threads):
                rows.append((threads, *_calls(client, args.jobs, threads)))
            client.close()
        finally:
            cluster.close()
    print(machine())
    print(f"{args.jobs} calls of 3 MLP sizes on 3 nodes × 2 simulated GPU slices")
    print(f"{'callers':>8}  {'s':>6}  {'placed by (jobs)':<48}  spread over nodes")
    for threads, solvers, nodes, seconds in rows:
        placed = ", ".join(f"{k} {v}" for k, v in solvers.most_common())
        spread = ", ".join(f"{k} {v}" for k, v in sorted(nodes.items()))
        print(f"{threads:>8}  {seconds:>6.1f}  {placed:<48}  {spread}")


if __name__ == "__main__":
    main()
