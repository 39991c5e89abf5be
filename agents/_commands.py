"""``anypu agent``: join this machine to a scheduler and serve until stopped.

The parser lives in ``anypu._cli``; this runs a parsed command. A user's mistake raises
an ``AnypuError``, which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import threading

from anypu.agents._agent import Agent, AgentConfig
from anypu.agents._enrolment import NodeTLS
from anypu.agents._kubernetes import KubernetesWatch
from anypu.agents._link import GrpcLink
from anypu.agents._probes import ProbeConfig
from anypu.agents._ray import RayCluster
from anypu.agents._selftest import with_self_tested_operators
from anypu.comm import serves_tls
from anypu.devices import (
    Device,
    Probe,
    discover,
    make_probes,
    parse_size,
    start_mps,
    with_shares,
    with_slices,
)
from anypu.errors import AnypuError

__all__ = ["DEFAULT_SEATS", "agent_command", "apply_slicing", "direct_tls_files"]

log = logging.getLogger("anypu.agent")


def direct_tls_files(tls: NodeTLS, name: str, tier: str, devices: list[Device]) -> tuple[str, str]:
    """The node certificate and key files that direct calls are served with over TLS:
    enrolled now, not at the first join, since the servers start before it."""
    identity = tls.identity(name, tier, len(devices), sum(d.memory_bytes for d in devices))
    if not serves_tls(identity.cert_pem):
        raise AnypuError(
            f"the certificate in {tls.cert_folder} predates direct calls over TLS (it is for"
            " client auth only): remove that folder and enrol again with a join token, or"
            " drop --direct-address (calls then all go through the scheduler)"
        )
    return str(tls.cert_folder / "node.pem"), str(tls.cert_folder / "node.key")


def _labels(items: list[str], site: str) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AnypuError(f"--label {item!r} must look like key=value")
        labels[key] = value
    if site:
        labels.setdefault("site", site)
    return labels


#: Seats of a shared accelerator when ``--seats`` does not say: how many jobs may run
#: on it at once. Each seat is a worker process (a torch import, ~0.3 GB of host memory,
#: and once it runs a job a runtime context on the device).
DEFAULT_SEATS = 4


def _counts(flag: str, items: list[str], devices: list[Device]) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit() or not 1 <= int(count) <= 64:
            raise AnypuError(
                f"{flag} {item!r} must look like KIND=N or DEVICE=N with N from 1 to 64,"
                f" e.g. {flag} gpu=4 or {flag} npu1=2"
            )
        wanted[name] = int(count)
    known = {d.device_id for d in devices} | {d.kind for d in devices}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise AnypuError(
            f"{flag} names {unknown}, which this node does not have: its devices are"
            f" {', '.join(d.device_id + ' (' + d.kind + ')' for d in devices)}"
        )
    return wanted


def apply_slicing(
    devices: list[Device], items: list[str], seats: list[str] | None = None
) -> list[Device]:
    """How each device is shared, from ``--slices`` and ``--seats`` (each repeatable,
    ``KIND=N`` or ``DEVICE=N``; a device named by id wins over its kind).

    ``--slices``: fixed slices, each owning ``1/N`` of the device; a CPU's threads are
    divided among its slices, so the cores are not oversubscribed. ``--seats``: offered
    whole, shared by jobs that reserve the memory and compute they need, ``N`` at once.
    A real accelerator that neither names is shared with ``DEFAULT_SEATS`` seats; CPUs
    and simulated devices keep what they were declared with."""
    sliced_counts = _counts("--slices", items, devices)
    seat_counts = _counts("--seats", seats or [], devices)
    both = sorted(set(sliced_counts) & set(seat_counts))
    if both:
        raise AnypuError(
            f"{both} named by both --slices and --seats: a device is either cut into fixed"
            " slices or shared by demand-sized reservations; give one"
        )
    shared = []
    for device in devices:
        by_id = device.device_id in sliced_counts or device.device_id in seat_counts
        slices = sliced_counts.get(device.device_id)
        count = seat_counts.get(device.device_id)
        if not by_id:
            slices, count = sliced_counts.get(device.kind), seat_counts.get(device.kind)
        if count is not None and device.kind == "cpu":
            raise AnypuError(
                f"--seats {device.kind if not by_id else device.device_id}: a CPU is shared"
                " by its threads; cut it with --slices cpu=N instead"
            )
        if slices is None and count is None and device.kind != "cpu" and not device.simulated:
            count = DEFAULT_SEATS
        if count is not None:
            shared.append(with_shares(device, count))
        elif slices is None or slices == device.slices:
            shared.append(device)
        else:
            threads = None
            if device.kind == "cpu":
                threads = max(1, device.slices * device.threads // slices)
            shared.append(with_slices(device, slices, threads))
    return shared


def _within_kubernetes(
    args: argparse.Namespace, found: list[Device], own: dict[str, str]
) -> tuple[list[Device], dict[str, str], KubernetesWatch]:
    """The devices found here that this node's Kubernetes hands out, its labels, and
    what reads it again while the agent runs."""
    from anypu.agents._kubernetes import (
        KubernetesWatch,
        node_inventory,
        offered_devices,
        read_node,
    )

    if not args.kubernetes_reread > 0:
        raise AnypuError(
            f"--kubernetes-reread must be more than 0 seconds, got {args.kubernetes_reread:g}"
        )

    def read() -> tuple[dict, list]:
        return read_node(args.kubernetes_node, args.kubeconfig)

    node, slices = read()
    inventory = node_inventory(node, slices)
    offered, notes = offered_devices(inventory, found)
    for note in notes:
        log.warning("%s", note)
    listed = ", ".join(
        f"{a.count} {a.resource}{' (' + a.model + ')' if a.model else ''}"
        for a in inventory.accelerators
    )
    log.info(
        "Kubernetes node %s: %g CPU(s), %s allocatable; %s; %d label(s)",
        inventory.node,
        inventory.cpu_cores,
        f"{inventory.memory_bytes / 2**30:.1f} GiB",
        listed or "no accelerators",
        len(inventory.labels),
    )

    def shape(devices: list[Device]) -> list[Device]:
        return with_self_tested_operators(apply_slicing(devices, args.slices, args.seats))

    watch = KubernetesWatch(
        read, found, offered, shape, args.kubernetes_reread, inventory.labels, own
    )
    return offered, {**inventory.labels, **own}, watch


def _ray_backend(args: argparse.Namespace) -> tuple[RayCluster, list[Probe], list[Device]]:
    """The Ray cluster this agent stands for, and its nodes' devices as sliced here."""
    from anypu.agents._ray import RayCluster

    if args.kubernetes:
        raise AnypuError(
            "--kubernetes reads this pod's node, and --backend ray offers a Ray cluster's"
            " nodes: give one of them (KubeRay's Ray nodes are offered through Ray)"
        )
    if args.devices:
        raise AnypuError(
            "--devices declares this machine's devices, and --backend ray offers the Ray"
            " cluster's: declare accelerators to Ray instead (ray start --num-gpus,"
            " --resources), or drop --backend ray"
        )
    address = args.ray_address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise AnypuError(
            "--backend ray needs --ray-address HOST:6379 (the head's GCS address) or"
            " RAY_ADDRESS; 'auto' finds the cluster this machine is a node of"
        )
    cluster = RayCluster(address)
    cluster.shape = lambda found: apply_slicing(found, args.slices, args.seats)
    return cluster, [], cluster.shape(cluster.devices())


