"""``anypu scheduler`` and ``anypu token``: the scheduler's side of the command line.

The parser lives in ``anypu._cli``; these functions run a parsed command. A user's
mistake raises an ``AnypuError``, which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from anypu.comm import CertificateAuthority, FailureThrottle, channel_credentials
from anypu.devices import parse_size
from anypu.errors import AnypuError
from anypu.placement import POLICY_NAMES, PlacementConfig, build_network
from anypu.protos import convert
from anypu.scheduler._http import is_loopback, serve_http
from anypu.scheduler._inference import scheduler_gateway
from anypu.scheduler._retention import Retention, duration
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._servers import serve
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import SchedulerConfig
from anypu.scheduler._tokens import TokenStore, parse_ttl

__all__ = ["scheduler_command", "token_command"]


def _network(path: str) -> object | None:
    import yaml

    if not path:
        return None
    try:
        with open(path) as handle:
            spec = yaml.safe_load(handle)
    except OSError as error:
        raise AnypuError(f"cannot read network file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise AnypuError(f"network file {path} is not valid YAML: {error}") from None
    return build_network(spec)


def _security(args: argparse.Namespace, service: SchedulerService) -> ServerSecurity:
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


def _retention(args: argparse.Namespace) -> Retention:
    if args.keep_jobs < 0:
        raise AnypuError(f"--keep-jobs must be ≥ 0, got {args.keep_jobs}")
    results = parse_ttl(args.keep_results, "--keep-results", zero=True)
    models = parse_ttl(args.keep_models, "--keep-models", zero=True)
    return Retention(
        results_after_fetch_s=results,
        unfetched_results_s=parse_ttl(
            args.keep_unfetched_results, "--keep-unfetched-results", zero=True
        ),
        jobs=args.keep_jobs,
        jobs_for_s=parse_ttl(args.keep_jobs_for, "--keep-jobs-for", zero=True),
        models_for_s=models,
        # Every minute, or at half the shortest window when that is shorter (≥ 1 s).
        sweep_every_s=min(60.0, max(1.0, min(results, models) / 2)),
    )


ADMIN_TOKEN_FILE = "admin-token"


def admin_token(state_dir: Path) -> tuple[str, Path]:
    """The scheduler's admin token, generated once and kept in its state folder.

    As k3s keeps its server token: a restart (or a reinstall on the same state folder)
    keeps every client's and ``anypu status``'s token valid.  The file is created with
    mode 0600; an existing one that others could read is narrowed to it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ADMIN_TOKEN_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        token = path.read_text().strip()
        if not token:
            raise AnypuError(
                f"{path} is empty: delete it to have a new admin token generated,"
                " or write the token to keep into it"
            ) from None
        return token, path
    token = secrets.token_urlsafe(24)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token, path


def scheduler_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """Serve a scheduler until ``stop`` is set (SIGINT/SIGTERM)."""
    if args.policy not in POLICY_NAMES:
        raise AnypuError(
            f"--policy {args.policy!r} is not a placement policy; choose one of: "
            f"{', '.join(POLICY_NAMES)}"
        )
    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    if args.insecure and not is_loopback(args.host):
        raise AnypuError(
            f"--insecure serves plaintext and is for local use only: it binds to loopback,"
            f" not {args.host}; drop --insecure to serve TLS on other addresses"
        )
    kept_in: Path | None = None
    if not token and not args.insecure:
        token, kept_in = admin_token(Path(args.state_dir))
    config = SchedulerConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        lost_after_s=args.lost_after,
        unschedulable_timeout_s=args.unschedulable_timeout,
        measured_network=not args.declared_network_only,
        scale_down_after_s=args.scale_down_after,
        scale_to_zero_after_s=args.scale_to_zero_after,
        placement=PlacementConfig(time_limit_s=args.solver_time_limit, policy=args.policy),
    )
    service = SchedulerService(
        args.state_dir,
        token=token or None,
        config=config,
        network=_network(args.network),
        retention=_retention(args),
    )
    security = None if args.insecure else _security(args, service)
    agent_port = args.agent_port if args.agent_port is not None else args.port and args.port + 1
    # One throttle for gRPC and HTTP: a token guesser is counted on both surfaces.
    throttle = security.throttle if security is not None else FailureThrottle()
    # Replicas are called on agents' direct ports, which show the cluster CA's certs; one
    # gateway serves the inference protocol over gRPC and HTTP.
    direct = channel_credentials(security.ca.cert_pem) if security is not None else None
    inference = scheduler_gateway(service, direct, throttle)
    server, port = serve(
        service, args.host, args.port, security, agent_port, throttle=throttle, inference=inference
    )
    mode = (
        f"plaintext; agents' port {server.agent_port}"
        if security is None
        else f"TLS; agents on mutual-TLS port {security.agent_port}"
    )
    say = functools.partial(print, flush=True)
    say(f"anypu scheduler listening on {args.host}:{port} ({mode}; state in {args.state_dir})")
    r = service.collector.retention
    say(
        f"keeping results {duration(r.results_after_fetch_s)} after fetched"
        f" ({duration(r.unfetched_results_s)} unfetched), the newest {r.jobs} finished jobs"
        f" for at most {duration(r.jobs_for_s)}, models {duration(r.models_for_s)} after"
        " last use (--keep-*)"
    )
    if args.policy != "cost":
        say(f"placement policy: {args.policy} for accelerator jobs (cost model for the rest)")
    if security is None:
        say(
            "WARNING: --insecure: plaintext gRPC on loopback only, for local use;"
            + (" the token is still checked" if token else " no token is required")
        )
    else:
        say(f"CA hash: {security.ca.hash}")
    dashboard = None
    if args.http_port is not None:
        dashboard = serve_http(
            service, args.http_host, args.http_port, throttle=throttle, inference=inference
        )
        say(f"dashboard on {dashboard.url} (metrics at {dashboard.url}/metrics)")
    if kept_in is not None:
        say(f"admin token (pass it to clients and agents): {token}")
        say(f"  kept in {kept_in} (readable by its owner only); the same after a restart")
    pin = "" if security is None else f" --ca-hash {security.ca.hash}"
    pin += " --token <token>" if token else ""
    say(f"join an agent:  anypu agent --scheduler {args.host}:{port}{pin} --tier edge")
    if security is None:
        say(
            f"  (or --scheduler {args.host}:{server.agent_port}, the agents' port: its"
            " event loop holds thousands of agents, where this port gives each two threads)"
        )
    if security is not None:
        say(
            f"  (<token>: one from `anypu token create --state-dir {args.state_dir} --ttl 1h"
            " --tier edge`, or the token above)"
        )
    while not stop.wait(0.5):
        pass
    if dashboard is not None:
        dashboard.close()
    server.stop(grace=1).wait()
    service.close()
    if security is not None:
        security.close()
    return 0


