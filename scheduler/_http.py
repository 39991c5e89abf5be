"""The scheduler's HTTP side: JSON API, dashboard files and ``/metrics``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread of the scheduler process: the API is
a handful of read-mostly JSON views polled once a second, which needs no framework.

Access rules (also in ``docs/operators.md`` and the OpenAPI document):

- Mutating endpoints (``POST``) always need ``Authorization: Bearer <token>``, the
  scheduler's token. A browser never attaches that header on its own, so a hostile page
  cannot forge the request (no CSRF).
- Reads (``GET`` of the API and ``/metrics``) are open when the server listens on
  loopback, because only local users can reach it; requests must then name a loopback
  ``Host``, which stops DNS-rebinding pages from reading the API. On any other address
  reads need the token too.
- The dashboard's static files hold no data and are always served, and so are
  ``/healthz`` and ``/readyz`` (for a kubelet's probes: "ok", "ready: N node(s) known").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from prometheus_client import CONTENT_TYPE_LATEST

from anypu import PROTOCOL_VERSION, __version__
from anypu.comm import (
    FailureThrottle,
    InferenceGateway,
    ThrottledError,
    answer_over_http,
    http_peer,
)
from anypu.devices import Device
from anypu.errors import AuthenticationError, ConfigError
from anypu.placement import TIERS
from anypu.protos.messages import DeploymentInfo, JobInfo, NodeInfo
from anypu.scheduler._inference import scheduler_gateway
from anypu.scheduler._metrics import (
    NODE_STATES,
    ClusterView,
    SchedulerMetrics,
    fragmentation,
    read_view,
    usage_by_tier_kind,
)
from anypu.scheduler._records import JOB_STATES
from anypu.scheduler._service import NotFoundError, SchedulerService
from anypu.scheduler._topology import topology_layout, topology_view

__all__ = ["ApiError", "DashboardServer", "is_loopback", "serve_http", "topology_layout"]

log = logging.getLogger("anypu.http")
STATIC = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class ApiError(Exception):
    """An HTTP error with a message for the caller: rendered as ``{"error": message}``."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------- views (pure)


def node_view(node: NodeInfo, jobs_on: dict[tuple[str, str], list[JobInfo]], names: dict) -> dict:
    usage = {u.device_id: u for u in node.usage}
    devices = []
    for d in node.devices:
        u = usage.get(d.device_id)
        here = jobs_on.get((node.node_id, d.device_id), [])
        devices.append(
            {
                "device_id": d.device_id,
                "kind": d.kind,
                "vendor": d.vendor,
                "model": d.model,
                "description": d.describe(),
                "memory_bytes": d.memory_bytes,
                "tflops": d.tflops,
                "slices": d.slices,
                "sharing": d.sharing,
                "torch_device": d.torch_device,
                "simulated": d.simulated,
                "utilisation": u.utilisation if u else 0.0,
                "free_memory_bytes": u.free_memory_bytes if u else d.memory_bytes,
                "busy_slices": u.busy_slices if u else 0,
                "reserved_slices": sorted({j.placement.slice_index for j in here if j.placement}),
                "jobs": [_job_on_device(j) for j in here],
                "shared": d.shared,
                **_shares_of(d, node, u),
            }
        )
    return {
        "node_id": node.node_id,
        "tier": node.tier,
        "site": node.site,
        "state": node.state,
        "labels": node.labels,
        "last_heartbeat_age_s": node.last_heartbeat_age_s,
        "rtt_p50_s": node.rtt_p50_s,
        "rtt_p95_s": node.rtt_p95_s,
        "rtt_age_s": node.rtt_age_s,
        "bandwidth_bps": node.bandwidth_bps,
        "bandwidth_age_s": node.bandwidth_age_s,
        "running_jobs": node.running_jobs,
        "epoch": node.epoch,
        "simulated": any(d.simulated for d in node.devices),
        "warm_models": [{"digest": w, "name": names.get(w, "")} for w in node.warm_digests],
        "devices": devices,
    }


def _job_on_device(job: JobInfo) -> dict:
    row: dict = {"job_id": job.job_id, "name": job.name, "state": job.state}
    if job.placement is not None and job.placement.milli:
        row["reserved_memory_bytes"] = job.placement.memory_bytes
        row["reserved_milli"] = job.placement.milli
    return row