def _cache_bytes(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as error:
        raise AnypuError(f"--cache-size: {error}") from None
    if size <= 0:
        raise AnypuError(f"--cache-size must be more than 0, got {text!r}")
    return size


def agent_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """Run an agent until ``stop`` is set (SIGINT/SIGTERM) or it fails for good."""
    labels = _labels(args.label, args.site)
    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    if args.start_mps:
        log.info("%s", start_mps())
    ray = None
    watch = None
    if args.backend == "ray":
        ray, probes, devices = _ray_backend(args)
    else:
        if args.ray_address:
            raise AnypuError("--ray-address is for --backend ray: add it, or drop the address")
        probes = make_probes()
        found = discover(args.devices, probes=probes)
        if args.kubernetes:
            # What --label says wins over the node's labels.
            found, labels, kubernetes = _within_kubernetes(args, found, labels)
            watch = kubernetes.watch
        elif args.kubeconfig or args.kubernetes_node:
            raise AnypuError("--kubeconfig and --kubernetes-node are for --kubernetes: add it")
        devices = apply_slicing(found, args.slices, args.seats)
        devices = with_self_tested_operators(devices)
    name = args.name or socket.gethostname().split(".")[0]
    ca_hash = args.ca_hash or os.environ.get("ANYPU_CA_HASH", "")
    tls = None
    if ca_hash:
        cache = args.cache_dir or os.path.join(tempfile.gettempdir(), "anypu-cache")
        identity = args.identity_dir or os.path.join(cache, "identity", name)
        tls = NodeTLS(args.scheduler, ca_hash, token, identity)
    host, _, port = args.direct_address.rpartition(":")
    if args.direct_address and (host in ("", "0.0.0.0", "::", "[::]") or not port.isdigit()):
        raise AnypuError(
            f"--direct-address {args.direct_address!r} must be HOST:PORT with the address"
            " clients reach this machine at (it is also what they are told), e.g."
            " 10.0.0.7:7080; port 0 picks a free one"
        )
    if args.direct_advertise:
        host, _, port = args.direct_advertise.rpartition(":")
        if not args.direct_address or not host or not port.isdigit() or port == "0":
            raise AnypuError(
                f"--direct-advertise {args.direct_advertise!r} must be HOST:PORT (a port other"
                " than 0) that reaches this agent's --direct-address, given with it"
            )
    direct_tls = None
    if tls is not None and args.direct_address:
        direct_tls = direct_tls_files(tls, name, args.tier, devices)
    agent = Agent(
        AgentConfig(
            name=name,
            tier=args.tier,
            devices=devices,
            token=token,
            site=args.site,
            labels=labels,
            cache_dir=args.cache_dir,
            cache_bytes=_cache_bytes(args.cache_size),
            probes=tuple(probe for probe in probes if probe.found),
            direct_address=args.direct_address,
            direct_advertise=args.direct_advertise,
            direct_tls=direct_tls,
            gateway_http=args.gateway_http,
            health_address=args.health_address,
            inventory_watch=watch,
            ray=ray,
            bandwidth_probes=ProbeConfig(
                interval_s=0.0 if args.no_bandwidth_probes else args.probe_interval,
                budget_bytes_per_hour=int(args.probe_budget * (1 << 20)),
                link_share=args.probe_share,
            ),
        ),
        GrpcLink(args.scheduler, token, tls),
    )
    for device in devices:
        print(f"{name}: {device.device_id} {device.describe()}", flush=True)
    if agent.health is not None:
        print(
            f"{name}: /healthz, /readyz and /metrics at http://{agent.health.address}",
            flush=True,
        )
    if agent.gateway is not None and agent.gateway.http is not None:
        print(f"{name}: the Open Inference Protocol at {agent.gateway.http.url}/v2", flush=True)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            agent.run()
        except BaseException as error:
            failure.append(error)
            stop.set()

    threading.Thread(target=serve, name="anypu-agent", daemon=True).start()
    while not stop.wait(0.5):
        pass
    agent.stop()
    if ray is not None:
        ray.close()
    if failure:
        raise failure[0]
    return 0
