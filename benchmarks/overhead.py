"""Per-call overhead of ``sdk.run`` against a direct forward and a Ray actor call.

``python -m benchmarks.overhead`` (``make bench`` installs Ray first). One run measures,
on the same machine and model (MLP 3×256, batch 32, warm): a direct forward, sdk.run
embedded, sdk.run over loopback gRPC to a scheduler and an agent in other processes,
the same with the agent standing for a local Ray cluster (``--backend ray``: each call
runs in a Ray actor, one hop more), and ``ray.get(actor.forward.remote(x))`` on Ray's
local cluster. Targets (issue 2):
embedded overhead ≤ 1/10 of Ray's actor-call overhead; remote ≤ 1/2 of Ray's call time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from anypu.sdk.models import mlp

_LEASED = "sdk.run remote, leased (agent --direct-address)"
_LEASED_TLS = "sdk.run remote, leased, TLS scheduler (as deployed)"
_VIA_SCHEDULER = "sdk.run remote, every call via the scheduler"
_RAY_BACKEND = "sdk.run remote, Ray backend (agent --backend ray)"
_RAY_BACKEND_LEASED = "sdk.run remote, Ray backend, leased"


def _measure(call: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _ray_actor(model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int):
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Forward:
        def __init__(self, model: torch.nn.Module) -> None:
            torch.set_num_threads(1)
            self.model = model.eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.model(x)

    actor = Forward.remote(model)
    try:
        return _measure(lambda: ray.get(actor.forward.remote(x)), repeats, warmup)
    finally:
        ray.shutdown()


def _remote(
    model: torch.nn.Module,
    x: torch.Tensor,
    repeats: int,
    warmup: int,
    direct: bool,
    tls: bool = False,
    extra: tuple[str, ...] = (),
) -> list[float]:
    """``direct``: the agent serves calls under leases (``--direct-address``), so calls
    after the first go client → agent; else every call goes through the scheduler.
    ``tls``: the scheduler as deployed (TLS, agents enrolled), so direct calls are TLS."""
    from anypu.comm import client_ca
    from anypu.sdk import Client
    from anypu.sdk._transport import GrpcTransport
    from tests.cluster import Cluster

    with tempfile.TemporaryDirectory() as work:
        flags = {"heartbeat-interval": 1.0, "lost-after": 5.0}
        cluster = Cluster(Path(work), tls=tls, **flags)  # type: ignore[arg-type]
        try:
            cluster.add_agent("bench-1", "edge", direct=direct, extra=extra)
            ca = client_ca(cluster.address, cluster.ca_hash) if tls else None
            client = Client(GrpcTransport(cluster.address, cluster.token, ca))
            cluster.wait_nodes(client, 1)
            times = _measure(lambda: client.run(model, x), repeats, warmup)
            client.close()
            return times
        finally:
            cluster.close()


def _ray_backend(
    model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int, direct: bool
) -> list[float] | None:
    """``_remote`` with the agent standing for a local Ray cluster of one 2-CPU node:
    each call runs in the slice's Ray actor (the agent's hop to it added)."""
    try:
        from ray.cluster_utils import Cluster as RayLocalCluster
    except ImportError:
        return None
    nodes = RayLocalCluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    try:
        extra = ("--backend", "ray", "--ray-address", nodes.address)
        return _remote(model, x, repeats, warmup, direct=direct, extra=extra)
    finally:
        nodes.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.pop("ANYPU_ADDRESS", None)
    model = mlp().eval()
    x = torch.randn(32, 256)
    rows: dict[str, list[float]] = {}
    with torch.inference_mode():
        rows["direct forward"] = _measure(lambda: model(x), args.repeats, args.warmup)
    from anypu import sdk

    rows["sdk.run embedded"] = _measure(lambda: sdk.run(model, x), args.repeats, args.warmup)
    sdk.disconnect()
    rows[_LEASED] = _remote(model, x, args.repeats, args.warmup, direct=True)
    rows[_LEASED_TLS] = _remote(model, x, args.repeats, args.warmup, direct=True, tls=True)
    rows[_VIA_SCHEDULER] = _remote(model, x, args.repeats, args.warmup, direct=False)
    if not args.no_ray:
        # Ray would dial 127.0.0.1 at this machine's outward address: loopback only here.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        for name, direct in ((_RAY_BACKEND, False), (_RAY_BACKEND_LEASED, True)):
            times = _ray_backend(model, x, args.repeats, args.warmup, direct)
            if times is not None:
                rows[name] = times
        ray_times = _ray_actor(model, x, args.repeats, args.warmup)
        if ray_times is None:
            print("ray is not installed: run `make bench` (installs it) for the reference row")
        else:
            rows["ray actor call"] = ray_times

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}"
        f" python {platform.python_version()}, torch {torch.__version__}"
    )
    print(f"MLP 3×256, batch 32, warm; {args.repeats} calls each\n")
    print(f"{'path':<50}{'median ms':>11}{'p99 ms':>10}{'overhead ms':>13}")
    direct, _ = _summary(rows["direct forward"])
    for name, times in rows.items():
        median, p99 = _summary(times)
        print(f"{name:<50}{median * 1e3:>11.3f}{p99 * 1e3:>10.3f}{(median - direct) * 1e3:>13.3f}")
    if "ray actor call" in rows:
        ray_median, _ = _summary(rows["ray actor call"])
        embedded, _ = _summary(rows["sdk.run embedded"])
        leased, _ = _summary(rows[_LEASED])
        via_scheduler, _ = _summary(rows[_VIA_SCHEDULER])
        ray_overhead = ray_median - direct
        print(
            f"\nembedded overhead / Ray overhead = {(embedded - direct) / ray_overhead:.3f}"
            " (target ≤ 0.10)"
        )
        print(f"remote call / Ray call = {leased / ray_median:.3f} (target ≤ 0.50)")
        leased_tls, _ = _summary(rows[_LEASED_TLS])
        print(f"  (the same over TLS, as deployed: {leased_tls / ray_median:.3f})")
        print(
            f"  (without leases, every call through the scheduler: {via_scheduler / ray_median:.3f})"
        )


if __name__ == "__main__":
    main()
