"""The SDK's client: export once, upload by digest, submit, return outputs.

A warm ``run`` does not export, hash weights or upload anything: the model cache maps
(model, input signature, parameter version) to an artifact, the profile is kept per
artifact digest, and the set of digests the scheduler already holds is remembered.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from anypu import _codec
from anypu._labels import LabelRequirement, label_requirements
from anypu.comm import MissingBlobError
from anypu.errors import (
    AnypuError,
    DeadlineUnreachableError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    MemoryExceededError,
    SchedulerUnavailableError,
    UnschedulableError,
)
from anypu.protos import messages as m
from anypu.sdk._deadline import Phase, within
from anypu.sdk._estimate import Profile, estimate_profile
from anypu.sdk._export import Artifact, ModelCache, call_args
from anypu.sdk._split import Cut, find_cuts
from anypu.sdk._transport import INLINE_LIMIT, Transport

if TYPE_CHECKING:
    from anypu.sdk._services import Service

__all__ = ["Client", "JobHandle", "RunOptions"]

log = logging.getLogger("anypu.sdk")


@dataclass(frozen=True)
class RunOptions:
    """Optional constraints and hints; users never have to name a device."""

    device_kinds: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    priority: int = 0
    slo_seconds: float = 0.0
    timeout_s: float = 0.0
    max_retries: int = 3
    name: str = ""
    #: The share of a shared device's compute to reserve, 0 to 1 (like a fractional GPU
    #: request); 0: the scheduler derives it from the model's predicted time and the SLO.
    compute_share: float = 0.0
    #: Milliseconds from submission by which the outputs are wanted (None: no deadline).
    #: Only devices predicted to meet it are used; where none is,
    #: ``DeadlineUnreachableError`` at once, unless ``best_effort``.
    deadline_ms: float | None = None
    #: With ``deadline_ms``: run where it is predicted to finish first even if late.
    best_effort: bool = False
    #: Offer the scheduler cuts of the model to split the call across two devices
    #: (``sdk._split``): None offers them with a deadline, True always, False never.
    split: bool | None = None
    #: Labels the device's node must have: ``{"zone": In("shop-7"), "ssd": Exists()}``
    #: (``In``, ``NotIn``, ``Exists``, ``DoesNotExist`` from ``anypu.sdk``; a plain
    #: string is ``In`` of it). Checked here, kept as ``LabelRequirement``s.
    label_selector: Any = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_selector", label_requirements(self.label_selector))


class JobHandle(Future[Any]):
    """A submitted job: ``result()`` waits for the outputs; ``info()`` tells where it ran."""

    def __init__(self, client: Client, job_id: str) -> None:
        super().__init__()
        self.client = client
        self.job_id = job_id

    def info(self) -> m.JobInfo:
        return self.client.transport.job(self.job_id)

    def cancel(self) -> bool:
        if self.done():
            return False
        self.client.transport.cancel(self.job_id)
        return super().cancel()


@dataclass
class _HeldLease:
    lease: m.Lease
    in_use: threading.Lock = field(default_factory=threading.Lock)


#: What ``_lease_key`` returns: the request's fields that decide its placement.
_LeaseKey = tuple[
    str,
    float,
    int,
    int,
    int,
    tuple[str, ...],
    tuple[str, ...],
    tuple[str, ...],
    tuple[str, ...],
    str,
    int,
    float,
    str,
    int,
    str,
    float,
    bool,
    tuple[LabelRequirement, ...],
]


def _lease_key(r: m.SubmitRequest) -> _LeaseKey:
    """What a leased slice was placed for: calls differing in any of it are placed anew."""
    return (
        r.artifact_digest,
        r.flops,
        r.memory_bytes,
        r.input_bytes,
        r.output_bytes,
        r.device_kinds,
        r.tiers,
        r.sites,
        r.nodes,
        r.origin,
        r.priority,
        r.slo_seconds,
        r.name,
        r.compute_milli,
        r.precision,
        r.deadline_ms,
        r.best_effort,
        r.label_selector,
    )


def _checked_deadline(options: RunOptions) -> tuple[float, bool]:
    """``deadline_ms`` and ``best_effort`` checked: a user's mistake is an ``InputError``."""
    deadline, best_effort = options.deadline_ms, options.best_effort
    if not isinstance(best_effort, bool):
        raise InputError(f"best_effort must be True or False, got {best_effort!r}")
    if deadline is None:
        deadline = 0.0
    elif isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise InputError(
            f"deadline_ms must be a number of milliseconds, such as deadline_ms=100, got"
            f" {deadline!r}"
        )
    elif not math.isfinite(deadline) or deadline <= 0:
        raise InputError(
            f"deadline_ms must be more than 0 milliseconds (from the call), got {deadline!r}:"
            " a deadline of zero or less can never be met; leave it out for no deadline"
        )
    if best_effort and not deadline:
        raise InputError(
            "best_effort=True only means something with a deadline: add deadline_ms=…,"
            " or leave best_effort out"
        )
    return float(deadline), best_effort


