"""The one place that touches generated protobuf classes.

Everything else in anypu speaks ``anypu.protos.messages`` and ``anypu.devices.Device``;
this module maps them to and from ``anypu_v1_pb2`` at the gRPC boundary.  Field names
match on both sides, so most conversions are a generic copy of scalar fields plus the
nested parts spelled out.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

from anypu._labels import LabelRequirement
from anypu.devices import Device
from anypu.protos import anypu_v1_pb2 as pb
from anypu.protos import messages as m

__all__ = [
    "agent_message_from_pb",
    "agent_message_to_pb",
    "job_info_from_pb",
    "job_info_to_pb",
    "node_info_from_pb",
    "node_info_to_pb",
    "pb",
    "scheduler_message_from_pb",
    "scheduler_message_to_pb",
    "submit_request_from_pb",
    "submit_request_to_pb",
]

T = TypeVar("T")
PbT = TypeVar("PbT", bound=Message)

_SCALARS = (bool, int, float, str, bytes)


def _scalars_to_pb(obj: Any, message: PbT) -> PbT:
    """Copy every scalar, str→str map and ``Outcome`` field of dataclass ``obj`` onto
    ``message``."""
    known = message.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(obj):
        if f.name not in known:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, _SCALARS):
            setattr(message, f.name, value)
        elif isinstance(value, m.Outcome):
            _outcome_to_pb(value, getattr(message, f.name))
        elif isinstance(value, dict) and hasattr(getattr(message, f.name, None), "update"):
            getattr(message, f.name).update(value)
    return message


def _outcome_to_pb(outcome: m.Outcome, message: pb.Outcome) -> None:
    fields = outcome.fields()
    del fields["user_error"]  # the code says it
    for name, value in fields.items():
        setattr(message, name, value)


def _outcome_from_pb(message: pb.Outcome) -> m.Outcome:
    fields = {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}
    return m.Outcome.from_fields(fields)


def _scalars_from_pb(message: Any, cls: type[T], **nested: Any) -> T:
    """Build dataclass ``cls`` from ``message``'s scalar and map fields plus ``nested``.

    Fields the wire does not carry (in-process only, such as ``Join.direct_runs``) keep
    their defaults.
    """
    kwargs: dict[str, Any] = {}
    known = message.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in nested:
            kwargs[f.name] = nested[f.name]
            continue
        if f.name not in known:
            continue
        value = getattr(message, f.name)
        if isinstance(value, _SCALARS):
            kwargs[f.name] = value
        elif isinstance(value, pb.Outcome):
            kwargs[f.name] = _outcome_from_pb(value)
        elif hasattr(value, "items"):
            kwargs[f.name] = dict(value)
    return cls(**kwargs)


# ---------------------------------------------------------------- devices


def device_to_pb(device: Device) -> pb.Device:
    return _scalars_to_pb(device, pb.Device())


def device_from_pb(message: pb.Device) -> Device:
    return _scalars_from_pb(message, Device)


def _usage_from_pb(items: Any) -> tuple[m.DeviceUsage, ...]:
    return tuple(_scalars_from_pb(u, m.DeviceUsage) for u in items)


# ---------------------------------------------------------------- agent stream


def agent_message_to_pb(message: m.AgentMessage) -> pb.AgentMessage:
    out = pb.AgentMessage()
    if isinstance(message, m.Join):
        join = _scalars_to_pb(message, out.join)
        join.devices.extend(device_to_pb(d) for d in message.devices)
        join.warm_digests.extend(message.warm_digests)
        join.running.extend(pb.RunningAttempt(job_id=j, attempt=a) for j, a in message.running)
    elif isinstance(message, m.Heartbeat):
        beat = _scalars_to_pb(message, out.heartbeat)
        beat.usage.extend(_scalars_to_pb(u, pb.DeviceUsage()) for u in message.usage)
        beat.warm_digests.extend(message.warm_digests)
        beat.jobs.extend(_scalars_to_pb(j, pb.JobUsage()) for j in message.jobs)
        beat.peers.extend(_scalars_to_pb(p, pb.PeerSample()) for p in message.peers)
    elif isinstance(message, m.JobStarted):
        _scalars_to_pb(message, out.started)
    elif isinstance(message, m.JobResult):
        _scalars_to_pb(message, out.result)
    elif isinstance(message, m.LeasedRuns):
        out.leased_runs.runs.extend(_scalars_to_pb(r, pb.LeasedRun()) for r in message.runs)
    elif isinstance(message, m.Leave):
        _scalars_to_pb(message, out.leave)
    else:
        raise TypeError(f"not an agent message: {type(message).__name__}")
    return out


def agent_message_from_pb(message: pb.AgentMessage) -> m.AgentMessage:
    kind = message.WhichOneof("kind")
    if kind == "join":
        j = message.join
        return _scalars_from_pb(
            j,
            m.Join,
            devices=tuple(device_from_pb(d) for d in j.devices),
            warm_digests=tuple(j.warm_digests),
            running=tuple((r.job_id, r.attempt) for r in j.running),
        )
    if kind == "heartbeat":
        h = message.heartbeat
        return _scalars_from_pb(
            h,
            m.Heartbeat,
            usage=_usage_from_pb(h.usage),
            warm_digests=tuple(h.warm_digests),
            jobs=tuple(_scalars_from_pb(j, m.JobUsage) for j in h.jobs),
            peers=tuple(_scalars_from_pb(p, m.PeerSample) for p in h.peers),
        )
    if kind == "started":
        return _scalars_from_pb(message.started, m.JobStarted)
    if kind == "result":
        return _scalars_from_pb(message.result, m.JobResult)
    if kind == "leased_runs":
        runs = message.leased_runs.runs
        return m.LeasedRuns(tuple(_scalars_from_pb(r, m.LeasedRun) for r in runs))
    if kind == "leave":
        return _scalars_from_pb(message.leave, m.Leave)
    raise ValueError(
        "empty agent message: set one of join, heartbeat, started, result, leased_runs, leave"
    )


def scheduler_message_to_pb(message: m.SchedulerMessage) -> pb.SchedulerMessage:
    out = pb.SchedulerMessage()
    if isinstance(message, m.JoinAck):
        _scalars_to_pb(message, out.ack)
    elif isinstance(message, m.Launch):
        _scalars_to_pb(message, out.launch)
    elif isinstance(message, m.Cancel):
        _scalars_to_pb(message, out.cancel)
    elif isinstance(message, m.LeaseGranted):
        _scalars_to_pb(message.lease, out.lease_granted.lease)
    elif isinstance(message, m.LeaseRevoked):
        _scalars_to_pb(message, out.lease_revoked)
    elif isinstance(message, m.HeartbeatEcho):
        _scalars_to_pb(message, out.echo)
    elif isinstance(message, m.Peers):
        out.peers.SetInParent()
        out.peers.peers.extend(_scalars_to_pb(p, pb.Peer()) for p in message.peers)
    else:
        raise TypeError(f"not a scheduler message: {type(message).__name__}")
    return out


def scheduler_message_from_pb(message: pb.SchedulerMessage) -> m.SchedulerMessage:
    kind = message.WhichOneof("kind")
    if kind == "ack":
        return _scalars_from_pb(message.ack, m.JoinAck)
    if kind == "launch":
        return _scalars_from_pb(message.launch, m.Launch)
    if kind == "cancel":
        return _scalars_from_pb(message.cancel, m.Cancel)
    if kind == "lease_granted":
        return m.LeaseGranted(_scalars_from_pb(message.lease_granted.lease, m.Lease))
    if kind == "lease_revoked":
        return _scalars_from_pb(message.lease_revoked, m.LeaseRevoked)
    if kind == "echo":
        return _scalars_from_pb(message.echo, m.HeartbeatEcho)
    if kind == "peers":
        return m.Peers(tuple(_scalars_from_pb(p, m.Peer) for p in message.peers.peers))
    raise ValueError("empty scheduler message")


# ---------------------------------------------------------------- jobs


_PROFILE_FIELDS = (
    "flops",
    "memory_bytes",
    "input_bytes",
    "output_bytes",
    "param_bytes",
    "operator_calls",
    "matmul_flops",
    "conv_flops",
    "attention_flops",
    "bytes_moved",
)


def submit_request_to_pb(request: m.SubmitRequest) -> pb.SubmitRequest:
    out = _scalars_to_pb(request, pb.SubmitRequest())
    for name in _PROFILE_FIELDS:
        setattr(out.profile, name, getattr(request, name))
    for name in ("device_kinds", "tiers", "sites", "nodes"):
        getattr(out.constraints, name).extend(getattr(request, name))
    out.constraints.labels.extend(
        pb.LabelRequirement(key=r.key, operator=r.operator, values=r.values)
        for r in request.label_selector
    )
    out.operators.extend(request.operators)
    out.round_trips.extend(pb.RoundTrip(vertex=v, rtt_s=rtt) for v, rtt in request.round_trips)
    for split in request.splits:
        option = out.splits.add(label=split.label, activation_bytes=split.activation_bytes)
        option.head.CopyFrom(submit_request_to_pb(split.head))
        option.tail.CopyFrom(submit_request_to_pb(split.tail))
    return out


def submit_request_from_pb(message: pb.SubmitRequest) -> m.SubmitRequest:
    p, c = message.profile, message.constraints
    return _scalars_from_pb(
        message,
        m.SubmitRequest,
        **{name: getattr(p, name) for name in _PROFILE_FIELDS},
        device_kinds=tuple(c.device_kinds),
        tiers=tuple(c.tiers),
        sites=tuple(c.sites),
        nodes=tuple(c.nodes),
        label_selector=tuple(
            LabelRequirement(r.key, r.operator, tuple(r.values)) for r in c.labels
        ),
        operators=tuple(message.operators),
        splits=tuple(
            m.SplitOption(
                label=s.label,
                activation_bytes=s.activation_bytes,
                head=submit_request_from_pb(s.head),
                tail=submit_request_from_pb(s.tail),
            )
            for s in message.splits
        ),
        round_trips=tuple((r.vertex, r.rtt_s) for r in message.round_trips),
    )


def job_info_to_pb(info: m.JobInfo) -> pb.JobInfo:
    out = _scalars_to_pb(info, pb.JobInfo())
    if info.placement is not None:
        placed = _scalars_to_pb(info.placement, out.placement)
        placed.terms.extend(pb.Term(name=k, seconds=v) for k, v in info.placement.terms.items())
        placed.runner_up_terms.extend(
            pb.Term(name=k, seconds=v) for k, v in info.placement.runner_up_terms.items()
        )
    out.pending_reasons.extend(
        pb.NodeReason(node_id=n, reason=r) for n, r in info.pending_reasons.items()
    )
    return out


def job_info_from_pb(message: pb.JobInfo) -> m.JobInfo:
    placement = None
    if message.HasField("placement"):
        p = message.placement
        placement = _scalars_from_pb(
            p,
            m.PlacementInfo,
            terms={t.name: t.seconds for t in p.terms},
            runner_up_terms={t.name: t.seconds for t in p.runner_up_terms},
        )
    return _scalars_from_pb(
        message,
        m.JobInfo,
        placement=placement,
        pending_reasons={r.node_id: r.reason for r in message.pending_reasons},
    )


def node_info_to_pb(info: m.NodeInfo) -> pb.NodeInfo:
    out = _scalars_to_pb(info, pb.NodeInfo())
    out.devices.extend(device_to_pb(d) for d in info.devices)
    out.usage.extend(_scalars_to_pb(u, pb.DeviceUsage()) for u in info.usage)
    out.job_usage.extend(_scalars_to_pb(j, pb.JobUsage()) for j in info.job_usage)
    out.peers.extend(_scalars_to_pb(p, pb.PeerSample()) for p in info.peers)
    out.reservations.extend(_scalars_to_pb(r, pb.Reservation()) for r in info.reservations)
    out.warm_digests.extend(info.warm_digests)
    return out


def node_info_from_pb(message: pb.NodeInfo) -> m.NodeInfo:
    return _scalars_from_pb(
        message,
        m.NodeInfo,
        devices=tuple(device_from_pb(d) for d in message.devices),
        usage=_usage_from_pb(message.usage),
        job_usage=tuple(_scalars_from_pb(j, m.JobUsage) for j in message.job_usage),
        reservations=tuple(_scalars_from_pb(r, m.Reservation) for r in message.reservations),
        warm_digests=tuple(message.warm_digests),
        peers=tuple(_scalars_from_pb(p, m.PeerSample) for p in message.peers),
    )


# ---------------------------------------------------------------- service envelopes


def submit_response(
    info: m.JobInfo, outputs: bytes, lease: m.Lease | None = None
) -> pb.SubmitResponse:
    out = pb.SubmitResponse(job=job_info_to_pb(info), outputs=outputs)
    if lease is not None:
        _scalars_to_pb(lease, out.lease)
    return out


def submit_response_lease(message: pb.SubmitResponse) -> m.Lease | None:
    return _scalars_from_pb(message.lease, m.Lease) if message.HasField("lease") else None


# ---------------------------------------------------------------- direct calls (leases)


def direct_run_request(lease_id: str, inputs: bytes) -> pb.DirectRunRequest:
    return pb.DirectRunRequest(lease_id=lease_id, inputs=inputs)


def direct_run_response(
    result: m.JobResult | None, worker_address: str = ""
) -> pb.DirectRunResponse:
    if result is None:
        return pb.DirectRunResponse(lease_lost=True)
    out = pb.DirectRunResponse(worker_address=worker_address)
    _scalars_to_pb(result, out.result)
    return out


def direct_run_result(message: pb.DirectRunResponse) -> tuple[m.JobResult | None, str]:
    """The call's result (None: the lease is not held there), and where to send the next."""
    if message.lease_lost:
        return None, ""
    return _scalars_from_pb(message.result, m.JobResult), message.worker_address


