"""``anypu deploy``, ``anypu deployments``, ``anypu scale``, ``anypu undeploy``,
``anypu promote`` and ``anypu rollback``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import threading
from typing import Any

from anypu.errors import InputError
from anypu.protos import messages as m
from anypu.sdk._status import _connect

__all__ = ["deploy_command", "deployments_command", "format_deployments", "scale_command"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--example {text!r}: give a shape such as 4x256 (dimensions > 0)")
    return dims


def _model(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(
            f"--model {spec!r}: give MODULE:FACTORY, e.g. anypu.sdk.models:mlp (a callable"
            " that returns a torch.nn.Module)"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"--model {spec!r}: {error}") from None
    return factory().eval()


def deploy_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu deploy NAME --model MODULE:FACTORY --example 4x256 [--replicas N]``."""
    import torch

    from anypu.sdk._client import Client, RunOptions

    model = _model(args.model)
    examples = tuple(torch.randn(*_shape(s)) for s in args.example)
    caller_token = args.caller_token
    if args.new_caller_token:
        import secrets

        caller_token = secrets.token_urlsafe(24)
    from anypu._labels import parse_selector

    options = RunOptions(
        tiers=_listed(args.tiers),
        sites=_listed(args.sites),
        deadline_ms=args.deadline_ms,
        label_selector=parse_selector(args.label_selector),
    )
    _, transport = _connect(args)
    client = Client(transport, origin=args.origin)
    try:
        info = client.deploy(
            model,
            args.name,
            example_inputs=examples[0] if len(examples) == 1 else examples,
            replicas=args.replicas,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            canary_percent=args.canary,
            caller_token=caller_token,
            autoscaling=m.Autoscaling(
                args.target_in_flight,
                args.target_latency_ms / 1000,
                args.scale_down_after,
                args.scale_to_zero_after,
            ),
            options=options,
            wait_s=args.wait,
        )
    finally:
        client.close()
    print(format_deployments([info]))
    if args.new_caller_token:
        print(f"caller token (shown once; it may call {info.name} only): {caller_token}")
    return 0


def _listed(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def deployments_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu deployments [--json]``."""
    _, transport = _connect(args)
    try:
        infos = transport.deployments()
    finally:
        transport.close()
    if args.json:
        print(json.dumps([_document(i) for i in infos]))
    else:
        print(format_deployments(infos) if infos else "no deployments")
    return 0


def scale_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu scale NAME REPLICAS``, ``anypu undeploy NAME``, ``anypu promote NAME`` and
    ``anypu rollback NAME``."""
    _, transport = _connect(args)
    try:
        if args.command == "undeploy":
            info = transport.undeploy(args.name)
            print(f"deleted deployment {info.name} ({len(info.ready)} replica(s) released)")
            return 0
        if args.command in ("promote", "rollback"):
            info = transport.rollout(args.name, args.command)
        else:
            info = transport.scale(args.name, args.replicas)
    finally:
        transport.close()
    print(format_deployments([info]))
    return 0


def _document(info: m.DeploymentInfo) -> dict[str, Any]:
    document = dataclasses.asdict(info)
    for replica in document["replicas"]:
        lease = replica.pop("lease", None)
        replica["address"] = lease["address"] if lease else ""  # the lease id is a secret
    return document


def format_deployments(infos: list[m.DeploymentInfo]) -> str:
    lines = []
    for info in infos:
        scaling = (
            f", autoscaled {info.min_replicas}–{info.max_replicas}" if info.max_replicas else ""
        )
        canary = (
            f", canary: {info.canary_percent} % of calls to it, the rest to version"
            f" {info.stable_version}"
            if info.canary_percent
            else ""
        )
        lines.append(
            f"{info.name}: {info.model_name or info.artifact_digest[:12]} version"
            f" {info.version}, {len(info.ready)}/{info.replicas_wanted} replica(s)"
            f" ready{scaling}{canary}" + (f" — {info.message}" if info.message else "")
        )
        for r in info.replicas:
            where = f"{r.node_id}/{r.device_id}" if r.node_id else "(not placed yet)"
            lines.append(f"  {r.replica_id:<28} {r.state:<8} v{r.version:<3} {where} {r.tier}")
    return "\n".join(lines)