def _work(artifact: Artifact, profile: Profile) -> dict[str, Any]:
    """A request's fields that say what the model is and the work of one call."""
    return {
        "artifact_digest": artifact.digest,
        "flops": profile.flops,
        "memory_bytes": profile.memory_bytes,
        "input_bytes": profile.input_bytes,
        "output_bytes": profile.output_bytes,
        "param_bytes": artifact.nbytes,
        "precision": profile.precision,
        "operators": tuple(sorted(artifact.operators)),
        "operator_calls": profile.operator_calls,
        "matmul_flops": profile.matmul_flops,
        "conv_flops": profile.conv_flops,
        "attention_flops": profile.attention_flops,
        "bytes_moved": profile.bytes_moved,
    }


#: How often a client that names no origin times its round trips again (seconds).
REMEASURE_S = 300.0

#: How long exporting and estimating a model may take when the call sets no timeout_s
#: (the scheduler's default per-attempt timeout too).
PREPARE_TIMEOUT_S = 600.0


class Client:
    def __init__(self, transport: Transport, origin: str = "") -> None:
        self.transport = transport
        self.origin = origin
        self.models = ModelCache()
        self._profiles: dict[str, Profile] = {}
        self._cuts: dict[str, tuple[Cut, ...]] = {}
        self._uploaded: set[str] = set()
        self._leases: dict[_LeaseKey, _HeldLease] = {}
        # (artifact digest, options, job name) -> the request a warm call sends again
        self._requests: dict[tuple[str, RunOptions, str], m.SubmitRequest] = {}
        self.reconnect_timeout_s = 60.0
        self._round_trips: tuple[tuple[str, float], ...] | None = None
        self._round_trips_at = -math.inf
        self._lock = threading.Lock()

    def close(self) -> None:
        self.transport.close()

    # -------------------------------------------------------------- preparing a job

    def _prepare(
        self, model: Any, inputs: Any, options: RunOptions
    ) -> tuple[m.SubmitRequest, tuple[Any, ...]]:
        request, args = self._describe(model, inputs, options)
        return self._with_inputs(request, args), args

    def _with_inputs(self, request: m.SubmitRequest, args: tuple[Any, ...]) -> m.SubmitRequest:
        parts = _codec.encode_parts(args, "inputs")
        if sum(part.nbytes for part in parts) > INLINE_LIMIT:
            # Hashed and streamed from the tensors' own memory: never joined into a copy.
            return replace(request, inputs_digest=self._put(parts))
        return replace(request, inputs=b"".join(parts))

    def _describe(
        self, model: Any, inputs: Any, options: RunOptions
    ) -> tuple[m.SubmitRequest, tuple[Any, ...]]:
        """The job for ``model(*inputs)`` without its inputs, and the checked arguments."""
        args = call_args(model, inputs)
        with self.models.holding(model):
            artifact = self.models.get(model, args)
            profile = self._profiles.get(artifact.digest) if artifact is not None else None
        if artifact is None or profile is None:
            # Export and estimation run the model's forward: under the call's deadline.
            artifact, profile = within(
                options.timeout_s or PREPARE_TIMEOUT_S,
                f"preparing {type(model).__name__}",
                lambda phase: self._export_and_profile(model, args, phase),
                "timeout_s"
                if options.timeout_s
                else f"timeout_s (default {PREPARE_TIMEOUT_S:g} s)",
            )
        self._upload(artifact)
        name = options.name or type(model).__name__
        # A warm call of a model asks the same as the last one: build the request once.
        key = (artifact.digest, options, name)
        request = self._requests.get(key)
        if request is not None:
            return request, args
        kinds = options.device_kinds or tuple(sorted(artifact.device_kinds))
        share = options.compute_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise InputError(
                f"compute_share must be a number from 0 to 1 (the share of a device's"
                f" compute to reserve; 0 lets the scheduler size it), got {share!r}"
            )
        deadline_ms, best_effort = _checked_deadline(options)
        if options.split is not None and not isinstance(options.split, bool):
            raise InputError(
                f"split must be True, False or None (offer cuts only with a deadline), got"
                f" {options.split!r}"
            )
        offer = options.split if options.split is not None else bool(deadline_ms)
        splits = self._splits(model, args, artifact, options) if offer else ()
        request = m.SubmitRequest(
            **_work(artifact, profile),
            device_kinds=kinds,
            tiers=options.tiers,
            sites=options.sites,
            nodes=options.nodes,
            origin=self.origin,
            priority=options.priority,
            slo_seconds=options.slo_seconds,
            name=name,
            timeout_s=options.timeout_s,
            max_retries=options.max_retries,
            compute_milli=round(share * 1000),
            deadline_ms=deadline_ms,
            best_effort=best_effort,
            splits=splits,
            label_selector=options.label_selector,
        )
        if len(self._requests) >= 256:
            self._requests.clear()
        self._requests[key] = request
        return request, args

    def _splits(
        self, model: Any, args: tuple[Any, ...], artifact: Artifact, options: RunOptions
    ) -> tuple[m.SplitOption, ...]:
        """The cuts of the model offered to the scheduler, found once per artifact and
        uploaded (their halves are artifacts of their own)."""
        cuts = self._cuts.get(artifact.digest)
        if cuts is None:
            cuts = within(
                options.timeout_s or PREPARE_TIMEOUT_S,
                f"cutting {type(model).__name__} into two halves",
                lambda phase: find_cuts(model, args),
                "timeout_s"
                if options.timeout_s
                else f"timeout_s (default {PREPARE_TIMEOUT_S:g} s)",
            )
            self._cuts[artifact.digest] = cuts
        for cut in cuts:
            self._upload(cut.head)
            self._upload(cut.tail)
        return tuple(
            m.SplitOption(
                label=cut.label,
                activation_bytes=cut.activation_bytes,
                head=m.SubmitRequest(**_work(cut.head, cut.head_profile)),
                tail=m.SubmitRequest(**_work(cut.tail, cut.tail_profile)),
            )
            for cut in cuts
        )

    def _export_and_profile(
        self, model: Any, args: tuple[Any, ...], phase: Phase
    ) -> tuple[Artifact, Profile]:
        with self.models.holding(model):
            phase.now = "exporting it with torch.export"
            artifact = self.models.get_or_export(model, args)
            profile = self._profiles.get(artifact.digest)
            if profile is None:
                phase.now = "estimating its cost (running its forward)"
                profile = estimate_profile(model, args)
                self._profiles[artifact.digest] = profile
        return artifact, profile

    def _upload(self, artifact: Artifact) -> None:
        if artifact.digest in self._uploaded:
            return
        if self.transport.missing_blobs([artifact.digest]):
            self.transport.put_blob(artifact.digest, artifact.data)
        with self._lock:
            self._uploaded.add(artifact.digest)

    def _put(self, parts: list[memoryview]) -> str:
        hasher = hashlib.sha256()
        for part in parts:
            hasher.update(part)
        digest = hasher.hexdigest()
        if self.transport.missing_blobs([digest]):
            self.transport.put_blob(digest, parts)
        return digest

    # -------------------------------------------------------------- running

    def run(self, model: Any, inputs: Any, options: RunOptions | None = None) -> Any:
        request, args = self._describe(model, inputs, options or RunOptions())
        # No lease for a call with a timeout: a direct call runs to its end (in-process,
        # a thread cannot be stopped) and is not retried elsewhere by the scheduler.
        leasing = not request.timeout_s
        if leasing and self._leases:
            result = self._run_leased(request, args)
            if result is not None:
                return self._direct_outcome(result)
        request = replace(self._with_inputs(request, args), wait=True, lease=leasing)
        info, outputs = self._send(request, model, args)
        if leasing and info.state == "succeeded":
            lease = self.transport.lease_of(info.job_id)
            if lease is not None:
                self._leases[_lease_key(request)] = _HeldLease(lease)
        return self._outcome(info, outputs)

    def _run_leased(self, request: m.SubmitRequest, args: tuple[Any, ...]) -> m.JobResult | None:
        """Hand the call to the slice leased for its kind; None: place it as usual.

        A lease serves one call at a time: concurrent calls are placed, so they spread over
        the cluster as they would without it.
        """
        key = _lease_key(request)
        held = self._leases.get(key)
        if held is None or not held.in_use.acquire(blocking=False):
            return None
        try:
            result = self.transport.run_leased(held.lease, args)
        finally:
            held.in_use.release()
        if result is not None and (result.ok or result.outcome.user_error):
            return result
        # Revoked, or the slice failed it (not the model): placement finds it a device.
        if self._leases.get(key) is held:
            del self._leases[key]
        return None

    def _direct_outcome(self, result: m.JobResult) -> Any:
        if result.ok:
            return result.value if result.value is not None else _codec.decode(result.outputs)
        raise self._error(result.job_id, result.node_id, result.outcome)

    @staticmethod
    def _error(job_id: str, node_id: str, outcome: m.Outcome, reasons: Any = None) -> Exception:
        """The ``anypu.errors`` error a failed job's outcome means to its caller."""
        code = outcome.code
        if code is m.FailureCode.CANCELLED:
            return JobCancelledError(f"job {job_id} was cancelled")
        if code is m.FailureCode.UNSCHEDULABLE:
            return UnschedulableError(outcome.message, reasons)
        if code is m.FailureCode.DEADLINE_UNREACHABLE:
            return DeadlineUnreachableError(outcome.message, reasons)
        if code is m.FailureCode.JOB_TIMEOUT:
            return JobTimeoutError(outcome.message)
        if code is m.FailureCode.MEMORY_EXCEEDED:
            return MemoryExceededError(
                f"MemoryExceeded: {outcome.message}", remote_type="MemoryExceeded", job_id=job_id
            )
        where = f" on {node_id}" if node_id else ""
        return JobFailedError(
            f"the model raised {outcome.error_type}{where}: {outcome.message}",
            remote_type=outcome.error_type,
            remote_traceback=outcome.traceback,
            job_id=job_id,
        )

    def _timed_round_trips(self) -> tuple[tuple[str, float], ...]:
        """The round trips this client last timed (``Transport.round_trips``): at its
        first call, then again in the background every ``REMEASURE_S``."""
        with self._lock:
            due = time.monotonic() - self._round_trips_at >= REMEASURE_S
            if due:
                self._round_trips_at = time.monotonic()
            first = due and self._round_trips is None
        if first:
            self._measure()
        elif due:
            threading.Thread(target=self._measure, name="anypu-rtt", daemon=True).start()
        return self._round_trips or ()

    def _measure(self) -> None:
        try:
            self._round_trips = self.transport.round_trips()
        except AnypuError as error:  # the call itself will say what is wrong
            log.debug("round trips not measured: %s", error)
            self._round_trips = self._round_trips or ()

    def _send(
        self, request: m.SubmitRequest, model: Any, args: tuple[Any, ...]
    ) -> tuple[m.JobInfo, bytes | bytearray]:
        if not request.origin:
            request = replace(request, round_trips=self._timed_round_trips())
        try:
            return self.transport.submit(request)
        except MissingBlobError:
            return self.transport.submit(self._upload_again(request, model, args))

    def _upload_again(
        self, request: m.SubmitRequest, model: Any, args: tuple[Any, ...]
    ) -> m.SubmitRequest:
        """The scheduler collected the model (unused longer than its --keep-models) or
        the inputs since they were uploaded: upload them again (the caller retries once)."""
        with self._lock:
            self._uploaded.discard(request.artifact_digest)
            for split in request.splits:
                self._uploaded.discard(split.head.artifact_digest)
                self._uploaded.discard(split.tail.artifact_digest)
        with self.models.holding(model):
            artifact = self.models.get_or_export(model, args)
            self._upload(artifact)
        for cut in self._cuts.get(artifact.digest, ()):
            self._upload(cut.head)
            self._upload(cut.tail)
        if request.inputs_digest:
            request = self._with_inputs(replace(request, inputs_digest=""), args)
        return request

    # -------------------------------------------------------------- deployments

    def deploy(
        self,
        model: Any,
        name: str,
        *,
        example_inputs: Any,
        replicas: int = 1,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        canary_percent: int = 0,
        caller_token: str | None = None,
        autoscaling: m.Autoscaling | None = None,
        options: RunOptions | None = None,
        wait_s: float | None = 120.0,
    ) -> m.DeploymentInfo:
        """Publish ``model`` as ``name`` with ``replicas`` warm replicas (``_services``);
        with ``max_replicas``, autoscaled between ``min_replicas`` (default 0: to zero
        when idle) and it, starting at ``replicas``. Deployed anew under a name that
        serves: a rolling update, or with ``canary_percent`` a canary taking that percent
        of calls (``promote``/``rollback`` end it). ``caller_token``: a token that may
        call it by the inference protocol and nothing else ("": none; None: keep the
        one set). ``autoscaling``: its targets and delays (default: the scheduler's).
        Waits up to ``wait_s`` for its replicas to be ready (None: not at all)."""
        from anypu.sdk._services import caller_token_hash, deploy

        bounds = (0, 0)
        if max_replicas is not None or min_replicas is not None:
            low = min_replicas or 0
            bounds = (low, max_replicas if max_replicas is not None else max(low, replicas))
        rollout = m.DeployOptions(
            bounds, canary_percent, caller_token_hash(caller_token), autoscaling or m.Autoscaling()
        )
        run = options or RunOptions()
        return deploy(self, model, name, example_inputs, replicas, run, wait_s, rollout)

    def promote(self, name: str) -> m.DeploymentInfo:
        """Deployment ``name``'s canary takes every call (a rolling update to it)."""
        return self.transport.rollout(name, "promote")

    def rollback(self, name: str) -> m.DeploymentInfo:
        """The version before the last deploy of ``name`` serves again (a canary's
        stable version, at once)."""
        return self.transport.rollout(name, "rollback")

    def service(self, name: str) -> Service:
        """Deployment ``name`` as a callable: ``client.service("mlp")(x)``."""
        from anypu.sdk._services import Service

        return Service(self, name)

    def scale(self, name: str, replicas: int) -> m.DeploymentInfo:
        return self.transport.scale(name, replicas)

    def undeploy(self, name: str) -> m.DeploymentInfo:
        return self.transport.undeploy(name)

    def deployments(self) -> list[m.DeploymentInfo]:
        return self.transport.deployments()

    def submit(self, model: Any, inputs: Any, options: RunOptions | None = None) -> JobHandle:
        request, args = self._prepare(model, inputs, options or RunOptions())
        info, _ = self._send(request, model, args)
        handle = JobHandle(self, info.job_id)
        handle.set_running_or_notify_cancel()
        threading.Thread(
            target=self._complete, args=(handle,), name="anypu-wait", daemon=True
        ).start()
        return handle

    def _complete(self, handle: JobHandle) -> None:
        """Wait for a submitted job; ride out a scheduler restart of up to a minute.

        The job was acknowledged, so it is durable on the scheduler: after a restart the
        same Wait finds it again.
        """
        try:
            unreachable_since: float | None = None
            while True:
                try:
                    info, outputs, timed_out = self.transport.wait(handle.job_id, 30.0)
                except SchedulerUnavailableError:
                    now = time.monotonic()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > self.reconnect_timeout_s:
                        raise
                    time.sleep(0.2)
                    continue
                unreachable_since = None
                if not timed_out and info.terminal:
                    break
            handle.set_result(self._outcome(info, outputs))
        except BaseException as error:  # delivered to whoever calls result()
            if not handle.done():
                handle.set_exception(error)

    def _outcome(self, info: m.JobInfo, outputs: bytes | bytearray) -> Any:
        if info.state == "succeeded":
            return _codec.decode(outputs)
        if info.state in ("failed", "cancelled") and not info.outcome.ok:
            node = info.placement.node_id if info.placement else ""
            raise self._error(info.job_id, node, info.outcome, info.pending_reasons)
        raise AnypuError(f"job {info.job_id} ended in unexpected state {info.state!r}")