def _shares_of(device: Device, node: NodeInfo, usage: Any) -> dict:
    """A shared device's reservations and what is left of it (nothing for a sliced one)."""
    if not device.shared:
        return {}
    mine = [r for r in node.reservations if r.device_id == device.device_id]
    memory, milli = node.reserved_on(device.device_id)
    return {
        "seats": device.slices,
        "reserved_memory_bytes": memory,
        "reserved_milli": milli,
        "unreserved_memory_bytes": max(0, device.memory_bytes - memory),
        "unreserved_milli": max(0, 1000 - milli),
        "measured_memory_used_bytes": usage.memory_used_bytes if usage and usage.measured else None,
        "reservations": [
            {
                "job_id": r.job_id,
                "seat": r.slice_index,
                "memory_bytes": r.memory_bytes,
                "milli": r.milli,
            }
            for r in mine
        ],
    }


def placement_view(job: JobInfo) -> dict:
    p = job.placement
    assert p is not None
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": job.state,
        "attempt": job.attempt,
        "origin": job.origin,
        "node_id": p.node_id,
        "tier": p.tier,
        "device_id": p.device_id,
        "slice_index": p.slice_index,
        "device_description": p.device_description,
        "simulated": p.simulated,
        "solver": p.solver,
        "terms": p.terms,
        "predicted_seconds": p.predicted_seconds,
        "compute_from": p.compute_from,
        "runner_up": (
            {
                "node_id": p.runner_up_node,
                "device_id": p.runner_up_device,
                "predicted_seconds": p.runner_up_seconds,
                "terms": p.runner_up_terms,
            }
            if p.runner_up_node
            else None
        ),
        "run_seconds": job.outcome.run_seconds,
        "load_seconds": job.outcome.load_seconds,
        "latency_seconds": job.latency_seconds,
        "deadline_ms": job.deadline_ms,
        "deadline_met": job.deadline_met,
        "split": job.split,
        "head_job_id": job.head_job_id,
        "origin_inferred": job.origin_inferred,
        "submitted_at": job.submitted_at,
        "finished_at": job.finished_at,
        "error": f"{job.outcome.error_type}: {job.outcome.message}" if not job.outcome.ok else "",
    }