def wait_request(job_id: str, timeout_s: float) -> pb.WaitRequest:
    return pb.WaitRequest(job_id=job_id, timeout_s=timeout_s)


def wait_response(info: m.JobInfo, outputs: bytes, timed_out: bool) -> pb.WaitResponse:
    return pb.WaitResponse(job=job_info_to_pb(info), outputs=outputs, timed_out=timed_out)


def job_request(job_id: str) -> pb.CancelRequest:
    """The request of Cancel; Explain takes the same field."""
    return pb.CancelRequest(job_id=job_id)


def explain_request(job_id: str) -> pb.ExplainRequest:
    return pb.ExplainRequest(job_id=job_id)


def cancel_response(info: m.JobInfo) -> pb.CancelResponse:
    return pb.CancelResponse(job=job_info_to_pb(info))


def explain_response(info: m.JobInfo) -> pb.ExplainResponse:
    return pb.ExplainResponse(job=job_info_to_pb(info))


def list_jobs_request(limit: int, state: str) -> pb.ListJobsRequest:
    return pb.ListJobsRequest(limit=limit, state=state)


def list_jobs_response(jobs: list[m.JobInfo]) -> pb.ListJobsResponse:
    return pb.ListJobsResponse(jobs=[job_info_to_pb(j) for j in jobs])


