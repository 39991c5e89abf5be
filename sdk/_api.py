"""Module-level ``run``/``submit``/``connect`` over one process-wide client."""

from __future__ import annotations

import os
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from anypu.errors import InputError
from anypu.protos.messages import Autoscaling, DeploymentInfo, JobInfo, NodeInfo
from anypu.sdk._client import Client, JobHandle, RunOptions

if TYPE_CHECKING:
    from anypu.sdk._services import Service

__all__ = [
    "client",
    "connect",
    "deploy",
    "deployments",
    "disconnect",
    "jobs",
    "nodes",
    "run",
    "scale",
    "submit",
    "undeploy",
]

_lock = threading.Lock()
_client: Client | None = None
_embedded: Any = None


def connect(
    address: str | None = None,
    token: str | None = None,
    *,
    origin: str | None = None,
    ca_hash: str | None = None,
    ca_file: str | None = None,
) -> Client:
    """Use the scheduler at ``address`` (default ``ANYPU_ADDRESS``) from now on.

    ``origin`` names the network site this client sits at (default ``ANYPU_SITE``), so the
    scheduler can cost moving inputs and outputs. ``ca_hash`` (``sha256:…``, printed by
    the scheduler; default ``ANYPU_CA_HASH``) or ``ca_file`` (a PEM; ``ANYPU_CA_FILE``)
    speak TLS to it; with neither the connection is plaintext (``--insecure`` schedulers).
    Raises ``SchedulerUnavailableError`` when nothing answers there.
    """
    from anypu.comm import client_ca
    from anypu.sdk._transport import GrpcTransport

    global _client
    address = address or os.environ.get("ANYPU_ADDRESS", "")
    if not address:
        raise ValueError("connect() needs an address such as '127.0.0.1:7070' (or ANYPU_ADDRESS)")
    token = token if token is not None else os.environ.get("ANYPU_TOKEN", "")
    ca_hash = ca_hash if ca_hash is not None else os.environ.get("ANYPU_CA_HASH", "")
    ca_file = ca_file if ca_file is not None else os.environ.get("ANYPU_CA_FILE", "")
    transport = GrpcTransport(address, token, client_ca(address, ca_hash, ca_file))
    try:
        transport.check()
    except Exception:
        transport.close()
        raise
    client = Client(
        transport, origin=origin if origin is not None else os.environ.get("ANYPU_SITE", "")
    )
    with _lock:
        old, _client = _client, client
    if old is not None and old is not client:
        old.close()
    return client


def disconnect() -> None:
    """Forget the configured scheduler; the next call uses (or starts) the embedded one."""
    global _client
    with _lock:
        old, _client = _client, None
    if old is not None:
        old.close()


def _default() -> Client:
    global _client, _embedded
    with _lock:
        if _client is not None:
            return _client
    if os.environ.get("ANYPU_ADDRESS"):
        return connect()
    from anypu.sdk._embedded import Embedded, InProcessTransport

    with _lock:
        if _client is None:
            if _embedded is None:
                _embedded = Embedded(devices_file=os.environ.get("ANYPU_DEVICES") or None)
            _client = Client(InProcessTransport(_embedded.service), origin="")
        return _client


def run(model: Any, inputs: Any, **options: Any) -> Any:
    """Run ``model(*inputs)`` wherever the scheduler decides; return outputs on the CPU.

    ``inputs`` is a tensor or a tuple of positional tensors. Keyword options (all
    optional): ``device_kinds``, ``tiers``, ``sites``, ``nodes``, ``priority``,
    ``slo_seconds``, ``timeout_s``, ``max_retries``, ``name``, ``compute_share`` (0–1: the
    share of a shared device's compute to reserve; by default sized from the model's
    predicted time and the SLO), ``deadline_ms``, ``best_effort`` and ``label_selector``
    (``{"zone": In("shop-7")}``: node labels its device needs). ``timeout_s`` bounds
    preparing the call (exporting and estimating a model the first time it is called with
    these input shapes; 600 s when not given) and each attempt's run.

    ``deadline_ms`` (milliseconds from when the scheduler receives the call): only
    devices predicted to finish it in time (inputs in, queue, loading the model, compute,
    outputs back) are used; where none is, ``DeadlineUnreachableError`` is raised at once
    with the best prediction, unless ``best_effort=True`` (then it runs where it is
    predicted to finish first). Met and missed deadlines are counted per tier.

    ``split`` (None by default: offered with a deadline; True: always; False: never):
    the scheduler may run the model's first layers on one device and the rest on
    another, when the activation between them is small enough that the two finish
    sooner than any device alone (``info().split`` says where it was cut). The outputs
    are the same as from one device.
    """
    return _default().run(model, inputs, _options(options))


