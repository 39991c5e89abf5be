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
import tempfile
import threading
from typing import Any

from anypu.errors import AnypuError

__all__ = ["main"]


def _scheduler(args: argparse.Namespace) -> int:
    import yaml

    from anypu.placement import POLICY_NAMES, PlacementConfig, build_network
    from anypu.scheduler._grpc import serve
    from anypu.scheduler._service import SchedulerService
    from anypu.scheduler._state import SchedulerConfig
    from anypu.scheduler._throttle import FailureThrottle

    if args.policy not in POLICY_NAMES:
        raise AnypuError(
            f"--policy {args.policy!r} is not a placement policy; choose one of: "
            f"{', '.join(POLICY_NAMES)}"
        )
    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    if args.insecure and not _is_loopback(args.host):
        raise AnypuError(
            f"--insecure serves plaintext and is for local use only: it binds to loopback,"
            f" not {args.host}; drop --insecure to serve TLS on other addresses"
        )
    generated = not token and not args.insecure
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
        placement=PlacementConfig(time_limit_s=args.solver_time_limit, policy=args.policy),
    )
    service = SchedulerService(args.state_dir, token=token or None, config=config, network=network)
    security = None if args.insecure else _security(args, service)
    agent_port = args.agent_port if args.agent_port is not None else args.port and args.port + 1
    # One throttle for gRPC and HTTP: a token guesser is counted on both surfaces.
    throttle = security.throttle if security is not None else FailureThrottle()
    server, port = serve(service, args.host, args.port, security, agent_port, throttle=throttle)
    mode = (
        "plaintext" if security is None else f"TLS; agents on mutual-TLS port {security.agent_port}"
    )
    print(
        f"anypu scheduler listening on {args.host}:{port} ({mode}; state in {args.state_dir})",
        flush=True,
    )
    if args.policy != "cost":
        print(
            f"placement policy: {args.policy} for accelerator jobs (cost model for the rest)",
            flush=True,
        )
    if security is None:
        print(
            "WARNING: --insecure: plaintext gRPC on loopback only, for local use;"
            + (" the token is still checked" if token else " no token is required"),
            flush=True,
        )
    else:
        print(f"CA hash: {security.ca.hash}", flush=True)
    dashboard = None
    if args.http_port is not None:
        from anypu.scheduler._http import serve_http

        dashboard = serve_http(service, args.http_host, args.http_port, throttle=throttle)
        print(f"dashboard on {dashboard.url} (metrics at {dashboard.url}/metrics)", flush=True)
    if generated:
        print(f"token (generated; pass it to agents and clients): {token}", flush=True)
    pin = "" if security is None else f" --ca-hash {security.ca.hash}"
    pin += " --token <token>" if token else ""
    print(
        f"join an agent:  anypu agent --scheduler {args.host}:{port}{pin} --tier edge", flush=True
    )
    if security is not None:
        print(
            f"  (<token>: one from `anypu token create --state-dir {args.state_dir} --ttl 1h"
            " --tier edge`, or the token above)",
            flush=True,
        )
    _wait_for_signal()
    if dashboard is not None:
        dashboard.close()
    server.stop(grace=1).wait()
    service.close()
    if security is not None:
        security.close()
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _security(args: argparse.Namespace, service: Any) -> Any:
    from anypu.scheduler._security import ServerSecurity
    from anypu.scheduler._tls import CertificateAuthority

    ca = CertificateAuthority.load_or_create(args.state_dir, args.ca_cert, args.ca_key)
    security = ServerSecurity(
        args.state_dir,
        service.token,
        ca,
        hosts=[args.host],
        node_cert_valid_s=args.node_cert_days * 86400.0,
    )
    security.watch(service)
    return security


def _token(args: argparse.Namespace) -> int:
    import time

    from anypu.devices import parse_size
    from anypu.scheduler._tokens import TokenStore, parse_ttl

    store = TokenStore(args.state_dir)
    try:
        if args.action == "list":
            for item in store.tokens(time.time()):
                print(
                    json.dumps(item) if args.json else " ".join(f"{k}={v}" for k, v in item.items())
                )
            return 0
        try:
            memory = parse_size(args.max_memory) if args.max_memory else 0
        except ValueError as error:
            raise AnypuError(f"--max-memory: {error}") from None
        ttl = parse_ttl(args.ttl)
        tiers = args.tier or ["edge"]
        token = store.create(ttl, tiers, time.time(), args.max_devices, memory)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"token": token, "ttl_s": ttl, "tiers": tiers}))
    else:
        caps = f", at most {args.max_devices} devices" if args.max_devices else ""
        caps += f", at most {args.max_memory} of device memory" if memory else ""
        print(token)
        print(
            f"single-use join token for tier {'/'.join(tiers)}{caps}, valid {args.ttl};"
            " only its hash is stored",
            file=sys.stderr,
        )
    return 0