def list_nodes_request() -> pb.ListNodesRequest:
    return pb.ListNodesRequest()


def list_nodes_response(nodes: list[m.NodeInfo]) -> pb.ListNodesResponse:
    return pb.ListNodesResponse(nodes=[node_info_to_pb(n) for n in nodes])


def usage_request() -> pb.UsageRequest:
    return pb.UsageRequest()


def usage_response(usage: m.ClusterUsage) -> pb.UsageResponse:
    return pb.UsageResponse(
        rows=[_scalars_to_pb(r, pb.UsageRow()) for r in usage.rows],
        fragmentation=usage.fragmentation,
        reserved=[_scalars_to_pb(r, pb.DeviceReservation()) for r in usage.reserved],
    )


def usage_from_pb(message: pb.UsageResponse) -> m.ClusterUsage:
    return m.ClusterUsage(
        tuple(_scalars_from_pb(r, m.UsageRow) for r in message.rows),
        message.fragmentation,
        tuple(_scalars_from_pb(r, m.DeviceReservation) for r in message.reserved),
    )


def has_blobs_request(digests: list[str]) -> pb.HasBlobsRequest:
    return pb.HasBlobsRequest(digests=digests)


def has_blobs_response(missing: list[str]) -> pb.HasBlobsResponse:
    return pb.HasBlobsResponse(missing=missing)