def submit(model: Any, inputs: Any, **options: Any) -> JobHandle:
    """Like ``run`` but returns at once with a future; ``.result()`` gives the outputs."""
    return _default().submit(model, inputs, _options(options))


def deploy(
    model: Any,
    name: str,
    *,
    example_inputs: Any,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    canary_percent: int = 0,
    caller_token: str | None = None,
    target_in_flight: float = 0.0,
    target_latency_ms: float = 0.0,
    scale_down_after_s: float = 0.0,
    scale_to_zero_after_s: float = 0.0,
    **options: Any,
) -> DeploymentInfo:
    """Publish ``model`` under ``name``, served by ``replicas`` warm replicas that the
    scheduler places like jobs (same options as ``run``: ``tiers``, ``device_kinds``…) and
    keeps at that count; each warms up on ``example_inputs``. With ``max_replicas`` the
    count follows the calls in flight between ``min_replicas`` (default 0: scaled to zero
    when idle, woken by the next call) and ``max_replicas``, aiming at
    ``target_in_flight`` calls a replica (default 0.7) and, when given, replicas
    answering within ``target_latency_ms`` (queue and run); ``scale_down_after_s`` and
    ``scale_to_zero_after_s`` override the scheduler's delays. Deploying anew under the
    same name is a rolling update without loss, or with ``canary_percent`` a canary
    taking that percent of calls until ``promote`` or ``rollback``. ``caller_token``: a
    token (16+ characters) that may call this deployment by the inference protocol and
    nothing else. Returns once its replicas are ready (or after 120 s, with what is
    ready). Call it with ``sdk.client(name)(x)``."""
    return _default().deploy(
        model,
        name,
        example_inputs=example_inputs,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        canary_percent=canary_percent,
        caller_token=caller_token,
        autoscaling=Autoscaling(
            target_in_flight, target_latency_ms / 1000, scale_down_after_s, scale_to_zero_after_s
        ),
        options=_options(options),
    )


def promote(name: str) -> DeploymentInfo:
    """Deployment ``name``'s canary takes every call (a rolling update to it)."""
    return _default().promote(name)


def rollback(name: str) -> DeploymentInfo:
    """The version before the last deploy of ``name`` serves again."""
    return _default().rollback(name)


def client(name: str) -> Service:
    """Deployment ``name`` as a callable: ``sdk.client("mlp")(x)`` runs it on a replica."""
    return _default().service(name)


def deployments() -> list[DeploymentInfo]:
    """Every deployment and its replicas."""
    return _default().deployments()


def scale(name: str, replicas: int) -> DeploymentInfo:
    """Keep ``replicas`` replicas of deployment ``name`` (0: none)."""
    return _default().scale(name, replicas)


def undeploy(name: str) -> DeploymentInfo:
    """Delete deployment ``name`` and release its replicas."""
    return _default().undeploy(name)


def nodes() -> list[NodeInfo]:
    """The nodes the current scheduler knows."""
    return _default().transport.list_nodes()


def jobs(limit: int = 100) -> list[JobInfo]:
    """The most recent jobs, newest first."""
    return _default().transport.list_jobs(limit)


_NO_OPTIONS = RunOptions()


def _options(options: dict[str, Any]) -> RunOptions:
    if not options:
        return _NO_OPTIONS
    known = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {unknown}: run() and submit() accept {sorted(known)}")
    # The user's values as given (RunOptions' fields are not checked further), sequences
    # frozen to tuples.
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, (list, set, frozenset)) else v for k, v in options.items()
    }
    return RunOptions(**values)
