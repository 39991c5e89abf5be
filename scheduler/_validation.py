"""What the scheduler refuses from its callers before anything changes: a submission or
an agent's Join that a user (or a broken or hostile agent) got wrong, each with a message
that says what was wrong and what to do."""

from __future__ import annotations

import math
import re

from anypu import PROTOCOL_VERSION
from anypu._labels import check_requirements
from anypu.comm import INLINE_BYTES, MissingBlobError
from anypu.devices import DEVICE_KINDS
from anypu.errors import ConfigError
from anypu.placement import PRECISION_RELATIVE, TIERS
from anypu.protos import messages as m
from anypu.scheduler._store import BlobStore

__all__ = ["validate_join", "validate_submit"]


def validate_submit(r: m.SubmitRequest, blobs: BlobStore) -> None:
    """Refuse a submission a user got wrong, saying what and what to do."""
    if not blobs.has(r.artifact_digest):
        raise MissingBlobError(
            f"model artifact {r.artifact_digest[:16]}… is not on the scheduler (never"
            " uploaded, or unused for longer than --keep-models): upload it with PutBlob"
            " and submit again (the SDK does this for you)",
            r.artifact_digest,
        )
    if r.inputs_digest and not blobs.has(r.inputs_digest):
        raise MissingBlobError(
            f"inputs blob {r.inputs_digest[:16]}… is not on the scheduler: upload it"
            " with PutBlob and submit again",
            r.inputs_digest,
        )
    for name, allowed in (("tiers", TIERS), ("device_kinds", DEVICE_KINDS)):
        bad = sorted(set(getattr(r, name)) - set(allowed))
        if bad:
            raise ConfigError(f"unknown {name} {bad}: choose from {list(allowed)}")
    if len(r.label_selector) > 64:
        raise ConfigError(
            f"a label selector of {len(r.label_selector)} requirements: at most 64 are taken"
        )
    check_requirements(r.label_selector)
    numbers = {
        "flops": r.flops,
        "slo_seconds": r.slo_seconds,
        "timeout_s": r.timeout_s,
        "wait_timeout_s": r.wait_timeout_s,
        "deadline_ms": r.deadline_ms,
    }
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number ≥ 0, got {value}")
    if not 0 <= r.compute_milli <= 1000:
        raise ConfigError(
            f"compute_milli must be from 0 to 1000 (a whole device), got {r.compute_milli}:"
            " ask for a share from 0 (derived from the SLO) to 1000"
        )
    if r.precision and r.precision not in PRECISION_RELATIVE:
        raise ConfigError(
            f"precision {r.precision[:20]!r} is unknown: choose one of"
            f" {sorted(PRECISION_RELATIVE)} (or leave it empty for fp32)"
        )
    if len(r.operators) > 2048 or any(len(op) > 200 for op in r.operators):
        raise ConfigError(
            f"operators: at most 2048 names of at most 200 characters, got {len(r.operators)}"
        )
    if r.max_retries > 100:
        raise ConfigError(f"max_retries must be ≤ 100, got {r.max_retries}")
    for name, limit in (("name", 200), ("origin", 128)):
        if len(getattr(r, name)) > limit:
            raise ConfigError(f"{name} is longer than {limit} characters: shorten it")
    for name in ("sites", "nodes"):
        values = getattr(r, name)
        if len(values) > 256 or any(len(v) > 128 for v in values):
            raise ConfigError(f"{name}: at most 256 entries of at most 128 characters")
    if len(r.round_trips) > 64 or any(
        len(vertex) > 128 or not math.isfinite(rtt) or rtt < 0 for vertex, rtt in r.round_trips
    ):
        raise ConfigError(
            "round_trips: at most 64 (vertex, seconds) pairs, each vertex at most 128"
            " characters and each round trip a finite number ≥ 0"
        )
    _validate_splits(r, blobs)


#: The most cuts one submission may offer (the SDK offers ``sdk._split.MAX_CUTS``).
MAX_SPLITS = 8


def _validate_splits(r: m.SubmitRequest, blobs: BlobStore) -> None:
    if len(r.splits) > MAX_SPLITS:
        raise ConfigError(f"splits: at most {MAX_SPLITS} cuts of a model, got {len(r.splits)}")
    for i, split in enumerate(r.splits):
        if len(split.label) > 200:
            raise ConfigError(f"splits[{i}].label is longer than 200 characters: shorten it")
        for part in ("head", "tail"):
            stage = getattr(split, part)
            if stage.splits or stage.inputs or stage.inputs_digest:
                raise ConfigError(
                    f"splits[{i}].{part} carries cuts or inputs of its own: a stage is a"
                    " model and its work only (the job's inputs are the head's)"
                )
            try:
                validate_submit(stage, blobs)
            except MissingBlobError as exc:
                raise MissingBlobError(f"splits[{i}].{part}: {exc}", exc.digest) from None
            except ConfigError as exc:
                raise ConfigError(f"splits[{i}].{part}: {exc}") from None