def put_blob_response(digest: str, size: int) -> pb.PutBlobResponse:
    return pb.PutBlobResponse(digest=digest, stored_bytes=size)


def get_blob_request(digest: str) -> pb.GetBlobRequest:
    return pb.GetBlobRequest(digest=digest)


def blob_chunk(data: bytes, digest: str = "", total_bytes: int = 0) -> pb.BlobChunk:
    """One chunk of a blob stream; the first names the digest and the total size."""
    return pb.BlobChunk(digest=digest, total_bytes=total_bytes, data=data)


def blob_chunks(
    digest: str, data: bytes | Sequence[memoryview], chunk_bytes: int
) -> Iterator[pb.BlobChunk]:
    """Split a blob (bytes, or consecutive parts of it) into stream chunks of
    ``chunk_bytes``; the first names the digest and total size. Parts are copied one
    chunk at a time, never joined."""
    parts = [memoryview(data)] if isinstance(data, bytes) else list(data)
    total = sum(part.nbytes for part in parts)
    pending = bytearray()
    first = True
    for part in parts:
        view = part.cast("B") if part.format != "B" else part
        while view.nbytes:
            taken = view[: chunk_bytes - len(pending)]
            pending += taken
            view = view[taken.nbytes :]
            if len(pending) == chunk_bytes:
                yield _chunk(digest, total, bytes(pending), first)
                pending.clear()
                first = False
    if pending or first:
        yield _chunk(digest, total, bytes(pending), first)


