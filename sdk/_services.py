"""Models as services: publish a model under a name, call it by that name.

``Client.deploy`` exports and uploads the model as a call would and hands the scheduler
a deployment: the model, its constraints and example inputs, and a replica count. The
scheduler places each replica like a job, warms it with the example inputs and leases
its slice to the deployment (``scheduler._deployments``). ``Client.service(name)``
returns a ``Service``: calling it sends the inputs straight to a ready replica, as a
leased call goes: a free one predicted to answer first from here (``comm._balance``:
the answer times this caller measured, network from its site included), and moves on
to another replica when one has gone (its node lost, the deployment scaled down).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from anypu.comm import CallLog, MissingBlobError, ReplicaBalancer
from anypu.errors import AnypuError, InputError
from anypu.protos import messages as m

if TYPE_CHECKING:
    from anypu.sdk._client import Client, RunOptions

__all__ = ["Service", "deploy"]

#: How long a call waits for a deployment to have a ready replica (placing and warming
#: one), by default.
READY_TIMEOUT_S = 120.0
#: How old the replicas a Service knows may get before it asks again (a canary started,
#: promoted or rolled back, replicas added, show within this).
REFRESH_S = 2.0
_POLL_S = 0.1


def deploy(
    client: Client,
    model: Any,
    name: str,
    example_inputs: Any,
    replicas: int,
    options: RunOptions,
    wait_s: float | None,
    rollout: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
) -> m.DeploymentInfo:
    """The deployment as the scheduler took it; with ``wait_s``, once that many seconds
    have passed or every replica of its version is ready, whichever is first.
    ``rollout``: autoscaling bounds, a canary, the caller token's hash."""
    for what, value in (
        ("replicas", replicas),
        *zip(("min_replicas", "max_replicas"), rollout.bounds, strict=True),
        ("canary_percent", rollout.canary_percent),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{what} must be a whole number of 0 or more, got {value!r}")
    # A replica holds the whole model: it is never split across devices.
    request, args = client._prepare(model, example_inputs, replace(options, split=False))
    inputs, outputs = signature(model, args)
    if request.inputs_digest:
        raise InputError(
            f"deployment {name}: example inputs over 4 MiB: give smaller ones (a replica"
            " runs them once to warm up; any shape the model takes will do)"
        )
    try:
        info = client.transport.deploy(name, request, replicas, inputs, outputs, rollout)
    except MissingBlobError:  # collected since this client uploaded it: again, once
        request = client._upload_again(request, model, args)
        info = client.transport.deploy(name, request, replicas, inputs, outputs, rollout)
    if not wait_s:
        return info
    deadline = time.monotonic() + wait_s
    while not _settled(info) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        info = _find(client, name)
    return info


def _settled(info: m.DeploymentInfo) -> bool:
    """Every replica it wants ready, of the versions it serves (a canary: both)."""
    if info.canary_percent:
        return len(info.ready) >= info.replicas_wanted and any(
            r.version == info.version for r in info.ready
        )
    return sum(r.version == info.version for r in info.ready) >= info.replicas_wanted


def caller_token_hash(token: str | None) -> str | None:
    """What the scheduler keeps of a caller token: its SHA-256 (None: keep the one set)."""
    import hashlib

    if token is None:
        return None
    if token and len(token) < 16:
        raise InputError(
            'a caller token must be at least 16 characters (or "" for none): anyone who'
            " guesses it may call the deployment; secrets.token_urlsafe() makes one"
        )
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


def signature(
    model: Any, args: tuple[Any, ...]
) -> tuple[tuple[m.TensorSpec, ...], tuple[m.TensorSpec, ...]]:
    """The model's inputs (named after ``forward``'s parameters) and outputs (``output0``…
    for a tensor or a sequence of them, the keys of a dict of them) as the inference
    protocol names them, from one run on the example; outputs empty when they are not
    tensors the protocol can carry."""
    import inspect

    import torch

    from anypu._oip import datatype_of, named_outputs

    try:
        params = [
            p.name
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = params if len(params) == len(args) else [f"input{i}" for i in range(len(args))]
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise InputError("a deployment's example inputs must be tensors (one, or a tuple of them)")
    inputs = tuple(
        m.TensorSpec(n, datatype_of(a), tuple(a.shape)) for n, a in zip(names, args, strict=True)
    )
    with torch.no_grad():
        named = named_outputs(model(*args))
    if named is None:
        return inputs, ()
    outputs = tuple(m.TensorSpec(n, datatype_of(v), tuple(v.shape)) for n, v in named.items())
    return inputs, outputs


def _find(client: Client, name: str, traffic: m.Traffic | None = None) -> m.DeploymentInfo:
    for info in client.transport.deployments(traffic):
        if info.name == name:
            return info
    raise AnypuError(f"no deployment {name!r}: deploy it first (sdk.deploy)")


class Service:
    """``service(x)`` runs deployment ``name``'s model on ``x`` on one of its replicas and
    returns the outputs, as ``sdk.run`` does; thread-safe (concurrent calls go to
    different replicas while there are free ones)."""

    def __init__(self, client: Client, name: str, ready_timeout_s: float = READY_TIMEOUT_S):
        self.client = client
        self.name = name
        self.ready_timeout_s = ready_timeout_s
        self._lock = threading.Lock()
        self._info: m.DeploymentInfo | None = None
        self._fetched_at = 0.0
        self._draws = random.Random()
        self._busy: dict[str, threading.Lock] = {}  # lease id -> held while a call uses it
        self.balancer = ReplicaBalancer()
        self._calls = CallLog()  # answered since the scheduler last heard: traffic, times

    def __repr__(self) -> str:
        known = len(self._info.ready) if self._info else 0
        return f"Service({self.name!r}, {known} ready replica(s) known)"

    def __call__(self, *inputs: Any) -> Any:
        called = time.monotonic()
        tried: set[str] = set()
        while True:
            replica, busy = self._take(tried)
            assert replica.lease is not None
            key, started = replica.lease.lease_id, time.monotonic()
            self.balancer.started(key, started)
            result = None
            try:
                result = self.client.transport.run_leased(replica.lease, inputs)
            finally:
                busy.release()
                ended = time.monotonic()
                answered = result is not None and (result.ok or result.outcome.user_error)
                self.balancer.finished(key, ended - started if answered else None, ended)
            if result is not None and (result.ok or result.outcome.user_error):
                self._calls.add(self.name, time.monotonic() - called)
                return self.client._direct_outcome(result)
            # The replica has gone (or its slice failed the call, not the model): the
            # scheduler places another; try the others meanwhile.
            tried.add(replica.lease.lease_id)
            with self._lock:
                self._info = None

    def info(self) -> m.DeploymentInfo:
        return _find(self.client, self.name)

    def _listing(self) -> m.DeploymentInfo:
        """The deployment now; the scheduler hears of this Service's calls since it
        last asked and where this client is (replicas are placed after its traffic)."""
        calls, times = self._calls.drain()
        traffic = None
        if calls:
            origin = self.client.origin
            trips = () if origin else self.client._timed_round_trips()
            traffic = m.Traffic(calls, origin, trips, times)
        try:
            return _find(self.client, self.name, traffic)
        except Exception:
            self._calls.restore(times)  # said next time
            raise

    def _take(self, tried: set[str]) -> tuple[m.Replica, threading.Lock]:
        """A ready replica not yet tried by this call, locked for it: the free one
        predicted to answer first, else the busy one predicted first, once it is free.
        During a canary the call draws its side first (``DeploymentInfo.serving``)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            with self._lock:
                if self._info is not None and time.monotonic() - self._fetched_at > REFRESH_S:
                    self._info = None  # refreshed below, as for a replica gone
                info, draw = self._info, self._draws.random()
            serving = info.serving(draw) if info is not None else ()
            candidates = [r for r in serving if r.lease and r.lease.lease_id not in tried]
            if not candidates and info is not None:  # that side all tried: the other
                candidates = [r for r in info.ready if r.lease and r.lease.lease_id not in tried]
            if not candidates:
                self._refresh(tried, deadline)
                continue
            keys = [r.lease.lease_id for r in candidates if r.lease]
            ranked = self.balancer.order(candidates, keys, time.monotonic())
            locks = [self._busy.setdefault(r.lease.lease_id, threading.Lock()) for r in ranked]  # type: ignore[union-attr]
            for replica, lock in zip(ranked, locks, strict=True):
                if lock.acquire(blocking=False):
                    return replica, lock
            locks[0].acquire()
            return ranked[0], locks[0]

    def _refresh(self, tried: set[str], deadline: float) -> None:
        """Ask the scheduler for the ready replicas until there is one not yet tried."""
        while True:
            info = self._listing()
            fresh = tuple(
                r for r in info.ready if r.lease is not None and r.lease.lease_id not in tried
            )
            if fresh:
                with self._lock:
                    self._info, self._fetched_at = info, time.monotonic()
                self.balancer.forget([r.lease.lease_id for r in info.ready if r.lease])
                return
            if info.replicas_wanted == 0:
                if not info.max_replicas:
                    raise AnypuError(
                        f"deployment {self.name} has 0 replicas: scale it up to call it"
                        f" (sdk.scale({self.name!r}, 1))"
                    )
                # Scaled to zero while idle: this call wakes it and waits the cold start.
                self.client.transport.scale(
                    self.name, max(1, info.min_replicas), "a call woke it from zero"
                )
            if time.monotonic() >= deadline:
                why = f": {info.message}" if info.message else ""
                raise AnypuError(
                    f"deployment {self.name}: no replica ready within"
                    f" {self.ready_timeout_s:g} s ({len(info.ready)} ready,"
                    f" {info.replicas_wanted} wanted){why}"
                )
            time.sleep(_POLL_S)