def _when(at: float, now: float) -> str:
    """``2026-12-06 20:41 (in 58m)`` / ``(3h ago)``: a time as people read it."""
    left = at - now
    span = abs(left)
    amount = (
        f"{span / 86400:.0f}d"
        if span >= 86400
        else (f"{span / 3600:.0f}h" if span >= 3600 else f"{span / 60:.0f}m")
    )
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
    if span < 60:
        return f"{stamp} ({'in under a minute' if left > 0 else 'just now'})"
    return f"{stamp} ({'in ' + amount if left > 0 else amount + ' ago'})"


def _token_line(item: dict[str, object], now: float) -> str:
    fields = dict(item)
    for key in ("created_at", "expires_at"):
        value = fields[key]
        if isinstance(value, (int, float)):
            fields[key] = _when(float(value), now)
    return "  ".join(f"{k}={v}" for k, v in fields.items() if v not in ("", 0, None))


class _LocalTokens:
    """Join tokens in the scheduler's state folder (on the scheduler's machine)."""

    def __init__(self, state_dir: str) -> None:
        if not (Path(state_dir) / "anypu.db").exists():
            raise AnypuError(
                f"no scheduler state in {state_dir}: pass the scheduler's --state-dir, or ask"
                " a running scheduler with --scheduler HOST:PORT --token <admin token>"
                " --ca-hash sha256:…"
            )
        self.store = TokenStore(state_dir)

    def tokens(self) -> list[dict[str, object]]:
        return self.store.tokens(time.time())

    def create(self, ttl: float, tiers: list[str], max_devices: int, memory: int) -> str:
        return self.store.create(ttl, tiers, time.time(), max_devices, memory)

    def close(self) -> None:
        self.store.close()


class _RemoteTokens:
    """Join tokens minted by a running TLS scheduler for its admin token (any machine)."""

    def __init__(self, address: str, token: str, ca_hash: str) -> None:
        import grpc

        from anypu.comm import channel_credentials, client_ca, grpc_channel
        from anypu.protos import anypu_v1_pb2_grpc as rpc

        self.address, self._rpc_error = address, grpc.RpcError
        ca = client_ca(address, ca_hash)
        if ca is None:
            raise AnypuError(
                "join tokens are minted by TLS schedulers: pass its --ca-hash (an --insecure"
                " one lets agents join with its own token)"
            )
        self.channel = grpc_channel(address, channel_credentials(ca))
        self.stub = rpc.JobServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _call(self, method: Any, request: Any) -> Any:
        from anypu.comm import raise_for_rpc

        try:
            return method(request, metadata=self.metadata, timeout=10)
        except self._rpc_error as error:
            raise_for_rpc(error, self.address)

    def tokens(self) -> list[dict[str, object]]:
        response = self._call(self.stub.ListJoinTokens, convert.pb.ListJoinTokensRequest())
        return convert.join_tokens_from_pb(response)

    def create(self, ttl: float, tiers: list[str], max_devices: int, memory: int) -> str:
        request = convert.create_join_token_request(ttl, tiers, max_devices, memory)
        return str(self._call(self.stub.CreateJoinToken, request).token)

    def close(self) -> None:
        self.channel.close()


def token_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu token create|list``: join tokens, in the scheduler's state folder or, with
    ``--scheduler``, asked of a running scheduler with the admin token."""
    if args.action == "create":  # flags first: a typo is told before anything connects
        try:
            memory = parse_size(args.max_memory) if args.max_memory else 0
        except ValueError as error:
            raise AnypuError(f"--max-memory: {error}") from None
        ttl = parse_ttl(args.ttl)
        tiers = args.tier or ["edge"]
    store: _LocalTokens | _RemoteTokens
    if args.scheduler:
        token = args.token or os.environ.get("ANYPU_TOKEN", "")
        ca_hash = args.ca_hash or os.environ.get("ANYPU_CA_HASH", "")
        store = _RemoteTokens(args.scheduler, token, ca_hash)
    else:
        store = _LocalTokens(args.state_dir)
    try:
        if args.action == "list":
            now = time.time()
            for item in store.tokens():
                print(json.dumps(item) if args.json else _token_line(item, now))
            return 0
        token = store.create(ttl, tiers, args.max_devices, memory)
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
