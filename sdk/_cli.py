"""The ``anypu`` command line: ``scheduler``, ``agent``, ``status``.

User mistakes print one clear line (``anypu: error: …``) and exit with status 2; no
tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections import Counter
from dataclasses import asdict
from typing import Any

from anypu.errors import AnypuError

__all__ = ["main"]


def _scheduler(args: argparse.Namespace) -> int:
    import yaml
    from anypu.placement import PlacementConfig, build_network
    from anypu.scheduler._grpc import serve
    from anypu.scheduler._service import SchedulerService
    from anypu.scheduler._state import SchedulerConfig

    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    generated = not token
    if generated:
        token = secrets.token_urlsafe(24)
    network = None
    if args.network:
        try:
            with open(args.network) as handle:
                spec = yaml.safe_load(handle)
        except OSError as error:
            raise AnypuError(f"cannot read network file {args.network}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise AnypuError(f"network file {args.network} is not valid YAML: {error}") from None
        network = build_network(spec)
    config = SchedulerConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        lost_after_s=args.lost_after,
        unschedulable_timeout_s=args.unschedulable_timeout,
        placement=PlacementConfig(time_limit_s=args.solver_time_limit),
    )
    service = SchedulerService(args.state_dir, token=token, config=config, network=network)
    server, port = serve(service, args.host, args.port)
    print(
        f"anypu scheduler listening on {args.host}:{port} (state in {args.state_dir})", flush=True
    )
    if generated:
        print(f"token (generated; pass it to agents and clients): {token}", flush=True)
    print(
        f"join an agent:  anypu agent --scheduler {args.host}:{port} --token <token> --tier edge",
        flush=True,
    )
    _wait_for_signal()
    server.stop(grace=1).wait()
    service.close()
    return 0


def _agent(args: argparse.Namespace) -> int:
    from anypu.agents._agent import Agent, AgentConfig
    from anypu.agents._link import GrpcLink
    from anypu.devices import discover

    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AnypuError(f"--label {item!r} must look like key=value")
        labels[key] = value
    if args.site:
        labels.setdefault("site", args.site)
    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    devices = discover(args.devices)
    name = args.name or socket.gethostname().split(".")[0]
    agent = Agent(
        AgentConfig(
            name=name,
            tier=args.tier,
            devices=devices,
            token=token,
            site=args.site,
            labels=labels,
            cache_dir=args.cache_dir,
        ),
        GrpcLink(args.scheduler, token),
    )
    for device in devices:
        print(f"{name}: {device.device_id} {device.describe()}", flush=True)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            agent.run()
        except BaseException as error:
            failure.append(error)
            _interrupt()

    threading.Thread(target=serve, name="anypu-agent", daemon=True).start()
    _wait_for_signal()
    agent.stop()
    if failure:
        raise failure[0]
    return 0


def _status(args: argparse.Namespace) -> int:
    from anypu.sdk._transport import GrpcTransport

    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    address = args.scheduler or os.environ.get("ANYPU_ADDRESS", "127.0.0.1:7070")
    transport = GrpcTransport(address, token)
    try:
        nodes = transport.list_nodes(timeout=5)
        jobs = transport.list_jobs(limit=args.jobs)
    finally:
        transport.close()
    if args.json:
        print(json.dumps({"nodes": [asdict(n) for n in nodes], "jobs": [asdict(j) for j in jobs]}))
        return 0
    print(format_status(address, nodes, jobs))
    return 0


def format_status(address: str, nodes: list[Any], jobs: list[Any]) -> str:
    """A terminal summary in the manner of ``ray status``."""
    lines = [f"anypu scheduler at {address}", "", "Nodes"]
    if not nodes:
        lines.append("  (none joined yet: start one with `anypu agent --scheduler ...`)")
    for tier in ("cloud", "edge", "device"):
        in_tier = [n for n in nodes if n.tier == tier]
        if not in_tier:
            continue
        lines.append(f"  {tier} ({len(in_tier)})")
        for node in in_tier:
            site = f" site={node.site}" if node.site else ""
            lines.append(
                f"    {node.node_id:<16} {node.state:<12}{site} heartbeat {node.last_heartbeat_age_s:.1f}s ago,"
                f" {node.running_jobs} running, {len(node.warm_digests)} warm models"
            )
            usage = {u.device_id: u for u in node.usage}
            for device in node.devices:
                u = usage.get(device.device_id)
                busy = f"{u.busy_slices}/{device.slices} slices busy" if u else "idle"
                lines.append(f"      {device.device_id:<6} {device.describe()}  [{busy}]")
    counts = Counter(j.state for j in jobs)
    lines += ["", f"Jobs (last {len(jobs)})"]
    lines.append(
        "  "
        + ", ".join(
            f"{state} {counts[state]}"
            for state in ("pending", "placed", "running", "succeeded", "failed", "cancelled")
            if counts[state]
        )
        if counts
        else "  (none)"
    )
    pending = [j for j in jobs if j.state == "pending"]
    if pending:
        lines += ["", "Pending"]
        for job in pending:
            lines.append(f"  {job.job_id} {job.name}")
            for node_id, reason in sorted(job.pending_reasons.items()):
                lines.append(f"    {node_id}: {reason}")
    return "\n".join(lines)


_stop = threading.Event()


def _interrupt(*_: Any) -> None:
    _stop.set()


def _wait_for_signal() -> None:
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    while not _stop.wait(0.5):
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anypu", description="Run AI models on any processor.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("scheduler", help="run the central scheduler")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    s.add_argument("--port", type=int, default=7070)
    s.add_argument("--state-dir", default="./anypu-state", help="SQLite state and blobs")
    s.add_argument("--token", default="", help="shared token (default ANYPU_TOKEN, else generated)")
    s.add_argument("--network", default="", help="network.yaml: sites and links")
    s.add_argument("--heartbeat-interval", type=float, default=1.0)
    s.add_argument("--lost-after", type=float, default=5.0, help="seconds without heartbeat")
    s.add_argument("--unschedulable-timeout", type=float, default=5.0)
    s.add_argument("--solver-time-limit", type=float, default=0.2)
    s.set_defaults(handler=_scheduler)

    a = commands.add_parser("agent", help="join this machine to a scheduler")
    a.add_argument("--scheduler", required=True, help="HOST:PORT of the scheduler")
    a.add_argument("--token", default="", help="the scheduler's token (default ANYPU_TOKEN)")
    a.add_argument("--tier", required=True, choices=("cloud", "edge", "device"))
    a.add_argument("--name", default="", help="node name (default: host name)")
    a.add_argument("--devices", default=None, help="devices.yaml declaring simulated devices")
    a.add_argument("--site", default="", help="network site this node sits at")
    a.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
    a.add_argument("--cache-dir", default="", help="where model artifacts are cached")
    a.set_defaults(handler=_agent)

    st = commands.add_parser("status", help="nodes, devices and jobs of a scheduler")
    st.add_argument("--scheduler", default="", help="HOST:PORT (default ANYPU_ADDRESS)")
    st.add_argument("--token", default="")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--jobs", type=int, default=50, help="how many recent jobs to show")
    st.set_defaults(handler=_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.handler(args)
    except AnypuError as error:
        print(f"anypu: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