def _direct_tls(tls: Any, name: str, tier: str, devices: list) -> tuple[str, str]:
    """The node certificate and key files that direct calls are served with over TLS:
    enrolled now, not at the first join, since the servers start before it."""
    from anypu.scheduler._tls import serves_tls

    identity = tls.identity(name, tier, len(devices), sum(d.memory_bytes for d in devices))
    if not serves_tls(identity.cert_pem):
        raise AnypuError(
            f"the certificate in {tls.folder} predates direct calls over TLS (it is for"
            " client auth only): remove that folder and enrol again with a join token, or"
            " drop --direct-address (calls then all go through the scheduler)"
        )
    return str(tls.folder / "node.pem"), str(tls.folder / "node.key")


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
    ca_hash = args.ca_hash or os.environ.get("ANYPU_CA_HASH", "")
    tls = None
    if ca_hash:
        from anypu.scheduler._enrolment import NodeTLS

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
        direct_tls = _direct_tls(tls, name, args.tier, devices)
    agent = Agent(
        AgentConfig(
            name=name,
            tier=args.tier,
            devices=devices,
            token=token,
            site=args.site,
            labels=labels,
            cache_dir=args.cache_dir,
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
            _interrupt()

    threading.Thread(target=serve, name="anypu-agent", daemon=True).start()
    _wait_for_signal()
    agent.stop()
    if failure:
        raise failure[0]
    return 0


def _status(args: argparse.Namespace) -> int:
    from anypu.sdk._status import format_status, status_document
    from anypu.sdk._transport import GrpcTransport

    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    from anypu.scheduler._enrolment import client_ca

    address = args.scheduler or os.environ.get("ANYPU_ADDRESS", "127.0.0.1:7070")
    ca_hash = args.ca_hash or os.environ.get("ANYPU_CA_HASH", "")
    transport = GrpcTransport(address, token, client_ca(address, ca_hash))
    try:
        nodes = transport.list_nodes(timeout=5)
        jobs = transport.list_jobs(limit=args.jobs)
        # live jobs on their own: the recent ones may miss a long-running job
        live = [
            j
            for state in ("pending", "placed", "running")
            for j in transport.list_jobs(10_000, state)
        ]
    finally:
        transport.close()
    if args.json:
        print(json.dumps(status_document(address, nodes, jobs, live)))
        return 0
    print(format_status(address, nodes, jobs, live))
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 0..65535 (0 picks a free one)")
    return port


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
    s.add_argument(
        "--token",
        default="",
        help="admin/client token (default ANYPU_TOKEN, else generated; --insecure: none)",
    )
    s.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext on loopback only, for local use (default: TLS, agents on mutual TLS)",
    )
    s.add_argument("--agent-port", type=_port, default=None, help="mutual-TLS port (--port + 1)")
    s.add_argument("--ca-cert", default="", help="CA certificate PEM (default: generated)")
    s.add_argument("--ca-key", default="", help="CA private key PEM, with --ca-cert")
    s.add_argument("--node-cert-days", type=float, default=365.0, help="node certificate life")
    s.add_argument("--network", default="", help="network.yaml: sites and links")
    s.add_argument("--heartbeat-interval", type=float, default=1.0)
    s.add_argument("--lost-after", type=float, default=5.0, help="seconds without heartbeat")
    s.add_argument("--unschedulable-timeout", type=float, default=5.0)
    s.add_argument("--solver-time-limit", type=float, default=0.2)
    s.add_argument(
        "--policy",
        default="cost",
        metavar="NAME",
        help="placement policy: cost (default: predicted seconds, CP-SAT) or a GPU-sharing"
        " policy for accelerator jobs: random, dotprod, clustering, packing, bestfit, fgd,"
        " anypu, anypu-ss",
    )
    s.add_argument(
        "--http-port",
        type=_port,
        default=None,
        help="serve the dashboard, JSON API and /metrics on this port (0: a free one;"
        " default: off)",
    )
    s.add_argument(
        "--http-host",
        default="127.0.0.1",
        help="dashboard address (default loopback, where reads need no token)",
    )
    s.set_defaults(handler=_scheduler)

    a = commands.add_parser("agent", help="join this machine to a scheduler")
    a.add_argument("--scheduler", required=True, help="HOST:PORT of the scheduler")
    a.add_argument(
        "--token", default="", help="a join token, or the scheduler's token (default ANYPU_TOKEN)"
    )
    a.add_argument(
        "--ca-hash",
        default="",
        help="sha256:… the scheduler printed (default ANYPU_CA_HASH); omit for --insecure ones",
    )
    a.add_argument("--identity-dir", default="", help="node certificate folder")
    a.add_argument("--tier", required=True, choices=("cloud", "edge", "device"))
    a.add_argument("--name", default="", help="node name (default: host name)")
    a.add_argument("--devices", default=None, help="devices.yaml declaring simulated devices")
    a.add_argument("--site", default="", help="network site this node sits at")
    a.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
    a.add_argument("--cache-dir", default="", help="where model artifacts are cached")
    a.add_argument(
        "--direct-address",
        default="",
        metavar="HOST:PORT",
        help="take clients' calls under leases here, skipping the scheduler (TLS with this"
        " node's certificate when the scheduler uses TLS; clients must reach it; port 0"
        " picks one); default: none",
    )
    a.set_defaults(handler=_agent)

    st = commands.add_parser("status", help="nodes, devices and jobs of a scheduler")
    st.add_argument("--scheduler", default="", help="HOST:PORT (default ANYPU_ADDRESS)")
    st.add_argument("--token", default="")
    st.add_argument("--ca-hash", default="", help="the scheduler's CA hash (ANYPU_CA_HASH)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--jobs", type=int, default=50, help="how many recent jobs to show")
    st.set_defaults(handler=_status)

    t = commands.add_parser("token", help="mint or list join tokens for agents")
    t.add_argument("action", choices=("create", "list"))
    t.add_argument("--state-dir", default="./anypu-state", help="the scheduler's --state-dir")
    t.add_argument("--ttl", default="1h", help="how long it stays valid: 90s, 15m, 1h, 7d")
    t.add_argument(
        "--tier",
        action="append",
        choices=("cloud", "edge", "device"),
        help="tier(s) it may join as (repeatable; default edge)",
    )
    t.add_argument("--max-devices", type=int, default=0, help="device cap (0: none)")
    t.add_argument("--max-memory", default="", help="device memory cap, e.g. 64GiB")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(handler=_token)
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