def validate_join(join: m.Join) -> None:
    if join.protocol_version != PROTOCOL_VERSION:
        raise ConfigError(
            f"agent speaks protocol {join.protocol_version}, this scheduler speaks"
            f" {PROTOCOL_VERSION}: install the same anypu version on both"
        )
    problem = m.node_name_problem(join.name)
    if problem:
        raise ConfigError(problem)
    if join.tier not in TIERS:
        raise ConfigError(f"tier {join.tier[:80]!r} is invalid: choose one of {list(TIERS)}")
    if not join.devices:
        raise ConfigError(f"agent {join.name} reported no devices")
    host, sep, port = join.direct_address.rpartition(":")
    if join.direct_address and (
        len(join.direct_address) > 255 or not sep or not host or not port.isdigit()
    ):
        raise ConfigError(
            f"agent {join.name} sent direct address {join.direct_address[:80]!r}: use HOST:PORT"
        )
    # Bounds on everything a Join makes the scheduler keep: a hostile or broken agent
    # must not grow its memory or database without limit.
    if len(join.labels) > 64:
        raise ConfigError(f"agent {join.name} sent {len(join.labels)} labels; at most 64")
    if any(len(k) > 63 or len(v) > 253 for k, v in join.labels.items()) or len(join.site) > 63:
        raise ConfigError(
            f"agent {join.name} sent a label or site too long: keys and sites ≤ 63"
            " characters, values ≤ 253"
        )
    if len(join.devices) > 256 or len(join.warm_digests) > 10_000 or len(join.running) > 10_000:
        raise ConfigError(
            f"agent {join.name} reported {len(join.devices)} devices,"
            f" {len(join.warm_digests)} warm models and {len(join.running)} running attempts;"
            " at most 256, 10000 and 10000"
        )
    for d in join.devices:
        fields = (
            d.device_id,
            d.vendor,
            d.model,
            d.torch_device,
            d.sharing,
            *d.extra,
            *d.extra.values(),
        )
        if len(d.extra) > 64 or max(map(len, fields)) > 128:
            raise ConfigError(
                f"agent {join.name} sent a device field over 128 characters (or > 64 extras)"
            )
        if d.kind not in DEVICE_KINDS:
            raise ConfigError(f"device {d.device_id} has unknown kind {d.kind[:40]!r}")
        if not (math.isfinite(d.tflops) and 0 < d.tflops < 1e6):
            raise ConfigError(f"device {d.device_id} claims {d.tflops} TFLOPS: not plausible")
        if not 0 < d.memory_bytes < 1 << 50 or not 1 <= d.slices <= 1024:
            raise ConfigError(f"device {d.device_id} has implausible memory or slice count")


#: A deployment's example inputs travel inline with it (and are kept in the store).
MAX_EXAMPLE_BYTES = INLINE_BYTES
#: Replicas one deployment may ask for.
MAX_REPLICAS = 256
#: A deployment's name: what ``/v2/models/{name}`` and ``anypu scale NAME`` take.
_DEPLOYMENT_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")


def validate_deployment(
    name: str, replicas: int, options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS
) -> None:
    """Refuse a deployment name, replica count, autoscaling bounds (min, max; max 0:
    none), canary percent or caller token hash a user got wrong, saying what to give."""
    if not _DEPLOYMENT_NAME.fullmatch(name):
        raise ConfigError(
            f"deployment name {name!r}: use 1 to 63 lower-case letters, digits, '.', '_' or"
            " '-', starting and ending with a letter or digit (it goes in URLs)"
        )
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 0 <= replicas <= MAX_REPLICAS
    ):
        raise ConfigError(
            f"deployment {name}: replicas must be a whole number from 0 to {MAX_REPLICAS},"
            f" got {replicas!r}"
        )
    low, high = options.bounds
    if high and not (0 <= low <= high <= MAX_REPLICAS and low <= replicas <= high):
        raise ConfigError(
            f"deployment {name}: autoscaling needs 0 ≤ min_replicas ≤ replicas ≤ max_replicas"
            f" ≤ {MAX_REPLICAS}, got min {low}, replicas {replicas}, max {high}"
        )
    if not 0 <= options.canary_percent <= 99:
        raise ConfigError(
            f"deployment {name}: a canary takes 1 to 99 percent of calls, got"
            f" {options.canary_percent}; to send it every call, deploy without a canary"
            " (a rolling update) or promote it"
        )
    for what, value, most in (
        ("target_in_flight", options.autoscaling.target_in_flight, 1000.0),
        (
            "target_latency_s (target_latency_ms / 1000)",
            options.autoscaling.target_latency_s,
            3600.0,
        ),
        ("scale_down_after_s", options.autoscaling.scale_down_after_s, 86400.0),
        ("scale_to_zero_after_s", options.autoscaling.scale_to_zero_after_s, 86400.0),
    ):
        if not (math.isfinite(value) and 0 <= value <= most):
            raise ConfigError(
                f"deployment {name}: {what} must be from 0 (the default) to {most:g}, got {value!r}"
            )
    token_hash = options.caller_token_sha256
    if token_hash and not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise ConfigError(
            f"deployment {name}: caller_token_sha256 must be a SHA-256 in lower-case hex"
            " (64 characters); the SDK and CLI hash the token for you"
        )