def join_blob_chunks(chunks: Iterable[pb.BlobChunk], digest: str = "") -> bytearray:
    """A blob stream put back together in one buffer sized by its first chunk (never a
    list of chunks and then a joined copy: a large blob is held once). Writable, so a
    tensor tree decoded from it shares its memory."""
    stream = iter(chunks)
    first = next(stream, None)
    if first is None:
        raise ValueError(f"the blob stream for {digest[:16]} ended before its first chunk")
    total = first.total_bytes
    buffer = bytearray(total)
    view = memoryview(buffer)
    filled = 0
    for chunk in itertools.chain((first,), stream):
        end = filled + len(chunk.data)
        if end > total:
            raise ValueError(f"blob {digest[:16]} is longer than the {total} bytes announced")
        view[filled:end] = chunk.data
        filled = end
    if filled != total:
        raise ValueError(f"blob {digest[:16]} ended after {filled} of {total} bytes")
    return buffer


def _chunk(digest: str, total: int, data: bytes, first: bool) -> pb.BlobChunk:
    if first:
        return pb.BlobChunk(digest=digest, total_bytes=total, data=data)
    return pb.BlobChunk(data=data)


def remove_node_request(node_id: str) -> pb.RemoveNodeRequest:
    return pb.RemoveNodeRequest(node_id=node_id)


def remove_node_response(info: m.NodeInfo) -> pb.RemoveNodeResponse:
    return pb.RemoveNodeResponse(node=node_info_to_pb(info))


# Join tokens (``anypu token create|list --scheduler``): plain dicts, as the store has them.
_TOKEN_FIELDS = (
    "id",
    "created_at",
    "expires_at",
    "tiers",
    "max_devices",
    "max_memory_bytes",
    "state",
    "used_by",
)


def create_join_token_request(
    ttl_s: float, tiers: Sequence[str], max_devices: int, max_memory_bytes: int
) -> pb.CreateJoinTokenRequest:
    return pb.CreateJoinTokenRequest(
        ttl_s=ttl_s, tiers=list(tiers), max_devices=max_devices, max_memory_bytes=max_memory_bytes
    )


def create_join_token_response(token: str) -> pb.CreateJoinTokenResponse:
    return pb.CreateJoinTokenResponse(token=token)


def join_tokens_response(items: Sequence[dict[str, Any]]) -> pb.ListJoinTokensResponse:
    return pb.ListJoinTokensResponse(
        tokens=[pb.JoinTokenInfo(**{k: item[k] for k in _TOKEN_FIELDS}) for item in items]
    )


def join_tokens_from_pb(message: pb.ListJoinTokensResponse) -> list[dict[str, Any]]:
    return [{k: getattr(t, k) for k in _TOKEN_FIELDS} for t in message.tokens]


# ---------------------------------------------------------------- deployments


def _spec_to_pb(spec: m.TensorSpec, out: pb.TensorSpec) -> None:
    out.name, out.datatype = spec.name, spec.datatype
    out.shape.extend(spec.shape)


