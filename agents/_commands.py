"""``anypu agent``: join this machine to a scheduler and serve until stopped.

The parser lives in ``anypu._cli``; this runs a parsed command. A user's mistake raises
an ``AnypuError``, which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading

from anypu.agents._agent import Agent, AgentConfig
from anypu.agents._enrolment import NodeTLS
from anypu.agents._link import GrpcLink
from anypu.comm import serves_tls
from anypu.devices import Device, discover, make_probes, parse_size, with_slices
from anypu.errors import AnypuError

__all__ = ["agent_command", "apply_slicing", "direct_tls_files"]


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


def apply_slicing(devices: list[Device], items: list[str]) -> list[Device]:
    """``--slices KIND=N`` or ``--slices DEVICE=N`` (repeatable): cut the devices of that
    kind (or that one device) into ``N`` slices; a device named by id wins over its kind.
    A CPU's threads are divided among its slices, so the cores are not oversubscribed."""
    wanted: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit() or not 1 <= int(count) <= 64:
            raise AnypuError(
                f"--slices {item!r} must look like KIND=N or DEVICE=N with N from 1 to 64,"
                " e.g. --slices gpu=4 or --slices npu1=2"
            )
        wanted[name] = int(count)
    known = {d.device_id for d in devices} | {d.kind for d in devices}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise AnypuError(
            f"--slices names {unknown}, which this node does not have: its devices are"
            f" {', '.join(d.device_id + ' (' + d.kind + ')' for d in devices)}"
        )
    sliced = []
    for device in devices:
        slices = wanted.get(device.device_id, wanted.get(device.kind))
        if slices is None or slices == device.slices:
            sliced.append(device)
            continue
        threads = None
        if device.kind == "cpu":
            threads = max(1, device.slices * device.threads // slices)
        sliced.append(with_slices(device, slices, threads))
    return sliced


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
    probes = make_probes()
    devices = apply_slicing(discover(args.devices, probes=probes), args.slices)
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
            direct_tls=direct_tls,
        ),
        GrpcLink(args.scheduler, token, tls),
    )
    for device in devices:
        print(f"{name}: {device.device_id} {device.describe()}", flush=True)
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
    if failure:
        raise failure[0]
    return 0
