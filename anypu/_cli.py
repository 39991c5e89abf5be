"""The ``anypu`` command line: ``scheduler``, ``agent``, ``status``, ``token``.

A thin entry point: the parser is plain data here, and each command is a function of the
package it belongs to (``anypu.scheduler``, ``anypu.agents``, ``anypu.sdk``), imported
only when that command runs, so ``anypu status`` never loads a scheduler or an agent.

User mistakes print one clear line (``anypu: error: …``) and exit with status 2; no
tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Any

from anypu._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from anypu.errors import AnypuError

__all__ = ["main"]

#: command -> (module, function, serves). A command is ``function(args, stop) -> exit
#: status``; for one that serves until stopped, SIGINT and SIGTERM set ``stop``.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "scheduler": ("anypu.scheduler", "scheduler_command", True),
    "token": ("anypu.scheduler", "token_command", False),
    "agent": ("anypu.agents", "agent_command", True),
    "status": ("anypu.sdk", "status_command", False),
    "node": ("anypu.sdk", "node_command", False),
    "deploy": ("anypu.sdk", "deploy_command", False),
    "deployments": ("anypu.sdk", "deployments_command", False),
    "scale": ("anypu.sdk", "scale_command", False),
    "undeploy": ("anypu.sdk", "scale_command", False),
    "promote": ("anypu.sdk", "scale_command", False),
    "rollback": ("anypu.sdk", "scale_command", False),
}


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 0..65535 (0 picks a free one)")
    return port


def _scheduler_parser(commands: Any) -> None:
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
    s.add_argument(
        "--agent-port",
        type=_port,
        default=None,
        help="the agents' port (--port + 1): mutual TLS, or plaintext with --insecure",
    )
    s.add_argument("--ca-cert", default="", help="CA certificate PEM (default: generated)")
    s.add_argument("--ca-key", default="", help="CA private key PEM, with --ca-cert")
    s.add_argument("--node-cert-days", type=float, default=365.0, help="node certificate life")
    s.add_argument("--network", default="", help="network.yaml: sites and links")
    s.add_argument(
        "--declared-network-only",
        action="store_true",
        help="cost transfers with network.yaml as written, not refitted to the round trips"
        " agents measure to the scheduler vertex",
    )
    s.add_argument("--heartbeat-interval", type=float, default=1.0)
    s.add_argument("--lost-after", type=float, default=5.0, help="seconds without heartbeat")
    s.add_argument("--unschedulable-timeout", type=float, default=5.0)
    s.add_argument(
        "--scale-down-after",
        type=float,
        default=30.0,
        help="seconds an autoscaled deployment's load must ask for fewer replicas before one"
        " is released (30)",
    )
    s.add_argument(
        "--scale-to-zero-after",
        type=float,
        default=60.0,
        help="seconds without a call before a deployment with min_replicas 0 goes to zero"
        " replicas; the next call wakes it (60)",
    )
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
    keep = s.add_argument_group(
        "retention", "what finished jobs leave in --state-dir (durations: 90s, 10m, 1h, 7d)"
    )
    keep.add_argument(
        "--keep-results", default="10m", help="outputs kept after first fetched (10m)"
    )
    keep.add_argument(
        "--keep-unfetched-results", default="1d", help="outputs nobody fetched kept (1d)"
    )
    keep.add_argument(
        "--keep-jobs", type=int, default=10_000, help="finished jobs kept in history (10000)"
    )
    keep.add_argument(
        "--keep-jobs-for", default="7d", help="no finished job older than this is kept (7d)"
    )
    keep.add_argument(
        "--keep-models",
        default="1h",
        help="a model artifact no job used for this long is deleted (1h; clients re-upload)",
    )


def _agent_parser(commands: Any) -> None:
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
    a.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: run jobs in worker processes on this machine (default); ray: this"
        " agent stands for a Ray cluster (--ray-address), offering its nodes' devices and"
        " running jobs as Ray actors on them",
    )
    a.add_argument(
        "--kubernetes",
        action="store_true",
        help="in a Kubernetes pod: offer only the devices this node's device plugins and"
        " DRA drivers hand out (read from the API server), and take the node's labels",
    )
    a.add_argument(
        "--kubeconfig",
        default="",
        metavar="FILE",
        help="with --kubernetes: the API server from this kubeconfig (default: the pod's"
        " service account, else KUBECONFIG or ~/.kube/config)",
    )
    a.add_argument(
        "--kubernetes-node",
        default="",
        metavar="NAME",
        help="with --kubernetes: this node's name (default NODE_NAME, set from the"
        " Downward API's spec.nodeName, else the host name)",
    )
    a.add_argument(
        "--kubernetes-reread",
        type=float,
        default=60.0,
        metavar="S",
        help="with --kubernetes: read the node again this often, joining anew when what it"
        " hands out changed (60)",
    )
    a.add_argument(
        "--ray-address",
        default="",
        metavar="ADDR",
        help="with --backend ray: the cluster's GCS address (HOST:6379), or 'auto' on one"
        " of its nodes (default RAY_ADDRESS)",
    )
    a.add_argument("--cache-dir", default="", help="where model artifacts are cached")
    a.add_argument(
        "--slices",
        action="append",
        default=[],
        metavar="KIND=N",
        help="cut devices into N fixed slices, each owning 1/N: a kind (gpu=4) or one"
        " device (npu1=2); repeatable",
    )
    a.add_argument(
        "--seats",
        action="append",
        default=[],
        metavar="KIND=N",
        help="share devices whole: jobs reserve the memory and compute they need, up to N"
        " at once: a kind (gpu=8) or one device (gpu1=2); repeatable; default 4 seats per"
        " accelerator not named by --slices",
    )
    a.add_argument(
        "--start-mps",
        action="store_true",
        help="start an NVIDIA MPS control daemon if none runs, so fixed GPU slices share the"
        " SMs by thread percentage instead of by time",
    )
    a.add_argument(
        "--cache-size",
        default="10GiB",
        help="model artifacts kept at most; least recently used deleted first (10GiB)",
    )
    a.add_argument(
        "--direct-address",
        default="",
        metavar="HOST:PORT",
        help="take clients' calls under leases here, skipping the scheduler (TLS with this"
        " node's certificate when the scheduler uses TLS; clients must reach it; port 0"
        " picks one); default: none",
    )
    a.add_argument(
        "--direct-advertise",
        default="",
        metavar="HOST:PORT",
        help="with --direct-address: what clients and other agents are told to dial for it"
        " (a forwarded port or a NAT's public address); default: the --direct-address",
    )
    a.add_argument(
        "--gateway-http",
        default="",
        metavar="HOST:PORT",
        help="serve the Open Inference Protocol (v2) for every deployment here: REST at"
        " HOST:PORT (HTTPS with this node's certificate under a TLS scheduler), gRPC on"
        " the --direct-address; callers' calls count as traffic from --site; default: none",
    )
    a.add_argument(
        "--health-address",
        default="",
        metavar="HOST:PORT",
        help="serve /healthz (the agent's loops run) and /readyz (joined to the scheduler)"
        " here, for a kubelet's probes; default: none",
    )
    a.add_argument(
        "--probe-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between bandwidth probes to the scheduler (jittered ±20%%; 30)",
    )
    a.add_argument(
        "--probe-budget",
        type=float,
        default=64.0,
        metavar="MIB",
        help="bandwidth probes send at most this many MiB an hour (64)",
    )
    a.add_argument(
        "--probe-share",
        type=float,
        default=0.01,
        help="bandwidth probes take at most this share of the measured link (0.01)",
    )
    a.add_argument(
        "--no-bandwidth-probes",
        action="store_true",
        help="send no bandwidth probes (round trips are still timed on heartbeats)",
    )


def _scheduler_options(parser: argparse.ArgumentParser) -> None:
    """How a client command finds and proves itself to a scheduler."""
    parser.add_argument("--scheduler", default="", help="HOST:PORT (default ANYPU_ADDRESS)")
    parser.add_argument("--token", default="", help="the admin token (default ANYPU_TOKEN)")
    parser.add_argument("--ca-hash", default="", help="the scheduler's CA hash (ANYPU_CA_HASH)")


def _status_parser(commands: Any) -> None:
    st = commands.add_parser("status", help="nodes, devices and jobs of a scheduler")
    _scheduler_options(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--jobs", type=int, default=50, help="how many recent jobs to show")


def _node_parser(commands: Any) -> None:
    n = commands.add_parser("node", help="manage nodes: remove one that is gone for good")
    n.add_argument("action", choices=("remove",))
    n.add_argument("name", help="the node's name, as anypu status lists it")
    _scheduler_options(n)


def _deployment_parsers(commands: Any) -> None:
    d = commands.add_parser("deploy", help="publish a model under a name, served by replicas")
    d.add_argument("name", help="the deployment's name (lower-case letters, digits, . _ -)")
    d.add_argument(
        "--model", required=True, help="MODULE:FACTORY, a callable returning a torch.nn.Module"
    )
    d.add_argument(
        "--example",
        action="append",
        required=True,
        help="an example input's shape, e.g. 4x256 (random floats; repeat for more inputs)",
    )
    d.add_argument("--replicas", type=int, default=1, help="warm replicas to keep (1)")
    d.add_argument(
        "--min-replicas", type=int, default=None, help="autoscale from this many (0: to zero)"
    )
    d.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many")
    d.add_argument(
        "--target-in-flight",
        type=float,
        default=0.0,
        help="calls in flight a replica aimed at when autoscaled (default 0.7)",
    )
    d.add_argument(
        "--target-latency-ms",
        type=float,
        default=0.0,
        help="also scale up until replicas answer within this (queue and run); default: none",
    )
    d.add_argument(
        "--scale-down-after",
        type=float,
        default=0.0,
        help="seconds the load must ask for fewer before one goes (default: the scheduler's)",
    )
    d.add_argument(
        "--scale-to-zero-after",
        type=float,
        default=0.0,
        help="seconds without a call before zero, with --min-replicas 0 (default: the scheduler's)",
    )
    d.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="PERCENT",
        help="a new model under a serving name takes this percent of calls (1-99) until"
        " `anypu promote` or `anypu rollback`; default: a rolling update",
    )
    token = d.add_mutually_exclusive_group()
    token.add_argument(
        "--caller-token",
        default=os.environ.get("ANYPU_CALLER_TOKEN"),
        help="a token (16+ characters) that may call this deployment by the inference"
        ' protocol and nothing else ("": remove it; default: ANYPU_CALLER_TOKEN, else keep'
        " the one set); on a command line it shows in the shell's history and to `ps`:"
        " prefer ANYPU_CALLER_TOKEN or --new-caller-token",
    )
    token.add_argument(
        "--new-caller-token",
        action="store_true",
        help="make a caller token, print it once (only its hash is kept)",
    )
    d.add_argument(
        "--origin",
        default="",
        help="the site its calls are expected from (a site of the network), until calls"
        " are measured; default: none",
    )
    d.add_argument(
        "--deadline-ms",
        type=float,
        default=None,
        help="replicas only where a call is predicted to be answered within this, once"
        " warm (network from the origin, queue, compute); default: none",
    )
    d.add_argument(
        "--tiers", default="", help="comma-separated tiers replicas may go to (default: any)"
    )
    d.add_argument(
        "--sites", default="", help="comma-separated sites replicas may go to (default: any)"
    )
    d.add_argument(
        "--label-selector",
        action="append",
        default=[],
        metavar="EXPR",
        help="node labels replicas need, repeatable: zone=shop-7,shop-8 (in), zone!=shop-9"
        " (not in), ssd (exists), !gpu (absent)",
    )
    d.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for them to be ready (120)"
    )
    _scheduler_options(d)
    ls = commands.add_parser("deployments", help="list deployments and their replicas")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    _scheduler_options(ls)
    sc = commands.add_parser("scale", help="change how many replicas a deployment keeps")
    sc.add_argument("name")
    sc.add_argument("replicas", type=int)
    _scheduler_options(sc)
    rm = commands.add_parser("undeploy", help="delete a deployment, releasing its replicas")
    rm.add_argument("name")
    _scheduler_options(rm)
    pr = commands.add_parser("promote", help="a deployment's canary takes every call")
    pr.add_argument("name")
    _scheduler_options(pr)
    rb = commands.add_parser(
        "rollback", help="the version before a deployment's last deploy serves again"
    )
    rb.add_argument("name")
    _scheduler_options(rb)


def _token_parser(commands: Any) -> None:
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
    t.add_argument(
        "--scheduler",
        default="",
        metavar="HOST:PORT",
        help="ask this running scheduler instead of reading --state-dir (with its admin"
        " --token and --ca-hash)",
    )
    t.add_argument("--token", default="", help="the admin token, with --scheduler (ANYPU_TOKEN)")
    t.add_argument("--ca-hash", default="", help="the scheduler's CA hash (ANYPU_CA_HASH)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anypu", description="Run AI models on any processor.")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="what to log (default info: joins, leaves, placements, retries, failures)",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text lines, or JSON lines"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the same as --log-level debug"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (
        _scheduler_parser,
        _agent_parser,
        _status_parser,
        _node_parser,
        _deployment_parsers,
        _token_parser,
    ):
        add(commands)
    return parser


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("debug" if args.verbose else args.log_level, args.log_format)
    module, function, serves = COMMANDS[args.command]
    try:
        command = getattr(importlib.import_module(module), function)
        return int(command(args, _stop_on_signals() if serves else threading.Event()))
    except AnypuError as error:
        print(f"anypu: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