def deployment_view(
    info: DeploymentInfo, gateway: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> dict:
    """A deployment as the API shows it: never its replicas' lease ids (capabilities).
    ``gateway``: its inference-protocol calls at the scheduler over the last 10 s (a
    second, median and p99 seconds end to end)."""
    events = []
    for line in info.events:
        at, _, text = line.partition(" ")
        events.append({"at": float(at), "event": text})
    return {
        "name": info.name,
        "model_name": info.model_name,
        "version": info.version,
        "replicas_wanted": info.replicas_wanted,
        "replicas_ready": len(info.ready),
        "min_replicas": info.min_replicas,
        "max_replicas": info.max_replicas,
        "message": info.message,
        "calls_per_s": info.calls_per_s,
        "run_p50_s": info.run_p50_s,
        "run_p99_s": info.run_p99_s,
        "canary_percent": info.canary_percent,
        "stable_version": info.stable_version,
        "caller_token": info.caller_token,
        "cold_starts": info.cold_starts,
        "last_cold_start_s": info.last_cold_start_s,
        "gateway_calls_per_s": gateway[0],
        "gateway_p50_s": gateway[1],
        "gateway_p99_s": gateway[2],
        "traffic": [{"site": site, "calls": calls} for site, calls in info.traffic],
        "caller_calls_per_s": info.caller_calls_per_s,
        "caller_p50_s": info.caller_p50_s,
        "caller_p99_s": info.caller_p99_s,
        "replicas": [
            {
                "replica_id": r.replica_id,
                "state": r.state,
                "node_id": r.node_id,
                "device_id": r.device_id,
                "tier": r.tier,
                "version": r.version,
                "placed_for": r.placed_for,
            }
            for r in info.replicas
        ],
        "events": events,
    }


def pending_view(job: JobInfo, now: float) -> dict:
    return {
        "job_id": job.job_id,
        "name": job.name,
        "origin": job.origin,
        "attempt": job.attempt,
        "waiting_s": max(0.0, now - job.submitted_at),
        "unschedulable": job.unschedulable,
        "reasons": dict(sorted(job.pending_reasons.items())),
    }


def overview_view(view: ClusterView, finished: dict[str, int], rate: float, started: float):
    by_tier = {t: dict.fromkeys(NODE_STATES, 0) for t in TIERS}
    for n in view.nodes:
        by_tier[n.tier][n.state] = by_tier[n.tier].get(n.state, 0) + 1
    devices = Counter(
        (n.tier, d.kind, d.vendor, d.simulated)
        for n in view.nodes
        if n.state == "ready"
        for d in n.devices
    )
    pending = view.pending
    return {
        "scheduler": {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "now": view.now,
            "uptime_s": max(0.0, view.now - started),
        },
        "nodes": {"total": len(view.nodes), "by_tier": by_tier},
        "devices": [
            {"tier": t, "kind": k, "vendor": v, "simulated": s, "count": c}
            for (t, k, v, s), c in sorted(devices.items(), key=lambda i: (TIERS.index(i[0][0]), i))
        ],
        "usage": [row.as_dict() for row in usage_by_tier_kind(view.nodes, view.active)],
        "fragmentation": fragmentation(view.nodes, view.active),
        "jobs": {**view.job_counts(), **{s: finished.get(s, 0) for s in JOB_STATES[3:]}},
        "queue_depth": len(pending),
        "unschedulable": sum(j.unschedulable for j in pending),
        "placement_rate_per_s": rate,
        "decisions": view.decisions,
        "deadlines": [
            {"tier": tier, "outcome": outcome, "jobs": count}
            for (tier, outcome), count in sorted(view.deadlines.items())
        ],
        "last_solve": {"solver": view.solver, "seconds": view.solve_seconds},
    }


def jsonable(value: Any) -> Any:
    """Non-finite floats (an unreachable path's infinite cost) become ``null``: JSON has none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- the API


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be between {low} and {high}")
    return value


def _job_state(query: dict[str, list[str]]) -> str:
    state = query.get("state", [""])[-1]
    if state and state not in JOB_STATES:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"unknown state {state!r}: choose one of {list(JOB_STATES)}"
        )
    return state


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Any]
    mutating: bool = False


class Api:
    """The JSON endpoints as plain methods: ``(match groups, query) -> payload``."""

    def __init__(
        self,
        service: SchedulerService,
        metrics: SchedulerMetrics,
        inference: InferenceGateway | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.inference = inference
        self.routes = [
            _Route("GET", re.compile(r"/api/v1/overview"), self.overview),
            _Route("GET", re.compile(r"/api/v1/nodes"), self.nodes),
            _Route("GET", re.compile(r"/api/v1/nodes/([^/]+)"), self.node),
            _Route("GET", re.compile(r"/api/v1/jobs"), self.jobs),
            _Route("GET", re.compile(r"/api/v1/jobs/([^/]+)"), self.job),
            _Route("POST", re.compile(r"/api/v1/jobs/([^/]+)/cancel"), self.cancel, True),
            _Route("GET", re.compile(r"/api/v1/placements"), self.placements),
            _Route("GET", re.compile(r"/api/v1/pending"), self.pending),
            _Route("GET", re.compile(r"/api/v1/topology"), self.topology),
            _Route("GET", re.compile(r"/api/v1/deployments"), self.deployments),
        ]

    def route(self, method: str, path: str) -> tuple[_Route, tuple[str, ...]]:
        allowed = []
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match:
                if route.method == method:
                    return route, match.groups()
                allowed.append(route.method)
        if allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts {', '.join(allowed)}, not {method}"
            )
        raise ApiError(
            HTTPStatus.NOT_FOUND,
            f"no endpoint {method} {path}: the API is listed at /api/v1/openapi.json",
        )

    def _recent(self, limit: int) -> list[JobInfo]:
        return self.service.list_jobs(limit)

    def overview(self, query: dict) -> dict:
        view = read_view(self.service)
        t = self.metrics.transitions
        rate = t.placement_rate(view.now)
        return overview_view(view, dict(t.finished_counts), rate, self.service.started_at)

    def nodes(self, query: dict) -> list[dict]:
        view = read_view(self.service)
        jobs_on: dict[tuple[str, str], list[JobInfo]] = {}
        for job in view.live_jobs:
            if job.placement is not None and job.state != "pending":
                jobs_on.setdefault((job.placement.node_id, job.placement.device_id), []).append(job)
        # A warm model is named after the latest job that ran it to completion.
        names: dict[str, str] = {}
        for job in self._recent(200):
            if job.name and job.state == "succeeded":
                names.setdefault(job.artifact_digest, job.name)
        order = {t: i for i, t in enumerate(TIERS)}
        nodes = sorted(view.nodes, key=lambda n: (order[n.tier], n.node_id))
        return [node_view(n, jobs_on, names) for n in nodes]

    def node(self, query: dict, node_id: str) -> dict:
        for node in self.nodes(query):
            if node["node_id"] == node_id:
                return node
        raise ApiError(HTTPStatus.NOT_FOUND, f"no node {node_id!r} has joined this scheduler")

    def jobs(self, query: dict) -> list[dict]:
        limit = _int(query, "limit", 100, 1, 1000)
        return [j.as_dict() for j in self.service.list_jobs(limit, _job_state(query))]

    def job(self, query: dict, job_id: str) -> dict:
        try:
            return self.service.job_info(job_id).as_dict()
        except NotFoundError as error:
            raise ApiError(HTTPStatus.NOT_FOUND, error.args[0]) from None

    def cancel(self, query: dict, job_id: str) -> dict:
        current = self.job(query, job_id)
        if current["state"] in JOB_STATES[3:]:
            raise ApiError(
                HTTPStatus.CONFLICT,
                f"job {job_id} already {current['state']}: only pending, placed or running"
                " jobs can be cancelled",
            )
        return self.service.cancel(job_id).as_dict()

    def placements(self, query: dict) -> list[dict]:
        limit = _int(query, "limit", 50, 1, 1000)
        return [placement_view(j) for j in self._recent(limit) if j.placement is not None]

    def pending(self, query: dict) -> list[dict]:
        view = read_view(self.service)
        return [pending_view(j, view.now) for j in view.pending]

    def deployments(self, query: dict) -> list[dict]:
        gateway = self.inference
        return [
            deployment_view(d, gateway.latency(d.name) if gateway else (0.0, 0.0, 0.0))
            for d in self.service.deployments()
        ]

    def topology(self, query: dict) -> dict:
        limit = _int(query, "limit", 50, 1, 1000)
        return topology_view(read_view(self.service), self._recent(limit))


# ---------------------------------------------------------------- the server


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the dashboard polls every second
    timeout = 60

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/v2" or path.startswith("/v2/"):
                return self._inference(method, path)
            if method == "POST":  # the body is unused; read it so keep-alive stays in step
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path == "/" or path.startswith("/static/"):
                return self._static(method, "index.html" if path == "/" else path[8:])
            if path in ("/healthz", "/readyz") and method == "GET":
                return self._health(path)
            self._check_host()
            if path == "/metrics" and method == "GET":
                self._authorize(mutating=False)
                return self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
            if path == "/api/v1/openapi.json" and method == "GET":
                return self._static(method, "openapi.json")
            route, args = self.server.api.route(method, path)
            self._authorize(route.mutating)
            payload = route.handler(parse_qs(url.query), *args)
            self._json(200, payload)
        except ApiError as error:
            self._json(error.status, {"error": error.message}, error.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("%s %s failed", method, self.path)
            self._json(500, {"error": "internal error in the scheduler; see its log"})

    def _health(self, path: str) -> None:
        """``/healthz``: the process serves HTTP. ``/readyz``: it also reads its state
        (the lock every call takes, the store behind it). Open, and saying nothing but
        that: a kubelet's probes carry no token and name the pod's address."""
        if path == "/healthz":
            return self._send(200, b"ok\n", "text/plain; charset=utf-8")
        try:
            view = read_view(self.server.api.service)
        except Exception as error:  # not ready: say why, keep serving
            body = f"not ready: {type(error).__name__}: {error}\n".encode()
            return self._send(503, body, "text/plain; charset=utf-8")
        body = f"ready: {len(view.nodes)} node(s) known\n".encode()
        return self._send(200, body, "text/plain; charset=utf-8")

    def _inference(self, method: str, path: str) -> None:
        """The Open Inference Protocol (``anypu.comm.InferenceGateway``): its errors in
        its own shape."""
        try:
            self._check_host()
        except ApiError:
            self.close_connection = True  # its body is left unread
            raise
        status, payload, headers = answer_over_http(
            self, self.server.inference, method, path, open_reads=self.server.open_reads
        )
        content_type = headers.pop("Content-Type", "application/json")
        self._send(status, payload, content_type, headers)

    def _check_host(self) -> None:
        if not self.server.open_reads:
            return
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if not is_loopback(host):
            raise ApiError(
                HTTPStatus.FORBIDDEN,
                f"Host {host!r} is not loopback: this dashboard listens on loopback only;"
                " open it as http://127.0.0.1:PORT or start the scheduler with --http-host",
            )

    def _authorize(self, mutating: bool) -> None:
        if not mutating and self.server.open_reads:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            what = "this request changes state" if mutating else "reads need the token here"
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                f"{what}: send 'Authorization: Bearer <token>' with the scheduler's token",
            )
        peer = http_peer(*self.client_address[:2])
        try:
            self.server.service.authenticate(token.strip())
        except AuthenticationError as error:
            try:
                self.server.throttle.failed(peer, token.strip())
            except ThrottledError as throttled:
                retry = str(max(1, math.ceil(throttled.retry_after_s)))
                raise ApiError(
                    HTTPStatus.TOO_MANY_REQUESTS, str(throttled), {"Retry-After": retry}
                ) from None
            raise ApiError(HTTPStatus.UNAUTHORIZED, str(error)) from None

    def _static(self, method: str, name: str) -> None:
        if method != "GET":
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"/static/{name} accepts GET only")
        body = self.server.files.get(name)
        if body is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no dashboard file {name!r}")
        self._send(200, body, _TYPES.get(Path(name).suffix, "application/octet-stream"))

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(jsonable(payload), separators=(",", ":")).encode()
        self._send(status, body, "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="anypu"')
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        service: SchedulerService,
        open_reads: bool,
        throttle: FailureThrottle,
        inference: InferenceGateway,
    ) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self.throttle = throttle
        self.metrics = SchedulerMetrics(service, throttle)
        self.api = Api(service, self.metrics, inference)
        self.inference = inference
        self.metrics.watch_inference(self.inference)
        self.open_reads = open_reads
        # Only these names are ever served: a path can never reach outside the folder.
        self.files = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file()}


class DashboardServer:
    """The running HTTP server: ``url``, ``port``, ``metrics``; ``close()`` stops it."""

    def __init__(
        self,
        service: SchedulerService,
        host: str = "127.0.0.1",
        port: int = 0,
        open_reads: bool | None = None,
        throttle: FailureThrottle | None = None,
        direct_credentials: grpc.ChannelCredentials | None = None,
        inference: InferenceGateway | None = None,
    ) -> None:
        """``open_reads``: GETs without a token; default only when ``host`` is loopback.
        ``direct_credentials``: TLS to agents' direct ports (the cluster's CA), for the
        inference protocol's calls to replicas; None: plaintext.
        ``throttle``: who is refused after failed tokens (share the gRPC server's, so a
        guesser's failures count on both; default: its own, 5 per minute per address).
        ``inference``: the protocol's gateway, when the gRPC server shares it (default:
        one of its own, with ``direct_credentials`` and ``throttle``)."""
        if open_reads is None:
            open_reads = is_loopback(host)
        throttle = throttle or FailureThrottle()
        if inference is None:
            inference = scheduler_gateway(service, direct_credentials, throttle)
        try:
            self._server = _Server((host, port), service, open_reads, throttle, inference)
        except OSError as error:
            raise ConfigError(
                f"cannot serve the dashboard on {host}:{port}: {error.strerror};"
                " choose another --http-port (0 picks a free one)"
            ) from None
        self.host = host
        self.port: int = self._server.server_address[1]
        self.metrics = self._server.metrics
        self.api = self._server.api
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.name = "anypu-http"
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_reads(self) -> bool:
        return self._server.open_reads

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_http(
    service: SchedulerService,
    host: str = "127.0.0.1",
    port: int = 0,
    throttle: FailureThrottle | None = None,
    direct_credentials: grpc.ChannelCredentials | None = None,
    inference: InferenceGateway | None = None,
) -> DashboardServer:
    """Start the dashboard, API, ``/metrics`` and the inference protocol's ``/v2`` for
    ``service``; returns the server."""
    return DashboardServer(
        service,
        host,
        port,
        throttle=throttle,
        direct_credentials=direct_credentials,
        inference=inference,
    )