def _specs_from_pb(specs: Any) -> tuple[m.TensorSpec, ...]:
    return tuple(m.TensorSpec(s.name, s.datatype, tuple(s.shape)) for s in specs)


def deploy_request(
    name: str,
    request: m.SubmitRequest,
    replicas: int,
    inputs: Sequence[m.TensorSpec] = (),
    outputs: Sequence[m.TensorSpec] = (),
    options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
) -> pb.DeployRequest:
    out = pb.DeployRequest(
        name=name,
        request=submit_request_to_pb(request),
        replicas=replicas,
        min_replicas=options.bounds[0],
        max_replicas=options.bounds[1],
        canary_percent=options.canary_percent,
    )
    _scalars_to_pb(options.autoscaling, out.autoscaling)
    if options.caller_token_sha256 is not None:
        out.caller_token_sha256 = options.caller_token_sha256
    for spec in inputs:
        _spec_to_pb(spec, out.inputs.add())
    for spec in outputs:
        _spec_to_pb(spec, out.outputs.add())
    return out


def deploy_request_from_pb(
    message: pb.DeployRequest,
) -> tuple[
    str,
    m.SubmitRequest,
    int,
    tuple[m.TensorSpec, ...],
    tuple[m.TensorSpec, ...],
    m.DeployOptions,
]:
    options = m.DeployOptions(
        bounds=(message.min_replicas, message.max_replicas),
        canary_percent=message.canary_percent,
        caller_token_sha256=(
            message.caller_token_sha256 if message.HasField("caller_token_sha256") else None
        ),
        autoscaling=_scalars_from_pb(message.autoscaling, m.Autoscaling),
    )
    return (
        message.name,
        submit_request_from_pb(message.request),
        message.replicas,
        _specs_from_pb(message.inputs),
        _specs_from_pb(message.outputs),
        options,
    )


def rollout_deployment_request(name: str, action: str) -> pb.RolloutDeploymentRequest:
    return pb.RolloutDeploymentRequest(name=name, action=action)


def scale_deployment_request(
    name: str, replicas: int, reason: str = ""
) -> pb.ScaleDeploymentRequest:
    return pb.ScaleDeploymentRequest(name=name, replicas=replicas, reason=reason)


def delete_deployment_request(name: str) -> pb.DeleteDeploymentRequest:
    return pb.DeleteDeploymentRequest(name=name)


def list_deployments_request(traffic: m.Traffic | None = None) -> pb.ListDeploymentsRequest:
    out = pb.ListDeploymentsRequest()
    if traffic is not None:
        out.calls.extend(pb.DeploymentCalls(deployment=d, calls=n) for d, n in traffic.calls)
        out.origin = traffic.origin
        out.round_trips.extend(pb.RoundTrip(vertex=v, rtt_s=t) for v, t in traffic.round_trips)
        out.times.extend(_call_times_to_pb(t) for t in traffic.times)
    return out


def _call_times_to_pb(times: m.CallTimes) -> pb.CallTimes:
    return pb.CallTimes(deployment=times.deployment, buckets=times.buckets, seconds=times.seconds)


def _call_times_from_pb(message: pb.CallTimes) -> m.CallTimes:
    return m.CallTimes(message.deployment, tuple(message.buckets), message.seconds)


def traffic_from_pb(
    message: pb.ListDeploymentsRequest | pb.LookUpDeploymentRequest,
) -> m.Traffic:
    """The calls a listing or a gateway's look-up reports (no origin in a look-up: the
    gateway's node is where its calls come from)."""
    if isinstance(message, pb.LookUpDeploymentRequest):
        return m.Traffic(
            calls=tuple((c.deployment, c.calls) for c in message.calls),
            times=tuple(_call_times_from_pb(t) for t in message.times),
        )
    return m.Traffic(
        calls=tuple((c.deployment, c.calls) for c in message.calls),
        origin=message.origin,
        round_trips=tuple((r.vertex, r.rtt_s) for r in message.round_trips),
        times=tuple(_call_times_from_pb(t) for t in message.times),
    )


