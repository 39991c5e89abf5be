"""The Open Inference Protocol (v2) over HTTP: deployments by name, at any gateway.

KServe's and Triton's clients call ``/v2/...`` here unchanged. A gateway is the
scheduler, or an agent started with ``--gateway-port`` (the same core; it learns the
deployments from a ``DeploymentDirectory``: the scheduler's own state, or an agent's
lookups over its link). An inference request is checked against the deployment's signature (names,
datatypes and shapes taken at deploy), sent to one of its ready replicas (the agent's
direct port, under the replica's lease, as an SDK ``Service`` sends it), and the
model's outputs are returned as the protocol's response (``anypu._oip`` does the
encoding both ways). Endpoints:

- ``GET /v2/health/live``, ``GET /v2/health/ready``: the gateway is serving;
- ``GET /v2``: server metadata (``binary_tensor_data`` among its extensions);
- ``GET /v2/models/{name}``: model metadata; ``GET /v2/models/{name}/ready``: 200 with
  ``"ready": true`` while a replica is ready, else 503;
- ``POST /v2/models/{name}/infer``.

A path with ``/versions/{v}`` is served when ``v`` is the deployment's current version
(404 otherwise). Every refusal is the protocol's ``{"error": ...}`` with a message saying
what to change. The gRPC adapter (``_gateway_grpc``) shares the core: ``deployment``,
``authorize``, ``infer``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Protocol

import grpc

from anypu import __version__
from anypu.comm._balance import ReplicaBalancer
from anypu.comm._channels import grpc_channel
from anypu.comm._throttle import FailureThrottle, ThrottledError
from anypu.errors import InputError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m

__all__ = [
    "MAX_INFER_BYTES",
    "DeploymentDirectory",
    "GatewayRefusal",
    "InferenceGateway",
    "model_metadata",
    "not_ready",
    "server_metadata",
]

log = logging.getLogger("anypu.inference")

#: The largest inference request body taken (a replica's direct call carries at most
#: this much; larger inputs get 413 and a message).
MAX_INFER_BYTES = 4 << 20
_MODEL = re.compile(r"/v2/models/([^/]+)(/versions/([^/]+))?(/ready|/infer)?")
_CALL_TIMEOUT_S = 600.0
#: How long a request to a deployment at zero replicas waits for its cold start.
WAKE_TIMEOUT_S = 120.0
#: How often the requests waiting on a cold start ask whether a replica is ready.
WAKE_POLL_S = 0.05
#: The window of end-to-end times the dashboard's gateway p50/p99 cover.
LATENCY_WINDOW_S = 10.0
#: How long a deployment's listing serves calls before it is asked for again (a call
#: whose replicas have all gone asks at once).
INFO_TTL_S = 0.5


class DeploymentDirectory(Protocol):
    """What a gateway asks of the scheduler: at the scheduler, its own state; at an
    agent, lookups over its link (``AgentService.LookUpDeployment``)."""

    def deployment(self, name: str) -> m.DeploymentInfo | None:
        """Its listing now (None: no such deployment)."""
        ...

    def deployed(self) -> list[str]:
        """The names deployed (a refusal of an unknown one lists them)."""
        ...

    def authorize(self, token: str, model: str) -> str:
        """ "" when ``token`` may make this request (the scheduler's token; for a request
        to ``model``, also that deployment's caller token), else why not."""
        ...

    def wake(self, name: str, replicas: int, reason: str) -> None:
        """Scale ``name`` (at zero replicas) up to ``replicas``: a call woke it."""
        ...

    def answered(self, name: str, seconds: float) -> None:
        """A call to ``name`` was answered through this gateway in ``seconds`` (its
        traffic, by site, and its callers' times)."""
        ...


class InferenceGateway:
    """The protocol's calls to deployments, for its HTTP (``handle``) and gRPC
    (``_gateway_grpc``) adapters: ``deployment``, ``authorize``, ``infer``, ``record``."""

    def __init__(
        self,
        directory: DeploymentDirectory,
        credentials: grpc.ChannelCredentials | None = None,
        throttle: FailureThrottle | None = None,
    ) -> None:
        """``credentials``: TLS to the agents' direct ports (None: plaintext)."""
        self.directory = directory
        self.credentials = credentials
        self.throttle = throttle or FailureThrottle()
        self._stubs: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._waking = threading.Lock()  # the requests waiting on a cold start poll in turn
        #: Which replica each call goes to: predicted to answer first from here.
        self.balancer = ReplicaBalancer()
        self._draws = random.Random()  # a canary's share of calls (``DeploymentInfo.serving``)
        #: Requests answered since start, by (protocol, model, HTTP status; gRPC's
        #: answers counted by the HTTP status they stand for) (``/metrics``).
        self.answered: Counter[tuple[str, str, int]] = Counter()
        #: Inferences answered, end to end at the gateway: (model, when, seconds) over
        #: the last ``LATENCY_WINDOW_S`` (the dashboard's p50/p99).
        self._latencies: deque[tuple[str, float, float]] = deque()
        #: Deployments as last listed, by name: (listing, when), kept ``INFO_TTL_S``.
        self._known: dict[str, tuple[m.DeploymentInfo, float]] = {}
        #: Called with (protocol, model, seconds) for each inference answered (metrics).
        self.on_latency: Callable[[str, str, float], None] | None = None

    # -------------------------------------------------------------- the core

    def deployment(
        self, name: str, version: str = "", max_age_s: float = INFO_TTL_S
    ) -> m.DeploymentInfo:
        """The deployment ``name`` serves (a ``version`` must be its current one), as
        the scheduler listed it at most ``max_age_s`` ago (0: now)."""
        now = time.monotonic()
        with self._lock:
            known = self._known.get(name)
        if known is None or now - known[1] > max_age_s or max_age_s <= 0:
            found = self.directory.deployment(name)
            with self._lock:
                if found is None:
                    self._known.pop(name, None)
                else:
                    self._known[name] = (found, now)
                serving = [
                    r.lease.lease_id for i, _ in self._known.values() for r in i.ready if r.lease
                ]
            self.balancer.forget(serving)  # what it learnt of replicas gone
            known = None if found is None else (found, now)
        if known is not None:
            info = known[0]
        else:
            raise GatewayRefusal(
                HTTPStatus.NOT_FOUND,
                f"no model {name!r} is deployed here (deployed: "
                f"{', '.join(self.directory.deployed()) or 'none'})",
            )
        if version and version not in served_versions(info):
            raise GatewayRefusal(
                HTTPStatus.NOT_FOUND,
                f"model {name} has no version {version!r}: it serves version(s)"
                f" {', '.join(served_versions(info))}; name one of those or none",
            )
        return info

    def authorize(self, token: str, peer: str, model: str = "") -> None:
        """Let a request through or refuse it (401, or 429 once ``peer`` failed too often):
        the scheduler's token, or for a request to ``model`` that deployment's caller token."""
        if not token:
            raise GatewayRefusal(
                HTTPStatus.UNAUTHORIZED,
                "send 'Authorization: Bearer <token>' with the scheduler's token or the"
                " model's caller token",
            )
        refusal = self.directory.authorize(token, model)
        if not refusal:
            return
        try:
            self.throttle.failed(peer, token)
        except ThrottledError as throttled:
            retry = str(max(1, math.ceil(throttled.retry_after_s)))
            raise GatewayRefusal(
                HTTPStatus.TOO_MANY_REQUESTS, str(throttled), {"Retry-After": retry}
            ) from None
        raise GatewayRefusal(HTTPStatus.UNAUTHORIZED, refusal)

    def infer(
        self, info: m.DeploymentInfo, request: Any, version: str = ""
    ) -> tuple[dict[str, Any], int]:
        """Run a parsed request (``anypu._oip.InferRequest``) on a replica (of
        ``version``, when named): the model's outputs by the protocol's names, and the
        version of the replica that answered."""
        from anypu import _oip

        started = time.monotonic()
        outputs, answered_by = self._call_replica(info, _arguments(info, request), version)
        self.directory.answered(info.name, time.monotonic() - started)
        named = _oip.named_outputs(outputs)
        if named is None:
            raise GatewayRefusal(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"model {info.name} gave a {type(outputs).__name__}, which the protocol cannot"
                " carry: return a tensor, a tuple or a dict of tensors",
            )
        return named, answered_by

    def label(self, model: str) -> str:
        """``model`` as a metric label: only a deployed model's name (a client's typos,
        or a stranger's guesses without a token, must not grow the labels)."""
        with self._lock:
            return model if model in self._known else ""

    def record(self, protocol: str, model: str, status: int, seconds: float | None = None) -> None:
        """Count an answer; ``seconds``: an inference answered, end to end here."""
        with self._lock:
            self.answered[(protocol, model, int(status))] += 1
            if seconds is None:
                return
            now = time.monotonic()
            self._latencies.append((model, now, seconds))
            while self._latencies and self._latencies[0][1] < now - LATENCY_WINDOW_S:
                self._latencies.popleft()
        if self.on_latency is not None:
            self.on_latency(protocol, model, seconds)

    def latency(self, model: str) -> tuple[float, float, float]:
        """Inferences of ``model`` answered here over the last ``LATENCY_WINDOW_S``:
        (a second, median seconds, 99th percentile seconds)."""
        with self._lock:
            now = time.monotonic()
            times = sorted(
                t for m_, at, t in self._latencies if m_ == model and at >= now - LATENCY_WINDOW_S
            )
        if not times:
            return 0.0, 0.0, 0.0
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        return len(times) / LATENCY_WINDOW_S, times[len(times) // 2], p99

    # -------------------------------------------------------------- over HTTP

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        peer: str = "",
        open_reads: bool = False,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP request: ``(status, body, headers)``. ``open_reads``: GETs need no
        token (the dashboard on loopback)."""
        started = time.monotonic()
        try:
            status, payload, extra = self._route(method, path, headers, body, peer, open_reads)
        except GatewayRefusal as refused:
            status, payload, extra = refused.status, _error(refused.message), refused.headers
        except InputError as error:  # the codec's InferenceProtocolError, with its status
            status, payload, extra = getattr(error, "status", 400), _error(str(error)), {}
        match = _MODEL.fullmatch(path)
        model = self.label(match.group(1) if match else "")
        inferred = status == HTTPStatus.OK and path.endswith("/infer")
        self.record("http", model, status, time.monotonic() - started if inferred else None)
        return status, payload, {"Content-Type": "application/json", **extra}

    def _route(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        peer: str,
        open_reads: bool,
    ) -> tuple[int, bytes, dict[str, str]]:
        if path in ("/v2/health/live", "/v2/health/ready"):
            _only(method, "GET", path)
            return 200, _json({path.rsplit("/", 1)[1]: True}), {}
        match = _MODEL.fullmatch(path)
        if method == "POST" or not open_reads:
            self.authorize(_bearer(headers), peer, match.group(1) if match else "")
        if path in ("/v2", "/v2/"):
            _only(method, "GET", path)
            return 200, _json(server_metadata()), {}
        if match is None:
            raise GatewayRefusal(
                HTTPStatus.NOT_FOUND,
                f"no endpoint {path}: the protocol's are /v2/health/ready, /v2/models/NAME"
                " and /v2/models/NAME/infer",
            )
        name, version, action = match.group(1), match.group(3) or "", match.group(4) or ""
        info = self.deployment(name, version)
        if action == "/infer":
            _only(method, "POST", path)
            from anypu import _oip

            request = _oip.parse_infer_request(body, _header_length(headers))
            named, answered_by = self.infer(info, request, version)
            payload, extra = _oip.encode_infer_response(
                info.name, request, named, model_version=str(answered_by)
            )
            return 200, payload, extra
        _only(method, "GET", path)
        if action == "/ready":
            if not info.ready:
                raise GatewayRefusal(HTTPStatus.SERVICE_UNAVAILABLE, not_ready(info))
            return 200, _json({"name": name, "ready": True}), {}
        return 200, _json(model_metadata(info)), {}

    # -------------------------------------------------------------- replicas

    def _call_replica(
        self, info: m.DeploymentInfo, args: tuple[Any, ...], version: str = ""
    ) -> tuple[Any, int]:
        """The outputs of a ready replica (of ``version``, when named), and its version."""
        from anypu import _codec

        if not info.ready and info.replicas_wanted == 0 and info.max_replicas:
            info = self._wake(info)
        payload = b"".join(_codec.encode_parts(args, "inputs"))
        tried: set[str] = set()
        for fresh in (False, True):  # a listing whose replicas all went: ask again, once
            listing = self.deployment(info.name, max_age_s=0) if fresh else info
            if fresh and not listing.ready and not listing.replicas_wanted and listing.max_replicas:
                listing = self._wake(listing)  # it went to zero since the listing kept
            usable = [
                r
                for r in listing.ready
                if r.lease and r.lease.address and (not version or str(r.version) == version)
            ]
            serving = [r for r in listing.serving(self._draws.random()) if r in usable]
            replicas = [r for r in serving or usable if r.lease.lease_id not in tried]  # type: ignore[union-attr]
            if not replicas and not tried and fresh:
                why = f": {listing.message}" if listing.message else ""
                raise GatewayRefusal(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"model {info.name} has no ready replica ({listing.replicas_wanted}"
                    f" wanted){why}; try again once /v2/models/{info.name}/ready says so",
                )
            answered = self._try_replicas(listing, replicas, payload, tried)
            if answered is not None:
                return answered
        raise GatewayRefusal(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"no replica of {info.name} could take the call (the scheduler is placing"
            " others): try again",
        )

    def _try_replicas(
        self,
        info: m.DeploymentInfo,
        replicas: list[m.Replica],
        payload: bytes,
        tried: set[str],
    ) -> tuple[Any, int] | None:
        """(outputs, version) from the first of ``replicas`` that answers, best
        predicted first; None when none could (each added to ``tried``)."""
        from anypu import _codec

        keys = [r.lease.lease_id for r in replicas if r.lease]
        for replica in self.balancer.order(replicas, keys, time.monotonic()):
            lease = replica.lease
            assert lease is not None
            tried.add(lease.lease_id)
            request = convert.direct_run_request(lease.lease_id, payload)
            started = time.monotonic()
            self.balancer.started(lease.lease_id, started)
            try:
                response = self._stub(lease.address, lease.node_id).Run(
                    request, timeout=_CALL_TIMEOUT_S
                )
            except grpc.RpcError as error:
                self.balancer.finished(lease.lease_id, None, time.monotonic())
                log.info(
                    "replica %s of %s did not answer: %s", replica.replica_id, info.name, error
                )
                continue
            result, _ = convert.direct_run_result(response)
            ended = time.monotonic()
            answered = result is not None and (result.ok or result.outcome.user_error)
            self.balancer.finished(lease.lease_id, ended - started if answered else None, ended)
            if result is None:
                continue  # its lease went (scaled down, node rejoined): the next one
            if result.ok:
                return _codec.decode(result.outputs), replica.version
            if result.outcome.user_error:
                raise GatewayRefusal(
                    HTTPStatus.BAD_REQUEST,
                    f"model {info.name} raised {result.outcome.error_type}:"
                    f" {result.outcome.message}",
                )
            log.info(
                "replica %s of %s failed a call: %s",
                replica.replica_id,
                info.name,
                result.outcome.message,
            )
        return None

    def _wake(self, info: m.DeploymentInfo) -> m.DeploymentInfo:
        """Scaled to zero while idle: this request wakes it and waits for the cold start."""
        self.directory.wake(info.name, max(1, info.min_replicas), "a call woke it from zero")
        deadline = time.monotonic() + WAKE_TIMEOUT_S
        while time.monotonic() < deadline:
            # However many requests wait, the gateway asks once per WAKE_POLL_S.
            with self._waking:
                woken = self.deployment(info.name, max_age_s=WAKE_POLL_S)
            if woken.ready:
                return woken
            time.sleep(WAKE_POLL_S)
        return self.deployment(info.name, max_age_s=0)

    def _stub(self, address: str, node_id: str) -> Any:
        with self._lock:
            stub = self._stubs.get((address, node_id))
            if stub is None:
                channel = grpc_channel(address, self.credentials, server_name=node_id)
                stub = self._stubs[(address, node_id)] = rpc.DirectServiceStub(channel)
        return stub


class GatewayRefusal(Exception):
    """A request refused: ``status`` (HTTP; the gRPC adapter maps it), ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = headers or {}


def served_versions(info: m.DeploymentInfo) -> list[str]:
    """The versions a request may name: the current one, and a canary's stable one."""
    versions = [str(info.version)]
    if info.canary_percent and info.stable_version:
        versions.append(str(info.stable_version))
    return versions


def not_ready(info: m.DeploymentInfo) -> str:
    why = f": {info.message}" if info.message else ""
    return f"model {info.name} has no ready replica ({info.replicas_wanted} wanted){why}"


def _bearer(headers: Mapping[str, str]) -> str:
    header = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _only(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise GatewayRefusal(
            HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts {allowed}, not {method}"
        )


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _error(message: str) -> bytes:
    return _json({"error": message})


def _header_length(headers: Mapping[str, str]) -> int | None:
    from anypu._oip import HEADER_LENGTH

    raw = next((v for k, v in headers.items() if k.lower() == HEADER_LENGTH.lower()), None)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise GatewayRefusal(
            HTTPStatus.BAD_REQUEST, f"{HEADER_LENGTH} must be a number of bytes, got {raw!r}"
        ) from None


def server_metadata() -> dict[str, Any]:
    return {"name": "anypu", "version": __version__, "extensions": ["binary_tensor_data"]}


def _spec(spec: m.TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def model_metadata(info: m.DeploymentInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "versions": served_versions(info),
        "platform": "pytorch_torch_export",
        "inputs": [_spec(s) for s in info.inputs],
        "outputs": [_spec(s) for s in info.outputs],
    }


def _arguments(info: m.DeploymentInfo, request: Any) -> tuple[Any, ...]:
    """The model's positional arguments from a parsed request, checked against the
    deployment's signature."""
    given = {i.name: i for i in request.inputs}
    wanted = {s.name for s in info.inputs}
    unknown = sorted(set(given) - wanted)
    if unknown:
        raise GatewayRefusal(
            HTTPStatus.BAD_REQUEST,
            f"model {info.name} has no input {unknown[0]!r}; its inputs are"
            f" {[s.name for s in info.inputs]}",
        )
    args = []
    for spec in info.inputs:
        tensor = given.get(spec.name)
        if tensor is None:
            raise GatewayRefusal(
                HTTPStatus.BAD_REQUEST,
                f"model {info.name} needs input {spec.name!r} ({spec.datatype} {list(spec.shape)})",
            )
        if tensor.datatype != spec.datatype or tuple(tensor.shape) != tuple(spec.shape):
            raise GatewayRefusal(
                HTTPStatus.BAD_REQUEST,
                f"input {spec.name!r} of model {info.name} is {spec.datatype}"
                f" {list(spec.shape)} (the shapes it was deployed with), got"
                f" {tensor.datatype} {list(tensor.shape)}",
            )
        args.append(tensor.value)
    return tuple(args)