def deployment_lookup_to_pb(lookup: m.DeploymentLookup) -> pb.LookUpDeploymentRequest:
    out = pb.LookUpDeploymentRequest(
        node_id=lookup.node_id,
        name=lookup.name,
        token=lookup.token,
        wake_replicas=lookup.wake_replicas,
    )
    out.calls.extend(pb.DeploymentCalls(deployment=d, calls=n) for d, n in lookup.calls)
    out.times.extend(_call_times_to_pb(t) for t in lookup.times)
    return out


def deployment_lookup_from_pb(message: pb.LookUpDeploymentRequest) -> m.DeploymentLookup:
    return m.DeploymentLookup(
        node_id=message.node_id,
        name=message.name,
        token=message.token,
        wake_replicas=message.wake_replicas,
        calls=traffic_from_pb(message).calls,
        times=traffic_from_pb(message).times,
    )


def deployment_lookup_reply_to_pb(reply: m.DeploymentLookupReply) -> pb.LookUpDeploymentReply:
    out = pb.LookUpDeploymentReply(
        found=reply.deployment is not None, deployed=reply.deployed, refusal=reply.refusal
    )
    if reply.deployment is not None:
        out.deployment.CopyFrom(deployment_info_to_pb(reply.deployment))
    return out


def deployment_lookup_reply_from_pb(message: pb.LookUpDeploymentReply) -> m.DeploymentLookupReply:
    return m.DeploymentLookupReply(
        deployment_info_from_pb(message.deployment) if message.found else None,
        tuple(message.deployed),
        message.refusal,
    )


def deployment_info_to_pb(info: m.DeploymentInfo) -> pb.DeploymentInfo:
    out = _scalars_to_pb(info, pb.DeploymentInfo())
    for spec in info.inputs:
        _spec_to_pb(spec, out.inputs.add())
    for spec in info.outputs:
        _spec_to_pb(spec, out.outputs.add())
    out.events.extend(info.events)
    _scalars_to_pb(info.autoscaling, out.autoscaling)
    out.traffic.extend(pb.SiteCalls(site=s, calls=n) for s, n in info.traffic)
    out.caller_buckets.extend(info.caller_buckets)
    for replica in info.replicas:
        entry = _scalars_to_pb(replica, out.replicas.add())
        if replica.lease is not None:
            _scalars_to_pb(replica.lease, entry.lease)
    return out


def deployment_info_from_pb(message: pb.DeploymentInfo) -> m.DeploymentInfo:
    replicas = tuple(
        _scalars_from_pb(
            r,
            m.Replica,
            lease=_scalars_from_pb(r.lease, m.Lease) if r.HasField("lease") else None,
        )
        for r in message.replicas
    )
    return _scalars_from_pb(
        message,
        m.DeploymentInfo,
        replicas=replicas,
        inputs=_specs_from_pb(message.inputs),
        outputs=_specs_from_pb(message.outputs),
        events=tuple(message.events),
        autoscaling=_scalars_from_pb(message.autoscaling, m.Autoscaling),
        traffic=tuple((t.site, t.calls) for t in message.traffic),
        caller_buckets=tuple(message.caller_buckets),
    )


def tensor_specs_json(specs: Sequence[m.TensorSpec]) -> str:
    """Specs as stored (a deployment's signature in the state store)."""
    return json.dumps([[s.name, s.datatype, list(s.shape)] for s in specs])


def tensor_specs_from_json(text: str) -> tuple[m.TensorSpec, ...]:
    return tuple(m.TensorSpec(n, d, tuple(shape)) for n, d, shape in json.loads(text or "[]"))


def deployment_response(info: m.DeploymentInfo) -> pb.DeploymentResponse:
    return pb.DeploymentResponse(deployment=deployment_info_to_pb(info))


def list_deployments_response(infos: list[m.DeploymentInfo]) -> pb.ListDeploymentsResponse:
    return pb.ListDeploymentsResponse(deployments=[deployment_info_to_pb(i) for i in infos])


def submit_request_bytes(request: m.SubmitRequest) -> bytes:
    """A request as stored bytes (a deployment's template in the state store)."""
    return submit_request_to_pb(request).SerializeToString()


def submit_request_from_bytes(data: bytes) -> m.SubmitRequest:
    message = pb.SubmitRequest()
    message.ParseFromString(data)
    return submit_request_from_pb(message)
